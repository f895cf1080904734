"""Window statistics beyond ``RequestLog.summary()``: breakdowns, percentiles, cache outcomes, costs, a time series.

The metrics API and the dashboard read these; nothing here runs on the request path. Every function takes the
log and a ``Window`` (minutes plus the model/key/deployment filters) and runs its SQL on the log's read-only
connection (``RequestLog.reader``) with the very WHERE clause ``summary()`` uses (``RequestLog.window_filter``),
so a breakdown's rows add up to the summary of the same window. Like the log's own readers these block on disk:
async callers run them with ``asyncio.to_thread``.

Percentiles are exact, as in ``summary()``: SQLite returns each group's (or bucket's) values sorted and the
nearest-rank value is taken (``requestlog.percentile``), so a p95 here is a latency that occurred. That costs
one sorted scan of the window per statistic — fine for a dashboard refreshing every few seconds over up to a
day of rows, and the reason these figures are computed on demand rather than kept per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from .requestlog import RequestLog, percentile

__all__ = [
    "BREAKDOWN_DIMENSIONS",
    "DEFAULT_BUCKETS",
    "Window",
    "breakdown",
    "cache_outcomes",
    "costs",
    "percentiles",
    "request_rate",
    "timeseries",
]

# The dimensions a breakdown groups by: API name -> column. Only these names ever reach the SQL text.
BREAKDOWN_DIMENSIONS: dict[str, str] = {
    "model": "model",
    "deployment": "deployment",
    "key": "key_name",
    "operation": "operation",
}
# Columns whose percentiles ``percentiles()`` reports: end to end, first token, upstream wait, own overhead.
TIMING_COLUMNS = ("latency_ms", "ttft_ms", "upstream_ms", "overhead_ms")
DEFAULT_BUCKETS = 60
CACHE_STATUSES = ("hit", "miss", "refresh", "bypass", "off")

_FAILED = "(error IS NOT NULL OR status >= 400)"
_LOOKUP = "cache_status IN ('hit', 'miss', 'refresh')"  # consulted the cache: the hit-rate denominator


@dataclass(frozen=True, slots=True)
class Window:
    """The last ``minutes`` of the log, narrowed by exact-match filters (``None``: no filter)."""

    minutes: float
    model: str | None = None
    key: str | None = None
    deployment: str | None = None

    def where(self, log: RequestLog) -> tuple[str, list[Any]]:
        return log.window_filter(self.minutes, model=self.model, key=self.key, deployment=self.deployment)

    def summary(self, log: RequestLog) -> dict[str, Any]:
        return log.summary(self.minutes, model=self.model, key=self.key, deployment=self.deployment)

    @property
    def seconds(self) -> float:
        return self.minutes * 60.0


def _spread(sorted_values: Sequence[float]) -> dict[str, float | None]:
    return {
        "p50": percentile(sorted_values, 50),
        "p95": percentile(sorted_values, 95),
        "p99": percentile(sorted_values, 99),
        "max": float(sorted_values[-1]) if sorted_values else None,
    }


# One scan serves a breakdown or a time series: each row's figures, sorted by latency so that appending rows to
# their slice keeps every slice's latencies sorted (only the rarer TTFT values are sorted per slice afterwards).
_TALLY_COLUMNS = (
    f"latency_ms, ttft_ms, {_FAILED}, cache_status = 'hit', {_LOOKUP}, "
    "prompt_tokens, completion_tokens, cost_usd, saved_usd"
)


class _Tally:
    """The figures of one slice of the window (a model, a deployment, a time bucket), added up row by row."""

    __slots__ = (
        "completion",
        "cost",
        "count",
        "errors",
        "hits",
        "latency",
        "lookups",
        "prompt",
        "saved",
        "ttft",
    )

    def __init__(self) -> None:
        self.count = self.errors = self.hits = self.lookups = self.prompt = self.completion = 0
        self.cost = self.saved = 0.0
        self.latency: list[float] = []
        self.ttft: list[float] = []

    def add(self, row: Sequence[Any]) -> None:
        latency, ttft, failed, hit, lookup, prompt, completion, cost, saved = row
        self.count += 1
        self.errors += failed
        self.hits += hit
        self.lookups += lookup
        self.prompt += prompt
        self.completion += completion
        self.cost += cost
        self.saved += saved
        self.latency.append(latency)
        if ttft is not None:
            self.ttft.append(ttft)

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.lookups if self.lookups else None


def _tally(
    log: RequestLog, where: str, params: list[Any], slice_sql: str, slice_params: Sequence[Any] = ()
) -> dict[Any, _Tally]:
    """The rows matching ``where`` added up per value of ``slice_sql`` (a column, or a bucket expression)."""
    tallies: dict[Any, _Tally] = {}
    with log.reader() as conn:
        rows = conn.execute(
            f"SELECT {slice_sql}, {_TALLY_COLUMNS} FROM requests WHERE {where} ORDER BY latency_ms",
            [*slice_params, *params],
        )
        for row in rows:
            tally = tallies.get(row[0])
            if tally is None:
                tally = tallies[row[0]] = _Tally()
            tally.add(row[1:])
    for tally in tallies.values():
        tally.ttft.sort()
    return tallies


def breakdown(log: RequestLog, window: Window, by: str) -> list[dict[str, Any]]:
    """One row per value of ``by`` (model, deployment, key or operation), busiest first.

    A row has the summary's figures for its slice: requests, errors, hit rate, exact latency and TTFT
    percentiles, tokens, cost and savings. ``name`` is None for requests without a value (a cache hit has no
    deployment; without virtual keys there is no key name)."""
    column = BREAKDOWN_DIMENSIONS.get(by)
    if column is None:
        raise ValueError(f"cannot break down by {by!r}; choose one of {', '.join(BREAKDOWN_DIMENSIONS)}")
    tallies = _tally(log, *window.where(log), column)
    order = sorted(tallies, key=lambda name: (-tallies[name].count, name is not None, name or ""))
    return [
        {
            "name": name,
            "count": t.count,
            "errors": t.errors,
            "error_rate": t.errors / t.count,
            "cache_hits": t.hits,
            "hit_rate": t.hit_rate or 0.0,
            "latency_ms": _spread(t.latency),
            "ttft_ms": _spread(t.ttft),
            "tokens": {"prompt": t.prompt, "completion": t.completion},
            "cost_usd": t.cost,
            "saved_usd": t.saved,
        }
        for name, t in ((name, tallies[name]) for name in order)
    ]


def percentiles(
    log: RequestLog, window: Window, columns: Iterable[str] = TIMING_COLUMNS
) -> dict[str, dict[str, float | None]]:
    """Exact p50/p95/p99/max of each timing column over the window (requests without a value are left out:
    TTFT exists for streams only, upstream time only when an upstream was called)."""
    where, params = window.where(log)
    result = {}
    with log.reader() as conn:
        for column in columns:
            if column not in TIMING_COLUMNS:
                raise ValueError(f"unknown timing column {column!r}")
            values = [
                r[0]
                for r in conn.execute(
                    f"SELECT {column} FROM requests WHERE {where} AND {column} IS NOT NULL ORDER BY {column}",
                    params,
                )
            ]
            result[column] = _spread(values)
    return result


def request_rate(log: RequestLog, window: Window, seconds: float = 60.0) -> float:
    """Requests per second over the last ``seconds`` (at most the window), with the window's filters."""
    span = min(seconds, window.seconds)
    recent = Window(span / 60.0, window.model, window.key, window.deployment)
    where, params = recent.where(log)
    with log.reader() as conn:
        count = conn.execute(f"SELECT count(*) FROM requests WHERE {where}", params).fetchone()[0]
    return float(count) / span


