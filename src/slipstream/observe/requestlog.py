"""The request log: one row per request in a SQLite file, written off the request path.

``record()`` appends to a bounded queue (well under a microsecond). ONE writer thread drains the queue every
``batch_interval`` and hands the batch to the sink (``observe/logsink.py``), which inserts it in one
transaction. By default (``writer="process"``) the sink runs in a child process and the thread only reads the
records' values and sends them over a pipe: the inserts then take none of the recording process's GIL, which
an event loop serving thousands of requests a second needs whole. ``writer="thread"`` inserts from the thread
itself (no child process; the SQLite work shares the GIL). A full queue (a stalled disk, another process
holding the write lock) drops the record and counts it in ``dropped``: a request never waits for its own log
line. A batch that cannot be committed after a few attempts is counted in ``failed``.

Retention runs in the sink, in short transactions: rows older than ``retention_days`` are deleted every
``maintenance_interval`` seconds, and after every batch the database's used size (pages in use, read from two
O(1) pragmas) is checked against ``max_bytes`` and the oldest rows are deleted down to 90% of it. Freed pages
are reused, so the file stops growing near ``max_bytes`` (plus the WAL, which SQLite checkpoints at ~4 MB).

Tracked operations (``observe/track.py``) ride the same queue: ``record_operation()`` queues a finished block,
and the writer inserts it into a second table, ``operations``, in the same pass. One writer per file keeps the
request path free of disk waits and avoids two connections contending for SQLite's write lock. The table is
created if missing when the writer opens the file (request logs written before it gain it in place); its rows
are purged by age with the requests, and trimmed to the oldest request kept when the size limit evicts.

Readers (``query``/``summary``, for the API and reports) open their own short-lived read-only connection: WAL
lets them read while the writer commits. They block on disk, so async callers run them in a thread.

Percentiles are exact over the window: the latencies are fetched sorted by SQLite and the nearest-rank value
is taken (p-th percentile = the value at rank ceil(p/100 * n)), so p50/p95/p99 are values that occurred.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import queue
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, InvalidStateError
from contextlib import AbstractContextManager
from dataclasses import dataclass
from operator import attrgetter
from pathlib import Path
from typing import Any, Protocol

from .logchild import ChildSink
from .logsink import COLUMNS, OPERATION_COLUMNS, TEXT_COLUMNS, LogSink
from .record import OperationRecord, RequestRecord

__all__ = ["DEFAULT_MAX_BYTES", "RequestLog", "percentile"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 512 * 1024 * 1024
DEFAULT_RETENTION_DAYS = 30.0
# Rows waiting for the writer: the writer drains them every ``batch_interval``, so this is how many requests a
# second the log keeps up with when the writer is healthy. A gateway process serves up to ~13,000 cache hits a
# second here (bench/results/gateway.md): 10,000 dropped records at full speed. 50,000 rows of ~300 bytes
# are ~15 MB at most, and leave room for a writer that stalls for a few seconds.
DEFAULT_QUEUE_SIZE = 50_000
DEFAULT_BATCH_INTERVAL = 1.0  # seconds
DEFAULT_MAINTENANCE_INTERVAL = 60.0  # seconds between age purges
READ_BUSY_TIMEOUT_MS = 1000
WRITERS = ("process", "thread")


def _row_getter(columns: Sequence[str]) -> Callable[[RequestRecord], tuple[Any, ...]]:
    """A record's values in ``columns`` order, read in C (``attrgetter``): no Python per column. The table's
    ``model`` is the record's ``group``; booleans bind as 0/1."""
    return attrgetter(*("group" if column == "model" else column for column in columns))


_operation_row = attrgetter(*OPERATION_COLUMNS)
# Cache statuses that consulted the cache (the hit-rate denominator); bypass and off did not.
_LOOKUPS = ("hit", "miss", "refresh")


class _Sink(Protocol):
    """Where the writer thread's batches go: ``LogSink`` itself, or ``ChildSink`` (the same, in a child)."""

    def write(self, rows: Sequence[Sequence[Any]], operations: Sequence[Sequence[Any]] = ()) -> None: ...
    def maintain(self, cutoff: float | None, max_bytes: int) -> None: ...
    def counts(self) -> tuple[int, int, int, int]: ...
    def close(self) -> None: ...


@dataclass(slots=True)
class _Control:
    """A request to the writer: ``flush`` (commit what came before), ``maintain`` (purge now) or ``stop``."""

    kind: str
    done: Future[None]


