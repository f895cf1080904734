"""The engine ``slipstream batch`` and ``Slipstream.map`` share: requests through the pipeline, N at a time.

Each request is one ``Pipeline.run`` — cache, coalescing, limits, retries and routing included — in its own task,
with at most ``concurrency`` tasks in flight. A task's done-callback puts it on a queue and ``Engine.run`` yields
results in the order they complete, refilling the free slot *before* it yields, so a slow consumer never leaves
the pipeline idle, while the results waiting for it never exceed ``concurrency``. A sync source of requests (a
list, a file reader) is read inline; an async one is read by one fetch task at a time, so a slow producer never
holds back results that are already done.

``stop()`` stops taking new requests and lets those in flight finish (their results are still yielded);
``abandon()`` also cancels the ones in flight, whose results are then never yielded. Closing the iterator early
cancels what is in flight. A request's failure is a result carrying the error, never an exception out of the
iterator: one bad request does not end a batch. ``BatchStats`` counts what happened, for progress displays.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Callable,
    Iterable,
    Iterator,
    Mapping,
    Sized,
)
from dataclasses import dataclass, field
from typing import Any

from ..cache.directives import DEFAULT_DIRECTIVES, CacheDirectives
from ..call import Call
from ..client import Completion
from ..errors import InvalidRequest, SlipstreamError
from ..pipeline import Pipeline
from ..providers.base import Price
from ..types import Reply
from .estimate import price_of_group
from .reader import BatchRequest, parse_request

__all__ = [
    "DEFAULT_CONCURRENCY",
    "BatchStats",
    "Engine",
    "MapResult",
    "ProgressCallback",
    "collect_in_order",
    "map_requests",
]

DEFAULT_CONCURRENCY = 16


@dataclass(slots=True)
class MapResult:
    """One request's outcome: ``completion`` when it succeeded, else ``error`` (OpenAI-shaped via ``to_dict``).

    ``index`` is the request's position in ``map``'s input (its line number in a batch file); ``cost`` is the USD
    its upstream call cost (0 for cache hits, coalesced duplicates and unpriced models).
    """

    index: int
    custom_id: str
    completion: Completion | None = None
    error: SlipstreamError | None = None
    coalesced: bool = False  # answered by an identical request's upstream call
    cost: float = 0.0

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(slots=True)
class BatchStats:
    """Counters of one run; ``total`` is None when the input's length is unknown."""

    total: int | None = None
    done: int = 0  # results so far, failures included
    failed: int = 0
    cache_hits: int = 0
    coalesced: int = 0
    prompt_tokens: int = 0  # of upstream calls (hits spend none)
    completion_tokens: int = 0
    cost: float = 0.0  # USD of upstream calls
    in_flight: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def succeeded(self) -> int:
        return self.done - self.failed

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def hit_rate(self) -> float:
        """Share of results answered from the cache."""
        return self.cache_hits / self.done if self.done else 0.0

    def elapsed(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.started

    def rate(self, now: float | None = None) -> float:
        """Results per second since the start."""
        elapsed = self.elapsed(now)
        return self.done / elapsed if elapsed > 0 else 0.0

    def eta(self, now: float | None = None) -> float | None:
        """Seconds left at the rate so far; None while unknown."""
        rate = self.rate(now)
        if self.total is None or rate <= 0:
            return None
        return max(self.total - self.done, 0) / rate


ProgressCallback = Callable[[BatchStats], None]
Item = BatchRequest | MapResult  # a MapResult in the input is a request already known to fail (invalid)


class Engine:
    """One run of requests through ``pipeline`` (an engine is used for one ``run``; its ``stats`` count it)."""

    def __init__(
        self,
        pipeline: Pipeline,
        *,
        concurrency: int = DEFAULT_CONCURRENCY,
        namespace: str = "default",
        cache: CacheDirectives = DEFAULT_DIRECTIVES,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        total: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.pipeline = pipeline
        self.concurrency = concurrency
        self.namespace = namespace
        self.cache = cache
        self.timeout = timeout
        self.on_progress = on_progress
        self.stats = BatchStats(total=total)
        self._stopping = False
        self._in_flight: set[asyncio.Future[MapResult]] = set()
        self._fetching: asyncio.Future[Item | None] | None = None
        self._prices: dict[str, Price | None] = {}

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    def stop(self) -> None:
        """Take no new requests; those in flight finish and are yielded."""
        self._stopping = True
        if self._fetching is not None:
            self._fetching.cancel()

    def abandon(self) -> int:
        """Stop, and cancel the requests in flight (they are not yielded). Returns how many were cancelled."""
        self.stop()
        cancelled = 0
        for future in self._in_flight:
            cancelled += future.cancel()
        return cancelled

    async def run(self, items: Iterable[Item] | AsyncIterable[Item]) -> AsyncGenerator[MapResult, None]:
        """Results in completion order. The source's own errors (an unreadable file) end the run, raised."""
        loop = asyncio.get_running_loop()
        done: asyncio.Queue[asyncio.Future[Any]] = asyncio.Queue()
        sync_items: Iterator[Item] | None = None
        async_items: AsyncIterator[Item] | None = None
        if isinstance(items, AsyncIterable):
            async_items = aiter(items)
        else:
            sync_items = iter(items)
        exhausted = False

        def launch(item: Item) -> None:
            future: asyncio.Future[MapResult]
            if isinstance(item, MapResult):
                future = loop.create_future()
                future.set_result(item)
            else:
                future = loop.create_task(self._call(item))
            future.add_done_callback(done.put_nowait)
            self._in_flight.add(future)

        def fill() -> None:
            nonlocal exhausted
            while not exhausted and not self._stopping and len(self._in_flight) < self.concurrency:
                if sync_items is not None:
                    item = next(sync_items, None)
                    if item is None:
                        exhausted = True
                    else:
                        launch(item)
                elif self._fetching is None:
                    assert async_items is not None
                    self._fetching = asyncio.ensure_future(anext(async_items, None))
                    self._fetching.add_done_callback(done.put_nowait)
                    return
                else:
                    return  # one fetch at a time: an async generator cannot be read concurrently

        try:
            fill()
            while self._in_flight or self._fetching is not None:
                future = await done.get()
                if future is self._fetching:
                    self._fetching = None
                    if not future.cancelled():
                        item = future.result()  # the source's own error is raised here
                        if item is None:
                            exhausted = True
                        elif not self._stopping:
                            launch(item)
                    fill()
                    continue
                self._in_flight.discard(future)
                if future.cancelled():
                    continue  # abandoned: it will run again next time
                result: MapResult = future.result()
                fill()
                self._record(result)
                yield result
        finally:
            pending: list[asyncio.Future[Any]] = [*self._in_flight]
            if self._fetching is not None:
                pending.append(self._fetching)
            for future in pending:
                future.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            self._in_flight.clear()
            self._fetching = None

    async def _call(self, item: BatchRequest) -> MapResult:
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        call = Call(item.request, namespace=self.namespace, cache=self.cache, deadline=deadline)
        try:
            reply = await self.pipeline.run(call)
        except SlipstreamError as exc:
            return MapResult(item.index, item.custom_id, error=exc)
        except Exception as exc:  # a bug must not end the batch: it is reported on this request's line
            error = SlipstreamError(f"internal error: {type(exc).__name__}: {exc}", code="internal_error")
            return MapResult(item.index, item.custom_id, error=error)
        assert isinstance(reply, Reply)  # batch requests never stream (the reader refuses them)
        cost = 0.0
        if call.cache_status != "hit" and not call.coalesced:
            price = self._price_of(item.request.model)
            cost = price.cost(reply.usage) if price is not None else 0.0
        return MapResult(
            item.index, item.custom_id, Completion(reply, call), coalesced=call.coalesced, cost=cost
        )

    def _price_of(self, model: str) -> Price | None:
        if model not in self._prices:
            self._prices[model] = price_of_group(self.pipeline.resolve(model))
        return self._prices[model]

    def _record(self, result: MapResult) -> None:
        stats = self.stats
        stats.done += 1
        stats.in_flight = len(self._in_flight)
        completion = result.completion
        if completion is None:
            stats.failed += 1
        elif completion.cache == "hit":
            stats.cache_hits += 1
        elif result.coalesced:
            stats.coalesced += 1
        else:
            usage = completion.data.get("usage") or {}
            stats.prompt_tokens += int(usage.get("prompt_tokens") or 0)
            stats.completion_tokens += int(usage.get("completion_tokens") or 0)
            stats.cost += result.cost
        if self.on_progress is not None:
            self.on_progress(stats)


# ------------------------------------------------------------------------------------------------ the SDK side
def map_requests(
    pipeline: Pipeline,
    requests: Iterable[Mapping[str, Any]] | AsyncIterable[Mapping[str, Any]],
    *,
    concurrency: int = DEFAULT_CONCURRENCY,
    on_progress: ProgressCallback | None = None,
    namespace: str = "default",
    cache: CacheDirectives = DEFAULT_DIRECTIVES,
    timeout: float | None = None,
) -> AsyncGenerator[MapResult, None]:
    """``Slipstream.map``: chat bodies (or OpenAI batch lines) in, results out as they complete."""
    engine = Engine(
        pipeline,
        concurrency=concurrency,
        namespace=namespace,
        cache=cache,
        timeout=timeout,
        on_progress=on_progress,
        total=len(requests) if isinstance(requests, Sized) else None,
    )
    if isinstance(requests, AsyncIterable):
        return engine.run(_parsed_async(requests))
    return engine.run(_parsed(requests))


async def collect_in_order(results: AsyncIterator[MapResult]) -> list[MapResult]:
    """Every result, in input order (``index``)."""
    collected = [result async for result in results]
    collected.sort(key=lambda result: result.index)
    return collected


def _parse(obj: Mapping[str, Any], index: int) -> Item:
    body = dict(obj) if isinstance(obj, Mapping) and not isinstance(obj, dict) else obj
    try:
        return parse_request(body, index, f"request-{index}")
    except InvalidRequest as exc:
        custom_id = obj.get("custom_id") if isinstance(obj, Mapping) else None
        return MapResult(index, custom_id if isinstance(custom_id, str) else f"request-{index}", error=exc)


def _parsed(requests: Iterable[Mapping[str, Any]]) -> Iterator[Item]:
    for index, obj in enumerate(requests):
        yield _parse(obj, index)


async def _parsed_async(requests: AsyncIterable[Mapping[str, Any]]) -> AsyncIterator[Item]:
    index = 0
    async for obj in requests:
        yield _parse(obj, index)
        index += 1
