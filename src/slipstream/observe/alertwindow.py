"""Alert rules' windowed figures, kept up to date from the request log a few seconds of rows at a time.

Alert rules read counts, error and hit rates, cost and p95/p99 latency over windows of minutes to a day, every
few seconds. Reading the whole window each time costs a scan of every row in it: at thousands of requests a
second, a 5-minute window is a million rows and the scan took a quarter of a core, on the machine that serves
the requests. ``AlertWindow`` reads each row once instead:

- ``refresh()`` asks SQLite for the rows added since the last call (``id > last``: a range of the primary
  key), already grouped by time slot, model, key, deployment and latency bucket — a few hundred groups, so
  nothing per row reaches Python — and adds them to in-memory slots; slots older than the longest window
  are dropped. The request log is shared by a gateway's workers, so every worker's requests are counted.
- ``figures()`` sums the slots inside a window, filtered by model, key and deployment, in the shape of
  ``RequestLog.summary()``'s counts: p95/p99 are the largest latency in the ~2%-wide logarithmic bucket holding
  the nearest rank — a value that occurred, at most ~2% above the exact percentile ``summary()`` gives.

A slot is 1/``SLOTS`` of the longest window asked for (a second for 5 minutes, ~5 minutes for a day), so a
window's start is rounded down to a slot boundary: it may count up to one slot more than the window. A longer
window than any seen before starts the slots over (one scan of that window).
"""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .requestlog import _LOOKUPS

if TYPE_CHECKING:
    from .requestlog import RequestLog

__all__ = ["AlertWindow", "bucket_percentiles"]

SLOTS = 300
BUCKETS_PER_E = 50  # latency buckets ~2% wide
_SQL_NEW = f"""
SELECT CAST(ts / ? AS INTEGER), model, key_name, deployment,
       CAST({{ln}}(max(latency_ms, 0.001)) * {BUCKETS_PER_E} AS INTEGER) AS b,
       count(*), sum(error IS NOT NULL OR status >= 400), sum(cache_status = 'hit'),
       sum(cache_status IN ({", ".join(repr(s) for s in _LOOKUPS)})), sum(cost_usd), max(latency_ms)
FROM requests WHERE id > ? AND id <= ? AND ts >= ?
GROUP BY 1, 2, 3, 4, 5
"""

Series = tuple[str, "str | None", "str | None"]  # (model, key name, deployment)


@dataclass(slots=True)
class _Totals:
    count: int = 0
    errors: int = 0
    hits: int = 0
    lookups: int = 0
    cost: float = 0.0
    latency: dict[int, list[float]] = field(default_factory=dict)  # bucket -> [count, largest latency]

    def add(self, count: int, errors: int, hits: int, lookups: int, cost: float) -> None:
        self.count += count
        self.errors += errors
        self.hits += hits
        self.lookups += lookups
        self.cost += cost

    def add_latency(self, bucket: int, count: float, largest: float) -> None:
        seen = self.latency.get(bucket)
        if seen is None:
            self.latency[bucket] = [count, largest]
        else:
            seen[0] += count
            seen[1] = max(seen[1], largest)


class AlertWindow:
    """In-memory per-slot totals of the request log, refreshed incrementally (see the module docstring)."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.width = 0.0  # seconds per slot; 0 until the first refresh sets it
        self.span = 0.0  # the longest window (seconds) the slots cover
        self.last_id = 0
        self._slots: dict[int, dict[Series, _Totals]] = {}
        self._ln = "ln"  # SQLite's math function; replaced by a Python one where it is not compiled in

    def refresh(self, request_log: RequestLog, longest_window: float) -> None:
        """Absorb the rows added since the last refresh (blocking: run it in a thread)."""
        if longest_window > self.span:
            self.span, self.width = longest_window, max(1.0, longest_window / SLOTS)
            self._slots.clear()
            self.last_id = 0
        now = self.clock()
        horizon = now - self.span - self.width
        with request_log.reader() as conn:
            top = conn.execute("SELECT max(id) FROM requests").fetchone()[0] or 0
            if top < self.last_id:  # the file was replaced (moved aside, emptied): start over
                self._slots.clear()
                self.last_id = 0
            if top > self.last_id:
                for row in self._new_rows(conn, top, horizon):
                    self._absorb(row)
                self.last_id = top
        oldest = math.floor(horizon / self.width)
        for slot in [s for s in self._slots if s < oldest]:
            del self._slots[slot]

    def _new_rows(self, conn: sqlite3.Connection, top: int, horizon: float) -> list[Any]:
        params = (self.width, self.last_id, top, horizon)
        try:
            return conn.execute(_SQL_NEW.format(ln=self._ln), params).fetchall()
        except sqlite3.OperationalError as exc:
            if "no such function" not in str(exc) or self._ln != "ln":
                raise
        self._ln = "slipstream_ln"  # this SQLite has no math functions: a Python one, called per row
        conn.create_function(self._ln, 1, math.log, deterministic=True)
        return conn.execute(_SQL_NEW.format(ln=self._ln), params).fetchall()

    def _absorb(self, row: Any) -> None:
        slot, model, key, deployment, bucket, count, errors, hits, lookups, cost, largest = row
        series = self._slots.setdefault(slot, {})
        totals = series.get((model, key, deployment))
        if totals is None:
            totals = series[(model, key, deployment)] = _Totals()
        totals.add(count, errors, hits, lookups, cost)
        totals.add_latency(bucket, count, largest)

    def figures(
        self,
        window: float,
        *,
        model: str | None = None,
        key: str | None = None,
        deployment: str | None = None,
        latency: bool = True,
    ) -> dict[str, Any]:
        """Counts, error and hit rates, cost and (when ``latency``) bucketed latency percentiles over the last
        ``window`` seconds, from the slots; keys as in ``RequestLog.summary()``."""
        first = math.floor((self.clock() - window) / self.width) if self.width else 0
        total = _Totals()
        for slot, series in self._slots.items():
            if slot < first:
                continue
            for (m, k, d), t in series.items():
                if (model is not None and m != model) or (key is not None and k != key):
                    continue
                if deployment is not None and d != deployment:
                    continue
                total.add(t.count, t.errors, t.hits, t.lookups, t.cost)
                if latency:
                    for bucket, (n, largest) in t.latency.items():
                        total.add_latency(bucket, n, largest)
        count, lookups = total.count, total.lookups
        return {
            "window_minutes": window / 60.0,
            "count": count,
            "errors": total.errors,
            "error_rate": total.errors / count if count else 0.0,
            "cache_hits": total.hits,
            "cache_lookups": lookups,
            "hit_rate": total.hits / lookups if lookups else 0.0,
            "cost_usd": total.cost,
            "latency_ms": bucket_percentiles(total.latency),
        }


def bucket_percentiles(buckets: dict[int, list[float]]) -> dict[str, float | None]:
    """Nearest-rank p50/p95/p99 and the maximum from latency buckets (bucket -> [count, largest value]): the
    largest value of the bucket holding each rank."""
    result: dict[str, float | None] = {"p50": None, "p95": None, "p99": None, "max": None}
    if not buckets:
        return result
    ordered = sorted(buckets.items())
    n = sum(int(c) for _, (c, _) in ordered)
    for name, p in (("p50", 50), ("p95", 95), ("p99", 99)):
        rank, seen = max(1, -(-p * n // 100)), 0
        for _, (c, largest) in ordered:
            seen += int(c)
            if seen >= rank:
                result[name] = float(largest)
                break
    result["max"] = float(ordered[-1][1][1])
    return result
