"""Reports over the request log: totals for a time window, overall and per model, deployment, key and tracked
operation. ``slipstream report`` renders them (``report_render.py``); ``build_report`` is the data, as plain
dataclasses, for anything else that wants it.

The log is scanned twice, whatever the sections. Sums come from one ``GROUP BY`` over all four dimensions at
once, computed by SQLite; its few rows (one per combination of model, deployment, key and operation that
occurred) are rolled up per dimension here. On a 200k-row log that took 1.2 s of CPU where one ``GROUP BY``
per dimension took 3.9 s; the whole report takes ~2 s. Latency percentiles are exact, nearest-rank, like
``RequestLog.summary``: the latencies are fetched once, sorted by SQLite, and dealt into each group's list,
which therefore stays sorted.

Operations come from two tables. The ``requests`` rows carry the operation path each call was made in ("cycle/
propose"): a path's *own* calls are the rows with exactly that path, and its *calls*, hits, tokens and cost
include every nested path below it, as a parent block's totals include its children's. The ``operations``
table holds one row per finished block (``observe/track.py``): the runs and their durations. A path seen only
in requests (sent by a gateway client in ``x-slipstream-operation``) has calls but no runs.
"""

from __future__ import annotations

import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .requestlog import _LOOKUPS, _reader, percentile
from .track import CACHE_HITS, SEPARATOR

__all__ = [
    "DIMENSIONS",
    "GroupRow",
    "OperationRow",
    "Report",
    "build_report",
    "parse_window",
]

# Report dimension -> requests column. Operations get their own section, of OperationRows.
_COLUMNS = {"model": "model", "deployment": "deployment", "key": "key_name", "operation": "operation"}
DIMENSIONS = ("model", "deployment", "key", "operation")

_WINDOW = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([mhd]?)\s*$", re.IGNORECASE)
_MINUTES_PER_UNIT = {"": 1.0, "m": 1.0, "h": 60.0, "d": 1440.0}


def parse_window(text: str) -> float:
    """Minutes in a window written as ``30m``, ``24h``, ``7d`` or a bare number of minutes."""
    match = _WINDOW.match(text)
    if match is None or float(match.group(1)) <= 0:
        raise ValueError(
            f"a window is a positive number of minutes, or a number with m, h or d: got {text!r}"
        )
    return float(match.group(1)) * _MINUTES_PER_UNIT[match.group(2).lower()]


@dataclass(slots=True)
class _Totals:
    requests: int = 0
    errors: int = 0
    hits: int = 0  # answered from the cache, exact or semantic
    lookups: int = 0  # requests that consulted the cache: the hit-rate denominator
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0

    def add(self, other: _Totals) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.hits += other.hits
        self.lookups += other.lookups
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.cost_usd += other.cost_usd
        self.saved_usd += other.saved_usd


@dataclass(slots=True)
class GroupRow:
    """Requests of one model, deployment or key (``name`` None: requests without one, e.g. SDK calls have no
    key and cache hits no deployment) — or of the whole window."""

    name: str | None
    requests: int
    errors: int
    error_rate: float
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    hits: int
    hit_rate: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    saved_usd: float


@dataclass(slots=True)
class OperationRow:
    """One operation path; ``operation`` None is the window's untracked calls."""

    operation: str | None
    runs: int  # finished blocks
    duration_p50_ms: float | None
    duration_p95_ms: float | None
    duration_total_ms: float
    calls: int  # nested operations' calls included
    own_calls: int  # made directly in this block
    errors: int
    hits: int
    hit_rate: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    saved_usd: float


@dataclass(slots=True)
class Report:
    db: str
    window_minutes: float
    since: float  # epoch seconds
    generated: float
    overall: GroupRow
    groups: dict[str, list[GroupRow]] = field(default_factory=dict)  # dimension -> rows, busiest first
    operations: list[OperationRow] | None = None  # tree order; None when not asked for

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def build_report(
    path: str | os.PathLike[str],
    window_minutes: float,
    *,
    by: Iterable[str] = DIMENSIONS,
    clock: Callable[[], float] = time.time,
) -> Report:
    """The report of the last ``window_minutes`` of the request log at ``path`` (read-only; the gateway may be
    writing it). Raises ``FileNotFoundError`` when there is no log there."""
    db = Path(path)
    if not db.is_file():
        raise FileNotFoundError(f"no request log at {db}")
    dimensions = list(dict.fromkeys(by))
    unknown = [d for d in dimensions if d not in DIMENSIONS]
    if unknown:
        raise ValueError(
            f"unknown report dimension(s) {', '.join(unknown)}; choose from {', '.join(DIMENSIONS)}"
        )
    now = clock()
    since = now - window_minutes * 60.0
    columns = [d for d in dimensions if d != "operation"]
    with _reader(db) as conn:
        combinations = _combinations(conn, since)
        latencies = _latencies(conn, [_COLUMNS[d] for d in columns], since)
        durations = _durations(conn, since) if "operation" in dimensions else None
    groups = {
        d: sorted(
            (
                _group_row(name, t, latencies[i + 1].get(name, []))
                for name, t in _rollup(combinations, d).items()
            ),
            key=lambda row: (-row.requests, row.name or ""),
        )
        for i, d in enumerate(columns)
    }
    overall = _rollup(combinations, None).get(None, _Totals())
    operations = None if durations is None else _operations(_rollup(combinations, "operation"), durations)
    return Report(
        db=str(db),
        window_minutes=window_minutes,
        since=since,
        generated=now,
        overall=_group_row(None, overall, latencies[0].get(None, [])),
        groups=groups,
        operations=operations,
    )


