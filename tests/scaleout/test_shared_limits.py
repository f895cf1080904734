"""Global limits and shared breaker state: in-process pipelines ("instances") sharing one real redis-server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from slipstream import Slipstream
from slipstream.config import Config, parse_config
from slipstream.errors import RateLimited, UpstreamStatusError
from slipstream.limits import Limiter
from slipstream.providers.sim import SimProvider
from tests.redis_server import redis_server, redis_url  # noqa: F401 - pytest fixtures


def config(url: str, limits: str, *, mode: str = "open", options: str = "{}", breaker: str = "") -> Config:
    return parse_config(
        f"""
cache: {{enabled: false}}
coalescing: {{enabled: false}}
redis: {{url: "{url}", timeout: 0.5, limits: {mode}}}
model_groups:
  g:
    retries: {{max_attempts: 1}}
    {breaker}
    deployments:
      - {{provider: sim, model: m, options: {options}, limits: {limits}}}
""",
        environ={},
    )


def sim(slip: Slipstream) -> SimProvider:
    g = slip.pipeline.resolve("g")
    provider = slip.pipeline.router.runtime(g, g.deployments[0]).provider
    assert isinstance(provider, SimProvider)
    return provider


def ask(text: str, **extra: Any) -> dict[str, Any]:
    return {"model": "g", "messages": [{"role": "user", "content": text}], **extra}


async def outcomes(slips: list[Slipstream], n: int) -> tuple[int, int]:
    results = await asyncio.gather(
        *(slips[i % len(slips)].chat(ask(f"question {i}")) for i in range(n)), return_exceptions=True
    )
    refused = sum(isinstance(r, RateLimited) for r in results)
    others = [r for r in results if isinstance(r, BaseException) and not isinstance(r, RateLimited)]
    assert not others, others
    return n - refused, refused


async def test_rpm_is_global_across_instances(redis_url: str) -> None:  # noqa: F811
    slips = [Slipstream(config(redis_url, "{rpm: 60, max_wait: 0}")) for _ in range(3)]
    try:
        admitted, refused = await outcomes(slips, 100)
        # Each instance alone would admit 60 (180 in all); shared, the three admit 60 together.
        assert (admitted, refused) == (60, 40)
        assert sum(sim(s).calls for s in slips) == 60
    finally:
        for s in slips:
            await s.aclose()


async def test_local_limits_without_redis_admit_per_instance(tmp_path) -> None:
    cfg = parse_config(
        """
cache: {enabled: false}
coalescing: {enabled: false}
model_groups:
  g:
    deployments: [{provider: sim, model: m, limits: {rpm: 60, max_wait: 0}}]
