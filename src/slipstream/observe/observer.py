"""The pipeline's one hook into observability: every finished call becomes a ``RequestRecord`` for the sinks.

``Pipeline.run`` calls ``finish`` once per request — when a reply is returned, when a call fails, and at the end
of a stream (the stream is watched, not buffered: the first chunk's time is its TTFT, the usage chunk its
usage). Recording is cheap (metrics are plain numbers until scraped; the request log is a queue drained by a
background thread into its writer process), so it happens inline; nothing here waits on disk or network.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..errors import SlipstreamError
from ..types import Chunk, ChunkStream
from .metrics import Metrics
from .record import record_from_call
from .requestlog import RequestLog

if TYPE_CHECKING:
    from ..call import Call
    from ..providers.base import Price

__all__ = ["Observer"]

_CLIENT_CLOSED = 499  # the client went away before the answer was complete (nginx's convention)


class Observer:
    def __init__(
        self,
        metrics: Metrics,
        request_log: RequestLog | None = None,
        *,
        price_of: Callable[[Call], Price | None] | None = None,
        store_text: bool = False,
    ) -> None:
        self.metrics = metrics
        self.request_log = request_log
        self.price_of = price_of
        self.store_text = store_text

    def start(self) -> None:
        self.metrics.in_flight += 1

    def finish(
        self,
        call: Call,
        *,
        ts: float,
        started: float,
        status: int,
        usage: Mapping[str, Any] | None = None,
        error: BaseException | None = None,
        ttft: float | None = None,
        reply_text: str | None = None,
    ) -> None:
        self.metrics.in_flight -= 1
        now = time.perf_counter()
        price = self.price_of(call) if self.price_of is not None and usage else None
        record = record_from_call(
            call,
            ts=ts,
            status=status,
            latency_ms=(now - started) * 1000,
            usage=usage,
            price=price,
            error=error,
            ttft_ms=None if ttft is None else (ttft - started) * 1000,
            upstream_ms=call.upstream_ms,
            operation=call.operation,
            prompt_text=_prompt_text(call) if self.store_text else None,
            reply_text=reply_text if self.store_text else None,
        )
        self.metrics.observe(record)
        if self.request_log is not None:
            self.request_log.record(record)
        if call.span is not None:  # made inside a tracked block: count it there (observe/track.py)
            call.span.add(record, self.request_log)

    def failed(self, call: Call, *, ts: float, started: float, error: BaseException) -> None:
        if isinstance(error, SlipstreamError):
            status = error.status
        elif isinstance(error, asyncio.CancelledError | GeneratorExit):
            status = _CLIENT_CLOSED
        else:
            status = 500
        self.finish(call, ts=ts, started=started, status=status, error=error)

    async def watch(
        self, call: Call, stream: ChunkStream, *, ts: float, started: float
    ) -> AsyncIterator[Chunk]:
        """Pass a stream through; record it when it ends (its first chunk's time is the TTFT)."""
        ttft: float | None = None
        usage: Mapping[str, Any] | None = None
        error: BaseException | None = None
        try:
            async for chunk in stream:
                if ttft is None:
                    ttft = time.perf_counter()
                chunk_usage = chunk.data.get("usage")
                if chunk_usage:
                    usage = chunk_usage
                yield chunk
        except BaseException as exc:
            error = exc
            raise
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
            if error is None:
                self.finish(call, ts=ts, started=started, status=200, usage=usage, ttft=ttft)
            else:
                self.failed(call, ts=ts, started=started, error=error)

    async def aclose(self) -> None:
        if self.request_log is not None:
            await self.request_log.aclose()


def _prompt_text(call: Call) -> str | None:
    messages = call.request.body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    content = messages[-1].get("content") if isinstance(messages[-1], dict) else None
    return content if isinstance(content, str) else None