# ---------------------------------------------------------------------------------------------- queries
Combination = tuple[tuple[str | None, ...], _Totals]  # (values of the _COLUMNS, in order), their sums


def _combinations(conn: sqlite3.Connection, since: float) -> list[Combination]:
    """The window's sums per combination of the four dimensions' values."""
    keys = ", ".join(_COLUMNS.values())
    hits = ", ".join(f"'{s}'" for s in sorted(CACHE_HITS))
    lookups = ", ".join(f"'{s}'" for s in sorted(CACHE_HITS.union(_LOOKUPS)))
    rows = conn.execute(
        f"SELECT {keys}, count(*), sum(error IS NOT NULL OR status >= 400), "
        f"sum(cache_status IN ({hits})), sum(cache_status IN ({lookups})), sum(prompt_tokens), "
        "sum(completion_tokens), sum(cost_usd), sum(saved_usd) "
        f"FROM requests WHERE ts >= ? GROUP BY {keys}",
        (since,),
    ).fetchall()
    n = len(_COLUMNS)
    return [(tuple(row[:n]), _Totals(*row[n:])) for row in rows]


def _rollup(combinations: list[Combination], dimension: str | None) -> dict[str | None, _Totals]:
    """Sums per value of ``dimension`` (one group, keyed None, for the whole window when it is None)."""
    index = None if dimension is None else list(_COLUMNS).index(dimension)
    out: dict[str | None, _Totals] = {}
    for values, totals in combinations:
        key = None if index is None else values[index]
        out.setdefault(key, _Totals()).add(totals)
    return out


def _latencies(
    conn: sqlite3.Connection, columns: Sequence[str], since: float
) -> list[dict[str | None, list[float]]]:
    """Sorted latencies: [{None: all}, then per column {value: latencies}], from one sorted scan."""
    everything: list[float] = []
    out: list[dict[str | None, list[float]]] = [{None: everything}]
    out += [{} for _ in columns]
    select = ", ".join([*columns, "latency_ms"])
    cursor = conn.execute(f"SELECT {select} FROM requests WHERE ts >= ? ORDER BY latency_ms", (since,))
    for row in cursor:
        latency = row[-1]
        everything.append(latency)
        for i in range(len(columns)):
            out[i + 1].setdefault(row[i], []).append(latency)
    return out


def _durations(conn: sqlite3.Connection, since: float) -> dict[str, list[float]]:
    """The window's tracked blocks: sorted durations per operation path (none in logs from before the table)."""
    durations: dict[str, list[float]] = {}
    if conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'operations'").fetchone():
        for operation, duration in conn.execute(
            "SELECT operation, duration_ms FROM operations WHERE ts >= ? ORDER BY duration_ms", (since,)
        ):
            durations.setdefault(operation, []).append(duration)
    return durations


def _operations(own: dict[str | None, _Totals], durations: dict[str, list[float]]) -> list[OperationRow]:
    """One row per operation path seen (and each ancestor), in tree order, then the untracked calls."""
    paths: set[str] = set()
    for path in [p for p in own if p is not None] + list(durations):
        names = path.split(SEPARATOR)
        paths.update(SEPARATOR.join(names[: i + 1]) for i in range(len(names)))
    rows = []
    for path in sorted(paths, key=lambda p: p.split(SEPARATOR)):
        rolled = _Totals()
        prefix = path + SEPARATOR
        for other, totals in own.items():
            if other is not None and (other == path or other.startswith(prefix)):
                rolled.add(totals)
        mine = own.get(path)
        rows.append(_operation_row(path, rolled, mine.requests if mine else 0, durations.get(path, [])))
    untracked = own.get(None)
    if untracked is not None and rows:
        rows.append(_operation_row(None, untracked, untracked.requests, []))
    return rows


# ---------------------------------------------------------------------------------------------- rows
def _group_row(name: str | None, t: _Totals, latencies: Sequence[float]) -> GroupRow:
    return GroupRow(
        name=name,
        requests=t.requests,
        errors=t.errors,
        error_rate=t.errors / t.requests if t.requests else 0.0,
        p50_ms=percentile(latencies, 50),
        p95_ms=percentile(latencies, 95),
        p99_ms=percentile(latencies, 99),
        hits=t.hits,
        hit_rate=t.hits / t.lookups if t.lookups else 0.0,
        prompt_tokens=t.prompt_tokens,
        completion_tokens=t.completion_tokens,
        cost_usd=t.cost_usd,
        saved_usd=t.saved_usd,
    )


def _operation_row(path: str | None, t: _Totals, own_calls: int, durations: Sequence[float]) -> OperationRow:
    return OperationRow(
        operation=path,
        runs=len(durations),
        duration_p50_ms=percentile(durations, 50),
        duration_p95_ms=percentile(durations, 95),
        duration_total_ms=float(sum(durations)),
        calls=t.requests,
        own_calls=own_calls,
        errors=t.errors,
        hits=t.hits,
        hit_rate=t.hits / t.lookups if t.lookups else 0.0,
        prompt_tokens=t.prompt_tokens,
        completion_tokens=t.completion_tokens,
        cost_usd=t.cost_usd,
        saved_usd=t.saved_usd,
    )
