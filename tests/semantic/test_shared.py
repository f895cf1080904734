"""Two pipelines sharing one redis-server: an entry stored by one is a semantic hit in the other, a new
instance loads what is there, and a bad-hit report removes the entry everywhere."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from slipstream import Slipstream

from .conftest import semantic_config

FIRST = "What are some good tips for self study?"
SIMILAR = "What are the smart tips for self studying?"


def user(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


async def eventually(condition: Callable[[], bool], what: str) -> None:
    """Wait for a change to travel through Redis (bounded: 10 s)."""
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"never happened: {what}")


def entries(slip: Slipstream) -> int:
    layer = slip.pipeline.semantic
    assert layer is not None
    return sum(len(index) for index in layer.indexes.values())


async def test_an_entry_stored_by_one_instance_is_a_hit_in_another(tmp_path, redis_url, embedder):
    config = semantic_config(tmp_path, extra_cache=f"redis: {{url: '{redis_url}', timeout: 1.0}}")
    async with Slipstream(config) as a, Slipstream(config) as b:
        await a.pipeline.semantic.warm()
        await b.pipeline.semantic.warm()
        first = await a.chat(model="sim", messages=user(FIRST))
        await a.pipeline.cache.store.flush()  # the Redis tier writes behind
        await eventually(lambda: entries(b) == 1, "b's index learns a's entry")

        hit = await b.chat(model="sim", messages=user(SIMILAR))
        assert hit.cache == "semantic-hit"
        assert hit.text == first.text

        async with Slipstream(config) as c:  # started later: loads the shared entries
            await c.pipeline.semantic.warm()
            assert entries(c) == 1
            assert (await c.chat(model="sim", messages=user(SIMILAR))).cache == "semantic-hit"

        assert b.report_bad_hit(hit)
        await eventually(lambda: entries(a) == 0, "a drops the entry b reported")
        assert (await a.chat(model="sim", messages=user(SIMILAR))).cache == "miss"


async def test_without_redis_the_instance_still_answers(tmp_path, embedder):
    config = semantic_config(tmp_path, extra_cache="redis: {url: 'redis://127.0.0.1:1/0', timeout: 0.05}")
    async with Slipstream(config) as slip:
        first = await slip.chat(model="sim", messages=user(FIRST))
        assert first.cache == "miss"
        again = await slip.chat(model="sim", messages=user(SIMILAR))
        # Publishing failed, but the local index has the entry and the memory tier in front of Redis the reply.
        assert again.cache == "semantic-hit"
        assert again.text == first.text
