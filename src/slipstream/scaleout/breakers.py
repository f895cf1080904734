"""Shared deployment health: a breaker that opens on one instance opens on all; a provider's pause reaches all.

Each instance keeps its own breakers and adaptive rates (they decide on every request and must stay in memory);
this module only carries two facts between instances, through Redis, off the request path::

    slipstream:breaker:{deployment}   the id of the instance whose breaker opened, expiring after the cooldown
    slipstream:pause:{deployment}     the id of the instance a provider told to wait, expiring when the wait ends

An opening is published the moment it happens (a background write); every ``interval`` seconds each instance
reads the keys of the deployments it uses and opens its own breaker (``CircuitBreaker.trip``) or pauses its own
adaptive rate for the time left. So an upstream that fails on one instance is shunned by all within about a
second, and a 429's Retry-After is honoured by every instance, not only the one that received it. Each instance
still probes on its own once its cooldown passes; a breaker opened on another's word is not re-published, so
instances never keep each other's breakers open.

Redis down: the reads and writes fail quietly (bounded, logged once by ``RedisCalls``) and every instance keeps
deciding on its own, as without Redis.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any

from redis.exceptions import RedisError

from ..limits import Limiter
from ..routing.breaker import BreakerState, CircuitBreaker
from ..stores.redis import RedisCalls
from ..stores.redis_connect import RedisClient

__all__ = ["SharedHealth"]

log = logging.getLogger(__name__)

BREAKER_PREFIX = "slipstream:breaker:"
PAUSE_PREFIX = "slipstream:pause:"
DEFAULT_INTERVAL = 1.0
MIN_SHARED_PAUSE = 0.5  # seconds: shorter pauses are over before another instance would read them


class _Watched:
    __slots__ = ("breaker", "limiter", "published_pause")

    def __init__(self, breaker: CircuitBreaker, limiter: Limiter | None) -> None:
        self.breaker = breaker
        self.limiter = limiter
        self.published_pause = 0.0


class SharedHealth:
    def __init__(
        self,
        client: RedisClient,
        calls: RedisCalls,
        *,
        timeout: float = 0.1,
        interval: float = DEFAULT_INTERVAL,
        instance: str | None = None,
    ) -> None:
        self.client = client
        self.calls = calls
        self.timeout = timeout
        self.interval = interval
        self.instance = instance or os.urandom(6).hex()
        self._watched: dict[str, _Watched] = {}
        self._applying = False
        self._task: asyncio.Task[None] | None = None
        self._writes: set[asyncio.Task[Any]] = set()
        self.trips = 0  # breakers opened here on another instance's word
        self.pauses = 0

    def watch(self, deployment: str, breaker: CircuitBreaker, limiter: Limiter | None) -> None:
        """Share this deployment's breaker (and its limiter's adaptive pauses); starts the sync loop."""
        self._watched[deployment] = _Watched(breaker, limiter)
        previous = breaker.on_change

        def changed(old: BreakerState, new: BreakerState) -> None:
            if previous is not None:
                previous(old, new)
            if new is BreakerState.OPEN and not self._applying:
                key, ms = BREAKER_PREFIX + deployment, max(1, round(breaker.cooldown * 1000))
                self._spawn(lambda: self.client.set(key, self.instance, px=ms))

        breaker.on_change = changed
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def aclose(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._writes:
            await asyncio.wait(tuple(self._writes), timeout=1.0)

    async def sync(self) -> None:
        """One round: publish local pauses, apply other instances' openings and pauses."""
        if not self._watched or not self.calls.allow():
            return
        names = list(self._watched)
        self._publish_pauses(names)
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.get(BREAKER_PREFIX + name)
            pipe.get(PAUSE_PREFIX + name)
            pipe.pttl(PAUSE_PREFIX + name)
        try:
            replies = await self.calls.call(pipe.execute, self.timeout)
        except (TimeoutError, RedisError, OSError):
            return
        mine = self.instance.encode()
        for i, name in enumerate(names):
            opened_by, paused_by, pause_ms = replies[3 * i : 3 * i + 3]
            watched = self._watched[name]
            if opened_by is not None and opened_by != mine:
                self._applying = True
                try:
                    if watched.breaker.trip():
                        self.trips += 1
                        log.info("%s: breaker opened, as another instance's did", name)
                finally:
                    self._applying = False
            adaptive = watched.limiter.adaptive if watched.limiter is not None else None
            if paused_by is not None and paused_by != mine and adaptive is not None and pause_ms > 0:
                now = time.monotonic() if watched.limiter is None else watched.limiter._now()
                if adaptive.paused_until < now + pause_ms / 1000 - 0.05:
                    adaptive.pause(now, pause_ms / 1000)
                    self.pauses += 1

    def _publish_pauses(self, names: list[str]) -> None:
        for name in names:
            watched = self._watched[name]
            limiter = watched.limiter
            if limiter is None or limiter.adaptive is None:
                continue
            now = limiter._now()
            until = limiter.adaptive.paused_until
            if until - now >= MIN_SHARED_PAUSE and until != watched.published_pause:
                watched.published_pause = until
                key, ms = PAUSE_PREFIX + name, round((until - now) * 1000)
                self._spawn(lambda k=key, m=ms: self.client.set(k, self.instance, px=m))  # type: ignore[misc]

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            try:
                await self.sync()
            except Exception:
                log.warning("shared health sync failed", exc_info=True)

    def _spawn(self, factory: Callable[[], Awaitable[Any]]) -> None:
        async def write() -> None:
            if not self.calls.allow():
                return
            try:
                await self.calls.call(factory, self.timeout)
            except (TimeoutError, RedisError, OSError):
                pass

        task = asyncio.get_running_loop().create_task(write())
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
