from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from slipstream.stores import CacheEntry, MemoryStore, SqliteStore, TieredStore

from . import FakeClock

KEY_A = "tenant-a:chat:" + "a" * 32
KEY_B = "tenant-b:chat:" + "b" * 32


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(1000.0)


@pytest.fixture
async def back(tmp_path: Path, clock: FakeClock) -> AsyncIterator[SqliteStore]:
    store = SqliteStore(tmp_path / "cache.db", clock=clock)
    yield store
    await store.aclose()


async def test_set_writes_both_tiers(back: SqliteStore, clock: FakeClock) -> None:
    tiered = TieredStore(MemoryStore(clock=clock), back)
    await tiered.set(KEY_A, b"v", ttl=60)
    assert tiered.front.get_nowait(KEY_A) == CacheEntry(b"v", 1000.0, 1060.0)
    await tiered.flush()
    assert await back.get(KEY_A) == CacheEntry(b"v", 1000.0, 1060.0)


async def test_back_hit_is_promoted_with_its_original_age(back: SqliteStore, clock: FakeClock) -> None:
    await back.set(KEY_A, b"v", ttl=100)
    await back.flush()
    clock.advance(30)
    tiered = TieredStore(MemoryStore(clock=clock), back)  # e.g. a new process with a cold front
    assert await tiered.get(KEY_A) == CacheEntry(b"v", 1000.0, 1100.0)
    # Now in the front, with the original creation time and only the remaining 70 s to live.
    assert tiered.front.get_nowait(KEY_A) == CacheEntry(b"v", 1000.0, 1100.0)
    await back.delete(KEY_A)
    assert await tiered.get(KEY_A) == CacheEntry(b"v", 1000.0, 1100.0)  # served by the front alone
    clock.advance(70)
    assert await tiered.get(KEY_A) is None
    assert (await tiered.front.stats()).expired == 1


async def test_front_hit_does_not_touch_the_back(clock: FakeClock) -> None:
    back = MemoryStore(clock=clock)
    tiered = TieredStore(MemoryStore(clock=clock), back)
    await tiered.set(KEY_A, b"v", ttl=60)
    await back.clear()
    assert await tiered.get(KEY_A) is not None


async def test_small_front_falls_back_to_the_back(back: SqliteStore, clock: FakeClock) -> None:
    tiered = TieredStore(MemoryStore(max_entries=1, clock=clock), back)
    await tiered.set(KEY_A, b"a", ttl=60)
    await tiered.set(KEY_B, b"b", ttl=60)  # pushes KEY_A out of the front
    await tiered.flush()
    assert tiered.front.get_nowait(KEY_A) is None
    entry = await tiered.get(KEY_A)
    assert entry is not None and entry.value == b"a"


async def test_delete_and_clear_reach_both_tiers(back: SqliteStore, clock: FakeClock) -> None:
    tiered = TieredStore(MemoryStore(clock=clock), back)
    await tiered.set(KEY_A, b"a", ttl=60)
    await tiered.set(KEY_B, b"b", ttl=60)
    assert await tiered.delete(KEY_A) is True
    assert tiered.front.get_nowait(KEY_A) is None and await back.get(KEY_A) is None
    assert await tiered.delete(KEY_A) is False
    await tiered.set(KEY_A, b"a", ttl=60)
    assert await tiered.clear("tenant-b:") == 1
    assert await tiered.get(KEY_B) is None
    assert await tiered.get(KEY_A) is not None
    assert await tiered.clear() == 1
    assert len(tiered.front) == 0 and await back.get(KEY_A) is None


async def test_stats_are_the_backs(back: SqliteStore, clock: FakeClock) -> None:
    tiered = TieredStore(MemoryStore(max_entries=1, clock=clock), back)
    await tiered.set(KEY_A, b"a", ttl=60)
    await tiered.set(KEY_B, b"b", ttl=60)
    await tiered.flush()
    assert (await tiered.stats()).entries == 2
    front = await tiered.front.stats()
    assert (front.entries, front.evictions) == (1, 1)


async def test_close_closes_both(tmp_path: Path, clock: FakeClock) -> None:
    back = SqliteStore(tmp_path / "cache.db", clock=clock)
    tiered = TieredStore(MemoryStore(clock=clock), back)
    await tiered.set(KEY_A, b"a", ttl=60)
    await tiered.aclose()
    assert len(tiered.front) == 0
    reopened = SqliteStore(tmp_path / "cache.db", clock=clock)
    try:
        assert await reopened.get(KEY_A) is not None  # the queued back write was not lost on close
    finally:
        await reopened.aclose()
