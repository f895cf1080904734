"""Many instances as one, through Redis: the pieces a pipeline adds when ``redis.url`` is configured.

- the shared cache tier (``stores.redis.RedisStore``) behind each instance's memory tier;
- global RPM/TPM/concurrency limits (``limits.shared`` over ``limits.redis``'s scripts);
- cross-instance coalescing (``flights``);
- shared breaker openings and provider pauses (``breakers``).

Every piece bounds its Redis calls, degrades to local behaviour while Redis is away (limits: as configured,
open or closed), logs once per outage and comes back by itself. ``ScaleOut.status()`` feeds ``/readyz`` and the
``slipstream_redis_up`` gauge.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..config import RedisConfig
    from ..limits.shared import SharedLimits
    from ..routing.router import DeploymentRuntime
    from ..stores.redis import RedisCalls
    from ..stores.redis_connect import RedisClient
    from ..stores.redis_pipelined import PipelinedConnection
    from .breakers import SharedHealth
    from .flights import RedisFlights

__all__ = ["ScaleOut"]


class ScaleOut:
    """The Redis-backed pieces of one pipeline, built from the ``redis:`` config section."""

    def __init__(self, config: RedisConfig) -> None:
        from ..limits.redis import RedisLimitBackend
        from ..limits.shared import SharedLimits
        from ..stores.redis import (
            DEFAULT_FAILURE_THRESHOLD,
            DEFAULT_RETRY_INTERVAL,
            Health,
            RedisCalls,
        )
        from ..stores.redis_connect import connect
        from ..stores.redis_pipelined import for_url
        from .breakers import SharedHealth
        from .flights import RedisFlights

        assert config.url is not None
        self.config = config
        self.client = connect(config.url)
        self.calls: RedisCalls = RedisCalls(
            "shared state", Health(DEFAULT_FAILURE_THRESHOLD, DEFAULT_RETRY_INTERVAL)
        )
        # One pipelined connection for the per-request commands of every piece (None: TLS, Sentinel, Cluster).
        self.fast: PipelinedConnection | None = for_url(config.url)
        self.limits: SharedLimits | None = None
        if config.limits != "off":
            backend = RedisLimitBackend(client=self.client, timeout=config.timeout, fast=self.fast)
            self.limits = SharedLimits(backend, fail_closed=config.limits == "closed")
        self.flights: RedisFlights | None = None
        # Followers block in XREAD for up to a poll each: a pool of their own, so that many waiting followers
        # never leave the limit scripts (0.1 s budgets) waiting for a connection.
        self.reads: RedisClient | None = connect(config.url) if config.coalescing else None
        if self.reads is not None:
            self.flights = RedisFlights(
                self.client, self.calls, timeout=config.timeout, reader=self.reads, fast=self.fast
            )
        self.health: SharedHealth | None = (
            SharedHealth(self.client, self.calls, timeout=config.timeout) if config.breakers else None
        )

    def on_runtime(self, rt: DeploymentRuntime) -> None:
        if self.health is not None:
            self.health.watch(rt.deployment.label, rt.breaker, rt.limiter)

    def status(self) -> dict[str, Any]:
        """Whether each Redis-backed piece currently reaches Redis."""
        parts: dict[str, bool] = {"coordination": self.calls.healthy}
        if self.limits is not None:
            parts["limits"] = self.limits.healthy
        return {"healthy": all(parts.values()), **parts}

    async def aclose(self) -> None:
        if self.health is not None:
            await self.health.aclose()
        if self.flights is not None:
            await self.flights.aclose()
        if self.limits is not None:
            await self.limits.aclose()
        await self.calls.drain(1.0)
        await self.client.aclose()
        if self.reads is not None:
            await self.reads.aclose()
        if self.fast is not None:
            await self.fast.aclose()
