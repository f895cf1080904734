"""The request pipeline: resolves the model group, runs the layers, and calls the provider at the end.

The gateway and the SDK both drive a ``Pipeline``; neither knows which layers it holds. A layer is an object with
one async method taking the call and the next handler (``slipstream.call.Layer``), so each can be tested with a
fake ``next`` and switched off in config.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .cache.layer import CacheLayer
from .call import Call, CallResult, Handler, Layer
from .coalesce import CoalescingLayer
from .config import Config, ModelGroup
from .errors import ModelNotFound
from .limits.layer import KeyLimitLayer
from .observe.metrics import Metrics
from .observe.observer import Observer
from .observe.requestlog import RequestLog
from .observe.track import current_span
from .providers import Deployment, Provider, get_provider_class
from .providers.base import Price
from .providers.http import HttpPool
from .routing.router import Router
from .scaleout import ScaleOut
from .stores.base import CacheStore
from .stores.memory import MemoryStore
from .stores.sqlite import SqliteStore
from .stores.tiered import TieredStore
from .streams import prepend
from .types import Chunk, ChunkStream, Reply

if TYPE_CHECKING:
    from .semantic.layer import SemanticLayer

__all__ = ["Pipeline", "build_cache_store", "shared_cache_url"]

log = logging.getLogger("slipstream.pipeline")


async def _primed(stream: ChunkStream) -> ChunkStream:
    """``stream`` with its first chunk already pulled through every layer.

    The layers wrap streams in async generators whose ``finally`` gives back what they hold: a rate-limit
    permit, a shared concurrency slot, a coalescing lease, the request's record. A generator that never started
    runs no ``finally`` — not on ``aclose()``, not when collected — so a caller that dropped the stream unread
    (a client gone before the response headers went out) leaked them all. Started here, each of them closes
    when the stream is closed or collected. An error before the first chunk is raised here, as for a reply.
    """
    try:
        first = await anext(stream)
    except StopAsyncIteration:
        return _chunks(())
    return prepend(first, stream)


async def _chunks(chunks: tuple[Chunk, ...]) -> AsyncIterator[Chunk]:
    for chunk in chunks:
        yield chunk


def shared_cache_url(config: Config) -> str | None:
    """The Redis URL of the shared cache tier: ``cache.redis.url``, else ``redis.url`` unless ``redis.cache``
    is off; ``None`` when the tier behind memory is local (SQLite)."""
    return config.cache.redis_url or (config.redis.url if config.redis.cache else None)


def build_cache_store(config: Config) -> CacheStore:
    cache = config.cache
    memory = MemoryStore(max_entries=cache.memory_max_entries, max_bytes=cache.memory_max_bytes)
    redis_url = shared_cache_url(config)
    if redis_url:
        from .stores.redis import RedisStore  # the `redis` extra: imported only when configured

        shared = RedisStore(redis_url, get_timeout=cache.redis_timeout, set_timeout=cache.redis_timeout)
        return TieredStore(memory, shared, write_behind=True)
    if not cache.sqlite_enabled:
        return memory
    path = Path(cache.sqlite_path)
    return TieredStore(memory, SqliteStore(path, max_bytes=cache.sqlite_max_bytes))


class Pipeline:
    """Owns the layers, the providers and the shared upstream connection pool."""

    def __init__(
        self,
        config: Config,
        *,
        cache_store: CacheStore | None = None,
        layers: Sequence[Layer] | None = None,
        observe: bool = True,
    ) -> None:
        self.config = config
        self.http = HttpPool()
        self._providers: dict[int, Provider] = {}
        self._adhoc: dict[str, ModelGroup] = {}
        self.cache: CacheLayer | None = None
        self.coalescing: CoalescingLayer | None = None
        self.semantic: SemanticLayer | None = None
        # Redis-backed limits, coalescing and breaker state, when several instances must act as one.
        self.scaleout = ScaleOut(config.redis) if config.redis.url else None
        scaleout = self.scaleout
        if layers is None:
            built: list[Layer] = []
            if config.cache.enabled:
                store = cache_store if cache_store is not None else build_cache_store(config)
                self.cache = CacheLayer(
                    store,
                    ttl=config.cache.ttl,
                    normalize_whitespace=config.cache.normalize_whitespace,
                    price_of=self._price_of,
                )
                built.append(self.cache)
                if any(g.policy.semantic for g in config.model_groups.values()):
                    from .semantic.setup import build_semantic_layer  # numpy and the model: only when on

                    self.semantic = build_semantic_layer(config, store, self._embed)
                    if self.semantic is not None:
                        built.append(self.semantic)
            if config.coalescing:
                self.coalescing = CoalescingLayer()
                built.append(self.coalescing)
            if scaleout is not None and scaleout.flights is not None:
                built.append(scaleout.flights)
            if any(k.limits is not None for k in config.keys):
                built.append(
                    KeyLimitLayer(
                        {k.name: k.limits for k in config.keys if k.limits is not None},
                        shared=None if scaleout is None else scaleout.limits,
                    )
                )
            layers = built
        self.layers = tuple(layers)
        self.router = Router(
            self.resolve,
            self.provider_for,
            shared_limits=None if scaleout is None else scaleout.limits,
            on_runtime=None if scaleout is None else scaleout.on_runtime,
        )
        self.observer = build_observer(self) if observe else None
        handler: Handler = self.router
        for layer in reversed(self.layers):
            handler = _bind(layer, handler)
        self._handler = handler

    # ---------------------------------------------------------------------------------------------- public
    def resolve(self, model: str) -> ModelGroup:
        """The model group an alias names; ``provider/model`` works for providers whose key is configured."""
        group = self.config.model_groups.get(model) or self._adhoc.get(model)
        if group is not None:
            return group
        provider, _, name = model.partition("/")
        template = self.config.passthrough.get(provider)
        if template is not None and name:
            dep = Deployment(provider=provider, model=name, name=model, api_key=template.api_key)
            group = self._adhoc[model] = ModelGroup(model, (dep,))
            return group
        raise ModelNotFound(f"The model '{model}' does not exist or is not served here", param="model")

    async def run(self, call: Call) -> CallResult:
        """Run one call through the layers. A streamed call returns a stream whose first chunk has arrived,
        so that upstream failures before the first byte surface here, as errors, not inside the stream."""
        self.resolve(call.request.model)
        if call.operation is None:  # not named by the gateway's client: the tracked block it was made in
            span = current_span()
            if span is not None:
                call.span, call.operation = span, span.path
        observer = self.observer
        if observer is None:
            result = await self._handler(call)
            return result if isinstance(result, Reply) else await _primed(result)
        ts, started = time.time(), time.perf_counter()
        observer.start()
        try:
            result = await self._handler(call)
        except BaseException as exc:
            observer.failed(call, ts=ts, started=started, error=exc)
            raise
        if isinstance(result, Reply):
            observer.finish(call, ts=ts, started=started, status=200, usage=result.usage)
            return result
        return await _primed(observer.watch(call, result, ts=ts, started=started))

    async def start(self, timeout: float = 2.0) -> None:
        """Open the first Redis connections before traffic arrives (and, for a Cluster, learn its slots), so a
        burst at startup does not spend its short per-request timeouts on connecting. Bounded; a Redis that is
        down is the request path's to handle (each piece degrades and logs once)."""
        clients: list[Any] = []
        if self.scaleout is not None:
            clients.append(self.scaleout.client)
        back = getattr(self.cache.store if self.cache is not None else None, "back", None)
        if getattr(back, "client", None) is not None:
            clients.append(back.client)  # type: ignore[union-attr]
        if not clients:
            return

        async def ping(client: Any) -> None:
            try:
                await asyncio.wait_for(asyncio.gather(*(client.ping() for _ in range(8))), timeout)
            except Exception as exc:  # down or slow: logged, never fatal
                log.warning("Redis not reachable at startup (%s); continuing without it for now", exc)

        await asyncio.gather(*(ping(c) for c in clients))

    def models(self) -> list[str]:
        return sorted(self.config.model_groups)

    async def aclose(self) -> None:
        for provider in self._providers.values():
            await provider.aclose()
        self._providers.clear()
        await self.http.aclose()
        if self.semantic is not None:
            await self.semantic.aclose()
        if self.cache is not None:
            await self.cache.store.aclose()
        if self.observer is not None:
            await self.observer.aclose()
        if self.scaleout is not None:
            await self.scaleout.aclose()

    async def _embed(self, group: str, texts: list[str]) -> dict[str, Any]:
        """Embeddings from a model group, through the pipeline (the semantic cache's remote embedder). Not kept
        in the exact cache: prompt texts of every tenant would share one namespace there; the semantic layer's
        own LRU keeps recent vectors instead."""
        from .cache.directives import CacheDirectives
        from .types import EmbeddingsRequest

        request = EmbeddingsRequest({"model": group, "input": texts})
        result = await self.run(Call(request, cache=CacheDirectives.parse("bypass")))
        assert isinstance(result, Reply)
        return result.data

    # ---------------------------------------------------------------------------------------------- terminal
    def provider_for(self, deployment: Deployment) -> Provider:
        provider = self._providers.get(id(deployment))
        if provider is None:
            cls = get_provider_class(deployment.provider)
            provider = self._providers[id(deployment)] = cls(deployment, self.http)
        return provider

    def _price_of(self, call: Call) -> Price | None:
        """The price of the deployment that answered (after a failover, the one that took over); for a call no
        deployment answered (a cache hit, a coalesced follower), the group's first: what it would have cost."""
        deployments = self.resolve(call.request.model).deployments
        label = call.deployment
        if label is not None:
            for deployment in deployments:
                if deployment.label == label:
                    return deployment.price
        return deployments[0].price

    async def cache_stats(self) -> dict[str, Any] | None:
        """The cache layer's counters with the store's entries, bytes and evictions."""
        if self.cache is None:
            return None
        store = await self.cache.store.stats()
        return {
            **self.cache.stats.as_dict(),
            "entries": store.entries,
            "bytes": store.bytes,
            "evictions": store.evictions,
            "expired": store.expired,
        }

    def redis_status(self) -> dict[str, Any] | None:
        """Whether the Redis-backed pieces (shared cache tier, limits, coordination) reach Redis; None without."""
        status: dict[str, Any] = {} if self.scaleout is None else self.scaleout.status()
        store = self.cache.store if self.cache is not None else None
        calls = getattr(getattr(store, "back", None), "calls", None)  # a tiered store's Redis tier
        if calls is not None:
            status["cache"] = calls.healthy
        if not status:
            return None
        status["healthy"] = all(v for k, v in status.items() if k != "healthy")
        return status

    def health(self) -> dict[str, Any]:
        """Per model group, each deployment's breaker state, in-flight count, latency and limits."""
        groups = list(self.config.model_groups.values())
        return self.router.health(groups)

    def stats(self) -> dict[str, Any]:
        coalescing = self.coalescing
        router = self.router
        return {
            "routing": {
                "retries": router.retries,
                "fallbacks": router.fallbacks,
                "hedges": router.hedges,
                "hedge_wins": router.hedge_wins,
                "static_fallbacks": router.static_fallbacks,
            },
            "cache": self.cache.stats.as_dict() if self.cache else None,
            "semantic": self.semantic.stats.as_dict() if self.semantic else None,
            "coalescing": {"flights": coalescing.flights, "coalesced": coalescing.coalesced}
            if coalescing
            else None,
        }


