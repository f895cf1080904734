"""Session state for application workflows: JSON values with TTLs and optimistic concurrency.

::

    from slipstream import state

    await state.set("session:42", {"step": 1, "answers": []}, ttl=3600)
    value, version = await state.get("session:42")
    await state.set("session:42", {**value, "step": 2}, if_version=version)   # Conflict if it changed since
    await state.update("session:42", lambda s: {**s, "step": s["step"] + 1})  # read-modify-write, retried

The module-level functions use the store the config describes (``state:`` section; see ``default``): SQLite
under the data folder on one machine, Redis when a URL is configured (one server, Sentinel or Cluster), with
``on_redis_error: fail`` (raise ``StateUnavailable``) or ``local`` (carry on with the SQLite file). Stores can
also be built directly: ``SqliteStateStore(path)``, ``RedisStateStore(url)``, ``FallbackStateStore(shared,
local)``; ``store.namespaced("tenant-a")`` keeps applications apart. The semantics — versions, TTLs, what
``update`` retries — are in ``base``; each backend's module says how it keeps them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .base import (
    DEFAULT_NAMESPACE,
    DEFAULT_UPDATE_RETRIES,
    Conflict,
    Entry,
    StateError,
    StateStore,
    StateUnavailable,
)
from .default import aclose, configure, default_store, delete, get, open_state_store, set, update
from .fallback import FallbackStateStore
from .sqlite import SqliteStateStore

if TYPE_CHECKING:
    from .redis import RedisStateStore

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_UPDATE_RETRIES",
    "Conflict",
    "Entry",
    "FallbackStateStore",
    "RedisStateStore",
    "SqliteStateStore",
    "StateError",
    "StateStore",
    "StateUnavailable",
    "aclose",
    "configure",
    "default_store",
    "delete",
    "get",
    "open_state_store",
    "set",
    "update",
]


def __getattr__(name: str) -> Any:
    # Imported on first use: redis-py is an optional dependency, and SQLite-only users never need it.
    if name == "RedisStateStore":
        from .redis import RedisStateStore

        return RedisStateStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
