"""Two tiers: an in-process LRU in front of a slower, larger or shared store.

Hits in the front cost about a microsecond; a back hit is copied to the front with the time it has left and
its original creation time, so the age a caller reports (and any max-age check above) stays right. Writes go
to both; the back's write is only queued (``SqliteStore.set`` never waits on the disk).

The front is private to this process: a delete or clear in another process that shares the back does not reach
it, so a front entry can outlive such a delete for at most its remaining TTL.
"""

from __future__ import annotations

from .base import CacheEntry, CacheStore, StoreStats
from .memory import MemoryStore

__all__ = ["TieredStore"]


class TieredStore(CacheStore):
    """``front`` (memory) over ``back`` (any store)."""

    def __init__(self, front: MemoryStore, back: CacheStore) -> None:
        self.front = front
        self.back = back

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
        await self.back.set(key, value, ttl)

    async def delete(self, key: str) -> bool:
        in_front = self.front.delete_nowait(key)
        in_back = await self.back.delete(key)
        return in_front or in_back

    async def clear(self, prefix: str = "") -> int:
        """The back's count: it holds every entry the front does (the front is a cache of it)."""
        self.front.clear_nowait(prefix)
        return await self.back.clear(prefix)

    async def stats(self) -> StoreStats:
        """The back's figures; the front's are ``await store.front.stats()``."""
        return await self.back.stats()

    async def flush(self) -> None:
        await self.back.flush()

    async def aclose(self) -> None:
        try:
            await self.back.aclose()
        finally:
            await self.front.aclose()
