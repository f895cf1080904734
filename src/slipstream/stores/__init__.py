"""Response-cache stores: the interface and one module per backend (memory, SQLite, tiered)."""

from .base import CacheEntry, CacheStore, StoreStats
from .memory import MemoryStore
from .sqlite import SqliteStore
from .tiered import TieredStore

__all__ = ["CacheEntry", "CacheStore", "MemoryStore", "SqliteStore", "StoreStats", "TieredStore"]
