"""Traffic control through the whole in-process pipeline (``Slipstream``): cache, coalescing, key limits, router.

Upstreams are the in-process ``sim`` provider (deployment-level options pick its faults and latency) and small
aiohttp servers on 127.0.0.1 playing OpenAI or Anthropic. Real waits are kept to fractions of a second.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import openai
import pytest
from aiohttp import web

from slipstream import Slipstream
from slipstream.config import Config, parse_config
from slipstream.errors import RateLimited, UpstreamStatusError, UpstreamTimeout
from slipstream.gateway.edge import Edge
from slipstream.limits.layer import KeyLimitLayer
from slipstream.providers.sim import SimProvider

MESSAGES = [{"role": "user", "content": "Tell me about traffic control."}]
FIXTURES = Path(__file__).parent.parent / "providers" / "fixtures" / "anthropic"


def free_port() -> int:
    """A loopback port nobody listens on (bound, then released): connecting to it is refused."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def config(groups: str, *, extra: str = "") -> Config:
    return parse_config(
        f"""
cache:
  sqlite: {{enabled: false}}
{extra}
model_groups:
{groups}
""",
        environ={},
    )


def sim(slip: Slipstream, group: str = "g", index: int = 0) -> SimProvider:
    g = slip.pipeline.resolve(group)
    provider = slip.pipeline.router.runtime(g, g.deployments[index]).provider
    assert isinstance(provider, SimProvider)
    return provider


async def collect(stream: AsyncIterator[dict[str, Any]]) -> str:
    return "".join([c["delta"].get("content") or "" async for chunk in stream for c in chunk["choices"]])


