"""What is particular to the Redis state store: its key layout, Cluster, cancellation, and Redis going away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis
from redis.asyncio.cluster import RedisCluster

from slipstream.state import Entry, FallbackStateStore, RedisStateStore, SqliteStateStore, StateError
from slipstream.state.base import StateUnavailable
from tests.redis_server import ClusterServers, RedisServer, redis_cluster, redis_server, redis_url  # noqa: F401


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:  # noqa: F811
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()


async def test_key_layout_and_ttl(redis_url: str, raw: aioredis.Redis) -> None:  # noqa: F811
    store = RedisStateStore(redis_url, namespace="app", timeout=5.0)
    try:
        version = await store.set("session:1", {"a": 1}, ttl=30)
        assert await raw.hgetall("slipstream:state:app:session:1") == {
            b"v": b'{"a":1}',
            b"ver": str(version).encode(),
        }
        assert 29_000 < await raw.pttl("slipstream:state:app:session:1") <= 30_000
        await store.set("session:1", {"a": 2})
        assert await raw.pttl("slipstream:state:app:session:1") == -1  # no TTL: kept until deleted
    finally:
        await store.aclose()


async def test_a_value_that_is_not_json_is_an_error_not_a_miss(redis_url: str, raw: aioredis.Redis) -> None:  # noqa: F811
    store = RedisStateStore(redis_url, timeout=5.0)
    try:
        await raw.hset("slipstream:state:default:k", mapping={"v": b"\xff not json", "ver": 7})
        with pytest.raises(StateError, match="not JSON"):
            await store.get("k")
    finally:
        await store.aclose()


async def test_cancelled_calls_leave_the_pool_clean(redis_url: str) -> None:  # noqa: F811
    """Callers that give up mid-command never leave a reply unread on a pooled connection: with ONE
    connection, every later command still gets its own answer."""
    store = RedisStateStore(redis_url, timeout=5.0, max_connections=1)
    try:
        for round_ in range(20):
            tasks = [asyncio.ensure_future(store.set(f"k{i}", {"round": round_, "i": i})) for i in range(10)]
            await asyncio.sleep(0)
            for task in tasks[::2]:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for i in range(10):
                entry = await store.get(f"k{i}")
                # A cancelled write may or may not have run, but what a read answers is its own key's value.
                assert entry is None or entry.value["i"] == i
        assert store.healthy and store.calls.errors == 0
    finally:
        await store.aclose()


async def test_state_on_a_cluster(redis_cluster: ClusterServers) -> None:  # noqa: F811
    redis_cluster.flush()
    one = RedisStateStore(redis_cluster.url, timeout=5.0)
    other = RedisStateStore(f"redis+cluster://127.0.0.1:{redis_cluster.nodes[1].port}", timeout=5.0)
    try:
        assert isinstance(one.client, RedisCluster)
        versions = {f"session:{i}": await one.set(f"session:{i}", {"i": i}, ttl=60) for i in range(30)}
        for key, version in versions.items():
            assert await other.get(key) == Entry({"i": int(key.split(":")[1])}, version)
        await asyncio.gather(
            *((one, other)[i % 2].update("counter", lambda v: (v or 0) + 1) for i in range(60))
        )
        assert (await one.get("counter")).value == 60  # type: ignore[union-attr]
    finally:
        await one.aclose()
        await other.aclose()


# ------------------------------------------------------------------------------------- Redis goes away


async def test_redis_down_fails_clearly_and_recovers(
    redis_url: str,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
) -> None:
    store = RedisStateStore(redis_url, timeout=1.0, failure_threshold=2, retry_interval=0.0)
    try:
        await store.set("k", "before")
        redis_server.stop()
        for _ in range(3):
            with pytest.raises(StateUnavailable, match=r"Redis at redis://127\.0\.0\.1") as caught:
                await store.get("k")
            assert caught.value.status == 503
        assert not store.healthy
        redis_server.start()  # an empty server on the same port: the store reconnects by itself
        assert await store.get("k") is None
        await store.set("k", "after")
        assert (await store.get("k")).value == "after"  # type: ignore[union-attr]
        assert store.healthy
    finally:
        await store.aclose()


async def test_while_redis_is_known_down_calls_are_not_even_tried(
    redis_url: str,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
) -> None:
    store = RedisStateStore(redis_url, timeout=1.0, failure_threshold=1, retry_interval=3600)
    try:
        redis_server.stop()
        with pytest.raises(StateUnavailable):
            await store.get("k")
        for _ in range(50):
            with pytest.raises(StateUnavailable, match="not asking it"):
                await store.set("k", 1)
        assert store.calls.skipped == 50 and store.calls.errors == 1
    finally:
        redis_server.start()
        await store.aclose()


async def test_local_fallback_logs_once_and_returns_to_redis(
    redis_url: str,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
    raw: aioredis.Redis,
    tmp_path: object,
    caplog: pytest.LogCaptureFixture,
) -> None:
    shared = RedisStateStore(redis_url, timeout=1.0, failure_threshold=1, retry_interval=0.0)
    local = SqliteStateStore(f"{tmp_path}/state.db")
    store = FallbackStateStore(shared, local)
    caplog.set_level(logging.INFO, logger="slipstream.state.fallback")
    try:
        await store.set("k", "on redis")
        assert await raw.exists("slipstream:state:default:k") == 1
        redis_server.stop()
        for i in range(20):
            await store.set("k", f"local {i}")
            await store.update("n", lambda v: (v or 0) + 1)
        assert (await store.get("k")).value == "local 19"  # type: ignore[union-attr]
        assert (await local.get("n")).value == 20  # type: ignore[union-attr]
        assert store.using_local and store.fallbacks == 41  # 20 sets, 20 updates, 1 get
        # One line per outage from each layer: the fallback's, and the Redis client's own (RedisCalls).
        for name in ("slipstream.state.fallback", "slipstream.stores.redis"):
            assert len([r for r in caplog.records if r.name == name and r.levelno == logging.WARNING]) == 1
        assert "using the local store" in caplog.text
        redis_server.start()
        await store.set("k", "redis again")
        fresh = aioredis.Redis.from_url(redis_url)  # `raw`'s connection died with the old server
        try:
            assert await fresh.hget("slipstream:state:default:k", "v") == b'"redis again"'
        finally:
            await fresh.aclose()
        assert not store.using_local
        back = [
            r for r in caplog.records if r.name == "slipstream.state.fallback" and r.levelno == logging.INFO
        ]
        assert len(back) == 1 and "answers again" in back[0].getMessage()
    finally:
        await store.aclose()
    assert shared.closed and local.closed


async def test_fallback_does_not_hide_conflicts(redis_url: str, tmp_path: object) -> None:  # noqa: F811
    store = FallbackStateStore(RedisStateStore(redis_url, timeout=5.0), SqliteStateStore(f"{tmp_path}/s.db"))
    try:
        version = await store.set("k", 1)
        with pytest.raises(StateError, match="version"):
            await store.set("k", 2, if_version=version + 1)
        assert store.fallbacks == 0
        view = store.namespaced("other")
        await view.set("k", "other's")
        assert (await store.get("k")).value == 1  # type: ignore[union-attr]
    finally:
        await store.aclose()
