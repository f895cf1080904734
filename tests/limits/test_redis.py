"""RedisLimitBackend against a real redis-server (see tests/redis_server.py): no mocks.

Several backends with their own clients stand for several gateway instances sharing one Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from slipstream.limits.redis import Grant, LimitBackendUnavailable, RedisLimitBackend, limit_keys
from tests.redis_server import RedisServer, raw, redis_server, redis_url  # noqa: F401

OpenBackend = Callable[..., RedisLimitBackend]


@pytest.fixture
async def open_backend(redis_url: str) -> AsyncIterator[OpenBackend]:  # noqa: F811
    backends: list[RedisLimitBackend] = []

    def make(**kwargs: object) -> RedisLimitBackend:
        kwargs.setdefault("timeout", 2.0)  # generous: a loaded machine must not turn checks into failures
        backend = RedisLimitBackend(redis_url, **kwargs)  # type: ignore[arg-type]
        backends.append(backend)
        return backend

    yield make
    for backend in backends:
        await backend.aclose()


async def test_keys_of_a_scope_share_one_slot(open_backend: OpenBackend, raw: aioredis.Redis) -> None:  # noqa: F811
    backend = open_backend()
    keys = limit_keys("deploy:gpt-4o@eu")
    assert len({key_slot(k.encode()) for k in keys.values()}) == 1
    assert (await backend.try_acquire("deploy:gpt-4o@eu", 10, 1000, 5)).admitted
    assert await backend.acquire_slot("deploy:gpt-4o@eu", 2) != (None, 0.0)
    stored = {k.decode() async for k in raw.scan_iter(match="slipstream:limit:*")}
    assert stored == set(keys.values())
    assert all(0 < ttl <= 61_000 for ttl in [await raw.pttl(k) for k in stored])  # idle scopes vanish


async def test_exact_rpm_admissions_across_three_instances(open_backend: OpenBackend) -> None:
    instances = [open_backend() for _ in range(3)]
    assert len({id(b.client) for b in instances}) == 3
    grants = await asyncio.gather(*(instances[i % 3].try_acquire("s", 50, None) for i in range(300)))
    admitted = [g for g in grants if g.admitted]
    assert len(admitted) == 50
    assert all(0.0 < g.wait <= 60.02 for g in grants if not g.admitted)
    assert await instances[0].usage("s") == (50, 0)


async def test_exact_tpm_admissions_across_three_instances(open_backend: OpenBackend) -> None:
    instances = [open_backend() for _ in range(3)]
    grants = await asyncio.gather(*(instances[i % 3].try_acquire("s", 10_000, 1000, 30) for i in range(100)))
    assert sum(g.admitted for g in grants) == 33  # 33 * 30 = 990 fits, a 34th would make 1020
    assert await instances[1].usage("s") == (33, 990)  # refused ones consumed no request either


async def test_two_phase_tpm_refusal_consumes_no_request(open_backend: OpenBackend) -> None:
    backend = open_backend()
    assert (await backend.try_acquire("s", 10, 100, 80)).admitted
    refused = await backend.try_acquire("s", 10, 100, 50)
    assert not refused.admitted and refused.wait > 59.0
    assert await backend.usage("s") == (1, 80)
    assert (await backend.try_acquire("s", 10, 100, 20)).admitted
    assert await backend.usage("s") == (2, 100)


async def test_rpm_refusal_consumes_no_tokens(open_backend: OpenBackend) -> None:
    backend = open_backend()
    assert (await backend.try_acquire("s", 1, 1000, 10)).admitted
    assert not (await backend.try_acquire("s", 1, 1000, 10)).admitted
    assert await backend.usage("s") == (1, 10)


async def test_cost_above_the_limit_fits_an_empty_window(open_backend: OpenBackend) -> None:
    backend = open_backend()
    assert (await backend.try_acquire("s", None, 100, 500)).admitted
    assert not (await backend.try_acquire("s", None, 100, 1)).admitted


async def test_wait_is_when_the_oldest_bucket_expires(open_backend: OpenBackend) -> None:
    # Redis's TIME cannot be faked: a short real window instead.
    backend = open_backend(window=0.4, granularity=0.01)
    started = time.monotonic()
    assert (await backend.try_acquire("s", 2, None)).admitted
    assert (await backend.try_acquire("s", 2, None)).admitted
    refused = await backend.try_acquire("s", 2, None)
    elapsed = time.monotonic() - started
    assert not refused.admitted
    assert 0.4 - elapsed - 0.01 <= refused.wait <= 0.4 + 0.01
    await asyncio.sleep(refused.wait + 0.005)
    assert (await backend.try_acquire("s", 2, None)).admitted
    assert (await backend.usage("s"))[0] <= 2


async def test_pruning_many_buckets(open_backend: OpenBackend, raw: aioredis.Redis) -> None:  # noqa: F811
    backend = open_backend(window=1.0, granularity=0.00001)  # 10 µs buckets: about one per call
    grants = [await backend.try_acquire("s", 100_000, None) for _ in range(1200)]
    assert all(g.admitted for g in grants)
    buckets = await raw.zcard(limit_keys("s")["rpm_z"])
    assert buckets > 500  # more than one pruning batch
    await asyncio.sleep(1.05)
    assert (await backend.try_acquire("s", 100_000, None)).admitted
    assert await backend.usage("s") == (1, 0)
    assert await raw.zcard(limit_keys("s")["rpm_z"]) == 1
    assert await raw.hlen(limit_keys("s")["rpm_h"]) == 2  # the live bucket and "total"


async def test_settle_corrects_the_granted_bucket(open_backend: OpenBackend) -> None:
    first, second = open_backend(), open_backend()
    grant = await first.try_acquire("s", None, 100, 80)
    assert not (await second.try_acquire("s", None, 100, 70)).admitted
    assert await first.settle("s", grant, 20) is True
    assert await second.usage("s") == (0, 20)
    assert (await second.try_acquire("s", None, 100, 70)).admitted
    assert grant.tokens == 20
    assert await first.settle("s", grant, 500) is True  # more than estimated: charged from the last charge
    assert await first.usage("s") == (0, 570)


async def test_refund_returns_request_and_tokens(open_backend: OpenBackend) -> None:
    backend = open_backend()
    grant = await backend.try_acquire("s", 5, 100, 40)
    await backend.try_acquire("s", 5, 100, 10)
    assert await backend.refund("s", grant) is True
    assert await backend.usage("s") == (1, 10)
    assert await backend.refund("s", grant) is False  # once
    assert await backend.usage("s") == (1, 10)
    refused = await backend.try_acquire("s", 1, 100, 10)
    assert await backend.refund("s", refused) is False  # nothing was committed for a refusal


async def test_settle_after_the_window_is_a_no_op(open_backend: OpenBackend) -> None:
    backend = open_backend(window=0.2, granularity=0.01)
    grant = await backend.try_acquire("s", 10, 100, 50)
    await asyncio.sleep(0.25)
    assert (await backend.try_acquire("s", 10, 100, 1)).admitted  # prunes the expired bucket
    assert await backend.settle("s", grant, 0) is False
    assert await backend.usage("s") == (1, 1)  # the refund did not go negative into a newer bucket


async def test_slots_are_leases_that_expire(open_backend: OpenBackend) -> None:
    dead, alive = open_backend(), open_backend()
    first, _ = await dead.acquire_slot("s", 2, lease_ttl=0.3)
    second, _ = await dead.acquire_slot("s", 2, lease_ttl=0.3)
    assert first and second and first != second
    lease, wait = await alive.acquire_slot("s", 2, lease_ttl=5)
    assert lease is None and 0.0 < wait <= 0.3
    # `dead` stops renewing (its instance died); its leases run out on the server's clock.
    await asyncio.sleep(0.35)
    assert await alive.slots_in_use("s") == 0
    lease, wait = await alive.acquire_slot("s", 2, lease_ttl=5)
    assert lease is not None and wait == 0.0
    assert await dead.renew_slot("s", first, 5) is False  # too late: the slot is gone
    assert await alive.release_slot("s", lease) is True
    assert await alive.release_slot("s", lease) is False
    assert await alive.slots_in_use("s") == 0


async def test_renewed_lease_outlives_its_first_ttl(open_backend: OpenBackend) -> None:
    backend = open_backend()
    lease, _ = await backend.acquire_slot("s", 1, lease_ttl=0.2)
    assert lease is not None
    await asyncio.sleep(0.1)
    assert await backend.renew_slot("s", lease, 5.0) is True
    await asyncio.sleep(0.2)  # past the first TTL
    assert await backend.slots_in_use("s") == 1
    assert (await backend.acquire_slot("s", 1))[0] is None


async def test_abandoned_calls_are_undone(open_backend: OpenBackend, raw: aioredis.Redis) -> None:  # noqa: F811
    """A check that times out after Redis ran it must not keep the request, the tokens or the slot."""
    backend = open_backend(timeout=1e-6, failure_threshold=10**9)
    observer = open_backend()
    for _ in range(20):
        with pytest.raises(LimitBackendUnavailable):
            await backend.try_acquire("s", 100, 10_000, 25)
        with pytest.raises(LimitBackendUnavailable):
            await backend.acquire_slot("s", 100)
    await backend.calls.drain(5.0)  # the abandoned checks, then the undo calls they scheduled
    assert await raw.exists(limit_keys("s")["rpm_h"]) == 1  # the checks did run (and commit) on the server
    assert await observer.usage("s") == (0, 0)
    assert await observer.slots_in_use("s") == 0


async def test_cancelled_checks_are_undone(open_backend: OpenBackend) -> None:
    backend = open_backend()
    observer = open_backend()

    async def cancelled() -> None:
        task = asyncio.ensure_future(backend.try_acquire("s", 1000, None))
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    await asyncio.gather(*(cancelled() for _ in range(50)))
    await backend.calls.drain(5.0)
    assert await observer.usage("s") == (0, 0)
    assert (await backend.try_acquire("s", 1, None)).admitted  # and the connections still answer right


async def test_outage_raises_fast_and_recovers(
    open_backend: OpenBackend,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    backend = open_backend(timeout=0.05, retry_interval=0.05)
    assert (await backend.try_acquire("s", 10, None)).admitted
    redis_server.stop()
    started = time.perf_counter()
    for _ in range(50):
        with pytest.raises(LimitBackendUnavailable):
            await backend.try_acquire("s", 10, None)
    assert time.perf_counter() - started < 1.0
    assert not backend.healthy
    redis_server.start()
    deadline = time.monotonic() + 5.0
    while True:
        try:
            grant: Grant = await backend.try_acquire("s", 10, None)
            break
        except LimitBackendUnavailable:
            assert time.monotonic() < deadline, "the backend did not come back after Redis did"
            await asyncio.sleep(0.02)
    assert grant.admitted and backend.healthy  # the script is loaded again (NOSCRIPT is handled)