# ------------------------------------------------------------------------------------------ local upstreams
class Server:
    """An aiohttp server on a free loopback port that answers every POST with ``respond`` and counts hits."""

    def __init__(self, respond: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> None:
        self.respond = respond
        self.hits = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.hits += 1
        await request.read()
        return await self.respond(request)

    async def start(self) -> Server:
        app = web.Application()
        app.router.add_route("POST", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def servers() -> AsyncIterator[Callable[..., Awaitable[Server]]]:
    started: list[Server] = []

    async def start(respond: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> Server:
        server = await Server(respond).start()
        started.append(server)
        return server

    yield start
    for server in started:
        await server.stop()


def status(code: int, message: str = "nope") -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def respond(request: web.Request) -> web.StreamResponse:
        body = {"error": {"message": message, "type": "invalid_request_error", "param": None, "code": None}}
        return web.json_response(body, status=code)

    return respond


def anthropic_fixture() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / "simple_text.json").read_text())
    return data


# ------------------------------------------------------------------------------------------ 1. coalescing
ONE_SLOW_SIM = """
  g:
    deployments:
      - {provider: sim, model: s, options: {ttft: 0.05, tokens_per_s: 2000, reply_tokens_min: 60}}
"""


async def test_100_concurrent_identical_requests_make_one_upstream_call():
    async with Slipstream(config(ONE_SLOW_SIM)) as slip:
        replies = await asyncio.gather(*(slip.chat(model="g", messages=MESSAGES) for _ in range(100)))
        assert sim(slip).calls == 1
        assert len({r.text for r in replies}) == 1 and replies[0].text
        assert slip.stats()["coalescing"] == {"flights": 1, "coalesced": 99}
        # Afterwards the cache answers: still one call.
        assert (await slip.chat(model="g", messages=MESSAGES)).cache == "hit"
        assert sim(slip).calls == 1


async def test_100_concurrent_identical_streams_make_one_upstream_call():
    async with Slipstream(config(ONE_SLOW_SIM)) as slip:
        texts = await asyncio.gather(
            *(collect(slip.stream(model="g", messages=MESSAGES)) for _ in range(100))
        )
        assert sim(slip).calls == 1
        assert len(set(texts)) == 1 and texts[0]
        assert slip.stats()["coalescing"]["coalesced"] == 99


async def test_a_cancelled_follower_does_not_disturb_the_others():
    async with Slipstream(config(ONE_SLOW_SIM)) as slip:
        first_chunk = asyncio.Event()

        async def quitter() -> None:
            async for _ in slip.stream(model="g", messages=MESSAGES):
                first_chunk.set()
                await asyncio.sleep(10)  # cancelled while holding the stream

        others = [asyncio.ensure_future(collect(slip.stream(model="g", messages=MESSAGES))) for _ in range(9)]
        leaver = asyncio.ensure_future(quitter())
        await asyncio.wait_for(first_chunk.wait(), 2)
        leaver.cancel()
        texts = await asyncio.gather(*others)
        with pytest.raises(asyncio.CancelledError):
            await leaver
        assert sim(slip).calls == 1
        assert len(set(texts)) == 1 and len(texts[0]) > 20


# ------------------------------------------------------------------------------------------ 2./3. failover
async def test_failover_to_the_second_sim_deployment():
    groups = """
  g:
    deployments:
      - {provider: sim, model: s, name: broken, options: {error_rate: 1.0}}
      - {provider: sim, model: s, name: healthy}
"""
    async with Slipstream(config(groups)) as slip:
        reply = await slip.chat(model="g", messages=MESSAGES)
        assert reply.deployment == "healthy" and reply.text
        assert (sim(slip, index=0).calls, sim(slip, index=1).calls) == (1, 1)
        assert slip.stats()["routing"]["fallbacks"] == 1
        # The attempts reach HTTP clients as a header (the in-process transport shares the edge).
        client = openai.AsyncOpenAI(api_key="unused", http_client=slip.http_client(), max_retries=0)
        raw = await client.chat.completions.with_raw_response.create(model="g", messages=[*MESSAGES] * 2)
        assert raw.headers["x-slipstream-attempts"] == "2"
        assert raw.headers["x-slipstream-deployment"] == "healthy"
        await client.close()


@pytest.mark.parametrize("first", ["dead port", "503 server"])
async def test_cross_provider_fallback_openai_to_anthropic(first: str, servers: Any):
    fixture = anthropic_fixture()

    async def anthropic(request: web.Request) -> web.StreamResponse:
        assert request.path == "/v1/messages"
        return web.json_response(fixture["anthropic_response"])

    claude = await servers(anthropic)
    if first == "dead port":
        openai_url = f"http://127.0.0.1:{free_port()}/v1"
    else:
        openai_url = f"{(unavailable := await servers(status(503, 'overloaded'))).url}/v1"
    groups = f"""
  g:
    deployments:
      - {{provider: openai, model: gpt-x, name: openai-first, api_key: k, base_url: "{openai_url}"}}
      - {{provider: anthropic, model: claude-x, name: claude, api_key: k, base_url: "{claude.url}"}}
"""
    async with Slipstream(config(groups)) as slip:
        reply = await slip.chat(model="g", messages=MESSAGES)
    assert reply.deployment == "claude" and claude.hits == 1
    if first == "503 server":
        assert unavailable.hits == 1
    assert reply["object"] == "chat.completion"
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": "Hi! My name is Claude."}
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply.usage is not None and reply.usage["completion_tokens"] == 12


# ------------------------------------------------------------------------------------------ 4. no retry on 400
async def test_an_upstream_400_is_raised_after_exactly_one_call(servers: Any):
    bad = await servers(status(400, "messages are wrong"))
    spare = await servers(status(200))
    groups = f"""
  g:
    fallback_reply: "never for a 400"
    deployments:
      - {{provider: openai, model: m, name: first, api_key: k, base_url: "{bad.url}/v1"}}
      - {{provider: openai, model: m, name: second, api_key: k, base_url: "{spare.url}/v1"}}
"""
    async with Slipstream(config(groups)) as slip:
        with pytest.raises(UpstreamStatusError) as info:
            await slip.chat(model="g", messages=MESSAGES)
        assert info.value.status == 400 and "messages are wrong" in info.value.message
        assert (bad.hits, spare.hits) == (1, 0)
        assert slip.stats()["routing"]["retries"] == 0
        assert slip.health()["g"][0]["breaker"]["consecutive_failures"] == 0


# ------------------------------------------------------------------------------------------ 5. retries
async def test_retries_of_a_429_wait_the_retry_after_on_the_routers_sleep():
    groups = """
  g:
    retries: {max_attempts: 3, base_delay: 0.01, max_delay: 0.02}
    deployments:
      - {provider: sim, model: s, options: {rate_429: 1.0, retry_after: 7}}
"""
    async with Slipstream(config(groups)) as slip:
        slept: list[float] = []

        async def fake_sleep(seconds: float) -> None:
            slept.append(seconds)

        slip.pipeline.router.sleep = fake_sleep
        with pytest.raises(UpstreamStatusError) as info:
            await slip.chat(model="g", messages=MESSAGES)
        assert info.value.status == 429
        assert sim(slip).calls == 3
        assert slept == [7.0, 7.0]  # max(jittered backoff <= 0.02, Retry-After 7)


# ------------------------------------------------------------------------------------------ 6. deadline
HANGING = """
  g:
    timeout: {timeout}
    retries: {{max_attempts: 5, base_delay: 0.0, max_delay: 0.0}}
    deployments:
      - {{provider: sim, model: s, name: a, options: {{hang_rate: 1.0}}, timeouts: {{total: 2}}}}
      - {{provider: sim, model: s, name: b, options: {{hang_rate: 1.0}}, timeouts: {{total: 2}}}}
"""


async def test_group_timeout_caps_the_whole_request_against_hanging_upstreams():
    async with Slipstream(config(HANGING.format(timeout=0.3))) as slip:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await slip.chat(model="g", messages=MESSAGES)
        elapsed = time.monotonic() - started
        assert 0.25 <= elapsed < 0.8  # 5 rounds x 2 deployments x 2 s each would be 20 s
        assert sim(slip, index=0).calls + sim(slip, index=1).calls == 1


async def test_stream_timeout_argument_caps_the_whole_request():
    async with Slipstream(config(HANGING.format(timeout=0))) as slip:
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout):
            await collect(slip.stream(model="g", messages=MESSAGES, timeout=0.3))
        assert time.monotonic() - started < 0.8


