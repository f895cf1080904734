"""Limits shared by every instance: a limiter's RPM/TPM windows and concurrency slots kept in Redis.

A ``Limiter`` given a ``SharedScope`` asks Redis instead of its own windows (``limits.redis`` holds the scripts:
one round trip per check, RPM and TPM committed together or not at all, slots as expiring leases). Inside one
instance the limiter's requests still queue first come, first served, and only the head of that queue asks
Redis, so an instance never floods Redis with checks that must fail; across instances, whoever asks first when
room frees up gets it.

Corrections that the request path does not wait for — settling a TPM estimate, a refund, giving a slot back —
run as background tasks (``spawn``). A lease held by a long call is renewed every third of its TTL, so a call
longer than the TTL keeps its slot while an instance that dies loses its slots one TTL later.

When Redis cannot answer (``LimitBackendUnavailable``, after the backend's own bounded timeout), the limiter
either falls back to its local windows (``fail_closed=False``, the default: each instance then enforces the
whole limit on its own, so the global rate can exceed the limit by the number of instances until Redis is back)
or refuses the request (``fail_closed=True``: the limit is never exceeded, at the price of availability).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from .redis import DEFAULT_LEASE_TTL, LimitBackendUnavailable, RedisLimitBackend

__all__ = ["LimitBackendUnavailable", "SharedLimits", "SharedScope"]

log = logging.getLogger(__name__)


class SharedLimits:
    """One Redis limit backend for a process, the failure policy, and the background corrections."""

    def __init__(
        self, backend: RedisLimitBackend, *, fail_closed: bool = False, lease_ttl: float = DEFAULT_LEASE_TTL
    ) -> None:
        self.backend = backend
        self.fail_closed = fail_closed
        self.lease_ttl = lease_ttl
        self._tasks: set[asyncio.Task[Any]] = set()
        self._leases: dict[str, str] = {}  # lease id → scope, for renewal
        self._renewer: asyncio.Task[None] | None = None

    @property
    def healthy(self) -> bool:
        return self.backend.healthy

    def scope(self, name: str) -> SharedScope:
        return SharedScope(self, name)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run a correction in the background; a failure is the backend's to count and log, not the caller's."""
        task = asyncio.get_running_loop().create_task(_quietly(coro))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def hold(self, scope: str, lease_id: str) -> None:
        self._leases[lease_id] = scope
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())

    def drop(self, scope: str, lease_id: str) -> None:
        self._leases.pop(lease_id, None)
        self.spawn(self.backend.release_slot(scope, lease_id))

    async def aclose(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
        if self._tasks:
            await asyncio.wait(tuple(self._tasks), timeout=max(1.0, self.backend.timeout * 5))
        await self.backend.aclose()

    async def _renew_loop(self) -> None:
        while self._leases:
            await asyncio.sleep(self.lease_ttl / 3)
            for lease_id, scope in list(self._leases.items()):
                try:
                    await self.backend.renew_slot(scope, lease_id, self.lease_ttl)
                except LimitBackendUnavailable:
                    pass  # the lease runs out if Redis stays away; the backend logs the outage once


class SharedScope:
    """One limiter's name in Redis (a deployment label, ``key:<name>``) and the process's shared backend."""

    __slots__ = ("limits", "name")

    def __init__(self, limits: SharedLimits, name: str) -> None:
        self.limits = limits
        self.name = name


async def _quietly(coro: Coroutine[Any, Any, Any]) -> None:
    try:
        await coro
    except LimitBackendUnavailable:
        pass
    except Exception:
        log.warning("shared limit correction failed", exc_info=True)
