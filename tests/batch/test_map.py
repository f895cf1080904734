"""``Slipstream.map`` and its sync twin: the engine the batch command runs, driven from the SDK."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from slipstream import ModelNotFound, Slipstream, SlipstreamSync
from slipstream.batch import BatchStats, Engine, MapResult
from slipstream.batch.reader import parse_request
from slipstream.config import parse_config
from slipstream.providers.sim import SimProvider

from .conftest import batch_line, chat_body, sim_config_text


def _config(tmp_path: Path, extra: str = ""):
    return parse_config(sim_config_text(tmp_path, extra=extra), environ={})


SLOW_GROUP = """
  slow:
    deployments: [{provider: sim, model: sim-1, options: {ttft: 0.02}}]
"""


@pytest.fixture
async def slip(tmp_path: Path) -> AsyncIterator[Slipstream]:
    async with Slipstream(_config(tmp_path, SLOW_GROUP)) as client:
        yield client


def _sim(slip: Slipstream, group: str) -> SimProvider:
    provider = slip.pipeline.provider_for(slip.pipeline.resolve(group).deployments[0])
    assert isinstance(provider, SimProvider)
    return provider


async def test_map_yields_every_result_with_its_index_and_id(slip: Slipstream):
    requests = [chat_body(f"question {i}") for i in range(40)]
    requests[5] = batch_line("five", chat_body("question 5"))
    results = [r async for r in slip.map(requests, concurrency=8)]
    assert sorted(r.index for r in results) == list(range(40))
    by_index = {r.index: r for r in results}
    assert by_index[5].custom_id == "five" and by_index[6].custom_id == "request-6"
    assert all(r.ok and r.completion is not None and r.completion.text for r in results)
    # priced at $1/$2 per 1M tokens: every miss costs something
    assert all(r.cost > 0 for r in results)


async def test_failures_are_results_not_exceptions(slip: Slipstream):
    requests = [
        chat_body("fine"),
        chat_body("no such model", model="nope"),
        {"model": "sim", "messages": []},
        chat_body("upstream 500", model="broken"),
    ]
    results = {r.index: r async for r in slip.map(requests)}
    assert results[0].ok
    assert isinstance(results[1].error, ModelNotFound)
    assert results[2].error is not None and results[2].error.param == "messages"
    assert results[3].error is not None and results[3].error.status == 502
    assert results[3].custom_id == "request-3" and results[3].completion is None


async def test_progress_and_cache_hits(slip: Slipstream):
    seen: list[tuple[int, int, int]] = []

    def on_progress(stats: BatchStats) -> None:
        seen.append((stats.done, stats.failed, stats.cache_hits))

    requests = [chat_body(f"q{i % 5}") for i in range(20)] + [chat_body("x", model="nope")]
    results = [r async for r in slip.map(requests, concurrency=1, on_progress=on_progress)]
    assert len(results) == 21
    assert [done for done, _, _ in seen] == list(range(1, 22))
    assert seen[-1] == (21, 1, 15)  # 5 distinct questions: one miss each, the other 15 hit the cache


async def test_concurrency_is_bounded(slip: Slipstream):
    sim = _sim(slip, "slow")
    peak = 0

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, sim.stats.in_flight)
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    requests = [chat_body(f"slow {i}", model="slow") for i in range(30)]
    results = [r async for r in slip.map(requests, concurrency=4)]
    sampler.cancel()
    assert len(results) == 30 and all(r.ok for r in results)
    assert 3 <= peak <= 4  # each request waits 20 ms upstream: the slots fill up, and never past four


async def test_async_source_and_results_before_the_source_ends(slip: Slipstream):
    release = asyncio.Event()

    async def requests() -> AsyncIterator[dict]:
        yield chat_body("first")
        await release.wait()  # a slow producer: the first result must not wait for it
        yield chat_body("second")

    results = slip.map(requests())
    first = await anext(results)
    assert first.index == 0 and first.ok
    release.set()
    second = await anext(results)
    assert second.index == 1 and second.ok
    with pytest.raises(StopAsyncIteration):
        await anext(results)


async def test_closing_early_cancels_what_is_in_flight(slip: Slipstream):
    sim = _sim(slip, "slow")
    requests = [chat_body(f"early {i}", model="slow") for i in range(50)]
    async with contextlib.aclosing(slip.map(requests, concurrency=5)) as results:
        async for _ in results:
            break
    assert sim.stats.in_flight == 0
    assert sim.calls < 50


async def test_stop_finishes_in_flight_and_abandon_cancels_it(slip: Slipstream):
    items = [parse_request(chat_body(f"stop {i}", model="slow"), i, f"r{i}") for i in range(40)]
    engine = Engine(slip.pipeline, concurrency=4)
    results: list[MapResult] = []
    async for result in engine.run(items):
        results.append(result)
        if len(results) == 2:
            engine.stop()
    # stopped after 2 results: only what was in flight then finished, every one of them yielded
    assert 2 < len(results) <= 2 + 4 and engine.in_flight == 0

    engine = Engine(slip.pipeline, concurrency=4)
    results, cancelled = [], 0
    async for result in engine.run(items[20:]):
        if not results:
            cancelled = engine.abandon()
        results.append(result)
    # at the first result, 4 were in flight (the refilled slot among them, surely unfinished): the cancelled
    # ones are never yielded; ones that had already finished still are, and nothing new started
    assert cancelled >= 1 and len(results) == 1 + 4 - cancelled


def test_sync_map_returns_results_in_input_order(tmp_path: Path):
    with SlipstreamSync(_config(tmp_path, SLOW_GROUP)) as slip:
        requests = [chat_body(f"sync {i}", model="slow" if i % 2 else "sim") for i in range(12)]
        results = slip.map(requests, concurrency=6)
    assert [r.index for r in results] == list(range(12))
    assert all(r.ok for r in results)
    assert len({r.completion.text for r in results if r.completion}) > 1
