"""Bad input against the real gateway process: clear OpenAI-shaped errors, never a stack trace."""

from __future__ import annotations

import socket
import time

import httpx
import pytest

from .conftest import Process, sim_stats

URL = "/v1/chat/completions"


def _post(gateway: Process, content: bytes, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(
        gateway.url + URL,
        content=content,
        headers={"content-type": "application/json", **(headers or {})},
        timeout=10,
    )


def _assert_error(response: httpx.Response, status: int, param: str | None = None) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert "Traceback" not in response.text and 'File "' not in response.text
    if param is not None:
        assert error["param"] == param
    return error


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b'{"model": "sim", "messages": [', None),  # malformed JSON
        (b'["not", "an", "object"]', None),
        (b'{"model": 5, "messages": [{"role": "user", "content": "hi"}]}', "model"),
        (b'{"model": "sim", "messages": []}', "messages"),
        (b'{"model": "sim", "messages": [{"role": "wizard", "content": "hi"}]}', "messages[0].role"),
        (b'{"model": "sim", "messages": [{"role": "user", "content": 42}]}', "messages[0].content"),
        (
            b'{"model": "sim", "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}',
            "temperature",
        ),
        (b'{"model": "sim", "messages": [{"role": "user", "content": "hi"}], "stream": "yes"}', "stream"),
        (b'{"model": "sim", "messages": [{"role": "user", "content": "\xff\xfe"}]}', None),  # invalid UTF-8
    ],
)
def test_bad_bodies_are_400(gateway: Process, body: bytes, param: str | None):
    error = _assert_error(_post(gateway, body), 400, param)
    assert error["type"] == "invalid_request_error"
    if param:
        assert param in error["message"]


def test_huge_body_is_413_with_and_without_content_length(gateway: Process):
    big = b'{"model": "sim", "messages": [{"role": "user", "content": "' + b"x" * 200_000 + b'"}]}'
    _assert_error(_post(gateway, big), 413)

    def chunked():
        for i in range(0, len(big), 16_384):
            yield big[i : i + 16_384]

    response = httpx.post(
        gateway.url + URL, content=chunked(), headers={"content-type": "application/json"}, timeout=10
    )
    _assert_error(response, 413)


def test_unknown_path_and_method(gateway: Process):
    _assert_error(httpx.get(gateway.url + "/v1/nothing", timeout=5), 404)
    _assert_error(httpx.get(gateway.url + URL, timeout=5), 405)


def test_health_and_ready(gateway: Process):
    assert httpx.get(gateway.url + "/healthz").json() == {"status": "ok"}
    ready = httpx.get(gateway.url + "/readyz").json()
    assert ready["status"] == "ready" and "sim" in ready["models"]


def test_client_disconnect_mid_stream_cancels_the_upstream(gateway: Process, sim_server: Process):
    """A slow upstream stream; the client reads the first event and hangs up; the sim sees its stream end early."""
    before = sim_stats(sim_server)
    body = (
        b'{"model": "sim", "stream": true, "max_tokens": 400, "messages": [{"role": "user", "content": "long"}],'
        b' "sim": {"fault": "slow_stream"}}'
    )
    request = (
        f"POST {URL} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as sock:
        sock.sendall(request)
        received = b""
        while b"data: " not in received:
            received += sock.recv(4096)
        assert received.startswith(b"HTTP/1.1 200")
    # The gateway must cancel its upstream call: the sim's in-flight count returns to where it was.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        stats = sim_stats(sim_server)
        if stats["in_flight"] <= before["in_flight"] and stats["requests"] > before["requests"]:
            break
        time.sleep(0.1)
    assert stats["in_flight"] <= before["in_flight"]
    assert stats["requests"] > before["requests"]
