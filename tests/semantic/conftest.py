"""Semantic-cache tests: the bundled model is loaded once per process (``LocalEmbedder.shared``), so tests
that need real embeddings pay its ~0.5 s start once. A test that needs Redis uses the shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from slipstream.config import Config, parse_config
from slipstream.semantic.embedder import LocalEmbedder
from tests.redis_server import redis_server, redis_url  # noqa: F401  (fixtures)

SIM_GROUP = "deployments: [{provider: sim, model: sim-1}]"


@pytest.fixture(scope="session")
def embedder() -> LocalEmbedder:
    model = LocalEmbedder.shared()
    model.embed_sync(["warm up"])
    return model


def semantic_config(
    tmp_path: Path, *, threshold: float = 0.9, extra_cache: str = "", semantic: str = ""
) -> Config:
    return parse_config(
        f"""
cache:
  sqlite: {{path: {tmp_path / "cache.db"}}}
  {extra_cache}
observe: {{request_log: {{enabled: false}}}}
coalescing: {{enabled: false}}
model_groups:
  sim:
    semantic: {{enabled: true, threshold: {threshold} {semantic}}}
    {SIM_GROUP}
  sim-b:
    semantic: {{enabled: true, threshold: {threshold}}}
    {SIM_GROUP}
  plain:
    {SIM_GROUP}
""",
        environ={},
    )
