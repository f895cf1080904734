"""The semantic cache layer: right after the exact cache, for model groups that turn it on.

The exact tier always goes first; this layer sees only its misses (and refreshes). On a miss it embeds the
last user turn, searches the request's partition (``partition.partition_key``) and lets the matcher decide
(``matcher.decide``: threshold, short-prompt bar, guards). A match is served from the exact store — the
reply that the matched prompt got, under that prompt's exact key — as a reply, or replayed as a stream for a
streamed request; the call says ``cache_status = "semantic-hit"`` with the similarity and the entry id (the
gateway sends them as ``x-slipstream-cache: semantic-hit``, ``x-slipstream-similarity`` and
``x-slipstream-semantic-entry``). A semantic hit is never written back under the new prompt's exact key (the
exact layer skips it), so a bad match can be taken back by removing one entry.

Otherwise the call goes on, and when its answer is one the exact layer stores (complete, or a stream that
finished cleanly; not ``no-store``, not a static fallback, not a coalesced follower) the prompt's vector is
added to the index under the exact key, with the same TTL.

Feedback: ``report_bad(entry_id)`` (the SDK's ``report_bad_hit``, ``POST /api/cache/feedback``), or a request
sent again with ``x-slipstream-feedback: bad`` — that request removes the entry it would have been served and
is answered upstream. A report removes the entry (everywhere, through the index's listeners) and feeds the
scope's adaptive threshold.

Failures of the semantic machinery (an embedder error, a store error) are logged and make the call a plain
miss: the semantic cache can only ever save an upstream call, never cost one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from ..cache.layer import _cacheable, _looks_whole
from ..call import Call, CallResult, Handler
from ..stores.base import CacheStore
from ..streams import assembled_on_completion, replay_stream
from ..types import Chunk, ChunkStream, Reply
from .embedder import Embedder
from .guards import TextProfile
from .index import Entry, SemanticIndex
from .matcher import FeedbackThresholds, MatchPolicy, decide
from .partition import last_user_text, partition_key

__all__ = ["GroupSemantics", "IndexSink", "SemanticLayer", "SemanticStats"]

log = logging.getLogger("slipstream.semantic")

# A stored entry whose reply is not in the exact store yet may just be racing the exact layer's write (it
# stores after this layer returns); only an entry older than this is taken as evicted and dropped.
MISSING_REPLY_GRACE = 10.0
RECENT_HITS = 10_000


class IndexSink(Protocol):
    """Persistence or cross-instance sync of an index (``persist.SqliteIndexStore``, ``shared.RedisIndexSync``)."""

    async def start(self, index: SemanticIndex) -> None: ...

    async def flush(self) -> None: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True, slots=True)
class GroupSemantics:
    """One model group's semantic settings: how it matches and which embedder it uses."""

    policy: MatchPolicy
    embedder: str  # a key of the layer's embedders


class SemanticStats:
    __slots__ = ("errors", "hits", "lookups", "rejected", "reported", "stores")

    def __init__(self) -> None:
        self.lookups = 0
        self.hits = 0
        self.stores = 0
        self.reported = 0
        self.errors = 0
        self.rejected: dict[str, int] = {}  # why the best candidate was refused (threshold, a guard...)

    def as_dict(self) -> dict[str, Any]:
        return {
            "lookups": self.lookups,
            "hits": self.hits,
            "hit_rate": round(self.hits / self.lookups, 4) if self.lookups else 0.0,
            "stores": self.stores,
            "reported_bad": self.reported,
            "errors": self.errors,
            "rejected": dict(sorted(self.rejected.items())),
        }