class RequestLog:
    """A bounded, batched, best-effort request log in one SQLite file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        retention_days: float = DEFAULT_RETENTION_DAYS,
        max_bytes: int = DEFAULT_MAX_BYTES,
        queue_size: int = DEFAULT_QUEUE_SIZE,
        store_text: bool = False,
        batch_interval: float = DEFAULT_BATCH_INTERVAL,
        maintenance_interval: float = DEFAULT_MAINTENANCE_INTERVAL,
        clock: Callable[[], float] = time.time,
        writer: str = "process",
    ) -> None:
        if writer not in WRITERS:
            raise ValueError(f"writer must be one of {', '.join(WRITERS)}, not {writer!r}")
        self.path = Path(path)
        self.retention_days = retention_days
        self.max_bytes = max_bytes
        self.store_text = store_text
        self._columns = COLUMNS if store_text else COLUMNS[: -len(TEXT_COLUMNS)]
        self._row = _row_getter(self._columns)
        self.batch_interval = batch_interval
        self.maintenance_interval = maintenance_interval
        self.clock = clock
        self.dropped = 0  # records refused because the queue was full (or the log closed)
        # The sink's totals (written, failed, purged, evicted), copied by the writer thread after each call.
        self._counts = (0, 0, 0, 0)
        # Records go into a plain deque (append is atomic under the GIL and wakes nobody); the writer drains it
        # every ``batch_interval``. A queue.Queue here woke the writer thread on every record: a GIL hand-off
        # and a futex per request, measured at ~18 us of CPU per cache hit and far more per miss.
        self.queue_size = queue_size
        self._pending: deque[tuple[Any, ...] | OperationRecord] = deque()
        self._controls: queue.SimpleQueue[_Control] = queue.SimpleQueue()
        self._wake = threading.Event()  # set only by control requests (flush, maintain, stop)
        self._closed = False
        self.writer = writer
        sink: _Sink = (ChildSink if writer == "process" else LogSink)(self.path, self._columns)
        self._writer = _Writer(self, sink)
        self._writer.start()

    @property
    def written(self) -> int:
        return self._counts[0]

    @property
    def failed(self) -> int:
        """Records lost because their batch could not be committed."""
        return self._counts[1]

    @property
    def purged(self) -> int:
        """Rows deleted by age."""
        return self._counts[2]

    @property
    def evicted(self) -> int:
        """Rows deleted by size."""
        return self._counts[3]

    # ------------------------------------------------------------------------------------------ recording
    def record(self, rec: RequestRecord) -> None:
        """Queue one record; never blocks. A full queue drops it (counted in ``dropped``).

        What is queued is the record's row: a tuple of plain values, read in C. The garbage collector stops
        tracking such a tuple the first time it sees it, so the second of rows waiting for the writer never
        reaches the old generation, where every object makes each full collection longer (see
        ``gateway/gctune.py``); the records themselves are freed as soon as the request's sinks are done."""
        if self._closed or len(self._pending) >= self.queue_size:
            self.dropped += 1
            return
        self._pending.append(self._row(rec))

    def record_operation(self, rec: OperationRecord) -> None:
        """Queue one finished tracked block, like ``record``; it is written to the ``operations`` table."""
        if self._closed or len(self._pending) >= self.queue_size:
            self.dropped += 1
            return
        self._pending.append(rec)

    @property
    def queued(self) -> int:
        return len(self._pending)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until everything recorded before this call is committed (or failed)."""
        self._control("flush").result(timeout)

    def maintain(self, timeout: float | None = None) -> None:
        """Run the retention pass now (by age and by size), and wait for it."""
        self._control("maintain").result(timeout)

    def close(self, timeout: float | None = None) -> None:
        """Write what is queued, then stop the writer and close its connection."""
        if self._closed:
            return
        self._closed = True
        self._control("stop", force=True).result(timeout)
        self._writer.join(timeout)

    async def aflush(self) -> None:
        await asyncio.wrap_future(self._control("flush"))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.wrap_future(self._control("stop", force=True))

    def _control(self, kind: str, *, force: bool = False) -> Future[None]:
        done: Future[None] = Future()
        if self._closed and not force:
            done.set_result(None)
            return done
        self._controls.put(_Control(kind, done))
        self._wake.set()
        return done

    # ------------------------------------------------------------------------------------------ reading
    def query(
        self,
        window_minutes: float,
        *,
        model: str | None = None,
        key: str | None = None,
        deployment: str | None = None,
        limit: int | None = 1000,
    ) -> list[dict[str, Any]]:
        """The newest rows of the last ``window_minutes``, newest first, as dicts keyed by column."""
        where, params = self._where(window_minutes, model, key, deployment)
        sql = f"SELECT * FROM requests WHERE {where} ORDER BY ts DESC, id DESC"
        if limit is not None:
            sql += " LIMIT ?"
            params.append(int(limit))
        with _reader(self.path) as conn:
            cursor = conn.execute(sql, params)
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        for row in rows:
            for flag in ("coalesced", "hedged", "stream"):
                row[flag] = bool(row[flag])
        return rows

    def summary(
        self,
        window_minutes: float,
        *,
        model: str | None = None,
        key: str | None = None,
        deployment: str | None = None,
    ) -> dict[str, Any]:
        """Counts, errors by class, exact latency/TTFT percentiles, hit rate, tokens, cost and savings."""
        where, params = self._where(window_minutes, model, key, deployment)
        lookups = ", ".join(f"'{s}'" for s in _LOOKUPS)
        with _reader(self.path) as conn:
            totals = conn.execute(
                "SELECT count(*), coalesce(sum(error IS NOT NULL OR status >= 400), 0), "
                "coalesce(sum(cache_status = 'hit'), 0), "
                f"coalesce(sum(cache_status IN ({lookups})), 0), coalesce(sum(coalesced), 0), "
                "coalesce(sum(prompt_tokens), 0), coalesce(sum(completion_tokens), 0), "
                "coalesce(sum(cached_tokens), 0), coalesce(sum(cost_usd), 0.0), coalesce(sum(saved_usd), 0.0), "
                "coalesce(sum(attempts > 1), 0), coalesce(sum(fallback IS NOT NULL), 0) "
                f"FROM requests WHERE {where}",
                params,
            ).fetchone()
            errors = dict(
                conn.execute(
                    "SELECT coalesce(error, 'HTTP ' || status), count(*) FROM requests "
                    f"WHERE {where} AND (error IS NOT NULL OR status >= 400) GROUP BY 1 ORDER BY 2 DESC",
                    params,
                ).fetchall()
            )
            latency = window_spread(conn, "latency_ms", where, params)
            ttft = window_spread(conn, "ttft_ms", where, params)
        count, failed, hits, lookups_n, coalesced, prompt, completion, cached, cost, saved, retried, fb = (
            totals
        )
        return {
            "window_minutes": window_minutes,
            "count": count,
            "errors": failed,
            "error_rate": failed / count if count else 0.0,
            "errors_by_class": errors,
            "latency_ms": latency,
            "ttft_ms": ttft,
            "cache_hits": hits,
            "cache_lookups": lookups_n,
            "hit_rate": hits / lookups_n if lookups_n else 0.0,
            "coalesced": coalesced,
            "retried": retried,
            "fallbacks": fb,
            "tokens": {"prompt": prompt, "completion": completion, "cached": cached},
            "cost_usd": cost,
            "saved_usd": saved,
        }

    def reader(self) -> AbstractContextManager[sqlite3.Connection]:
        """A short-lived read-only connection (``with log.reader() as conn``) for read-side modules
        (``observe.query``) that run their own SQL against the ``requests`` table."""
        return _reader(self.path)

    def window_filter(
        self,
        window_minutes: float,
        *,
        model: str | None = None,
        key: str | None = None,
        deployment: str | None = None,
    ) -> tuple[str, list[Any]]:
        """The WHERE clause and its parameters that ``query``/``summary`` use for a window and its filters;
        the first parameter is the window's start (epoch seconds), the filters' values follow."""
        return self._where(window_minutes, model, key, deployment)

    def _where(
        self, window_minutes: float, model: str | None, key: str | None, deployment: str | None
    ) -> tuple[str, list[Any]]:
        clauses = ["ts >= ?"]
        params: list[Any] = [self.clock() - window_minutes * 60.0]
        for column, value in (("model", model), ("key_name", key), ("deployment", deployment)):
            if value is not None:
                clauses.append(f"{column} = ?")
                params.append(value)
        return " AND ".join(clauses), params

    # ------------------------------------------------------------------------------------------ writer side


def percentile(sorted_values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of an ascending sequence: the value at rank ceil(p/100 * n); None if empty."""
    n = len(sorted_values)
    if n == 0:
        return None
    rank = max(1, math.ceil(p * n / 100.0))  # p * n first: 95 * 20 / 100 is exactly 19
    return float(sorted_values[min(rank, n) - 1])


