"""The OpenAI-compatible provider against a real local HTTP server."""

import asyncio

import orjson
import pytest
from aiohttp import web

from slipstream.errors import UpstreamProtocolError, UpstreamStatusError, UpstreamTimeout
from slipstream.providers.base import Deployment, Timeouts
from slipstream.providers.http import HttpPool
from slipstream.providers.openai import OpenAIProvider
from slipstream.schema import validate_chat_request, validate_embeddings_request

COMPLETION = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-x",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}


def _sse(*events: bytes) -> bytes:
    return b"".join(b"data: " + e + b"\n\n" for e in events)


CHUNKS = [
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-x",
        "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
    },
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-x",
        "choices": [{"index": 0, "delta": {"content": "hel"}, "finish_reason": None}],
    },
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-x",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    },
    {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-x",
        "choices": [],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    },
]


class Upstream:
    def __init__(self) -> None:
        self.seen: list[tuple[str, dict, dict]] = []
        self.mode = "ok"
        self.stop = asyncio.Event()

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = orjson.loads(await request.read())
        self.seen.append((request.path_qs, dict(request.headers), body))
        if self.mode == "error":
            return web.json_response(
                {"error": {"message": "bad things", "type": "invalid_request_error"}}, status=400
            )
        if self.mode == "429":
            return web.json_response(
                {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "7"}
            )
        if self.mode == "malformed":
            return web.Response(body=b"<html>oops", content_type="text/html")
        if self.mode == "hang":
            await self.stop.wait()
        if not body.get("stream"):
            return web.json_response(COMPLETION, headers={"x-ratelimit-remaining-requests": "99"})
        response = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await response.prepare(request)
        events = [orjson.dumps(c) for c in CHUNKS]
        if self.mode == "cut":
            await response.write(_sse(*events[:2]))
            return response  # ends without [DONE]
        if self.mode == "error-event":
            await response.write(_sse(events[0], b'{"error": {"message": "overloaded mid-stream"}}'))
            return response
        await response.write(_sse(*events, b"[DONE]"))
        return response

    async def embeddings(self, request: web.Request) -> web.Response:
        body = orjson.loads(await request.read())
        self.seen.append((request.path_qs, dict(request.headers), body))
        return web.json_response(
            {
                "object": "list",
                "data": [{"object": "embedding", "index": 0, "embedding": [0.1]}],
                "model": body["model"],
                "usage": {"prompt_tokens": 1, "total_tokens": 1},
            }
        )


@pytest.fixture
async def upstream():
    up = Upstream()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", up.chat)
    app.router.add_post("/v1/embeddings", up.embeddings)
    app.router.add_post("/openai/deployments/d/chat/completions", up.chat)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]
    up.url = f"http://127.0.0.1:{port}"
    yield up
    up.stop.set()
    await runner.cleanup()


@pytest.fixture
async def pool():
    p = HttpPool()
    yield p
    await p.aclose()


def _provider(up, pool, **kw):
    dep = Deployment(
        provider="openai", model="gpt-x", base_url=kw.pop("base_url", up.url + "/v1"), api_key="sk-test", **kw
    )
    return OpenAIProvider(dep, pool)


REQUEST = {"model": "alias", "messages": [{"role": "user", "content": "hi"}], "vendor_knob": 7}


async def test_complete_forwards_unknown_fields_and_model(upstream, pool):
    reply = await _provider(upstream, pool).complete(validate_chat_request(dict(REQUEST)))
    assert reply.text == "hi" and reply.usage["total_tokens"] == 4
    assert reply.headers == {"x-ratelimit-remaining-requests": "99"}
    _, headers, body = upstream.seen[0]
    assert body == {"model": "gpt-x", "messages": REQUEST["messages"], "vendor_knob": 7}
    assert headers["Authorization"] == "Bearer sk-test"


async def test_stream_asks_for_usage_and_yields_chunks(upstream, pool):
    chunks = [
        c async for c in _provider(upstream, pool).stream(validate_chat_request({**REQUEST, "stream": True}))
    ]
    assert [c.data for c in chunks] == CHUNKS
    assert upstream.seen[0][2]["stream_options"] == {"include_usage": True}


async def test_stream_cut_before_done_raises(upstream, pool):
    upstream.mode = "cut"
    got = []
    with pytest.raises(UpstreamProtocolError, match="before \\[DONE\\]"):
        async for c in _provider(upstream, pool).stream(validate_chat_request({**REQUEST, "stream": True})):
            got.append(c)
    assert len(got) == 2


async def test_error_event_mid_stream_raises(upstream, pool):
    upstream.mode = "error-event"
    with pytest.raises(UpstreamStatusError, match="overloaded mid-stream"):
        async for _ in _provider(upstream, pool).stream(validate_chat_request({**REQUEST, "stream": True})):
            pass


async def test_error_status_keeps_provider_message(upstream, pool):
    upstream.mode = "error"
    with pytest.raises(UpstreamStatusError) as info:
        await _provider(upstream, pool).complete(validate_chat_request(dict(REQUEST)))
    assert info.value.status == 400 and "bad things" in info.value.message


async def test_429_carries_retry_after(upstream, pool):
    upstream.mode = "429"
    with pytest.raises(UpstreamStatusError) as info:
        await _provider(upstream, pool).complete(validate_chat_request(dict(REQUEST)))
    assert info.value.status == 429 and info.value.retry_after == 7.0


async def test_malformed_body_is_a_protocol_error(upstream, pool):
    upstream.mode = "malformed"
    with pytest.raises(UpstreamProtocolError):
        await _provider(upstream, pool).complete(validate_chat_request(dict(REQUEST)))


async def test_first_byte_timeout(upstream, pool):
    upstream.mode = "hang"
    provider = _provider(upstream, pool, timeouts=Timeouts(connect=1, first_byte=0.2, total=5))
    with pytest.raises(UpstreamTimeout):
        await provider.complete(validate_chat_request(dict(REQUEST)))


async def test_azure_style_path_and_key_header(upstream, pool):
    provider = _provider(
        upstream, pool, base_url=upstream.url + "/openai/deployments/d", options={"api_version": "2024-10-21"}
    )
    await provider.complete(validate_chat_request(dict(REQUEST)))
    path, headers, _ = upstream.seen[0]
    assert path == "/openai/deployments/d/chat/completions?api-version=2024-10-21"
    assert headers["api-key"] == "sk-test" and "Authorization" not in headers


async def test_embeddings(upstream, pool):
    reply = await _provider(upstream, pool).embed(validate_embeddings_request({"model": "e", "input": "hi"}))
    assert reply.data["data"][0]["embedding"] == [0.1]
    assert upstream.seen[0][2]["model"] == "gpt-x"


def test_retry_after_prefers_milliseconds_then_seconds_then_a_body_delay():
    from slipstream.providers.http import retry_after_of

    body = b'{"error": {"details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]}}'
    assert retry_after_of({"retry-after-ms": "250", "retry-after": "1"}, body) == 0.25
    assert retry_after_of({"retry-after": "3"}, body) == 3.0
    assert retry_after_of({}, body) == 1.5
    assert retry_after_of({"retry-after-ms": "soon"}, b"{}") is None
    assert retry_after_of({}, b"not json retryDelay") is None
