"""The sim HTTP server, started in-process on a free port and driven with aiohttp (and raw sockets for HTTP details)."""

from __future__ import annotations

import asyncio
import base64
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import orjson
import pytest

from slipstream.sim import SimOptions
from slipstream.sim.server import MODELS, SimServer

MESSAGES = [{"role": "user", "content": "Tell me about lanterns."}]
Factory = Callable[..., Awaitable[SimServer]]


async def never_sleep(delay: float) -> None:
    raise AssertionError(f"the no-latency mode slept {delay}s")


class RecordingSleep:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await asyncio.sleep(0)  # yield, as a real sleep would, without waiting


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def start() -> AsyncIterator[Factory]:
    servers: list[SimServer] = []

    async def factory(options: dict[str, Any] | None = None, **kw: Any) -> SimServer:
        kw.setdefault("sleep", never_sleep)
        server = await SimServer(SimOptions.from_dict(options), **kw).start("127.0.0.1", 0)
        servers.append(server)
        return server

    yield factory
    for server in servers:
        await server.close()


@pytest.fixture
async def server(start: Factory) -> SimServer:
    return await start()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "sim-1", "messages": MESSAGES, **extra}


async def post(
    session: aiohttp.ClientSession, server: SimServer, body: Any, path: str = "/v1/chat/completions"
) -> aiohttp.ClientResponse:
    data = body if isinstance(body, bytes) else orjson.dumps(body)
    return await session.post(server.url + path, data=data, headers={"content-type": "application/json"})


def sse_events(raw: bytes) -> list[bytes]:
    """The data of each event; asserts the exact OpenAI framing (``data: …`` + blank line, nothing else)."""
    assert raw.endswith(b"\n\n")
    events = raw[:-2].split(b"\n\n")
    assert all(e.startswith(b"data: ") and b"\n" not in e for e in events)
    return [e[len(b"data: ") :] for e in events]


async def stats(session: aiohttp.ClientSession, server: SimServer) -> dict[str, Any]:
    async with session.get(server.url + "/sim/stats") as response:
        result: dict[str, Any] = await response.json()
        return result


# ------------------------------------------------------------------------------------------ answers
async def test_chat_completion_json(server: SimServer, session: aiohttp.ClientSession) -> None:
    async with await post(session, server, chat(sim={"reply_tokens_max": 50})) as response:
        assert response.status == 200
        assert response.headers["content-type"] == "application/json"
        raw = await response.read()
    data = orjson.loads(raw)
    assert data["object"] == "chat.completion" and data["model"] == "sim-1"
    assert data["choices"][0]["message"]["content"]
    assert (
        data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"]
    )
    assert b'"sim"' not in raw  # the override field is never echoed
    async with await post(session, server, chat(sim={"reply_tokens_max": 50})) as again:
        second = await again.json()
    assert second["choices"] == data["choices"]
    async with await post(session, server, chat(), path="/chat/completions") as unprefixed:
        assert unprefixed.status == 200  # base URLs without /v1 work too


async def test_stream_without_usage(server: SimServer, session: aiohttp.ClientSession) -> None:
    async with await post(session, server, chat()) as response:
        text = (await response.json())["choices"][0]["message"]["content"]
    async with await post(session, server, chat(stream=True)) as response:
        assert response.status == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-accel-buffering"] == "no"
        events = sse_events(await response.read())
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == text


async def test_stream_with_include_usage(server: SimServer, session: aiohttp.ClientSession) -> None:
    body = chat(stream=True, stream_options={"include_usage": True}, max_tokens=9)
    async with await post(session, server, body) as response:
        events = sse_events(await response.read())
    assert events[-1] == b"[DONE]"
    chunks = [orjson.loads(e) for e in events[:-1]]
    *content, last = chunks
    assert all(c["usage"] is None for c in content)
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 9
    assert content[-1]["choices"][0]["finish_reason"] == "length"