# Nearest-rank p50, p95, p99 and the maximum of one column over a window, per slice of it (a model, a time
# bucket; one slice when ``{slice}`` is a constant), in one statement: SQLite sorts and picks the four ranks
# (integer arithmetic: rank = ceil(p * n / 100)), so a window of a million requests costs a sort in C with the
# GIL released, not a million Python floats. The alert evaluator and the dashboard run these every few seconds.
_SQL_PERCENTILES = """
SELECT s,
       max(CASE WHEN rn = max(1, (50 * n + 99) / 100) THEN v END),
       max(CASE WHEN rn = max(1, (95 * n + 99) / 100) THEN v END),
       max(CASE WHEN rn = max(1, (99 * n + 99) / 100) THEN v END),
       max(CASE WHEN rn = n THEN v END)
FROM (SELECT s, v, row_number() OVER (PARTITION BY s ORDER BY v) AS rn, count(*) OVER (PARTITION BY s) AS n
      FROM (SELECT {slice} AS s, {column} AS v FROM requests WHERE {where} AND {column} IS NOT NULL))
GROUP BY s
"""
NO_PERCENTILES: dict[str, float | None] = {"p50": None, "p95": None, "p99": None, "max": None}


def window_percentiles(
    conn: sqlite3.Connection,
    column: str,
    where: str,
    params: Sequence[Any],
    *,
    slice_sql: str = "0",
    slice_params: Sequence[Any] = (),
) -> dict[Any, dict[str, float | None]]:
    """Slice value -> p50/p95/p99/max of ``column`` (a trusted column name) over the rows matching ``where``;
    a slice without values is absent. ``slice_sql`` is a trusted expression with ``slice_params``."""
    sql = _SQL_PERCENTILES.format(slice=slice_sql, column=column, where=where)
    return {
        row[0]: {
            name: None if v is None else float(v) for name, v in zip(NO_PERCENTILES, row[1:], strict=True)
        }
        for row in conn.execute(sql, [*slice_params, *params])
    }