def cache_outcomes(log: RequestLog, window: Window) -> dict[str, Any]:
    """How requests met the cache: counts per status, hit rate, coalesced followers, and what hits saved."""
    where, params = window.where(log)
    with log.reader() as conn:
        counts = dict(
            conn.execute(
                f"SELECT cache_status, count(*) FROM requests WHERE {where} GROUP BY cache_status", params
            ).fetchall()
        )
        coalesced, saved, saved_prompt, saved_completion = conn.execute(
            "SELECT coalesce(sum(coalesced), 0), coalesce(sum(saved_usd), 0.0), "
            "coalesce(sum(CASE WHEN cache_status = 'hit' THEN prompt_tokens END), 0), "
            "coalesce(sum(CASE WHEN cache_status = 'hit' THEN completion_tokens END), 0) "
            f"FROM requests WHERE {where}",
            params,
        ).fetchone()
    by_status = {status: int(counts.pop(status, 0)) for status in CACHE_STATUSES}
    by_status.update(counts)  # a status this module does not know yet still shows up
    lookups = by_status["hit"] + by_status["miss"] + by_status["refresh"]
    return {
        "by_status": by_status,
        "lookups": lookups,
        "hit_rate": by_status["hit"] / lookups if lookups else 0.0,
        "coalesced": coalesced,
        "saved_usd": saved,
        "saved_tokens": {"prompt": saved_prompt, "completion": saved_completion},
    }


