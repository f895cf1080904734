"""The shared pieces on a real 3-master Redis Cluster: cache tier, coalescing and global limits across instances."""

from __future__ import annotations

import asyncio
from typing import Any

from slipstream import Slipstream
from slipstream.config import Config, parse_config
from slipstream.errors import RateLimited
from slipstream.providers.sim import SimProvider
from tests.redis_server import ClusterServers, redis_cluster  # noqa: F401 - pytest fixture


def config(url: str, *, options: str = "{}", limits: str = "") -> Config:
    return parse_config(
        f"""
cache: {{sqlite: {{enabled: false}}, redis: {{timeout: 1}}}}
redis: {{url: "{url}", timeout: 1}}
model_groups:
  g:
    retries: {{max_attempts: 1}}
    deployments:
      - {{provider: sim, model: m, options: {options} {limits}}}
""",
        environ={},
    )


def sim(slip: Slipstream) -> SimProvider:
    g = slip.pipeline.resolve("g")
    provider = slip.pipeline.router.runtime(g, g.deployments[0]).provider
    assert isinstance(provider, SimProvider)
    return provider


def ask(text: str) -> dict[str, Any]:
    return {"model": "g", "messages": [{"role": "user", "content": text}]}


async def test_cache_coalescing_and_limits_work_on_a_cluster(redis_cluster: ClusterServers) -> None:  # noqa: F811
    redis_cluster.flush()
    a, b = (Slipstream(config(redis_cluster.url, options="{ttft: 0.3}")) for _ in range(2))
    try:
        # Written through one instance, a hit on the other (many keys, so they land on every master).
        for i in range(12):
            first = await a.chat(ask(f"cluster question {i}"))
            await a.pipeline.cache.store.flush()  # type: ignore[union-attr]  # the Redis write is in the background
            second = await b.chat(ask(f"cluster question {i}"))
            assert (first.cache, second.cache) == ("miss", "hit")
            assert second.text == first.text
        # Identical requests in flight on both: one upstream call.
        before = sim(a).calls + sim(b).calls
        replies = await asyncio.gather(
            *((a if i % 2 else b).chat(ask("in flight on both")) for i in range(10))
        )
        assert len({r.text for r in replies}) == 1
        assert sim(a).calls + sim(b).calls - before == 1
    finally:
        await a.aclose()
        await b.aclose()


async def test_a_global_limit_on_a_cluster(redis_cluster: ClusterServers) -> None:  # noqa: F811
    redis_cluster.flush()
    slips = [
        Slipstream(config(redis_cluster.url, limits=", limits: {rpm: 7, max_wait: 0}")) for _ in range(2)
    ]
    try:
        results = await asyncio.gather(
            *(slips[i % 2].chat(ask(f"limited {i}")) for i in range(12)), return_exceptions=True
        )
        assert sum(isinstance(r, RateLimited) for r in results) == 5
        assert sum(not isinstance(r, BaseException) for r in results) == 7
    finally:
        for s in slips:
            await s.aclose()
