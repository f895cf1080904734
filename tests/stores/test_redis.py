"""RedisStore against a real redis-server (see tests/redis_server.py): no mocks."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections.abc import AsyncIterator, Callable

import orjson
import pytest
import redis.asyncio as aioredis

from slipstream.stores.redis import (
    ENTRY_OVERHEAD,
    Health,
    RedisStore,
    pack_entry,
    unpack_entry,
)
from slipstream.stores.sqlite import FORMAT_RAW, FORMAT_ZLIB
from tests.redis_server import RedisServer, raw, redis_server, redis_url  # noqa: F401

from . import FakeClock

REPLY = orjson.dumps(
    {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "A rewritten prompt. " * 120},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 480, "total_tokens": 492},
    }
)
KEY = "tenant-a:chat:gpt-4o-mini:" + "0123456789abcdef" * 2

OpenStore = Callable[..., RedisStore]


@pytest.fixture
async def open_store(redis_url: str) -> AsyncIterator[OpenStore]:  # noqa: F811
    stores: list[RedisStore] = []

    def make(**kwargs: object) -> RedisStore:
        kwargs.setdefault("get_timeout", 1.0)  # generous: a loaded CI machine must not turn hits into misses
        kwargs.setdefault("set_timeout", 1.0)
        store = RedisStore(redis_url, **kwargs)  # type: ignore[arg-type]
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.aclose()


# ------------------------------------------------------------------------------------------- codec + health


def test_pack_round_trip_and_formats() -> None:
    stored = pack_entry(REPLY, 10.0, 70.0)
    assert stored[17] == FORMAT_ZLIB and len(stored) < len(REPLY) / 2
    entry = unpack_entry(stored)
    assert entry is not None and (entry.value, entry.created_at, entry.expires_at) == (REPLY, 10.0, 70.0)
    noise = os.urandom(200)  # zlib cannot shrink it: stored raw
    stored = pack_entry(noise, 1.0, 2.0)
    assert stored[17] == FORMAT_RAW
    assert unpack_entry(stored) is not None and unpack_entry(stored).value == noise  # type: ignore[union-attr]


@pytest.mark.parametrize(
    "stored",
    [b"", b"x", b"\x01" * 17, b"\x02" + pack_entry(b"v", 1, 2)[1:], pack_entry(REPLY, 1, 2)[:40], "text"],
)
def test_unpack_rejects_damage(stored: object) -> None:
    assert unpack_entry(stored) is None


def test_health_threshold_probe_and_recovery() -> None:
    health = Health(threshold=3, retry_interval=1.0)
    assert [health.failure(0.0), health.failure(0.1)] == [False, False]
    assert health.healthy and health.allow(0.1)
    assert health.failure(0.2) is True  # the third in a row: flips, once
    assert not health.healthy and health.failure(0.3) is False
    assert not health.allow(1.0)  # the retry interval runs from the last failure that counted (0.2)
    assert health.allow(1.25)  # the probe
    assert not health.allow(1.3)  # only one per interval
    assert health.success() is True and health.healthy
    assert health.success() is False
    health.failure(2.0)
    health.success()
    assert health.failures == 0  # a success resets the run


# ----------------------------------------------------------------------------------------------- basics


async def test_round_trip_with_age_and_compression(open_store: OpenStore, raw: aioredis.Redis) -> None:  # noqa: F811
    clock = FakeClock()
    store = open_store(clock=clock)
    await store.set(KEY, REPLY, 60)
    clock.advance(5)
    entry = await store.get(KEY)
    assert entry is not None
    assert entry.value == REPLY
    assert entry.created_at == clock.now - 5 and entry.expires_at == clock.now + 55
    stored = await raw.get("slipstream:cache:" + KEY)
    assert stored is not None and len(stored) < len(REPLY) / 2  # compressed
    assert 55_000 < await raw.pttl("slipstream:cache:" + KEY) <= 60_000  # Redis expires it by itself
    assert await store.get("tenant-a:missing") is None


async def test_entry_memory_is_value_plus_overhead(open_store: OpenStore, raw: aioredis.Redis) -> None:  # noqa: F811
    """Keeps ENTRY_OVERHEAD (documented in the module) honest against this Redis version."""
    store = open_store()
    await store.set(KEY, REPLY, 60)
    stored = await raw.get("slipstream:cache:" + KEY)
    usage = await raw.memory_usage("slipstream:cache:" + KEY)
    assert stored is not None and usage is not None
    assert len(stored) < usage <= len(stored) + ENTRY_OVERHEAD  # MEMORY USAGE leaves out the expiry entry


async def test_real_ttl_expiry(open_store: OpenStore, raw: aioredis.Redis) -> None:  # noqa: F811
    store = open_store()
    await store.set(KEY, REPLY, 0.5)
    assert await store.get(KEY) is not None
    await asyncio.sleep(0.6)  # a real Redis TTL: no fake clock reaches inside the server
    assert await store.get(KEY) is None
    assert await raw.exists("slipstream:cache:" + KEY) == 0


async def test_expired_by_our_clock_is_a_miss(open_store: OpenStore) -> None:
    clock = FakeClock()
    store = open_store(clock=clock)
    await store.set(KEY, REPLY, 60)
    clock.advance(60)
    assert await store.get(KEY) is None


async def test_set_replaces_and_nonpositive_ttl_deletes(open_store: OpenStore) -> None:
    store = open_store()
    await store.set(KEY, b"one", 60)
    await store.set(KEY, b"two", 60)
    assert (await store.get(KEY)).value == b"two"  # type: ignore[union-attr]
    await store.set(KEY, b"three", 0)
    assert await store.get(KEY) is None


async def test_delete(open_store: OpenStore) -> None:
    store = open_store()
    await store.set(KEY, REPLY, 60)
    assert await store.delete(KEY) is True
    assert await store.delete(KEY) is False
    assert await store.get(KEY) is None


async def test_clear_by_prefix_leaves_other_keys(open_store: OpenStore, raw: aioredis.Redis) -> None:  # noqa: F811
    store = open_store(stats_ttl=0)
    for i in range(2500):  # more than one SCAN/UNLINK batch
        await store.set(f"a:{i}", b"x", 60)
    await store.set("b:1", b"y", 60)
    await store.set("a*[:1", b"glob", 60)  # glob characters in a prefix are literal
    await store.set("ab:1", b"z", 60)
    await raw.set("other-app:a:1", b"not ours")
    assert await store.clear("a*[") == 1
    assert await store.get("a:1") is not None  # "a*[" did not act as a pattern
    assert await store.clear("a:") == 2500
    assert await store.get("a:7") is None
    assert (await store.get("b:1")) is not None and (await store.get("ab:1")) is not None
    assert (await store.stats()).entries == 2
    assert await store.clear() == 2
    assert await raw.get("other-app:a:1") == b"not ours"


async def test_stats_counts_and_caches(open_store: OpenStore, raw: aioredis.Redis) -> None:  # noqa: F811
    mono = FakeClock(0.0)
    store = open_store(stats_ttl=5.0, monotonic=mono)
    for i in range(30):
        await store.set(f"ns:{i}", REPLY, 60)
    await raw.set("other-app:x", b"not counted")
    stats = await store.stats()
    expected = sum([await raw.strlen(f"slipstream:cache:ns:{i}") for i in range(30)])
    assert (stats.entries, stats.bytes) == (30, expected)
    await store.set("ns:new", REPLY, 60)
    assert (await store.stats()).entries == 30  # within stats_ttl: the cached answer
    mono.advance(5.0)
    assert (await store.stats()).entries == 31


async def test_corrupt_value_is_a_miss_and_deleted(open_store: OpenStore, raw: aioredis.Redis) -> None:  # noqa: F811
    store = open_store()
    await store.set(KEY, REPLY, 60)
    good = await raw.get("slipstream:cache:" + KEY)
    assert good is not None
    await raw.set("slipstream:cache:" + KEY, good[:17] + b"\x01not zlib at all")
    assert await store.get(KEY) is None
    assert await raw.exists("slipstream:cache:" + KEY) == 0
    await raw.set("slipstream:cache:" + KEY, b"garbage")
    assert await store.get(KEY) is None
    assert store.corrupt == 2
    assert store.healthy  # bad data is not a Redis failure


async def test_two_instances_share_entries(open_store: OpenStore) -> None:
    first, second = open_store(), open_store()
    assert first.client is not second.client
    await first.set(KEY, REPLY, 60)
    entry = await second.get(KEY)
    assert entry is not None and entry.value == REPLY
    assert await second.delete(KEY) is True
    assert await first.get(KEY) is None


# ------------------------------------------------------------------------------------ failure and recovery


async def test_outage_is_a_miss_logged_once_and_recovers(
    open_store: OpenStore,
    redis_server: RedisServer,  # noqa: F811
    caplog: pytest.LogCaptureFixture,
) -> None:
    store = open_store(get_timeout=0.05, set_timeout=0.05, retry_interval=0.05, failure_threshold=3)
    await store.set(KEY, REPLY, 600)
    assert await store.get(KEY) is not None
    redis_server.stop()
    caplog.set_level(logging.INFO, logger="slipstream.stores.redis")
    started = time.perf_counter()
    for _ in range(200):
        assert await store.get(KEY) is None
        await store.set(KEY, REPLY, 60)  # dropped, never raises
        assert await store.delete(KEY) is False
    assert time.perf_counter() - started < 2.0  # 600 calls: none waited out a timeout in a loop
    assert not store.healthy
    assert store.errors + store.timeouts >= 3
    assert store.counters()["skipped"] > 500  # after the threshold, Redis is bypassed
    assert (await store.stats()).entries == 0  # the last figures it had (none): no exception
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()

    redis_server.start()  # an empty server on the same port; the store is not recreated
    deadline = time.monotonic() + 5.0
    while True:
        await store.set(KEY, b"after", 60)
        entry = await store.get(KEY)
        if entry is not None:
            break
        assert time.monotonic() < deadline, "the store did not come back after Redis did"
        await asyncio.sleep(0.02)
    assert entry.value == b"after" and store.healthy
    assert sum("answers again" in r.getMessage() for r in caplog.records) == 1


async def test_clear_raises_when_redis_is_down(
    open_store: OpenStore,
    redis_server: RedisServer,  # noqa: F811
) -> None:
    store = open_store(admin_timeout=0.5)
    redis_server.stop()
    with pytest.raises((ConnectionError, TimeoutError, OSError, aioredis.RedisError)):
        await store.clear("x")


async def test_cancelled_and_timed_out_gets_leave_no_unread_reply(open_store: OpenStore) -> None:
    """Hundreds of gets are cancelled or time out mid-flight on a 4-connection pool; afterwards every get must
    return its own key's value — a connection handed back with an unread reply would answer the next command
    with the previous one's value."""
    store = open_store(max_connections=4, failure_threshold=10**9)
    values = {f"k:{i}": f"value-{i}-".encode() * (1 + i % 50) for i in range(40)}
    for key, value in values.items():
        await store.set(key, value, 60)
    keys = list(values)
    rng = random.Random(7)

    async def get_then_cancel(key: str, spins: int) -> None:
        task = asyncio.ensure_future(store.get(key))
        for _ in range(spins):
            await asyncio.sleep(0)
        task.cancel()
        try:
            entry = await task
        except asyncio.CancelledError:
            return
        assert entry is None or entry.value == values[key]

    for _ in range(5):
        await asyncio.gather(*(get_then_cancel(rng.choice(keys), rng.randrange(6)) for _ in range(200)))
    store.get_timeout = 1e-6  # every get now gives up before its reply arrives
    results = await asyncio.gather(*(store.get(rng.choice(keys)) for _ in range(300)))
    assert all(r is None for r in results)
    assert store.timeouts >= 250

    store.get_timeout = 2.0
    # Batches small enough that waiting for one of the 4 pooled connections stays far inside the pool's 1 s
    # wait even on a loaded machine (a wait that runs out would read as a miss, not as a wrong value).
    for _ in range(12):
        batch = [rng.choice(keys) for _ in range(100)]
        entries = await asyncio.gather(*(store.get(k) for k in batch))
        assert [e.value if e else None for e in entries] == [values[k] for k in batch]


async def test_a_clear_or_delete_right_after_a_write_behind_set_removes_it_everywhere(
    redis_url: str,  # noqa: F811
    raw: aioredis.Redis,  # noqa: F811
) -> None:
    # The Redis write of a set is queued; a clear (or delete) issued before it lands must not be undone by it.
    from slipstream.stores.memory import MemoryStore
    from slipstream.stores.tiered import TieredStore

    store = TieredStore(MemoryStore(), RedisStore(redis_url), write_behind=True)
    try:
        for i in range(20):
            await store.set(f"ns:chat:{i}", b'{"x": 1}', 60)
        assert await store.clear("ns:") >= 0
        await store.set("ns:chat:last", b"{}", 60)
        assert await store.delete("ns:chat:last")
        await store.flush()
        assert await raw.keys("slipstream:cache:*") == []
    finally:
        await store.aclose()
