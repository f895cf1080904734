"""Shared state that keeps working when Redis does not: ``on_redis_error: local``.

``FallbackStateStore`` sends every operation to the shared store (Redis) and, when that raises
``StateUnavailable`` (a timeout, a refused connection, or Redis skipped while it is known to be down), runs the
same operation on a local store (SQLite) instead. One warning when the fallback starts, one info line when the
shared store answers again: one pair per outage, not a line per request. ``Conflict`` and every other error
pass through untouched: only unavailability switches stores.

The cost, said plainly: the two stores do not sync. What is written locally during an outage stays in the
local file (other machines never see it), and once Redis is back, reads come from Redis again, which holds
what it held before the outage. This suits state that can be rebuilt or is short-lived (a workflow's progress,
a conversation's scratch data); use ``on_redis_error: fail`` where an error is better than a divergent copy.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, Self, TypeVar

from .base import DEFAULT_UPDATE_RETRIES, Entry, StateStore, StateUnavailable, UpdateFn

__all__ = ["FallbackStateStore"]

log = logging.getLogger(__name__)

T = TypeVar("T")


class _Outage:
    """Whether the shared store is being bypassed; one per store and its namespaced views (one log per outage)."""

    __slots__ = ("active", "fallbacks")

    def __init__(self) -> None:
        self.active = False
        self.fallbacks = 0  # operations served by the local store


class FallbackStateStore(StateStore):
    """``shared`` while it answers, ``local`` while it does not. Closing it closes both."""

    def __init__(self, shared: StateStore, local: StateStore) -> None:
        super().__init__(namespace=shared.namespace, default_ttl=shared.default_ttl)
        self.shared = shared
        self.local = local
        self._outage = _Outage()

    @property
    def using_local(self) -> bool:
        return self._outage.active

    @property
    def fallbacks(self) -> int:
        """Operations served by the local store so far."""
        return self._outage.fallbacks

    @property
    def loop_bound(self) -> bool:
        return self.shared.loop_bound or self.local.loop_bound

    async def get(self, key: str) -> Entry | None:
        return await self._route(lambda store: store.get(key))

    async def set(
        self, key: str, value: Any, ttl: float | None = None, *, if_version: int | None = None
    ) -> int:
        return await self._route(lambda store: store.set(key, value, ttl, if_version=if_version))

    async def delete(self, key: str, *, if_version: int | None = None) -> bool:
        return await self._route(lambda store: store.delete(key, if_version=if_version))

    async def update(
        self, key: str, fn: UpdateFn, ttl: float | None = None, *, retries: int = DEFAULT_UPDATE_RETRIES
    ) -> Entry:
        # The whole read-modify-write on one store: a read from one and a conditional write to the other
        # would only ever conflict.
        return await self._route(lambda store: store.update(key, fn, ttl, retries=retries))

    def namespaced(self, namespace: str) -> Self:
        view = super().namespaced(namespace)
        view.shared = self.shared.namespaced(namespace)
        view.local = self.local.namespaced(namespace)
        return view

    async def _close(self) -> None:
        try:
            await self.shared.aclose()
        finally:
            await self.local.aclose()

    async def _route(self, op: Callable[[StateStore], Awaitable[T]]) -> T:
        self._check_open()
        try:
            result = await op(self.shared)
        except StateUnavailable as exc:
            outage = self._outage
            outage.fallbacks += 1
            if not outage.active:
                outage.active = True
                log.warning("session state: %s; using the local store until it answers again", exc)
            return await op(self.local)
        if self._outage.active:
            self._outage.active = False
            log.info("session state: the shared store answers again; back in use")
        return result
