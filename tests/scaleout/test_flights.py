"""Cross-instance coalescing: several in-process pipelines (one per "instance") sharing one real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from slipstream import Slipstream
from slipstream.config import Config, parse_config
from slipstream.errors import UpstreamStatusError
from slipstream.providers.sim import SimProvider
from tests.redis_server import redis_server, redis_url  # noqa: F401 - pytest fixtures


def config(url: str, *, ttft: float = 0.3, extra: str = "") -> Config:
    return parse_config(
        f"""
cache: {{enabled: false}}
redis: {{url: "{url}", timeout: 0.5}}
{extra}
model_groups:
  g:
    retries: {{max_attempts: 1}}
    deployments:
      - {{provider: sim, model: m, options: {{ttft: {ttft}, tokens_per_s: 200}}}}
""",
        environ={},
    )


def sim(slip: Slipstream) -> SimProvider:
    g = slip.pipeline.resolve("g")
    provider = slip.pipeline.router.runtime(g, g.deployments[0]).provider
    assert isinstance(provider, SimProvider)
    return provider


async def instances(url: str, n: int, **kw: Any) -> list[Slipstream]:
    return [Slipstream(config(url, **kw)) for _ in range(n)]


async def close(slips: list[Slipstream]) -> None:
    for s in slips:
        await s.aclose()


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "g", "messages": [{"role": "user", "content": text}], **extra}


async def collect(stream: AsyncIterator[dict[str, Any]]) -> str:
    return "".join([c["delta"].get("content") or "" async for chunk in stream for c in chunk["choices"]])


async def test_identical_requests_across_instances_make_one_upstream_call(redis_url: str) -> None:  # noqa: F811
    slips = await instances(redis_url, 3)
    try:
        replies = await asyncio.gather(
            *(slips[i % 3].chat(ask("one question for everyone")) for i in range(30))
        )
        assert len({r.text for r in replies}) == 1
        assert sum(sim(s).calls for s in slips) == 1
    finally:
        await close(slips)


async def test_streamed_followers_get_every_chunk_of_the_leaders_stream(redis_url: str) -> None:  # noqa: F811
    slips = await instances(redis_url, 2)
    try:
        leader = asyncio.ensure_future(collect(slips[0].stream(ask("stream it to both"))))
        await asyncio.sleep(0.1)  # the leader holds the lease; its first chunk comes at ttft
        follower = await collect(slips[1].stream(ask("stream it to both")))
        assert follower == await leader
        assert follower
        assert sim(slips[0]).calls == 1 and sim(slips[1]).calls == 0
        # A non-streamed follower of a streamed flight gets the assembled reply.
        leader2 = asyncio.ensure_future(collect(slips[0].stream(ask("mixed shapes"))))
        await asyncio.sleep(0.1)
        reply = await slips[1].chat(ask("mixed shapes"))
        assert reply.text == await leader2
    finally:
        await close(slips)


async def test_namespaces_never_share_a_flight(redis_url: str) -> None:  # noqa: F811
    slips = await instances(redis_url, 2)
    try:
        await asyncio.gather(
            slips[0].chat(ask("same words"), namespace="tenant-a"),
            slips[1].chat(ask("same words"), namespace="tenant-b"),
        )
        assert sim(slips[0]).calls == 1 and sim(slips[1]).calls == 1
    finally:
        await close(slips)


async def test_the_leaders_error_reaches_followers_and_is_not_kept(redis_url: str) -> None:  # noqa: F811
    slips = await instances(redis_url, 2)
    try:
        body = ask("fail for both", sim={"fault": "500"})
        results = await asyncio.gather(slips[0].chat(body), slips[1].chat(body), return_exceptions=True)
        assert all(isinstance(r, UpstreamStatusError) and r.upstream_status == 500 for r in results)
        assert sim(slips[0]).calls + sim(slips[1]).calls == 1
        # The error is not served to a later request: it goes upstream again.
        with pytest.raises(UpstreamStatusError):
            await slips[1].chat(body)
        assert sim(slips[0]).calls + sim(slips[1]).calls == 2
    finally:
        await close(slips)


async def test_a_follower_takes_over_when_the_leader_goes_away(redis_url: str) -> None:  # noqa: F811
    slips = await instances(redis_url, 2, ttft=0.5)
    try:
        leader = asyncio.ensure_future(slips[0].chat(ask("leader leaves")))
        await asyncio.sleep(0.1)
        follower = asyncio.ensure_future(slips[1].chat(ask("leader leaves")))
        await asyncio.sleep(0.1)
        leader.cancel()  # its client left: nobody on instance 0 waits, so its upstream call is dropped
        reply = await follower
        assert reply.text
        assert sim(slips[1]).calls == 1  # the follower called upstream itself
        assert slips[1].pipeline.scaleout is not None
        flights = slips[1].pipeline.scaleout.flights
        assert flights is not None and flights.takeovers == 1
    finally:
        await close(slips)


async def test_redis_down_means_local_calls_not_failures(redis_server) -> None:  # noqa: F811
    url = redis_server.url
    slips = await instances(url, 2, ttft=0.05)
    redis_server.stop()
    try:
        replies = await asyncio.gather(*(slips[i % 2].chat(ask("redis is gone")) for i in range(6)))
        assert len({r.text for r in replies}) == 1
        # In-process coalescing still works: one call per instance.
        assert sim(slips[0]).calls == 1 and sim(slips[1]).calls == 1
        for i in range(3):  # a few failures in a row mark Redis down (and it is logged once)
            await slips[0].chat(ask(f"another question {i}"))
        status = slips[0].pipeline.redis_status()
        assert status is not None and status["healthy"] is False and status["coordination"] is False
    finally:
        redis_server.start()
        await close(slips)


async def test_a_lease_taken_after_the_set_timed_out_is_given_back(redis_url: str) -> None:  # noqa: F811
    # Instance A stops waiting for its SET (timeout far below a round trip) but the SET lands: A is then the
    # lease holder without knowing it, and calls upstream itself. B must not follow that silent flight.
    import time

    from redis.asyncio import Redis

    from slipstream.call import Call
    from slipstream.scaleout.flights import RedisFlights
    from slipstream.stores.redis import Health, RedisCalls
    from slipstream.stores.redis_connect import connect
    from slipstream.types import ChatRequest, Reply

    ca, cb = connect(redis_url), connect(redis_url)
    raw = Redis.from_url(redis_url)
    a = RedisFlights(ca, RedisCalls("a", Health()), timeout=0.00001, lease=3.0)
    b = RedisFlights(cb, RedisCalls("b", Health()), timeout=0.5, lease=3.0)
    body = ask("orphan")

    async def upstream(call: Call) -> Reply:
        await asyncio.sleep(0.05)
        return Reply(body=b'{"choices": []}')

    try:
        await a(Call(ChatRequest(dict(body))), upstream)
        for _ in range(100):  # the abandoned SET finishes, then its undo
            if not await raw.keys("slipstream:flight:*"):
                break
            await asyncio.sleep(0.01)
        assert await raw.keys("slipstream:flight:*") == []
        started = time.monotonic()
        await b(Call(ChatRequest(dict(body))), upstream)
        assert time.monotonic() - started < 1.0 and b.takeovers == 0 and b.led == 1
    finally:
        await a.aclose()
        await ca.aclose()
        await cb.aclose()
        await raw.aclose()


async def test_a_renewal_keeps_a_silent_stream_alive_with_its_lease(redis_url: str) -> None:  # noqa: F811
    from redis.asyncio import Redis

    from slipstream.call import Call
    from slipstream.scaleout.flights import RedisFlights
    from slipstream.stores.redis import Health, RedisCalls
    from slipstream.stores.redis_connect import connect
    from slipstream.types import ChatRequest, Chunk

    client = connect(redis_url)
    raw = Redis.from_url(redis_url)
    flights = RedisFlights(client, RedisCalls("a", Health()), timeout=0.5, lease=0.3, grace=0.1)
    gap = asyncio.Event()

    async def chunks() -> AsyncIterator[Chunk]:
        yield Chunk({"choices": [{"index": 0, "delta": {"content": "first"}}]})
        await gap.wait()  # a long silence: several lease periods, more than lease + grace
        yield Chunk({"choices": [{"index": 0, "delta": {"content": " second"}}]})

    async def upstream(call: Call) -> AsyncIterator[Chunk]:
        return chunks()

    try:
        stream = await flights(Call(ChatRequest(ask("slow stream", stream=True))), upstream)
        first = await anext(stream)
        assert first.data["choices"][0]["delta"]["content"] == "first"
        await asyncio.sleep(1.0)
        streams = [k for k in await raw.keys("slipstream:flight:*") if not k.endswith(b"}")]
        assert len(streams) == 1 and await raw.xlen(streams[0]) == 1  # the first chunk is still there
        gap.set()
        rest = [c.data["choices"][0]["delta"]["content"] async for c in stream]
        assert rest == [" second"]
    finally:
        await flights.aclose()
        await client.aclose()
        await raw.aclose()
