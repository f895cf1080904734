"""The in-process sim provider: replies, streams, embeddings, pacing by the latency model, faults as errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from slipstream.errors import UpstreamProtocolError, UpstreamStatusError
from slipstream.providers import Deployment, get_provider_class
from slipstream.providers.http import HttpPool
from slipstream.providers.sim import SimProvider
from slipstream.sim import SimOptionError
from slipstream.types import ChatRequest, Chunk, EmbeddingsRequest

MESSAGES = [{"role": "user", "content": "Tell me about harbors."}]


class RecordingSleep:
    """Records the delays the provider asks for, without waiting."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


async def never_sleep(delay: float) -> None:
    raise AssertionError(f"the no-latency mode slept {delay}s")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def http() -> AsyncIterator[HttpPool]:
    pool = HttpPool()
    yield pool
    await pool.aclose()


def make(http: HttpPool, options: dict[str, Any] | None = None, **kw: Any) -> SimProvider:
    deployment = Deployment(provider="sim", model="sim-deployed", options=options or {})
    kw.setdefault("sleep", never_sleep)
    return SimProvider(deployment, http, **kw)


def request(**extra: Any) -> ChatRequest:
    return ChatRequest({"model": "alias", "messages": MESSAGES, **extra})


async def collect(stream: AsyncIterator[Chunk]) -> list[Chunk]:
    return [chunk async for chunk in stream]


def text_of(chunks: list[Chunk]) -> str:
    return "".join(c.data["choices"][0]["delta"].get("content") or "" for c in chunks if c.data["choices"])


def test_registered_as_sim() -> None:
    assert get_provider_class("sim") is SimProvider


def test_deployment_options_are_checked(http: HttpPool) -> None:
    with pytest.raises(SimOptionError, match="'latency'"):
        make(http, {"latency": 1})
    assert make(http, {"preset": "realistic"}).options.ttft == 0.5


async def test_complete_is_an_openai_chat_completion(http: HttpPool) -> None:
    provider = make(http)
    reply = await provider.complete(request())
    data = reply.data
    assert data["object"] == "chat.completion"
    assert data["model"] == "sim-deployed"
    assert reply.text and data["choices"][0]["finish_reason"] == "stop"
    usage = reply.usage
    assert usage is not None and usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert reply.headers is None  # no limits configured, no rate-limit headers
    again = await provider.complete(request(stream=True))
    assert again.text == reply.text and again.data["id"] != data["id"]
    assert provider.calls == 2
    assert provider.stats.by_path == {"chat": 2}


async def test_stream_is_role_content_finish_then_usage(http: HttpPool) -> None:
    provider = make(http)
    chunks = await collect(provider.stream(request()))
    first, finish, last = chunks[0], chunks[-2], chunks[-1]
    assert first.data["choices"][0]["delta"]["role"] == "assistant"
    assert finish.data["choices"][0]["finish_reason"] == "stop"
    assert last.is_usage_only
    assert all(c.data["model"] == "sim-deployed" for c in chunks)
    assert len({c.data["id"] for c in chunks}) == 1
    # The stream says what the complete reply says.
    reply = await provider.complete(request())
    assert text_of(chunks) == reply.text
    assert last.usage == reply.usage
    assert provider.calls == 2 and provider.stats.streams == 1
    assert provider.stats.in_flight == 0


async def test_max_tokens_in_a_stream_ends_with_length(http: HttpPool) -> None:
    chunks = await collect(make(http).stream(request(max_tokens=5)))
    assert chunks[-2].data["choices"][0]["finish_reason"] == "length"
    assert chunks[-1].usage is not None and chunks[-1].usage["completion_tokens"] == 5


async def test_latency_paces_replies_and_chunks(http: HttpPool) -> None:
    sleep = RecordingSleep()
    provider = make(http, {"ttft": 0.5, "tokens_per_s": 20, "chunk_tokens": 3}, sleep=sleep)
    reply = await provider.complete(request())
    tokens = reply.usage["completion_tokens"]  # type: ignore[index]
    assert sleep.delays == [pytest.approx(0.5 + tokens / 20)]
    sleep.delays.clear()
    chunks = await collect(provider.stream(request()))
    assert sleep.delays[0] == pytest.approx(0.5)  # the first chunk waits for the TTFT
    assert sum(sleep.delays[1:]) == pytest.approx(tokens / 20)  # the rest at 20 tokens/s
    assert max(sleep.delays[1:]) == pytest.approx(3 / 20)
    assert len(chunks) > 3


async def test_slow_stream_adds_gaps(http: HttpPool) -> None:
    sleep = RecordingSleep()
    provider = make(http, {"slow_stream_gap": 1.5}, sleep=sleep)
    chunks = await collect(provider.stream(request(sim={"fault": "slow_stream"})))
    # Every chunk after the first (the usage chunk comes right after the finish chunk) waits the gap.
    assert sleep.delays == [1.5] * (len(chunks) - 2)
    assert provider.stats.faults == {"slow_stream": 1}


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_server_errors_raise_upstream_status(http: HttpPool, status: int) -> None:
    provider = make(http)
    with pytest.raises(UpstreamStatusError) as info:
        await provider.complete(request(sim={"fault": str(status)}))
    assert info.value.upstream_status == status
    assert info.value.status == 502 and info.value.provider == "sim"
    with pytest.raises(UpstreamStatusError):
        await collect(provider.stream(request(sim={"fault": str(status)})))


