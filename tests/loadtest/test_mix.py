"""The request mix: prebuilt HTTP requests, round-robin bodies, an exact streamed share, clear file errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slipstream.loadtest import MixError, RequestMix, read_bodies, resolve_target

TARGET = resolve_target("http://127.0.0.1:8123/v1")


def _body(request: bytes) -> dict[str, object]:
    head, _, body = request.partition(b"\r\n\r\n")
    length = int(
        next(line for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))[15:]
    )
    assert length == len(body)
    return dict(json.loads(body))


def test_requests_are_complete_http_11_posts() -> None:
    request, stream = RequestMix(TARGET, headers={"Authorization": "Bearer sk-test"}).next()
    assert not stream
    head = request.split(b"\r\n\r\n", 1)[0].decode()
    assert head.startswith("POST /v1/chat/completions HTTP/1.1\r\n")
    assert "Host: 127.0.0.1:8123" in head
    assert "Authorization: Bearer sk-test" in head
    body = _body(request)
    assert body["model"] == "sim"
    assert body["stream"] is False


@pytest.mark.parametrize(("share", "n"), [(0.0, 10), (0.3, 10), (0.5, 7), (1.0, 5), (0.25, 100)])
def test_the_streamed_share_is_exact_after_any_count(share: float, n: int) -> None:
    mix = RequestMix(TARGET, stream_share=share)
    picks = [mix.next() for _ in range(n)]
    streamed = [stream for _, stream in picks]
    assert sum(streamed) == int(n * share)
    for request, stream in picks:
        assert _body(request)["stream"] is stream


def test_bodies_go_round_robin_and_the_model_option_overrides_theirs(tmp_path: Path) -> None:
    path = tmp_path / "mix.jsonl"
    lines = [
        {"model": "a", "messages": [{"role": "user", "content": "one"}]},
        {
            "custom_id": "x",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"messages": [{"role": "user", "content": "two"}]},
        },
    ]
    path.write_text("# a comment\n\n" + "\n".join(json.dumps(line) for line in lines) + "\n")
    bodies = read_bodies(path)
    assert len(bodies) == 2
    mix = RequestMix(TARGET, bodies, model="forced")
    contents = [_body(mix.next()[0]) for _ in range(4)]
    assert [c["messages"][0]["content"] for c in contents] == ["one", "two", "one", "two"]  # type: ignore[index]
    assert {c["model"] for c in contents} == {"forced"}
    assert RequestMix(TARGET, bodies).size == 2


def test_bad_request_files_name_the_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"messages": []}\n{not json\n')
    with pytest.raises(MixError, match=r"bad.jsonl:2: not JSON"):
        read_bodies(path)
    path.write_text('{"messages": []}\n{"prompt": "hi"}\n')
    with pytest.raises(MixError, match=r"bad.jsonl:2: expected a chat request body"):
        read_bodies(path)
    path.write_text("\n# nothing\n")
    with pytest.raises(MixError, match="no request bodies"):
        read_bodies(path)
    with pytest.raises(MixError, match=r"missing\.jsonl"):
        read_bodies(tmp_path / "missing.jsonl")
    with pytest.raises(MixError, match="between 0 and 1"):
        RequestMix(TARGET, stream_share=1.5)
