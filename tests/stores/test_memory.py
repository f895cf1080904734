from __future__ import annotations

import pytest

from slipstream.stores import CacheEntry, MemoryStore, StoreStats
from slipstream.stores.memory import ENTRY_OVERHEAD

from . import FakeClock

KEY_A = "tenant-a:chat:" + "a" * 32
KEY_B = "tenant-a:chat:" + "b" * 32
KEY_C = "tenant-b:chat:" + "c" * 32


async def test_get_returns_what_was_set_with_times() -> None:
    clock = FakeClock(1000.0)
    store = MemoryStore(clock=clock)
    await store.set(KEY_A, b'{"x":1}', ttl=60)
    assert await store.get(KEY_A) == CacheEntry(b'{"x":1}', 1000.0, 1060.0)
    assert await store.get(KEY_B) is None


async def test_entry_expires_exactly_at_its_ttl() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    await store.set(KEY_A, b"v", ttl=10)
    clock.advance(9.999)
    assert await store.get(KEY_A) is not None
    clock.advance(0.001)
    assert await store.get(KEY_A) is None
    stats = await store.stats()
    assert (stats.entries, stats.bytes, stats.expired, stats.evictions) == (0, 0, 1, 0)


async def test_stats_drop_expired_entries() -> None:
    clock = FakeClock()
    store = MemoryStore(clock=clock)
    await store.set(KEY_A, b"short", ttl=1)
    await store.set(KEY_B, b"long", ttl=100)
    clock.advance(5)
    assert await store.stats() == StoreStats(entries=1, bytes=4 + ENTRY_OVERHEAD, evictions=0, expired=1)


async def test_count_cap_evicts_least_recently_used() -> None:
    store = MemoryStore(max_entries=3, clock=FakeClock())
    for key in ("k1", "k2", "k3"):
        await store.set(key, b"v", ttl=60)
    assert await store.get("k1") is not None  # k1 is now the most recently used; k2 the least
    await store.set("k4", b"v", ttl=60)
    assert await store.get("k2") is None
    assert all([await store.get(k) is not None for k in ("k1", "k3", "k4")])
    assert (await store.stats()).evictions == 1


async def test_overwrite_does_not_evict_and_refreshes_recency() -> None:
    store = MemoryStore(max_entries=2, clock=FakeClock())
    await store.set("k1", b"v", ttl=60)
    await store.set("k2", b"v", ttl=60)
    await store.set("k1", b"new", ttl=60)  # k1 rewritten: k2 is now the oldest
    await store.set("k3", b"v", ttl=60)
    assert await store.get("k2") is None
    entry = await store.get("k1")
    assert entry is not None and entry.value == b"new"
    assert (await store.stats()).evictions == 1


async def test_byte_cap_counts_value_plus_overhead() -> None:
    cost = 100 + ENTRY_OVERHEAD
    store = MemoryStore(max_bytes=3 * cost, clock=FakeClock())
    for key in ("k1", "k2", "k3"):
        await store.set(key, b"x" * 100, ttl=60)
    assert (await store.stats()).bytes == 3 * cost
    await store.set("k4", b"x" * 100, ttl=60)
    assert await store.get("k1") is None
    stats = await store.stats()
    assert (stats.entries, stats.bytes, stats.evictions) == (3, 3 * cost, 1)
    # One big value pushes out as many old ones as it needs.
    await store.set("big", b"x" * (2 * cost), ttl=60)
    assert len(store) == 1 and await store.get("big") is not None
    assert (await store.stats()).evictions == 4


async def test_value_larger_than_cap_is_not_stored_and_drops_the_old_value() -> None:
    store = MemoryStore(max_bytes=1000, clock=FakeClock())
    await store.set(KEY_A, b"old", ttl=60)
    await store.set(KEY_B, b"keep", ttl=60)
    await store.set(KEY_A, b"x" * 1000, ttl=60)
    assert await store.get(KEY_A) is None
    assert await store.get(KEY_B) is not None
    assert (await store.stats()).evictions == 0


async def test_non_positive_ttl_stores_nothing() -> None:
    store = MemoryStore(clock=FakeClock())
    await store.set(KEY_A, b"old", ttl=60)
    await store.set(KEY_A, b"new", ttl=0)
    assert await store.get(KEY_A) is None


async def test_expired_entries_pushed_out_by_caps_count_as_expired() -> None:
    clock = FakeClock()
    store = MemoryStore(max_entries=1, clock=clock)
    await store.set("k1", b"v", ttl=1)
    clock.advance(2)
    await store.set("k2", b"v", ttl=60)
    stats = await store.stats()
    assert (stats.evictions, stats.expired) == (0, 1)


async def test_set_nowait_keeps_given_created_at() -> None:
    clock = FakeClock(500.0)
    store = MemoryStore(clock=clock)
    store.set_nowait(KEY_A, b"v", 30, created_at=400.0)
    assert store.get_nowait(KEY_A) == CacheEntry(b"v", 400.0, 530.0)


async def test_delete_and_clear_by_prefix() -> None:
    store = MemoryStore(clock=FakeClock())
    for key in (KEY_A, KEY_B, KEY_C):
        await store.set(key, b"v", ttl=60)
    assert await store.delete(KEY_A) is True
    assert await store.delete(KEY_A) is False
    await store.set(KEY_A, b"v", ttl=60)
    assert await store.clear("tenant-a:") == 2
    assert await store.get(KEY_A) is None and await store.get(KEY_B) is None
    assert await store.get(KEY_C) is not None
    assert (await store.stats()).bytes == 1 + ENTRY_OVERHEAD
    assert await store.clear() == 1
    assert await store.stats() == StoreStats(0, 0, 0, 0)


async def test_flush_is_a_no_op_and_close_empties() -> None:
    store = MemoryStore(clock=FakeClock())
    await store.set(KEY_A, b"v", ttl=60)
    await store.flush()
    assert await store.get(KEY_A) is not None
    await store.aclose()
    assert len(store) == 0


def test_caps_must_be_positive() -> None:
    with pytest.raises(ValueError):
        MemoryStore(max_entries=0)
    with pytest.raises(ValueError):
        MemoryStore(max_bytes=0)
