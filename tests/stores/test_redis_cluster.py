"""Redis Cluster behind ``redis+cluster://``: the cache store and the limit scripts on a real 3-master cluster.

The cluster (tests/redis_server.py ``redis_cluster``) is started once per session; each test empties it.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from redis.asyncio.cluster import RedisCluster

from slipstream.limits.redis import RedisLimitBackend, limit_keys
from slipstream.stores.redis import RedisStore
from tests.redis_server import ClusterServers, redis_cluster, send_command  # noqa: F401

OpenStore = Callable[[str], RedisStore]


@pytest.fixture
def cluster(redis_cluster: ClusterServers) -> ClusterServers:  # noqa: F811
    redis_cluster.flush()
    return redis_cluster


@pytest.fixture
async def open_store() -> AsyncIterator[OpenStore]:
    stores: list[RedisStore] = []

    def make(url: str) -> RedisStore:
        store = RedisStore(url, get_timeout=2.0, set_timeout=2.0, admin_timeout=10.0)
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.aclose()


def _keys_per_node(cluster: ClusterServers) -> list[int]:
    return [int(send_command(n.port, "DBSIZE")[1:].split(b"\r\n")[0]) for n in cluster.nodes]


def _slot(cluster: ClusterServers, key: str) -> int:
    return int(send_command(cluster.nodes[0].port, "CLUSTER", "KEYSLOT", key)[1:].split(b"\r\n")[0])


async def test_a_value_cached_through_one_client_is_read_through_another(
    cluster: ClusterServers, open_store: OpenStore
) -> None:
    writer = open_store(cluster.url)
    # The reader knows a single node: it discovers the others (and where each slot lives) from it.
    reader = open_store(f"redis+cluster://127.0.0.1:{cluster.nodes[2].port}")
    assert isinstance(writer.client, RedisCluster) and isinstance(reader.client, RedisCluster)
    values = {f"tenant:chat:model:{i:032x}": f"reply {i}".encode() * 20 for i in range(60)}
    for key, value in values.items():
        await writer.set(key, value, 60)
    for key, value in values.items():
        entry = await reader.get(key)
        assert entry is not None and entry.value == value
    assert all(n > 0 for n in _keys_per_node(cluster))  # spread over every master
    assert sum(_keys_per_node(cluster)) == 60
    assert writer.errors == reader.errors == 0


async def test_stats_and_clear_walk_every_node(cluster: ClusterServers, open_store: OpenStore) -> None:
    store = open_store(cluster.url)
    for i in range(40):
        await store.set(f"a:{i}", b"x" * 100, 60)
        await store.set(f"b:{i}", b"y" * 100, 60)
    stats = await store.stats()
    assert stats.entries == 80
    assert await store.clear("a:") == 40
    assert sum(_keys_per_node(cluster)) == 40
    assert await store.get("a:1") is None and await store.get("b:1") is not None


async def test_limit_scripts_run_on_the_cluster(cluster: ClusterServers) -> None:
    """Each limit script touches several keys; their ``{scope}`` hash tag puts them in one slot, so the
    cluster runs them (a script over keys in different slots fails with CROSSSLOT)."""
    scopes = [f"deployment-{i}" for i in range(12)]
    for scope in scopes:
        assert len({_slot(cluster, key) for key in limit_keys(scope).values()}) == 1
    assert len({_slot(cluster, limit_keys(scope)["rpm_z"]) for scope in scopes}) > 1  # scopes spread out
    instances = [RedisLimitBackend(cluster.url, timeout=2.0) for _ in range(2)]
    try:
        for scope in scopes:
            grants = await asyncio.gather(
                *(instances[i % 2].try_acquire(scope, 5, 1000, 10) for i in range(8))
            )
            assert sum(g.admitted for g in grants) == 5
            assert await instances[0].usage(scope) == (5, 50)
            admitted = next(g for g in grants if g.admitted)
            assert await instances[1].settle(scope, admitted, 4) is True
            assert await instances[0].usage(scope) == (5, 44)
        lease, _ = await instances[0].acquire_slot(scopes[0], 1)
        assert lease is not None
        assert (await instances[1].acquire_slot(scopes[0], 1))[0] is None
        assert await instances[1].release_slot(scopes[0], lease) is True
        assert all(b.healthy for b in instances)
    finally:
        for backend in instances:
            await backend.aclose()
