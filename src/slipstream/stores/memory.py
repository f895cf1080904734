"""An in-process LRU cache store bounded by entry count and by bytes, with a TTL per entry.

It is the front tier of the exact cache, so its read path is a dict lookup, one clock call and a
``move_to_end``: ``get_nowait`` costs about a microsecond. The async methods only wrap the synchronous ones.
It belongs to one event loop (or one thread): there is no locking.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from .base import CacheEntry, CacheStore, StoreStats

__all__ = ["ENTRY_OVERHEAD", "MemoryStore"]

# Bytes an entry costs beyond its value, charged against max_bytes. Measured with tracemalloc on CPython 3.11
# for a 46-character key: the key string, the CacheEntry with its two floats, the OrderedDict slot and link
# come to ~265 bytes, plus ~33 for the header of the value's bytes object.
ENTRY_OVERHEAD = 300

DEFAULT_MAX_ENTRIES = 10_000
DEFAULT_MAX_BYTES = 64 * 1024 * 1024


class MemoryStore(CacheStore):
    """LRU store: a hit moves the entry to the young end; caps evict from the old end."""

    __slots__ = ("_bytes", "_data", "clock", "evictions", "expired", "max_bytes", "max_entries")

    def __init__(
        self,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        max_bytes: int = DEFAULT_MAX_BYTES,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1 or max_bytes < 1:
            raise ValueError("max_entries and max_bytes must be positive")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self.clock = clock
        self.evictions = 0
        self.expired = 0
        self._data: OrderedDict[str, CacheEntry] = OrderedDict()
        self._bytes = 0

    # The synchronous core: the hot path calls these directly.

    def get_nowait(self, key: str) -> CacheEntry | None:
        """The live entry for ``key`` (and mark it recently used), or ``None``."""
        entry = self._data.get(key)
        if entry is None:
            return None
        if entry.expires_at <= self.clock():
            self._remove(key, entry)
            self.expired += 1
            return None
        self._data.move_to_end(key)
        return entry

    def set_nowait(self, key: str, value: bytes, ttl: float, created_at: float | None = None) -> None:
        """Store ``value`` for ``ttl`` seconds from now.

        ``created_at`` keeps an entry's original age when it is copied from another tier. A value that can
        never fit (larger than ``max_bytes``) or a non-positive ``ttl`` stores nothing, but still drops the
        key's earlier value: after a set, the old reply must not be served.
        """
        old = self._data.pop(key, None)
        if old is not None:
            self._bytes -= len(old.value) + ENTRY_OVERHEAD
        cost = len(value) + ENTRY_OVERHEAD
        if ttl <= 0 or cost > self.max_bytes:
            return
        now = self.clock()
        self._data[key] = CacheEntry(value, now if created_at is None else created_at, now + ttl)
        self._bytes += cost
        self._enforce_caps(now)

    def delete_nowait(self, key: str) -> bool:
        entry = self._data.get(key)
        if entry is None:
            return False
        self._remove(key, entry)
        return True

    def clear_nowait(self, prefix: str = "") -> int:
        if not prefix:
            count = len(self._data)
            self._data.clear()
            self._bytes = 0
            return count
        doomed = [key for key in self._data if key.startswith(prefix)]
        for key in doomed:
            self._remove(key, self._data[key])
        return len(doomed)

    def stats_nowait(self) -> StoreStats:
        """Counts after dropping expired entries, so the figures describe what could still be served."""
        now = self.clock()
        for key, entry in [(k, e) for k, e in self._data.items() if e.expires_at <= now]:
            self._remove(key, entry)
            self.expired += 1
        return StoreStats(len(self._data), self._bytes, self.evictions, self.expired)

    def __len__(self) -> int:
        return len(self._data)

    # The CacheStore interface.

    async def get(self, key: str) -> CacheEntry | None:
        return self.get_nowait(key)

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self.set_nowait(key, value, ttl)

    async def delete(self, key: str) -> bool:
        return self.delete_nowait(key)

    async def clear(self, prefix: str = "") -> int:
        return self.clear_nowait(prefix)

    async def stats(self) -> StoreStats:
        return self.stats_nowait()

    async def flush(self) -> None:
        return None

    async def aclose(self) -> None:
        self.clear_nowait()

    # Internals.

    def _remove(self, key: str, entry: CacheEntry) -> None:
        del self._data[key]
        self._bytes -= len(entry.value) + ENTRY_OVERHEAD

    def _enforce_caps(self, now: float) -> None:
        data = self._data
        while len(data) > self.max_entries or self._bytes > self.max_bytes:
            _, entry = data.popitem(last=False)
            self._bytes -= len(entry.value) + ENTRY_OVERHEAD
            # An entry that had already run out was a miss anyway: count it as expired, not evicted.
            if entry.expires_at <= now:
                self.expired += 1
            else:
                self.evictions += 1
