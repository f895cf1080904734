"""Two tiers: an in-process LRU in front of a slower, larger or shared store.

Hits in the front cost about a microsecond; a back hit is copied to the front with the time it has left and
its original creation time, so the age a caller reports (and any max-age check above) stays right. Writes go
to both; the back's write is only queued (``SqliteStore.set`` never waits on the disk). A remote back (Redis,
``write_behind=True``) is written by a background task, so a miss does not wait a round trip for its own store;
``flush()`` waits for those writes.

The front is private to this process: a delete or clear in another process that shares the back does not reach
it, so a front entry can outlive such a delete for at most its remaining TTL.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .base import CacheEntry, CacheStore, StoreStats
from .memory import MemoryStore

__all__ = ["TieredStore"]

WRITE_SETTLE_TIMEOUT = 5.0  # seconds a delete or clear waits for queued back writes


class TieredStore(CacheStore):
    """``front`` (memory) over ``back`` (any store)."""

    def __init__(self, front: MemoryStore, back: CacheStore, *, write_behind: bool = False) -> None:
        self.front = front
        self.back = back
        self.write_behind = write_behind
        self._writes: set[asyncio.Task[Any]] = set()

    async def get(self, key: str) -> CacheEntry | None:
        entry = self.front.get_nowait(key)
        if entry is not None:
            return entry
        entry = await self.back.get(key)
        if entry is not None:
            remaining = entry.expires_at - self.front.clock()
            if remaining > 0:
                self.front.set_nowait(key, entry.value, remaining, created_at=entry.created_at)
        return entry

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self.front.set_nowait(key, value, ttl)
        if not self.write_behind:
            await self.back.set(key, value, ttl)
            return
        task = asyncio.get_running_loop().create_task(self.back.set(key, value, ttl))
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)

    async def delete(self, key: str) -> bool:
        in_front = self.front.delete_nowait(key)
        await self._settle_writes()
        in_back = await self.back.delete(key)
        return in_front or in_back

    async def clear(self, prefix: str = "") -> int:
        """The back's count: it holds every entry the front does (the front is a cache of it)."""
        self.front.clear_nowait(prefix)
        await self._settle_writes()
        return await self.back.clear(prefix)

    async def _settle_writes(self) -> None:
        """Let queued back writes land first: one landing after a delete or clear would bring its entry back,
        for every instance sharing the back. Bounded: a write stuck on an unreachable back is its own timeout's."""
        if self._writes:
            await asyncio.wait(tuple(self._writes), timeout=WRITE_SETTLE_TIMEOUT)

    async def stats(self) -> StoreStats:
        """The back's figures; the front's are ``await store.front.stats()``."""
        return await self.back.stats()

    async def flush(self) -> None:
        if self._writes:
            await asyncio.wait(tuple(self._writes))
        await self.back.flush()

    async def aclose(self) -> None:
        if self._writes:
            await asyncio.wait(tuple(self._writes), timeout=1.0)
        try:
            await self.back.aclose()
        finally:
            await self.front.aclose()
