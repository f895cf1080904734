"""Window statistics beyond ``RequestLog.summary()``: breakdowns, percentiles, cache outcomes, costs, a time series.

The metrics API and the dashboard read these; nothing here runs on the request path. Every function takes the
log and a ``Window`` (minutes plus the model/key/deployment filters) and runs its SQL on the log's read-only
connection (``RequestLog.reader``) with the very WHERE clause ``summary()`` uses (``RequestLog.window_filter``),
so a breakdown's rows add up to the summary of the same window. Like the log's own readers these block on disk:
async callers run them with ``asyncio.to_thread``.

Percentiles are exact, as in ``summary()``: SQLite ranks each group's (or bucket's) values and returns the
nearest-rank ones (``requestlog.window_percentiles``), so a p95 here is a latency that occurred. Counts and
sums are GROUP BY aggregates: no row of the window is copied into Python, so a dashboard refreshing every few
seconds over a day of rows costs sorts and scans in SQLite (GIL released), not Python objects per request.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .requestlog import NO_PERCENTILES, RequestLog, window_percentiles, window_spread

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


# Per slice (a column value, or a time bucket): count, failed, hits, cache lookups, tokens, cost, savings.
_TALLY_SQL = (
    f"SELECT {{slice}} AS s, count(*), coalesce(sum({_FAILED}), 0), coalesce(sum(cache_status = 'hit'), 0), "
    f"coalesce(sum({_LOOKUP}), 0), coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), "
    "coalesce(sum(cost_usd), 0.0), coalesce(sum(saved_usd), 0.0) FROM requests WHERE {where} GROUP BY s"
)


@dataclass(slots=True)
class _Tally:
    """The figures of one slice of the window (a model, a deployment, a time bucket)."""

    count: int = 0
    errors: int = 0
    hits: int = 0
    lookups: int = 0
    prompt: int = 0
    completion: int = 0
    cost: float = 0.0
    saved: float = 0.0
    latency: dict[str, float | None] = field(default_factory=lambda: dict(NO_PERCENTILES))
    ttft: dict[str, float | None] = field(default_factory=lambda: dict(NO_PERCENTILES))

    @property
    def hit_rate(self) -> float | None:
        return self.hits / self.lookups if self.lookups else None


def _tally(
    log: RequestLog, where: str, params: list[Any], slice_sql: str, slice_params: Sequence[Any] = ()
) -> dict[Any, _Tally]:
    """The rows matching ``where`` added up per value of ``slice_sql`` (a column, or a bucket expression)."""
    tallies: dict[Any, _Tally] = {}
    with log.reader() as conn:
        for name, *figures in conn.execute(
            _TALLY_SQL.format(slice=slice_sql, where=where), [*slice_params, *params]
        ):
            tallies[name] = _Tally(*figures)
        for column in ("latency_ms", "ttft_ms"):
            spread = window_percentiles(
                conn, column, where, params, slice_sql=slice_sql, slice_params=slice_params
            )
            for name, values in spread.items():
                tally = tallies.get(name)
                if tally is not None:  # written between the two statements: next refresh counts it
                    setattr(tally, "latency" if column == "latency_ms" else "ttft", values)
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
            "latency_ms": t.latency,
            "ttft_ms": t.ttft,
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
            result[column] = window_spread(conn, column, where, params)
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
                "latency_p50": t.latency["p50"],
                "latency_p95": t.latency["p95"],
                "ttft_p50": t.ttft["p50"],
                "tokens": t.prompt + t.completion,
                "cost_usd": t.cost,
            }
        )
    return {"start": start, "bucket_seconds": width, "points": points}
