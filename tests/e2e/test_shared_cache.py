"""Two gateway processes sharing one real redis-server: an answer cached through one is a hit on the other."""

from __future__ import annotations

import httpx

from tests.redis_server import redis_server, redis_url  # noqa: F401 - pytest fixtures

from .conftest import GatewayFactory


def _ask(url: str, content: str) -> httpx.Response:
    body = {"model": "sim", "messages": [{"role": "user", "content": content}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=10)


def test_answer_cached_through_one_instance_hits_on_another(gateways: GatewayFactory, redis_url: str):  # noqa: F811
    base = gateways.config_text()
    own_sqlite = str(gateways.workdir / "cache.db")
    # Each instance gets its own SQLite file, so only Redis can carry an entry from one to the other.
    configs = [
        base.replace(own_sqlite, str(gateways.workdir / f"{name}.db")).replace(
            "cache:\n", f"cache:\n  redis: {{url: '{redis_url}'}}\n", 1
        )
        for name in ("a", "b")
    ]
    assert all("redis:" in c and own_sqlite not in c for c in configs)
    first = gateways.start(configs[0], name="a")
    second = gateways.start(configs[1], name="b")
    miss = _ask(first.url, "shared across instances")
    hit = _ask(second.url, "shared across instances")
    assert miss.headers["x-slipstream-cache"] == "miss"
    assert hit.headers["x-slipstream-cache"] == "hit"
    assert hit.json()["choices"][0]["message"]["content"] == miss.json()["choices"][0]["message"]["content"]
    # the other direction, and a namespace-scoped key: still one shared tier
    assert _ask(second.url, "written by b").headers["x-slipstream-cache"] == "miss"
    assert _ask(first.url, "written by b").headers["x-slipstream-cache"] == "hit"