async def test_chat_timeout_argument_caps_the_whole_request():
    async with Slipstream(config(HANGING.format(timeout=0))) as slip:
        with pytest.raises(UpstreamTimeout):
            await asyncio.wait_for(slip.chat(model="g", messages=MESSAGES, timeout=0.2), 0.6)


# ------------------------------------------------------------------------------------------ 7. breaker
async def test_breaker_opens_through_the_pipeline_and_health_shows_it():
    groups = """
  g:
    retries: {max_attempts: 1}
    breaker: {failures: 3, cooldown: 30}
    deployments:
      - {provider: sim, model: s, name: broken, options: {error_rate: 1.0}}
      - {provider: sim, model: s, name: healthy}
"""
    async with Slipstream(config(groups)) as slip:
        for i in range(6):
            reply = await slip.chat(model="g", messages=[{"role": "user", "content": f"q{i}"}])
            assert reply.deployment == "healthy"
        assert sim(slip, index=0).calls == 3  # skipped once open
        states = {d["deployment"]: d["breaker"]["state"] for d in slip.health()["g"]}
        assert states == {"broken": "open", "healthy": "closed"}


# ------------------------------------------------------------------------------------------ 9. hedging
async def test_hedge_answers_from_the_fast_deployment():
    groups = """
  g:
    hedge: {after: 0.05}
    deployments:
      - {provider: sim, model: s, name: slow, options: {ttft: 1.0}}
      - {provider: sim, model: s, name: fast}
"""
    async with Slipstream(config(groups)) as slip:
        started = time.monotonic()
        reply = await slip.chat(model="g", messages=MESSAGES)
        assert time.monotonic() - started < 0.5
        assert reply.deployment == "fast"
        routing = slip.stats()["routing"]
        assert (routing["hedges"], routing["hedge_wins"]) == (1, 1)
        assert sim(slip, index=0).stats.in_flight == 0  # the slow attempt was cancelled


async def test_hedging_leaves_the_fast_path_alone():
    groups = """
  g:
    hedge: {after: 0.5}
    deployments:
      - {provider: sim, model: s, name: first}
      - {provider: sim, model: s, name: second}
"""
    async with Slipstream(config(groups)) as slip:
        for i in range(5):
            reply = await slip.chat(model="g", messages=[{"role": "user", "content": f"q{i}"}])
            assert reply.deployment == "first"
        assert sim(slip, index=1).calls == 0
        assert slip.stats()["routing"]["hedges"] == 0


# ------------------------------------------------------------------------------------------ 10. static fallback
async def test_static_fallback_reply_is_not_cached():
    groups = """
  g:
    retries: {max_attempts: 1}
    fallback_reply: "We are busy, please try again."
    deployments:
      - {provider: sim, model: s, options: {error_rate: 1.0}}
"""
    async with Slipstream(config(groups)) as slip:
        first = await slip.chat(model="g", messages=MESSAGES)
        second = await slip.chat(model="g", messages=MESSAGES)
        assert first.text == second.text == "We are busy, please try again."
        assert second.cache != "hit"
        assert sim(slip).calls == 2  # the second went upstream again
        assert slip.stats()["routing"]["static_fallbacks"] == 2
        edge = Edge(slip.pipeline, trusted_namespace="default")
        body = json.dumps({"model": "g", "messages": MESSAGES}).encode()
        response = await edge.handle("POST", "/v1/chat/completions", {}, body)
        assert response.status == 200
        assert (b"x-slipstream-fallback", b"static") in response.headers
        assert sim(slip).calls == 3