def costs(log: RequestLog, window: Window) -> dict[str, Any]:
    """What the window cost upstream and what the cache and coalescing saved, in total, per hour, per model
    and per key."""
    where, params = window.where(log)
    with log.reader() as conn:
        total_cost, total_saved, prompt, completion = conn.execute(
            "SELECT coalesce(sum(cost_usd), 0.0), coalesce(sum(saved_usd), 0.0), "
            "coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0) "
            f"FROM requests WHERE {where}",
            params,
        ).fetchone()
        by: dict[str, list[dict[str, Any]]] = {}
        for name, column in (("by_model", "model"), ("by_key", "key_name")):
            by[name] = [
                {
                    "name": row[0],
                    "count": row[1],
                    "cost_usd": row[2],
                    "saved_usd": row[3],
                    "tokens": {"prompt": row[4], "completion": row[5]},
                }
                for row in conn.execute(
                    f"SELECT {column}, count(*), sum(cost_usd), sum(saved_usd), sum(prompt_tokens), "
                    f"sum(completion_tokens) FROM requests WHERE {where} GROUP BY {column} "
                    f"ORDER BY sum(cost_usd) DESC, count(*) DESC, {column}",
                    params,
                )
            ]
    hours = window.seconds / 3600.0
    spent_and_saved = total_cost + total_saved
    return {
        "cost_usd": total_cost,
        "saved_usd": total_saved,
        "cost_per_hour_usd": total_cost / hours,
        # The share of what the traffic would have cost without the cache and coalescing.
        "saved_fraction": total_saved / spent_and_saved if spent_and_saved else 0.0,
        "tokens": {"prompt": prompt, "completion": completion},
        **by,
    }


def timeseries(log: RequestLog, window: Window, buckets: int = DEFAULT_BUCKETS) -> dict[str, Any]:
    """The window cut into ``buckets`` equal slices, oldest first: requests, rate, errors, hits and exact
    latency p50/p95 and TTFT p50 per slice. Empty slices are present (zero counts, None percentiles) so a
    chart's x axis is time. The slices cover exactly the summary's window, so their counts add up to it."""
    if buckets < 1:
        raise ValueError("buckets must be at least 1")
    where, params = window.where(log)
    start = float(params[0])  # the window filter's first parameter is its start (``ts >= ?``)
    width = window.seconds / buckets
    # A row stamped after "now" (another process's clock) belongs to the last slice.
    bucket = "min(CAST((ts - ?) / ? AS INTEGER), ?)"
    tallies = _tally(log, where, params, bucket, (start, width, buckets - 1))
    empty = _Tally()
    points = []
    for i in range(buckets):
        t = tallies.get(i, empty)
        points.append(
            {
                "start": start + i * width,
                "count": t.count,
                "rps": t.count / width,
                "errors": t.errors,
                "cache_hits": t.hits,
                "hit_rate": t.hit_rate,
                "latency_p50": percentile(t.latency, 50),
                "latency_p95": percentile(t.latency, 95),
                "ttft_p50": percentile(t.ttft, 50),
                "tokens": t.prompt + t.completion,
                "cost_usd": t.cost,
            }
        )
    return {"start": start, "bucket_seconds": width, "points": points}