async def test_embeddings(server: SimServer, session: aiohttp.ClientSession) -> None:
    body = {"model": "sim-embed-1", "input": ["alpha", "beta"], "dimensions": 8}
    async with await post(session, server, body, path="/v1/embeddings") as response:
        data = await response.json()
    assert [len(d["embedding"]) for d in data["data"]] == [8, 8]
    body["encoding_format"] = "base64"
    async with await post(session, server, body, path="/v1/embeddings") as response:
        packed = await response.json()
    decoded = array("f", base64.b64decode(packed["data"][1]["embedding"])).tolist()
    assert decoded == pytest.approx(data["data"][1]["embedding"], rel=1e-6)


async def test_models_health_and_unknown_routes(server: SimServer, session: aiohttp.ClientSession) -> None:
    async with session.get(server.url + "/v1/models") as response:
        assert [m["id"] for m in (await response.json())["data"]] == list(MODELS)
    async with session.get(server.url + "/v1/models/anything") as response:
        assert (await response.json())["id"] == "anything"
    async with session.get(server.url + "/healthz?probe=1") as response:
        assert (await response.json()) == {"status": "ok"}
    async with session.get(server.url + "/v1/nothing") as response:
        assert response.status == 404
        assert (await response.json())["error"]["code"] == "unknown_url"
    async with session.get(server.url + "/v1/chat/completions") as response:
        assert response.status == 405
        assert (await response.json())["error"]["type"] == "invalid_request_error"


async def test_bad_requests_get_openai_errors(server: SimServer, session: aiohttp.ClientSession) -> None:
    async with await post(session, server, b'{"model": "sim-1", "messages": [') as response:
        assert response.status == 400
        assert "parse the JSON" in (await response.json())["error"]["message"]
    async with await post(session, server, {"model": "sim-1", "messages": []}) as response:
        assert (await response.json())["error"]["param"] == "messages"
    async with await post(session, server, chat(sim={"ttfb": 1})) as response:
        assert response.status == 400
        error = (await response.json())["error"]
        assert error["param"] == "sim.ttfb" and "'ttfb'" in error["message"]


