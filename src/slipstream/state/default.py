"""The store a config describes, and the module-level store behind ``from slipstream import state``.

``open_state_store(config)`` reads the ``state:`` section: SQLite at ``state.path`` (beside the cache, in the
data folder) unless a Redis URL is known — ``state.redis_url``, else the top-level ``redis.url``, else the
cache's ``cache.redis.url`` — or ``backend`` says otherwise. With Redis and ``on_redis_error: local``, the
SQLite file is the fallback (``FallbackStateStore``).

The module-level functions (``state.get``/``set``/``update``/``delete``) use one default store, built on first
use from ``load_config()`` (``$SLIPSTREAM_CONFIG`` or the embedded defaults), or the one given to
``configure``. A Redis client belongs to the event loop it was first used on, so a default store built from
config is rebuilt when a later ``asyncio.run`` brings a new loop; and it closes itself when its loop ends: a
guard task waits on the loop, and ``asyncio.run`` (like any ``asyncio.Runner``) cancels the tasks left before it
closes the loop, so the guard's ``finally`` closes the store's connections while the loop can still run them.
``await state.aclose()`` closes it earlier. A store given to ``configure`` is the caller's to close.
"""

from __future__ import annotations

import asyncio
from typing import Any

from ..config import Config, load_config
from .base import DEFAULT_UPDATE_RETRIES, Entry, StateError, StateStore, UpdateFn
from .fallback import FallbackStateStore
from .sqlite import SqliteStateStore

__all__ = ["aclose", "configure", "default_store", "delete", "get", "open_state_store", "set", "update"]


def open_state_store(config: Config | None = None) -> StateStore:
    """A new store as ``config`` (default: ``load_config()``) describes; the caller closes it."""
    config = config if config is not None else load_config()
    section = config.state
    url = section.redis_url or config.redis.url or config.cache.redis_url
    backend = section.backend or ("redis" if url else "sqlite")
    if backend == "sqlite":
        return SqliteStateStore(section.path, default_ttl=section.ttl)
    if not url:
        raise StateError("state.backend is redis, but no Redis URL is set (state.redis_url or redis.url)")
    try:
        from .redis import RedisStateStore
    except ImportError as exc:  # the optional dependency
        raise StateError(
            f"the Redis state store needs redis-py: pip install 'slipstream[redis]' ({exc})"
        ) from None
    shared = RedisStateStore(url, timeout=section.timeout, default_ttl=section.ttl)
    if section.on_redis_error == "local":
        return FallbackStateStore(shared, SqliteStateStore(section.path, default_ttl=section.ttl))
    return shared


class _Default:
    """The module-level store, and whether it came from ``configure`` (never replaced behind the user's back)."""

    store: StateStore | None = None
    loop: asyncio.AbstractEventLoop | None = None
    explicit = False
    guard: asyncio.Task[None] | None = None


def configure(target: StateStore | Config | None = None) -> StateStore | None:
    """Make the module-level functions use ``target`` (a store, or the store a config describes); ``None``
    goes back to building one from ``load_config()`` on first use. The previous default is not closed."""
    store = open_state_store(target) if isinstance(target, Config) else target
    _Default.store, _Default.loop, _Default.explicit = store, None, store is not None
    return store


def default_store() -> StateStore:
    """The module-level store (built on first use); call it from a coroutine."""
    loop = asyncio.get_running_loop()
    store = _Default.store
    if store is not None and _Default.explicit:
        return store
    if store is None or store.closed or (store.loop_bound and _Default.loop is not loop):
        store = _Default.store = open_state_store()
        if store.loop_bound:
            _Default.guard = loop.create_task(
                _close_with_the_loop(store), name="slipstream.state default store"
            )
    _Default.loop = loop
    return store


async def _close_with_the_loop(store: StateStore) -> None:
    try:
        await asyncio.Event().wait()  # until the loop's runner cancels what is left, at its end
    finally:
        await store.aclose()


async def get(key: str) -> Entry | None:
    return await default_store().get(key)


async def set(key: str, value: Any, ttl: float | None = None, *, if_version: int | None = None) -> int:
    return await default_store().set(key, value, ttl, if_version=if_version)


async def update(
    key: str, fn: UpdateFn, ttl: float | None = None, *, retries: int = DEFAULT_UPDATE_RETRIES
) -> Entry:
    return await default_store().update(key, fn, ttl, retries=retries)


async def delete(key: str, *, if_version: int | None = None) -> bool:
    return await default_store().delete(key, if_version=if_version)


async def aclose() -> None:
    """Close the module-level store; the next call builds a new one (or uses the next ``configure``d one)."""
    store, _Default.store, _Default.explicit = _Default.store, None, False
    guard, _Default.guard = _Default.guard, None
    if guard is not None and guard.get_loop() is asyncio.get_running_loop():
        guard.cancel()
    if store is not None:
        await store.aclose()