class SemanticLayer:
    def __init__(
        self,
        store: CacheStore,
        groups: Mapping[str, GroupSemantics],
        embedders: Mapping[str, Embedder],
        *,
        ttl: float,
        sink_for: Callable[[str], IndexSink | None] = lambda model: None,
        index_for: Callable[[int], SemanticIndex] | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.groups = dict(groups)
        self.embedders = dict(embedders)
        self.ttl = ttl
        self.clock = clock
        self.sink_for = sink_for
        self.index_for = index_for or (lambda dim: SemanticIndex(dim, clock=clock))
        self.thresholds = FeedbackThresholds()
        self.stats = SemanticStats()
        self.indexes: dict[str, SemanticIndex] = {}  # embedder name -> its index (vectors never mix)
        self.sinks: list[IndexSink] = []
        self._starting: dict[str, asyncio.Lock] = {}
        self._recent: OrderedDict[str, tuple[str, float, str]] = OrderedDict()  # id -> (scope, sim, model)

    # ------------------------------------------------------------------------------------------ the layer
    async def __call__(self, call: Call, next: Handler) -> CallResult:
        spec = self.groups.get(call.group)
        if spec is None or call.kind != "chat" or call.cache_status not in ("miss", "refresh"):
            return await next(call)
        body = call.request.body
        text = last_user_text(body)
        if text is None:
            return await next(call)
        embedder = self.embedders[spec.embedder]
        try:
            vector = (await embedder.embed([text]))[0]
            index = await self._index(embedder.name, int(vector.shape[0]))
        except Exception:
            self.stats.errors += 1
            log.warning(
                "semantic cache: embedding or index start failed; answering without it", exc_info=True
            )
            return await next(call)
        partition = partition_key(call.namespace, body)
        scope = f"{call.namespace}/{call.group}"
        if call.cache_status == "miss":
            served = await self._lookup(call, spec.policy, index, partition, vector, text, scope)
            if served is not None:
                return served
        result = await next(call)
        key = call.cache_key
        if key is None or not call.cache.write or call.fallback is not None or call.coalesced:
            return result
        now = self.clock()
        entry = Entry(key, partition, text, now, now + (call.cache.ttl or self.ttl), vector)
        if isinstance(result, Reply):
            if _cacheable(result.data, "chat"):
                self._add(index, entry)
            return result
        return self._watch(result, index, entry)

    async def _lookup(
        self,
        call: Call,
        policy: MatchPolicy,
        index: SemanticIndex,
        partition: str,
        vector: Any,
        text: str,
        scope: str,
    ) -> CallResult | None:
        self.stats.lookups += 1
        candidates = index.search(partition, vector, policy.top_k)
        threshold = self.thresholds.threshold(scope, policy.threshold) if policy.adaptive else None
        decision = decide(TextProfile(text), candidates, policy, threshold)
        call.similarity = decision.similarity
        entry = decision.entry
        if entry is None:
            self.stats.rejected[decision.reason] = self.stats.rejected.get(decision.reason, 0) + 1
            return None
        similarity = decision.similarity or 0.0
        if call.feedback == "bad":  # the client says this match was wrong: take it back, ask upstream
            self._report(index, entry, scope, similarity)
            return None
        try:
            stored = await self.store.get(entry.key)
        except Exception:
            self.stats.errors += 1
            log.warning("semantic cache: reading the stored reply failed", exc_info=True)
            return None
        if stored is None:
            if self.clock() - entry.created_at > MISSING_REPLY_GRACE:
                index.remove(entry.id)  # the exact tier expired or evicted its reply
            self.stats.rejected["evicted"] = self.stats.rejected.get("evicted", 0) + 1
            return None
        reply = Reply(body=stored.value)
        if not _looks_whole(reply, "chat"):
            return None
        call.cache_status = "semantic-hit"
        call.semantic_entry = entry.id
        call.cache_age = max(0.0, self.clock() - stored.created_at)
        self.stats.hits += 1
        self.thresholds.served(scope, similarity)
        self._remember(entry.id, scope, similarity, index)
        if call.stream:
            return replay_stream(reply.data, include_usage=call.request.include_usage)  # type: ignore[union-attr]
        return reply

    def _watch(self, stream: ChunkStream, index: SemanticIndex, entry: Entry) -> AsyncIterator[Chunk]:
        async def add(reply: dict[str, Any]) -> None:
            if _cacheable(reply, "chat"):
                self._add(index, entry)

        return assembled_on_completion(stream, add)

    def _add(self, index: SemanticIndex, entry: Entry) -> None:
        index.add(entry)
        self.stats.stores += 1

    # ------------------------------------------------------------------------------------------ feedback
    def report_bad(self, entry_id: str, *, namespace: str | None = None) -> bool:
        """Take back a semantic hit: remove its entry and raise its scope's threshold. ``namespace``, when
        given, must own the entry (a tenant cannot remove another's). ``True`` when an entry was removed."""
        if namespace is not None and not entry_id.startswith(f"{namespace}:"):
            return False
        recent = self._recent.pop(entry_id, None)
        for model, index in self.indexes.items():
            entry = index.get(entry_id)
            if entry is None:
                continue
            if recent is not None and recent[2] == model:
                self._report(index, entry, recent[0], recent[1])
            else:
                self.stats.reported += 1
                index.remove(entry_id)
            return True
        return False

    def _report(self, index: SemanticIndex, entry: Entry, scope: str, similarity: float) -> None:
        self.stats.reported += 1
        index.remove(entry.id)
        self.thresholds.bad(scope, similarity)

    def _remember(self, entry_id: str, scope: str, similarity: float, index: SemanticIndex) -> None:
        model = next((m for m, i in self.indexes.items() if i is index), "")
        self._recent[entry_id] = (scope, similarity, model)
        self._recent.move_to_end(entry_id)
        while len(self._recent) > RECENT_HITS:
            self._recent.popitem(last=False)

    # ------------------------------------------------------------------------------------------ lifecycle
    async def _index(self, model: str, dim: int) -> SemanticIndex:
        index = self.indexes.get(model)
        if index is not None:
            return index
        lock = self._starting.setdefault(model, asyncio.Lock())
        async with lock:
            index = self.indexes.get(model)
            if index is not None:
                return index
            index = self.index_for(dim)
            sink = self.sink_for(model)
            if sink is not None:
                await sink.start(index)
                self.sinks.append(sink)
            self.indexes[model] = index
            return index

    async def warm(self) -> None:
        """Load every local-model index now (else the first request of each group does it)."""
        for spec in self.groups.values():
            embedder = self.embedders[spec.embedder]
            dim = getattr(embedder, "dimensions", None)
            if isinstance(dim, int):
                await self._index(embedder.name, dim)

    async def flush(self) -> None:
        for sink in self.sinks:
            await sink.flush()

    async def aclose(self) -> None:
        for sink in self.sinks:
            try:
                await sink.aclose()
            except Exception:
                log.warning("semantic cache: closing a sink failed", exc_info=True)
        self.sinks.clear()
