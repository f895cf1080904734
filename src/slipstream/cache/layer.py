"""The exact response cache layer.

A hit is answered from the store: as the stored reply, or — for a streamed request — as a replayed stream.
A miss passes on; a complete reply is stored, and a stream is watched as it passes (never held back) and stored
only if it finished cleanly: every choice reached a finish reason and the upstream ended without error.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from ..call import Call, CallResult, Handler
from ..providers.base import Price
from ..stores.base import CacheStore
from ..streams import assembled_on_completion, replay_stream
from ..types import Chunk, ChunkStream, Reply
from .key import cache_key

__all__ = ["CacheLayer", "CacheStats"]

log = logging.getLogger("slipstream.cache")


class CacheStats:
    """Counters kept by the layer (the store keeps entries, bytes and evictions)."""

    __slots__ = (
        "bypasses",
        "hits",
        "misses",
        "saved_completion_tokens",
        "saved_prompt_tokens",
        "saved_usd",
        "stores",
    )

    def __init__(self) -> None:
        self.hits = 0
        self.misses = 0
        self.bypasses = 0
        self.stores = 0
        self.saved_prompt_tokens = 0
        self.saved_completion_tokens = 0
        self.saved_usd = 0.0  # only for groups whose deployment has a price

    @property
    def hit_rate(self) -> float:
        looked = self.hits + self.misses
        return self.hits / looked if looked else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "hits": self.hits,
            "misses": self.misses,
            "bypasses": self.bypasses,
            "hit_rate": round(self.hit_rate, 4),
            "stores": self.stores,
            "saved_prompt_tokens": self.saved_prompt_tokens,
            "saved_completion_tokens": self.saved_completion_tokens,
            "saved_usd": round(self.saved_usd, 6),
        }


class CacheLayer:
    def __init__(
        self,
        store: CacheStore,
        *,
        ttl: float,
        normalize_whitespace: bool = False,
        clock: Callable[[], float] = time.time,
        price_of: Callable[[Call], Price | None] | None = None,
    ) -> None:
        self.store = store
        self.price_of = price_of
        self.ttl = ttl
        self.normalize = normalize_whitespace
        self.clock = clock
        self.stats = CacheStats()

    async def __call__(self, call: Call, next: Handler) -> CallResult:
        directives = call.cache
        if directives.bypass:
            call.cache_status = "bypass"
            self.stats.bypasses += 1
            return await next(call)
        key = call.cache_key = cache_key(
            call.namespace, call.kind, call.request.body, normalize=self.normalize
        )
        if directives.read:
            entry = await self.store.get(key)
            if entry is not None:
                reply = Reply(body=entry.value)
                if _looks_whole(reply, call.kind):
                    call.cache_status = "hit"
                    call.cache_age = max(0.0, self.clock() - entry.created_at)
                    self._count_hit(reply, call)
                    if call.stream:
                        return replay_stream(reply.data, include_usage=call.request.include_usage)  # type: ignore[union-attr]
                    return reply
                await self.store.delete(key)  # unreadable: a miss, and gone
            call.cache_status = "miss"
            self.stats.misses += 1
        else:
            call.cache_status = "refresh"
        result = await next(call)
        if not directives.write or call.fallback is not None or call.coalesced:
            # A static fallback reply is no answer to store; a coalesced follower's answer is the leader's,
            # which the leader's own pass through this layer stores once.
            return result
        if call.cache_status == "semantic-hit":  # another prompt's answer: kept under that prompt's key only
            return result
        ttl = directives.ttl or self.ttl
        if isinstance(result, Reply):
            if _cacheable(result.data, call.kind):
                await self._store(key, result.body, ttl)
            return result
        return self._record(result, key, ttl)

    def _record(self, stream: ChunkStream, key: str, ttl: float) -> AsyncIterator[Chunk]:
        async def store(reply: dict[str, Any]) -> None:
            if _cacheable(reply, "chat"):
                await self._store(key, Reply(reply).body, ttl)

        return assembled_on_completion(stream, store)

    async def _store(self, key: str, body: bytes, ttl: float) -> None:
        try:
            await self.store.set(key, body, ttl)
            self.stats.stores += 1
        except Exception:  # a cache that cannot write must not fail the request it is serving
            log.warning("cache write failed", exc_info=True)

    def _count_hit(self, reply: Reply, call: Call) -> None:
        self.stats.hits += 1
        usage = reply.usage
        if usage:
            self.stats.saved_prompt_tokens += int(usage.get("prompt_tokens") or 0)
            self.stats.saved_completion_tokens += int(usage.get("completion_tokens") or 0)
            price = self.price_of(call) if self.price_of is not None else None
            if price is not None:
                self.stats.saved_usd += price.cost(usage)


def _looks_whole(reply: Reply, kind: str) -> bool:
    """A stored entry that does not parse, or is not the shape its kind needs, is treated as a miss."""
    try:
        return _cacheable(reply.data, kind)
    except ValueError:  # orjson.JSONDecodeError
        return False


def _cacheable(data: Any, kind: str) -> bool:
    if not isinstance(data, dict):
        return False
    if kind == "embed":
        return isinstance(data.get("data"), list) and bool(data["data"])
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        return False
    return all(
        isinstance(c, dict) and c.get("finish_reason") and isinstance(c.get("message"), dict) for c in choices
    )
