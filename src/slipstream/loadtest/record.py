"""What a load run measured: raw samples while it runs, exact figures after.

While the run goes, :class:`Recorder` only appends floats to ``array('d')`` columns (8 bytes a sample, no object
per request) and bumps an error counter. Afterwards :meth:`Recorder.summary` sorts the columns once, so every
percentile is exact (nearest rank), not a histogram estimate, and :meth:`Recorder.timeline` buckets the
samples by the second they completed in, for charts and for seeing a run change over time.

Latency percentiles are over successful replies (status < 400) only: a fast 429 or a refused connection is not
a fast answer, and mixing them in would make an overloaded target look quick. Failures are counted by class —
``http_<status>``, ``timeout``, ``connect`` (could not connect), ``connection`` (dropped mid-reply),
``protocol`` (not HTTP). In the open loop a request that got no free connection before its deadline is a
``timeout`` too, as it would be for the user waiting on it.
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

__all__ = ["Distribution", "Recorder", "Second", "Summary", "percentile"]


def percentile(ordered: Sequence[float], q: float) -> float:
    """Nearest-rank percentile of an ascending sequence (``q`` in 0-100); NaN when empty."""
    if not ordered:
        return math.nan
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class Distribution:
    """Milliseconds."""

    count: int
    p50: float
    p95: float
    p99: float
    max: float
    mean: float
    min: float

    @classmethod
    def of(cls, seconds: Sequence[float]) -> Distribution:
        ordered = sorted(seconds)
        if not ordered:
            nan = math.nan
            return cls(0, nan, nan, nan, nan, nan, nan)
        ms = 1000.0
        return cls(
            count=len(ordered),
            p50=percentile(ordered, 50) * ms,
            p95=percentile(ordered, 95) * ms,
            p99=percentile(ordered, 99) * ms,
            max=ordered[-1] * ms,
            mean=math.fsum(ordered) / len(ordered) * ms,
            min=ordered[0] * ms,
        )

    def to_dict(self) -> dict[str, Any]:
        return _finite_dict(asdict(self))


@dataclass(frozen=True, slots=True)
class Summary:
    requests: int  # completed: replies of any status plus failures
    ok: int
    errors: int
    elapsed_s: float
    requests_per_s: float
    ok_per_s: float
    error_rate: float
    latency_ms: Distribution
    ttft_ms: Distribution  # streamed, successful replies only
    streamed: int
    errors_by_class: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _finite_dict(asdict(self))


@dataclass(frozen=True, slots=True)
class Second:
    """One slice of a run (a second; the last one may be up to 1.5 s), by completion time."""

    t: float  # the slice's start, seconds from the run's start
    span: float  # its length in seconds
    requests: int
    errors: int
    p50_ms: float
    p99_ms: float

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.span

    @property
    def errors_per_s(self) -> float:
        return self.errors / self.span

    def to_dict(self) -> dict[str, Any]:
        return _finite_dict(asdict(self))


class Recorder:
    """Samples of one run. Times are seconds; ``end`` is the completion time relative to the run's start."""

    __slots__ = ("_error_ends", "_ok_ends", "errors", "latencies", "ttfts")

    def __init__(self) -> None:
        self.latencies = array("d")
        self._ok_ends = array("d")
        self.ttfts = array("d")
        self._error_ends = array("d")
        self.errors: dict[str, int] = {}

    def ok(self, latency: float, end: float) -> None:
        self.latencies.append(latency)
        self._ok_ends.append(end)

    def ok_appenders(self) -> tuple[Callable[[float], None], Callable[[float], None]]:
        """``(latency, end)`` appenders doing what :meth:`ok` does, for a caller on the hot path."""
        return self.latencies.append, self._ok_ends.append

    def ttft(self, seconds: float) -> None:
        self.ttfts.append(seconds)

    def error(self, kind: str, end: float) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self._error_ends.append(end)

    @property
    def last_end(self) -> float:
        """The latest completion's ``end`` (0.0 before any): each column is appended to in time order."""
        return max(
            self._ok_ends[-1] if self._ok_ends else 0.0, self._error_ends[-1] if self._error_ends else 0.0
        )

    @property
    def completed(self) -> int:
        return len(self.latencies) + len(self._error_ends)

    def summary(self, elapsed: float) -> Summary:
        ok = len(self.latencies)
        errors = len(self._error_ends)
        requests = ok + errors
        per_s = 1.0 / elapsed if elapsed > 0 else 0.0
        return Summary(
            requests=requests,
            ok=ok,
            errors=errors,
            elapsed_s=elapsed,
            requests_per_s=requests * per_s,
            ok_per_s=ok * per_s,
            error_rate=errors / requests if requests else 0.0,
            latency_ms=Distribution.of(self.latencies),
            ttft_ms=Distribution.of(self.ttfts),
            streamed=len(self.ttfts),
            errors_by_class=dict(sorted(self.errors.items())),
        )

    def timeline(self, elapsed: float) -> list[Second]:
        """Per-second slices up to ``elapsed``; a last partial slice shorter than half a second joins the one
        before it, so a run's drain does not show up as a burst or a collapse of throughput."""
        last = max(elapsed, max(self._ok_ends, default=0.0), max(self._error_ends, default=0.0))
        slices = max(1, math.ceil(last))
        if slices > 1 and last - (slices - 1) < 0.5:
            slices -= 1
        latencies: list[list[float]] = [[] for _ in range(slices)]
        for end, latency in zip(self._ok_ends, self.latencies, strict=True):
            latencies[min(int(end), slices - 1)].append(latency)
        errors = [0] * slices
        for end in self._error_ends:
            errors[min(int(end), slices - 1)] += 1
        rows = []
        for index in range(slices):
            ordered = sorted(latencies[index])
            rows.append(
                Second(
                    t=float(index),
                    span=max(last - index, 1e-9) if index == slices - 1 else 1.0,
                    requests=len(ordered) + errors[index],
                    errors=errors[index],
                    p50_ms=percentile(ordered, 50) * 1000,
                    p99_ms=percentile(ordered, 99) * 1000,
                )
            )
        return rows


def _finite_dict(value: dict[str, Any]) -> dict[str, Any]:
    return {k: _finite(v) for k, v in value.items()}


def _finite(value: Any) -> Any:
    """NaN (no samples) becomes None, so the JSON output is valid JSON."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    return value