# ------------------------------------------------------------------------------------------ faults
async def test_forced_429_has_retry_after(start: Factory, session: aiohttp.ClientSession) -> None:
    server = await start({"retry_after": 7})
    async with await post(session, server, chat(sim={"fault": "429"})) as response:
        assert response.status == 429
        assert response.headers["retry-after"] == "7"
        error = (await response.json())["error"]
    assert error["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_forced_server_errors(server: SimServer, session: aiohttp.ClientSession, status: int) -> None:
    async with await post(session, server, chat(stream=True, sim={"fault": str(status)})) as response:
        assert response.status == status
        assert (await response.json())["error"]["type"] == "server_error"


async def test_rpm_limit_headers_and_429(start: Factory, session: aiohttp.ClientSession) -> None:
    clock = FakeClock()
    server = await start({"rpm_limit": 2, "tpm_limit": 50_000}, clock=clock)
    async with await post(session, server, chat()) as response:
        assert response.status == 200
        headers = response.headers
        used = (await response.json())["usage"]["total_tokens"]
    assert headers["x-ratelimit-limit-requests"] == "2"
    assert headers["x-ratelimit-remaining-requests"] == "1"
    assert headers["x-ratelimit-reset-requests"] == "1m0s"
    assert headers["x-ratelimit-limit-tokens"] == "50000"
    assert headers["x-ratelimit-remaining-tokens"] == str(50_000 - used)
    assert headers["x-ratelimit-reset-tokens"] == "1m0s"
    clock.now = 20.0
    async with await post(session, server, chat(stream=True)) as response:
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
        await response.read()
    async with await post(session, server, chat()) as response:
        assert response.status == 429
        assert response.headers["retry-after"] == "40"
        assert response.headers["x-ratelimit-remaining-requests"] == "0"
        assert (await response.json())["error"]["type"] == "requests"
    async with session.post(server.url + "/sim/reset") as response:
        assert response.status == 200
    async with await post(session, server, chat()) as response:
        assert response.status == 200


async def test_broken_stream_drops_the_connection(server: SimServer, session: aiohttp.ClientSession) -> None:
    received = b""
    async with await post(session, server, chat(stream=True, sim={"fault": "broken_stream"})) as response:
        assert response.status == 200
        with pytest.raises(aiohttp.ClientPayloadError):
            async for piece in response.content.iter_any():
                received += piece
    assert received.startswith(b"data: ")  # some chunks arrived …
    assert b"[DONE]" not in received and b'finish_reason":"stop' not in received  # … but not the end
    async with await post(session, server, chat(sim={"fault": "broken_stream"})) as response:
        with pytest.raises(aiohttp.ClientPayloadError):
            await response.read()
    assert (await stats(session, server))["faults"] == {"broken_stream": 2}


async def test_malformed_body_is_not_json(server: SimServer, session: aiohttp.ClientSession) -> None:
    async with await post(session, server, chat(sim={"fault": "malformed"})) as response:
        assert response.status == 200
        raw = await response.read()
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(raw)
    async with await post(session, server, chat(stream=True, sim={"fault": "malformed"})) as response:
        events = sse_events(await response.read())
    orjson.loads(events[0])
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(events[1])


async def test_hang_holds_until_the_client_leaves(server: SimServer, session: aiohttp.ClientSession) -> None:
    timeout = aiohttp.ClientTimeout(total=0.2)
    with pytest.raises(TimeoutError):
        await session.post(
            server.url + "/v1/chat/completions", json=chat(sim={"fault": "hang"}), timeout=timeout
        )
    # The server notices the disconnect and stops holding the request.
    for _ in range(200):
        if server.simulator.stats.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert server.simulator.stats.in_flight == 0
    assert server.simulator.stats.faults == {"hang": 1}


# ------------------------------------------------------------------------------------------ latency
async def test_latency_over_http(start: Factory, session: aiohttp.ClientSession) -> None:
    sleep = RecordingSleep()
    server = await start({"ttft": 0.4, "tokens_per_s": 25, "chunk_tokens": 5}, sleep=sleep)
    async with await post(session, server, chat(max_tokens=20)) as response:
        assert (await response.json())["usage"]["completion_tokens"] == 20
    assert sleep.delays == [pytest.approx(0.4 + 20 / 25)]
    sleep.delays.clear()
    async with await post(session, server, chat(stream=True, max_tokens=20)) as response:
        events = sse_events(await response.read())
    assert events[-1] == b"[DONE]"
    assert sleep.delays[0] == pytest.approx(0.4)
    assert sleep.delays[1:] == [pytest.approx(5 / 25)] * 4


async def test_slow_stream_over_http(start: Factory, session: aiohttp.ClientSession) -> None:
    sleep = RecordingSleep()
    server = await start({"slow_stream_gap": 3.0}, sleep=sleep)
    async with await post(session, server, chat(stream=True, sim={"fault": "slow_stream"})) as response:
        events = sse_events(await response.read())
    assert sleep.delays == [3.0] * (len(events) - 2)  # every chunk after the first; not [DONE]


# ------------------------------------------------------------------------------------------ counters
async def test_stats_count_upstream_calls(server: SimServer, session: aiohttp.ClientSession) -> None:
    for body in (chat(), chat(stream=True), chat(sim={"fault": "500"})):
        async with await post(session, server, body) as response:
            await response.read()
    async with await post(session, server, {"model": "e", "input": "x"}, path="/v1/embeddings") as response:
        await response.read()
    async with session.get(server.url + "/healthz") as response:
        await response.read()
    counters = await stats(session, server)
    assert counters["requests"] == 5
    assert counters["by_path"] == {"/v1/chat/completions": 3, "/v1/embeddings": 1, "/healthz": 1}
    assert counters["streams"] == 1
    assert counters["faults"] == {"500": 1}
    assert counters["in_flight"] == 0
    assert counters["completion_tokens"] > 0
    async with session.post(server.url + "/sim/reset") as response:
        assert await response.json() == {"status": "reset"}
    counters = await stats(session, server)
    assert (counters["requests"], counters["by_path"], counters["faults"]) == (0, {}, {})


# ------------------------------------------------------------------------------------------ HTTP details
async def raw_exchange(server: SimServer, payload: bytes, until: bytes, count: int = 1) -> bytes:
    reader, writer = await asyncio.open_connection(server.host, server.port)
    try:
        writer.write(payload)
        data = b""
        while data.count(until) < count:
            piece = await asyncio.wait_for(reader.read(65536), 5)
            if not piece:
                break
            data += piece
        return data
    finally:
        writer.close()
        await writer.wait_closed()


def raw_post(body: bytes, *extra: bytes) -> bytes:
    head = b"POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-length: %d\r\n" % len(body)
    return head + b"".join(h + b"\r\n" for h in extra) + b"\r\n" + body


async def test_pipelined_requests_are_answered_in_order(start: Factory) -> None:
    server = await start(sleep=RecordingSleep())
    slow = orjson.dumps(chat(max_tokens=3, sim={"ttft": 1.0}))  # answered by a task, after a "sleep"
    fast = orjson.dumps(chat(max_tokens=5))  # answered at once
    data = await raw_exchange(server, raw_post(slow) + raw_post(fast) + raw_post(fast), b"HTTP/1.1 200", 3)
    bodies = [orjson.loads(part.split(b"\r\n\r\n", 1)[1]) for part in data.split(b"HTTP/1.1 200 OK\r\n")[1:]]
    assert [b["usage"]["completion_tokens"] for b in bodies] == [3, 5, 5]


async def test_expect_continue_and_connection_close(server: SimServer) -> None:
    body = orjson.dumps(chat(max_tokens=2))
    data = await raw_exchange(server, raw_post(body, b"Expect: 100-continue", b"Connection: close"), b"}}", 1)
    assert data.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\n")
    assert b"connection: close\r\n" in data


async def test_a_body_over_the_limit_is_a_413(start: Factory, session: aiohttp.ClientSession) -> None:
    server = await start(max_body=1000)
    async with await post(session, server, chat(max_tokens=1)) as response:
        assert response.status == 200
    async with await post(session, server, chat(padding="x" * 2000)) as response:
        assert response.status == 413
        assert response.headers["connection"] == "close"
        assert "too large" in (await response.json())["error"]["message"]


async def test_garbage_is_a_400(server: SimServer) -> None:
    data = await raw_exchange(server, b"NOT HTTP AT ALL\r\n\r\n", b"}}")
    assert data.startswith(b"HTTP/1.1 400 Bad Request")


async def test_close_ends_open_connections(start: Factory, session: aiohttp.ClientSession) -> None:
    server = await start()
    request = asyncio.ensure_future(
        session.post(server.url + "/v1/chat/completions", json=chat(sim={"fault": "hang"}))
    )
    for _ in range(200):
        if server.simulator.stats.in_flight:
            break
        await asyncio.sleep(0.01)
    await server.close()
    with pytest.raises(aiohttp.ClientError):
        await request


# ------------------------------------------------------------------------------------------ a real client
async def test_the_official_openai_sdk_talks_to_it(server: SimServer) -> None:
    openai = pytest.importorskip("openai")
    client = openai.AsyncOpenAI(base_url=server.url + "/v1", api_key="sk-sim", max_retries=0)
    try:
        reply = await client.chat.completions.create(model="sim-1", messages=MESSAGES, max_tokens=12)
        assert reply.choices[0].finish_reason == "length"
        assert reply.usage is not None and reply.usage.completion_tokens == 12
        stream = await client.chat.completions.create(
            model="sim-1",
            messages=MESSAGES,
            max_tokens=12,
            stream=True,
            stream_options={"include_usage": True},
        )
        text, usage = "", None
        async for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
            usage = chunk.usage or usage
        assert text == reply.choices[0].message.content
        assert usage is not None and usage.total_tokens == reply.usage.total_tokens
        embedded = await client.embeddings.create(
            model="sim-embed-1", input=["alpha", "beta"]
        )  # base64 on the wire
        assert len(embedded.data[0].embedding) == SimOptions().embedding_dim
        with pytest.raises(openai.RateLimitError):
            await client.chat.completions.create(
                model="sim-1", messages=MESSAGES, extra_body={"sim": {"fault": "429"}}
            )
    finally:
        await client.close()