def window_spread(
    conn: sqlite3.Connection, column: str, where: str, params: Sequence[Any]
) -> dict[str, float | None]:
    """``window_percentiles`` over the whole window: one p50/p95/p99/max dict (all None without values)."""
    return window_percentiles(conn, column, where, params).get(0) or dict(NO_PERCENTILES)


class _Writer(threading.Thread):
    """Drains the log's queue into batches for its sink (``LogSink`` here, or the writer process)."""

    def __init__(self, owner: RequestLog, sink: _Sink) -> None:
        # Daemon: a log that is never closed must not hang interpreter exit (its queued records are lost).
        super().__init__(name=f"slipstream-requestlog:{owner.path.name}", daemon=True)
        self.owner = owner
        self.sink = sink
        self.last_purge = time.monotonic()

    def run(self) -> None:
        owner = self.owner
        stop: _Control | None = None
        try:
            while stop is None:
                records, controls = self._collect()
                if records:
                    self._write(records)
                for control in controls:
                    if control.kind == "maintain":
                        self._maintain(purge_age=True)
                due = time.monotonic() - self.last_purge >= owner.maintenance_interval
                if records or due:
                    self._maintain(purge_age=due)
                for control in controls:
                    if control.kind == "stop":
                        stop = control
                    else:
                        _resolve(control.done)
        finally:
            try:
                self.sink.close()
            finally:
                owner._counts = self.sink.counts()
                if stop is not None:
                    _resolve(stop.done)

    def _collect(self) -> tuple[list[tuple[Any, ...] | OperationRecord], list[_Control]]:
        """The next batch: everything recorded by the end of a ``batch_interval`` nap (cut short by a control
        request, which is then answered after the records queued before it are written)."""
        owner = self.owner
        owner._wake.wait(owner.batch_interval)
        owner._wake.clear()
        controls: list[_Control] = []
        while True:
            try:
                controls.append(owner._controls.get_nowait())
            except queue.Empty:
                break
        pending = owner._pending
        records = [pending.popleft() for _ in range(len(pending))]
        return records, controls

    def _write(self, records: list[tuple[Any, ...] | OperationRecord]) -> None:
        rows = [rec for rec in records if type(rec) is tuple]
        operations = [_operation_row(rec) for rec in records if type(rec) is OperationRecord]
        try:
            self.sink.write(rows, operations)
        except Exception as exc:  # never let the thread die: the log is best-effort
            log.warning(
                "request log: writing %d records to %s failed: %s", len(records), self.owner.path, exc
            )
        self.owner._counts = self.sink.counts()

    def _maintain(self, *, purge_age: bool) -> None:
        """Delete rows past retention (when ``purge_age``) and the oldest rows while over ``max_bytes``."""
        owner = self.owner
        cutoff = None
        if purge_age:
            self.last_purge = time.monotonic()
            cutoff = owner.clock() - owner.retention_days * 86400.0
        try:
            self.sink.maintain(cutoff, owner.max_bytes)
        except Exception as exc:
            log.warning("request log: retention pass on %s failed: %s", owner.path, exc)
        owner._counts = self.sink.counts()


def _resolve(future: Future[None]) -> None:
    try:
        future.set_result(None)
    except InvalidStateError:  # the awaiting task was cancelled
        pass


class _reader:
    """A short-lived read-only connection (``with _reader(path) as conn``)."""

    def __init__(self, path: Path) -> None:
        self.conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, isolation_level=None)

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute(f"PRAGMA busy_timeout = {READ_BUSY_TIMEOUT_MS}")
        return self.conn

    def __exit__(self, *exc: object) -> None:
        self.conn.close()