# ------------------------------------------------------------------------------------------ 11. limits
KEYED = """
keys:
  - {key: sk-one, name: one, limits: {rpm: 5, max_wait: 0}}
"""


async def test_a_deployment_limit_refusal_refunds_the_keys_budget():
    groups = """
  g:
    deployments:
      - {provider: sim, model: s, limits: {rpm: 1, max_wait: 0}}
"""
    async with Slipstream(config(groups, extra=KEYED)) as slip:
        edge = Edge(slip.pipeline)
        headers = {"authorization": "Bearer sk-one"}
        statuses = []
        for i in range(4):
            body = json.dumps({"model": "g", "messages": [{"role": "user", "content": f"q{i}"}]}).encode()
            response = await edge.handle("POST", "/v1/chat/completions", headers, body)
            statuses.append(response.status)
        assert statuses == [200, 429, 429, 429]  # the deployment allows 1/min
        (layer,) = [layer for layer in slip.pipeline.layers if isinstance(layer, KeyLimitLayer)]
        key = layer.limiters["one"].stats()
        assert key["rpm_used"] == 1  # the three refused requests gave their key budget back
        assert sim(slip).calls == 1


async def test_a_key_limit_refusal_is_a_429_with_retry_after():
    groups = """
  g:
    deployments: [{provider: sim, model: s}]
"""
    async with Slipstream(config(groups, extra=KEYED)) as slip:
        edge = Edge(slip.pipeline)
        headers = {"authorization": "Bearer sk-one"}
        for i in range(6):
            body = json.dumps({"model": "g", "messages": [{"role": "user", "content": f"q{i}"}]}).encode()
            response = await edge.handle("POST", "/v1/chat/completions", headers, body)
        assert response.status == 429
        retry_after = dict(response.headers)[b"retry-after"]
        assert 1 <= int(retry_after) <= 60
        assert json.loads(response.body)["error"]["type"] == "rate_limit_error"
        assert sim(slip).calls == 5
        # Cached answers spend no key budget.
        cached = json.dumps({"model": "g", "messages": [{"role": "user", "content": "q0"}]}).encode()
        assert (await edge.handle("POST", "/v1/chat/completions", headers, cached)).status == 200


async def test_sdk_sees_a_deployment_limit_as_rate_limited():
    groups = """
  g:
    deployments: [{provider: sim, model: s, limits: {rpm: 1, max_wait: 0}}]
"""
    async with Slipstream(config(groups)) as slip:
        await slip.chat(model="g", messages=MESSAGES)
        with pytest.raises(RateLimited) as info:
            await slip.chat(model="g", messages=[{"role": "user", "content": "another"}])
        assert info.value.retry_after is not None and 0 < info.value.retry_after <= 60


async def test_a_stream_dropped_before_it_was_read_gives_its_permits_back():
    # A client that leaves before the response headers go out leaves its stream unread. The key's and the
    # deployment's concurrency permits (released in the stream wrappers' `finally`) must still come back.
    import gc

    groups = """
  g:
    deployments: [{provider: sim, model: s, limits: {max_concurrent: 1, max_wait: 0}}]
"""
    keyed = """
coalescing: {enabled: false}
keys:
  - {key: sk-one, name: one, limits: {max_concurrent: 1, max_wait: 0}}
"""
    async with Slipstream(config(groups, extra=keyed)) as slip:
        edge = Edge(slip.pipeline)
        headers = {"authorization": "Bearer sk-one"}
        for i in range(3):
            body = {"model": "g", "messages": [{"role": "user", "content": f"drop {i}"}], "stream": True}
            response = await edge.handle("POST", "/v1/chat/completions", headers, json.dumps(body).encode())
            assert response.status == 200 and response.stream is not None
            del response  # never iterated, never closed
            gc.collect()
            for _ in range(5):  # the loop runs the collected generators' aclose()
                await asyncio.sleep(0)
        assert sim(slip).calls == 3
        observer = slip.pipeline.observer
        assert observer is not None and observer.metrics.in_flight == 0  # and each request was recorded
