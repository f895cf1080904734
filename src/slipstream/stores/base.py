"""The response-cache store interface: what every backend (memory, SQLite, Redis, tiered) provides.

A store maps a key (``"{namespace}:…:{32 hex}"``) to the reply bytes with a creation time and an expiry.
It knows nothing about requests or replies; the cache layer above it builds keys and decides freshness
policy. Stores never raise for bad stored data: a missing, expired or corrupt entry is a miss.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

__all__ = ["CacheEntry", "CacheStore", "StoreStats"]


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """One stored reply."""

    value: bytes  # the stored reply (uncompressed JSON bytes)
    created_at: float  # wall-clock seconds (time.time()) when stored
    expires_at: float  # entries at or past it are misses


@dataclass(frozen=True, slots=True)
class StoreStats:
    """A store's size and churn."""

    entries: int
    bytes: int
    evictions: int  # by size/count caps (not TTL expiry) since the store was opened
    expired: int = 0  # entries removed because their TTL ran out, since the store was opened


class CacheStore(ABC):
    """A key → reply store with per-entry TTL."""

    @abstractmethod
    async def get(self, key: str) -> CacheEntry | None:
        """The live entry for ``key``; ``None`` if missing, expired or corrupt (never raises for bad data)."""

    @abstractmethod
    async def set(self, key: str, value: bytes, ttl: float) -> None:
        """Store ``value`` under ``key`` for ``ttl`` seconds (replacing any earlier value)."""

    @abstractmethod
    async def delete(self, key: str) -> bool:
        """Remove ``key``; ``True`` when it was there."""

    @abstractmethod
    async def clear(self, prefix: str = "") -> int:
        """Remove every key starting with ``prefix`` (``""`` = all); the number removed."""

    @abstractmethod
    async def stats(self) -> StoreStats:
        """Current size and counters."""

    @abstractmethod
    async def flush(self) -> None:
        """Wait until the writes issued so far are durable (a no-op for memory)."""

    @abstractmethod
    async def aclose(self) -> None:
        """Finish pending writes and release resources."""
