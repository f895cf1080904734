"""Building the semantic layer from config (imported by the pipeline only when a group turns it on).

Embedders: one shared local model for every group that says ``embedder: local``; one remote embedder per
embeddings group named. Each sits behind an LRU by text hash. Index persistence follows the exact tier: with a
Redis tier the index is shared through Redis (``shared``); with SQLite it is kept in ``semantic.db`` beside
``cache.db`` (``persist``); with memory only, it lives and dies with the process.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from ..config import Config
from ..stores.base import CacheStore
from .embedder import CachedEmbedder, Embedder, LocalEmbedder, RemoteEmbedder
from .layer import GroupSemantics, IndexSink, SemanticLayer
from .matcher import MatchPolicy

__all__ = ["build_semantic_layer", "semantic_redis_url"]

EmbeddingsRun = Callable[[str, list[str]], Awaitable[dict[str, Any]]]


def semantic_redis_url(config: Config) -> str | None:
    """The Redis the exact tier shares, if any (the same rule as ``pipeline.build_cache_store``)."""
    redis = getattr(config, "redis", None)
    shared = redis.url if redis is not None and getattr(redis, "cache", False) else None
    return config.cache.redis_url or shared


def build_semantic_layer(
    config: Config,
    store: CacheStore,
    embeddings: EmbeddingsRun,
    *,
    local: Embedder | None = None,
) -> SemanticLayer | None:
    """The layer for the groups with ``semantic`` on, or ``None`` when none has it. ``local`` replaces the
    bundled model (tests share one loaded model across pipelines this way)."""
    groups: dict[str, GroupSemantics] = {}
    embedders: dict[str, Embedder] = {}
    for name, group in config.model_groups.items():
        semantic = group.policy.semantic
        if semantic is None:
            continue
        key = semantic.embedder
        if key not in embedders:
            if key == "local":
                embedders[key] = CachedEmbedder(local if local is not None else LocalEmbedder.shared())
            else:
                embedders[key] = CachedEmbedder(RemoteEmbedder(key, embeddings))
        policy = MatchPolicy(
            threshold=semantic.threshold,
            guards=semantic.guards,
            top_k=semantic.top_k,
            adaptive=semantic.adaptive,
        )
        groups[name] = GroupSemantics(policy, key)
    if not groups:
        return None
    return SemanticLayer(store, groups, embedders, ttl=config.cache.ttl, sink_for=_sinks(config))


def _sinks(config: Config) -> Callable[[str], IndexSink | None]:
    redis_url = semantic_redis_url(config)

    def sink_for(model: str) -> IndexSink | None:
        if redis_url:
            from .shared import RedisIndexSync

            return RedisIndexSync(redis_url, model)
        if config.cache.sqlite_enabled:
            from .persist import SqliteIndexStore

            return SqliteIndexStore(Path(config.cache.sqlite_path).parent / "semantic.db", model)
        return None

    return sink_for