def build_observer(pipeline: Pipeline) -> Observer | None:
    """Metrics and the request log, as the config asks; gauges read live state at scrape time."""
    settings = pipeline.config.observe
    if not settings.metrics and not settings.request_log:
        return None
    groups = pipeline.config.model_groups.values()
    metrics = Metrics([g.name for g in groups], [d.label for g in groups for d in g.deployments])

    def breakers() -> dict[str, str]:
        return {d["deployment"]: d["breaker"]["state"] for ds in pipeline.health().values() for d in ds}

    metrics.add_breaker_gauge(breakers)
    if pipeline.redis_status() is not None:

        def redis_up() -> dict[tuple[str, ...], float]:
            status = pipeline.redis_status() or {}
            return {(part,): float(bool(up)) for part, up in status.items() if part != "healthy"}

        metrics.add_gauge("redis_up", "1 while the Redis-backed part reaches Redis", ("part",), redis_up)
    log = None
    if settings.request_log:
        log = RequestLog(
            settings.request_log_path,
            retention_days=settings.retention_days,
            max_bytes=settings.request_log_max_bytes,
            store_text=settings.store_text,
            writer=settings.request_log_writer,
        )
    return Observer(metrics, log, price_of=pipeline._price_of, store_text=settings.store_text)


def _bind(layer: Layer, next: Handler) -> Handler:
    async def handler(call: Call) -> CallResult:
        return await layer(call, next)

    return handler
