"""The async SDK: the same pipeline as the gateway, run in-process.

async with Slipstream() as slip:                      # embedded defaults, or Slipstream("slipstream.yaml")
    reply = await slip.chat(model="sim", messages=[{"role": "user", "content": "hi"}])
    print(reply.text, reply.cache)                     # "…", "miss" — the same call again says "hit"

    async for chunk in slip.stream(model="sim", messages=[...]):
        print(chunk["choices"][0]["delta"].get("content", ""), end="")

    openai = AsyncOpenAI(api_key="unused", http_client=slip.http_client())   # the official SDK, in-process
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncGenerator, Mapping
from types import TracebackType
from typing import Any

from .cache.directives import DEFAULT_DIRECTIVES, CacheDirectives
from .call import Call
from .config import Config, load_config
from .pipeline import Pipeline
from .schema import validate_chat_request, validate_embeddings_request
from .stores.base import CacheStore
from .types import Reply

__all__ = ["Completion", "Slipstream"]


class Completion:
    """A chat completion (OpenAI JSON in ``data``) and what the pipeline did for it."""

    __slots__ = ("_reply", "cache", "cache_age", "deployment")

    def __init__(self, reply: Reply, call: Call) -> None:
        self._reply = reply
        self.cache = call.cache_status
        self.cache_age = call.cache_age
        self.deployment = call.deployment

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
        call = Call(
            validate_embeddings_request(_body(request, params)),
            namespace=namespace or self.namespace,
            cache=_directives(cache, None),
            deadline=_deadline(timeout),
        )
        result = await self.pipeline.run(call)
        assert isinstance(result, Reply)
        return result.data

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

    async def cache_stats(self) -> dict[str, Any] | None:
        """Cache hits, misses, hit rate, tokens and USD saved, and the store's entries, bytes and evictions."""
        return await self.pipeline.cache_stats()

    async def aclose(self) -> None:
        await self.pipeline.aclose()

    async def __aenter__(self) -> Slipstream:
        return self

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