""",
        environ={},
    )
    slips = [Slipstream(cfg) for _ in range(3)]
    try:
        admitted, _ = await outcomes(slips, 100)
        assert admitted == 100  # the contrast: three separate budgets of 60
    finally:
        for s in slips:
            await s.aclose()


async def test_tpm_is_global_and_settled_to_actual_usage(redis_url: str) -> None:  # noqa: F811
    slips = [Slipstream(config(redis_url, "{tpm: 100000, max_wait: 0}")) for _ in range(2)]
    try:
        admitted, refused = await outcomes(slips, 10)
        assert (admitted, refused) == (10, 0)
        limits = slips[0].pipeline.scaleout.limits  # type: ignore[union-attr]
        assert limits is not None
        await asyncio.sleep(0.2)  # settles run in the background
        label = slips[0].pipeline.resolve("g").deployments[0].label
        _, tokens = await limits.backend.usage(f"dep:{label}")
        usage = sum(sim(s).stats.prompt_tokens + sim(s).stats.completion_tokens for s in slips)
        assert tokens == usage  # estimates were replaced by what the provider reported
    finally:
        for s in slips:
            await s.aclose()


async def test_concurrency_slots_are_shared_leases(redis_url: str) -> None:  # noqa: F811
    options = "{ttft: 0.15}"
    slips = [
        Slipstream(config(redis_url, "{max_concurrent: 2, max_wait: 10}", options=options)) for _ in range(2)
    ]
    peak = 0
    done = False

    async def sample() -> None:
        nonlocal peak
        while not done:
            peak = max(peak, sum(sim(s).stats.in_flight for s in slips))
            await asyncio.sleep(0.005)

    try:
        sampler = asyncio.ensure_future(sample())
        admitted, refused = await outcomes(slips, 8)
        done = True
        await sampler
        assert (admitted, refused) == (8, 0)
        assert peak == 2  # never more than two calls in flight across both instances
        limits = slips[0].pipeline.scaleout.limits  # type: ignore[union-attr]
        assert limits is not None
        await asyncio.sleep(0.2)
        label = slips[0].pipeline.resolve("g").deployments[0].label
        assert await limits.backend.slots_in_use(f"dep:{label}") == 0  # every lease given back
    finally:
        for s in slips:
            await s.aclose()


async def test_fail_open_falls_back_to_local_limits(redis_server) -> None:  # noqa: F811
    slip = Slipstream(config(redis_server.url, "{rpm: 5, max_wait: 0}"))
    redis_server.stop()
    try:
        admitted, refused = await outcomes([slip], 8)
        assert (admitted, refused) == (5, 3)  # the instance's own window holds the limit meanwhile
    finally:
        redis_server.start()
        await slip.aclose()


async def test_fail_closed_refuses_while_redis_is_down(redis_server) -> None:  # noqa: F811
    slip = Slipstream(config(redis_server.url, "{rpm: 5, max_wait: 0}", mode="closed"))
    redis_server.stop()
    try:
        with pytest.raises(RateLimited, match="Redis"):
            await slip.chat(ask("refused"))
        assert sim(slip).calls == 0
    finally:
        redis_server.start()
        await slip.aclose()


async def test_an_open_breaker_is_shared(redis_url: str) -> None:  # noqa: F811
    breaker = "breaker: {failures: 2, cooldown: 30}"
    slips = [Slipstream(config(redis_url, "{rpm: 1000}", breaker=breaker)) for _ in range(2)]
    try:
        await slips[1].chat(ask("warm up instance 1"))  # its runtime (and breaker) exist and are watched
        for i in range(2):
            with pytest.raises(UpstreamStatusError):
                await slips[0].chat(ask(f"fail {i}", sim={"fault": "500"}))
        g = slips[1].pipeline.resolve("g")
        other = slips[1].pipeline.router.runtime(g, g.deployments[0]).breaker
        assert other.state == "closed"
        await asyncio.sleep(0.1)  # the opening is published in the background
        health = slips[1].pipeline.scaleout.health  # type: ignore[union-attr]
        assert health is not None
        await health.sync()
        assert other.state == "open"
        assert health.trips == 1
    finally:
        for s in slips:
            await s.aclose()


async def test_a_providers_pause_is_shared(redis_url: str) -> None:  # noqa: F811
    slips = [
        Slipstream(config(redis_url, "{rpm: 1000, adaptive: true}", options="{rpm_limit: 2}"))
        for _ in range(2)
    ]

    def limiter(slip: Slipstream) -> Limiter:
        g = slip.pipeline.resolve("g")
        found = slip.pipeline.router.runtime(g, g.deployments[0]).limiter
        assert found is not None and found.adaptive is not None
        return found

    try:
        await slips[1].chat(ask("warm up instance 1"))
        # The sim allows 2 a minute and says so in x-ratelimit-* headers: after the second, instance 0's
        # adaptive rate pauses until the provider's window resets.
        await slips[0].chat(ask("first"))
        await slips[0].chat(ask("second"))
        paused, other = limiter(slips[0]), limiter(slips[1])
        assert paused.adaptive is not None and other.adaptive is not None
        assert paused.adaptive.paused_until > paused._now() + 1.0
        assert other.adaptive.paused_until <= other._now()  # instance 1 has not heard of it yet
        publisher, reader = (s.pipeline.scaleout.health for s in slips)  # type: ignore[union-attr]
        assert publisher is not None and reader is not None
        await publisher.sync()  # instance 0 publishes its pause (a background write)
        await asyncio.sleep(0.1)
        await reader.sync()  # instance 1 applies it
        assert other.adaptive.paused_until > other._now() + 1.0
        assert reader.pauses == 1
    finally:
        for s in slips:
            await s.aclose()


async def test_waiting_for_a_turn_respects_each_requests_own_max_wait(redis_url: str) -> None:  # noqa: F811
    # One call holds the only global slot for 2 s; a patient request waits for it at the head of this
    # instance's queue (asking Redis in turn); one with a 0.3 s deadline behind it is refused near its deadline,
    # not when the head finally gets its slot.
    import time

    from slipstream.limits.limiter import LimitSpec
    from slipstream.limits.redis import RedisLimitBackend
    from slipstream.limits.shared import SharedLimits

    limits = SharedLimits(RedisLimitBackend(redis_url, timeout=0.5))
    limiter = Limiter(LimitSpec(max_concurrent=1, max_wait=5.0), name="t", shared=limits.scope("t"))
    started = time.monotonic()

    async def hold() -> None:
        permit = await limiter.take(0)
        await asyncio.sleep(2.0)
        permit.release()

    async def impatient() -> float:
        await asyncio.sleep(0.1)
        with pytest.raises(RateLimited):
            await limiter.take(0, max_wait=0.3)
        return time.monotonic() - started

    try:
        holder = asyncio.ensure_future(hold())
        await asyncio.sleep(0.05)
        patient = asyncio.ensure_future(limiter.take(0))
        refused_at = await impatient()
        assert refused_at < 1.0  # 0.1 s start + 0.3 s wait (+ scheduling); it used to be ~2 s
        (await patient).release()
        await holder
    finally:
        await limits.aclose()
