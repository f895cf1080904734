"""The async SDK: the same pipeline as the gateway, run in-process.

async with Slipstream() as slip:                      # embedded defaults, or Slipstream("slipstream.yaml")
    reply = await slip.chat(model="sim", messages=[{"role": "user", "content": "hi"}])
    print(reply.text, reply.cache)                     # "…", "miss" — the same call again says "hit"

    async for chunk in slip.stream(model="sim", messages=[...]):
        print(chunk["choices"][0]["delta"].get("content", ""), end="")

    async for result in slip.map(requests, concurrency=32):   # many requests, results as they complete
        print(result.index, result.completion.text if result.ok else result.error)

    openai = AsyncOpenAI(api_key="unused", http_client=slip.http_client())   # the official SDK, in-process
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Iterable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .cache.directives import DEFAULT_DIRECTIVES, CacheDirectives
from .call import Call
from .config import Config, load_config
from .observe.alerts import AlertEvaluator, build_alerts
from .pipeline import Pipeline
from .schema import validate_chat_request, validate_embeddings_request
from .stores.base import CacheStore
from .types import Reply

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from .batch.engine import BatchStats, MapResult

__all__ = ["Completion", "Slipstream"]


class Completion:
    """A chat completion (OpenAI JSON in ``data``) and what the pipeline did for it."""

    __slots__ = ("_reply", "cache", "cache_age", "deployment", "semantic_entry", "similarity")

    def __init__(self, reply: Reply, call: Call) -> None:
        self._reply = reply
        self.cache = call.cache_status
        self.cache_age = call.cache_age
        self.deployment = call.deployment
        self.similarity = call.similarity  # for a "semantic-hit": how close the cached prompt was
        self.semantic_entry = call.semantic_entry  # ... and which entry answered (see report_bad_hit)

    @property
    def data(self) -> dict[str, Any]:
        return self._reply.data

    @property
    def text(self) -> str:
        return self._reply.text

    @property
    def usage(self) -> dict[str, Any] | None:
        usage = self._reply.usage
        return dict(usage) if usage is not None else None

    def __getitem__(self, key: str) -> Any:
        return self._reply.data[key]

    def __repr__(self) -> str:
        return f"Completion(cache={self.cache!r}, text={self.text[:40]!r})"


class Slipstream:
    """Async client running the request pipeline in-process."""

    def __init__(
        self,
        config: Config | str | os.PathLike[str] | None = None,
        *,
        namespace: str = "default",
        cache_store: CacheStore | None = None,
    ) -> None:
        self.config = config if isinstance(config, Config) else load_config(config)
        self.namespace = namespace
        self.pipeline = Pipeline(self.config, cache_store=cache_store)
        # Alert rules in the config are evaluated in the background from ``__aenter__`` or the first call.
        self.alerts: AlertEvaluator | None = build_alerts(self.pipeline)

    async def chat(
        self,
        request: Mapping[str, Any] | None = None,
        /,
        *,
        cache: str | None = None,
        cache_ttl: float | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> Completion:
        """One chat completion. Pass the OpenAI request as a dict or as keyword arguments.

        ``cache``: ``"bypass"``, ``"refresh"`` or ``"no-store"``; ``cache_ttl``: seconds for this answer;
        ``timeout``: one deadline in seconds for the whole call, retries and fallbacks included.
        """
        self._start_alerts()
        body = _body(request, params)
        body.pop("stream", None)
        call = Call(
            validate_chat_request(body),
            namespace=namespace or self.namespace,
            cache=_directives(cache, cache_ttl),
            deadline=_deadline(timeout),
        )
        result = await self.pipeline.run(call)
        assert isinstance(result, Reply)
        return Completion(result, call)

    async def stream(
        self,
        request: Mapping[str, Any] | None = None,
        /,
        *,
        cache: str | None = None,
        cache_ttl: float | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> AsyncGenerator[dict[str, Any], None]:
        """A streamed chat completion: yields OpenAI ``chat.completion.chunk`` dicts as they arrive."""
        self._start_alerts()
        body = _body(request, params)
        body["stream"] = True
        chat = validate_chat_request(body)
        call = Call(
            chat,
            namespace=namespace or self.namespace,
            cache=_directives(cache, cache_ttl),
            deadline=_deadline(timeout),
        )
        result = await self.pipeline.run(call)
        assert not isinstance(result, Reply)
        try:
            async for chunk in result:
                if chat.include_usage or not chunk.is_usage_only:
                    yield chunk.data
        finally:
            await result.aclose()  # type: ignore[attr-defined]

    async def embed(
        self,
        request: Mapping[str, Any] | None = None,
        /,
        *,
        cache: str | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """Embeddings (OpenAI ``list`` of ``embedding`` objects)."""
        self._start_alerts()
        call = Call(
            validate_embeddings_request(_body(request, params)),
            namespace=namespace or self.namespace,
            cache=_directives(cache, None),
            deadline=_deadline(timeout),
        )
        result = await self.pipeline.run(call)
        assert isinstance(result, Reply)
        return result.data

    def map(
        self,
        requests: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]],
        /,
        *,
        concurrency: int = 16,
        on_progress: Callable[[BatchStats], None] | None = None,
        cache: str | None = None,
        cache_ttl: float | None = None,
        namespace: str | None = None,
        timeout: float | None = None,
    ) -> AsyncGenerator[MapResult, None]:
        """Many chat completions, ``concurrency`` at a time: ``async for result in slip.map(requests)`` yields
        each ``MapResult`` (``index``, ``custom_id``, ``completion`` or ``error``) as it completes.

        ``requests`` are chat bodies or OpenAI batch lines (``custom_id``, ``url``, ``body``), sync or async
        iterable; a failing request is a result carrying its error, not an exception. ``on_progress`` gets the
        running ``BatchStats`` after each result. The engine is the one ``slipstream batch`` runs.
        """
        from .batch.engine import map_requests

        return map_requests(
            self.pipeline,
            requests,
            concurrency=concurrency,
            on_progress=on_progress,
            namespace=namespace or self.namespace,
            cache=_directives(cache, cache_ttl),
            timeout=timeout,
        )

    def http_client(self, **kwargs: Any) -> Any:
        """An async HTTP client for the official ``openai`` SDK that runs every call through this pipeline:
        ``AsyncOpenAI(api_key="unused", http_client=slip.http_client())``."""
        from .transport import async_http_client

        return async_http_client(self, **kwargs)

    def health(self) -> dict[str, Any]:
        """Per model group, each deployment's circuit-breaker state, in-flight count, latency and limits."""
        return self.pipeline.health()

    def stats(self) -> dict[str, Any]:
        """Counters of the layers (cache hits and misses, coalesced requests...)."""
        return self.pipeline.stats()

    def metrics_registry(self) -> CollectorRegistry | None:
        """The Prometheus registry this client records into (what the gateway serves at ``/metrics``), to
        expose from your own server or push; ``None`` when metrics are off in the config."""
        observer = self.pipeline.observer
        if observer is None or not self.pipeline.config.observe.metrics:
            return None
        return observer.metrics.registry

    def report_bad_hit(self, hit: Completion | str) -> bool:
        """Say a semantic hit was wrong (pass the ``Completion`` or its ``semantic_entry``): its entry is removed
        and the threshold of its namespace and model group is raised. ``True`` when an entry was removed."""
        entry = hit.semantic_entry if isinstance(hit, Completion) else hit
        semantic = self.pipeline.semantic
        if entry is None or semantic is None:
            return False
        return semantic.report_bad(entry)

    async def cache_stats(self) -> dict[str, Any] | None:
        """Cache hits, misses, hit rate, tokens and USD saved, and the store's entries, bytes and evictions."""
        return await self.pipeline.cache_stats()

    async def aclose(self) -> None:
        if self.alerts is not None:
            await self.alerts.aclose()
        await self.pipeline.aclose()

    async def __aenter__(self) -> Slipstream:
        await self.pipeline.start()  # warm Redis connections (when configured) before the first burst
        self._start_alerts()
        return self

    def _start_alerts(self) -> None:
        if self.alerts is not None and not self.alerts.running:
            self.alerts.start()  # idempotent; a closed client's evaluator stays stopped

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()


def _body(request: Mapping[str, Any] | None, params: dict[str, Any]) -> dict[str, Any]:
    if request is None:
        return params
    return {**request, **params} if params else dict(request)


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _directives(cache: str | None, ttl: float | None) -> CacheDirectives:
    if cache is None and ttl is None:
        return DEFAULT_DIRECTIVES
    return CacheDirectives.parse(cache, ttl)
