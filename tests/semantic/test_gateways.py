"""Two `slipstream serve` processes sharing one real redis-server, with the semantic cache on: a prompt answered
through one is a semantic hit, in other words, on the other; a bad-hit report through the other's feedback
endpoint removes the entry for both."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
import redis

from tests.e2e.conftest import GatewayFactory, gateways, sim_server  # noqa: F401 - pytest fixtures
from tests.redis_server import redis_server, redis_url  # noqa: F401 - pytest fixtures

FIRST = "What are some good tips for self study?"
SIMILAR = "What are the smart tips for self studying?"
ENTRIES = "slipstream:semantic:all-MiniLM-L6-v2-int8:entries"


def ask(url: str, content: str, **headers: str) -> httpx.Response:
    body = {"model": "sim", "messages": [{"role": "user", "content": content}]}
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=30)


def wait_until(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 15
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"never happened: {what}")
        time.sleep(0.02)


def test_a_semantic_hit_across_gateway_processes(gateways: GatewayFactory, redis_url: str):  # noqa: F811
    base = gateways.config_text().replace(
        "  sim:\n    deployments:",
        "  sim:\n    semantic: {enabled: true, threshold: 0.9}\n    deployments:",
        1,
    )
    own_sqlite = str(gateways.workdir / "cache.db")
    configs = [
        base.replace(own_sqlite, str(gateways.workdir / f"{name}.db")).replace(
            "cache:\n", f"cache:\n  redis: {{url: '{redis_url}', timeout: 1.0}}\n", 1
        )
        for name in ("a", "b")
    ]
    a = gateways.start(configs[0], name="a")
    b = gateways.start(configs[1], name="b")
    shared = redis.Redis.from_url(redis_url)
    try:
        first = ask(a.url, FIRST)
        assert first.headers["x-slipstream-cache"] == "miss"
        wait_until(lambda: shared.hlen(ENTRIES) == 1, "a publishes its entry")
        wait_until(lambda: bool(shared.keys("slipstream:cache:*")), "a's reply reaches the shared tier")

        hit = ask(b.url, SIMILAR)
        assert hit.headers["x-slipstream-cache"] == "semantic-hit"
        assert float(hit.headers["x-slipstream-similarity"]) >= 0.9
        assert (
            hit.json()["choices"][0]["message"]["content"] == first.json()["choices"][0]["message"]["content"]
        )

        entry = hit.headers["x-slipstream-semantic-entry"]
        report = httpx.post(f"{b.url}/api/cache/feedback", json={"entry": entry}, timeout=10)
        assert report.json() == {"removed": True}
        wait_until(lambda: shared.hlen(ENTRIES) == 0, "b's removal reaches Redis")
        # a hears of the removal through the change log (a semantic hit stores nothing, so asking again is free)
        wait_until(
            lambda: (
                ask(a.url, "What are smart tips for self studying?").headers["x-slipstream-cache"] == "miss"
            ),
            "a stops serving the removed entry",
        )
    finally:
        shared.close()