async def test_429_carries_retry_after(http: HttpPool) -> None:
    provider = make(http, {"retry_after": 4})
    with pytest.raises(UpstreamStatusError) as info:
        await provider.complete(request(sim={"fault": "429"}))
    error = info.value
    assert (error.upstream_status, error.status, error.retry_after) == (429, 429, 4.0)
    assert error.headers["retry-after"] == "4"


async def test_rpm_limit_and_headers(http: HttpPool) -> None:
    clock = FakeClock()
    provider = make(http, {"rpm_limit": 2, "tpm_limit": 100_000}, clock=clock)
    first = await provider.complete(request())
    assert first.headers is not None
    assert first.headers["x-ratelimit-limit-requests"] == "2"
    assert first.headers["x-ratelimit-remaining-requests"] == "1"
    assert first.headers["x-ratelimit-reset-requests"] == "1m0s"
    used = first.usage["total_tokens"]  # type: ignore[index]
    assert first.headers["x-ratelimit-remaining-tokens"] == str(100_000 - used)
    clock.now = 15.0
    await collect(provider.stream(request()))
    with pytest.raises(UpstreamStatusError) as info:
        await provider.complete(request())
    assert info.value.upstream_status == 429
    assert info.value.retry_after == pytest.approx(45.0)
    assert info.value.headers["x-ratelimit-remaining-requests"] == "0"
    clock.now = 60.0
    assert (await provider.complete(request())).text


async def test_malformed_raises_protocol_error(http: HttpPool) -> None:
    provider = make(http)
    with pytest.raises(UpstreamProtocolError, match="not JSON"):
        await provider.complete(request(sim={"fault": "malformed"}))
    with pytest.raises(UpstreamProtocolError):
        await collect(provider.stream(request(sim={"fault": "malformed"})))


async def test_broken_stream_raises_after_some_chunks(http: HttpPool) -> None:
    provider = make(http)
    full = await collect(provider.stream(request()))
    received: list[Chunk] = []
    with pytest.raises(UpstreamProtocolError, match="broke off"):
        async for chunk in provider.stream(request(sim={"fault": "broken_stream"})):
            received.append(chunk)
    assert 1 <= len(received) < len(full) - 1
    assert not any(c.data["choices"] and c.data["choices"][0]["finish_reason"] for c in received)
    with pytest.raises(UpstreamProtocolError):
        await provider.complete(request(sim={"fault": "broken_stream"}))
    assert provider.stats.in_flight == 0


async def test_hang_waits_until_cancelled(http: HttpPool) -> None:
    provider = make(http)
    task = asyncio.ensure_future(provider.complete(request(sim={"fault": "hang"})))
    done, _ = await asyncio.wait({task}, timeout=0.05)
    assert not done and provider.stats.in_flight == 1
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert provider.stats.in_flight == 0
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(collect(provider.stream(request(sim={"fault": "hang"}))), 0.05)
    assert provider.stats.in_flight == 0


async def test_a_bad_request_is_the_upstreams_400(http: HttpPool) -> None:
    provider = make(http)
    with pytest.raises(UpstreamStatusError) as info:
        await provider.complete(request(max_tokens=-1))
    assert info.value.upstream_status == 400 and info.value.status == 400
    assert info.value.param == "max_tokens"
    with pytest.raises(UpstreamStatusError) as bad_override:
        await provider.complete(request(sim={"nope": 1}))
    assert "'nope'" in bad_override.value.message


async def test_embed(http: HttpPool) -> None:
    provider = make(http, {"embedding_dim": 16})
    reply = await provider.embed(EmbeddingsRequest({"model": "alias", "input": ["a b", "c"]}))
    data = reply.data
    assert data["model"] == "sim-deployed"
    assert [d["index"] for d in data["data"]] == [0, 1]
    assert len(data["data"][0]["embedding"]) == 16
    assert data["usage"]["prompt_tokens"] == 1 + 1  # ~4 characters a token, at least 1 per input
    again = await provider.embed(EmbeddingsRequest({"model": "alias", "input": "a b"}))
    assert again.data["data"][0]["embedding"] == data["data"][0]["embedding"]
    with pytest.raises(UpstreamStatusError) as info:
        await provider.embed(EmbeddingsRequest({"model": "alias", "input": "a", "sim": {"fault": "503"}}))
    assert info.value.upstream_status == 503
    with pytest.raises(UpstreamStatusError) as bad:
        await provider.embed(EmbeddingsRequest({"model": "alias", "input": []}))
    assert bad.value.status == 400
    assert provider.calls == 4 and provider.stats.by_path == {"embeddings": 4}


async def test_embed_waits_the_ttft(http: HttpPool) -> None:
    sleep = RecordingSleep()
    provider = make(http, {"ttft": 0.3}, sleep=sleep)
    await provider.embed(EmbeddingsRequest({"model": "alias", "input": "x"}))
    assert sleep.delays == [0.3]
