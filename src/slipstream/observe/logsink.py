"""The request log's writing end: one SQLite connection that inserts rows and enforces retention.

``LogSink`` is what ``RequestLog``'s writer calls, in one of two places (``observe.requestlog``):

- in a child process (the default): ``RequestLog`` feeds it rows over a pipe and this module is the child's
  program (``python -I logsink.py``). The gateway's Python then does only what it must under its GIL — read
  each record's values and ``marshal`` a batch — and the binding, the B-tree inserts, the WAL and the retention
  deletes run on another core under another interpreter's lock. A gateway is one event loop on one GIL; the
  writer thread's share of that lock was most of what the request log cost it.
- in a thread of the process that records (``writer: thread``): the same calls, made directly.

This module imports nothing but the standard library, so the child starts in a few tens of milliseconds and
does not load slipstream. Wire protocol (child's stdin/stdout): frames of a 4-byte big-endian length and a
``marshal`` payload. Requests: ``("open", path, columns)``, ``("write", rows, operations)``,
``("maintain", cutoff, max_bytes)``; every request is answered with ``("ok", written, failed, purged,
evicted)`` (the sink's running totals) or ``("error", message)``. End of input closes the database and ends
the child; it ignores SIGINT/SIGTERM so that a Ctrl-C or a group kill cannot cut off the batch its parent
sends while closing.
"""

from __future__ import annotations

import logging
import marshal
import math
import os
import signal
import sqlite3
import struct
import sys
import time
from collections.abc import Callable, Sequence
from itertools import chain
from pathlib import Path
from typing import IO, Any

__all__ = ["COLUMNS", "TEXT_COLUMNS", "LogSink", "open_log"]

log = logging.getLogger("slipstream.observe.requestlog")

SCHEMA_VERSION = 1
WRITE_BUSY_TIMEOUT_MS = 5000
WRITE_ATTEMPTS = 3
# One delete statement removes at most this many rows, so another process's writer never waits long.
DELETE_CHUNK = 5000
EVICT_TO_FRACTION = 0.9

# Column order of the table and of the insert; RequestRecord field names except where noted.
COLUMNS = (
    "ts",
    "key_name",
    "namespace",
    "model",  # RequestRecord.group
    "deployment",
    "status",
    "error",
    "latency_ms",
    "ttft_ms",
    "upstream_ms",
    "overhead_ms",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_usd",
    "saved_usd",
    "cache_status",
    "coalesced",
    "attempts",
    "hedged",
    "fallback",
    "stream",
    "operation",
    "prompt_text",
    "reply_text",
)
TEXT_COLUMNS = ("prompt_text", "reply_text")  # last in COLUMNS; left out (NULL) unless text is stored
SCHEMA = (
    """CREATE TABLE requests (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        key_name TEXT,
        namespace TEXT NOT NULL,
        model TEXT NOT NULL,
        deployment TEXT,
        status INTEGER NOT NULL,
        error TEXT,
        latency_ms REAL NOT NULL,
        ttft_ms REAL,
        upstream_ms REAL,
        overhead_ms REAL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cached_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        saved_usd REAL NOT NULL,
        cache_status TEXT NOT NULL,
        coalesced INTEGER NOT NULL,
        attempts INTEGER NOT NULL,
        hedged INTEGER NOT NULL,
        fallback TEXT,
        stream INTEGER NOT NULL,
        operation TEXT,
        prompt_text TEXT,
        reply_text TEXT
    )""",
    # One index: every query is a time window first (filters by model/key/deployment scan inside it); each
    # extra index costs every insert.
    "CREATE INDEX requests_ts ON requests (ts)",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

# Rows per INSERT statement. One statement per chunk, not one per row: sqlite3 releases the GIL around every
# statement step, and with a step per row a writer thread and the event loop traded the GIL hundreds of times
# per batch. 25 columns x 400 rows stays under SQLite's 32,766 bound parameters.
INSERT_CHUNK = 400

# One row per finished tracked block; column names are OperationRecord's field names.
OPERATION_COLUMNS = (
    "ts",
    "operation",
    "parent",
    "duration_ms",
    "calls",
    "hits",
    "errors",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "saved_usd",
    "error",
)
SCHEMA_OPERATIONS = (
    """CREATE TABLE IF NOT EXISTS operations (
        id INTEGER PRIMARY KEY,
        ts REAL NOT NULL,
        operation TEXT NOT NULL,
        parent TEXT,
        duration_ms REAL NOT NULL,
        calls INTEGER NOT NULL,
        hits INTEGER NOT NULL,
        errors INTEGER NOT NULL,
        prompt_tokens INTEGER NOT NULL,
        completion_tokens INTEGER NOT NULL,
        cost_usd REAL NOT NULL,
        saved_usd REAL NOT NULL,
        error TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS operations_ts ON operations (ts)",
)
_SQL_INSERT_OPERATION = (
    f"INSERT INTO operations ({', '.join(OPERATION_COLUMNS)}) "
    f"VALUES ({', '.join('?' * len(OPERATION_COLUMNS))})"
)
_SQL_PURGE_AGE = "DELETE FROM requests WHERE id IN (SELECT id FROM requests WHERE ts < ? LIMIT ?)"
_SQL_EVICT = "DELETE FROM requests WHERE id IN (SELECT id FROM requests ORDER BY id LIMIT ?)"
_SQL_PURGE_OPERATIONS = "DELETE FROM operations WHERE ts < ?"
# After eviction by size: no block older than the oldest request kept (nothing when no request is left).
_SQL_TRIM_OPERATIONS = "DELETE FROM operations WHERE ts < (SELECT min(ts) FROM requests)"
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})
_CORRUPTION_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})


def sql_insert(columns: Sequence[str], rows: int) -> str:
    placeholders = f"({', '.join('?' * len(columns))})"
    return f"INSERT INTO requests ({', '.join(columns)}) VALUES {', '.join([placeholders] * rows)}"


class LogSink:
    """One writer connection to the request log: inserts batches, deletes by age and size, counts."""

    def __init__(self, path: str | os.PathLike[str], columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        self._sql_chunk = sql_insert(self.columns, INSERT_CHUNK)
        self.written = 0
        self.failed = 0  # records lost because their batch could not be committed
        self.purged = 0  # rows deleted by age
        self.evicted = 0  # rows deleted by size
        self.conn = open_log(self.path)

    def counts(self) -> tuple[int, int, int, int]:
        return self.written, self.failed, self.purged, self.evicted

    def close(self) -> None:
        self.conn.close()

    # ------------------------------------------------------------------------------------------ inserts
    def write(self, rows: Sequence[Sequence[Any]], operations: Sequence[Sequence[Any]] = ()) -> None:
        """Insert request rows (values in ``columns`` order) in one transaction, then operation rows."""
        if rows and self._insert_rows(rows):
            self.written += len(rows)
        if operations:
            self._attempt(
                lambda: self._transaction(_SQL_INSERT_OPERATION, operations, many=True), len(operations)
            )

    def _insert_rows(self, rows: Sequence[Sequence[Any]]) -> bool:
        statements: list[tuple[str, list[Any]]] = []
        for start in range(0, len(rows), INSERT_CHUNK):
            chunk = rows[start : start + INSERT_CHUNK]
            sql = self._sql_chunk if len(chunk) == INSERT_CHUNK else sql_insert(self.columns, len(chunk))
            statements.append((sql, list(chain.from_iterable(chunk))))
        return self._attempt(lambda: self._run_statements(statements), len(rows))

    def _run_statements(self, statements: list[tuple[str, list[Any]]]) -> None:
        conn = self.conn
        with _WriteTransaction(conn):
            for sql, params in statements:
                conn.execute(sql, params)

    def _attempt(self, write: Callable[[], object], count: int) -> bool:
        """Run ``write`` (one transaction of ``count`` records), again while the file is busy."""
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                write()
            except Exception as exc:  # never let the writer die: the log is best-effort
                busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF in _BUSY_CODES
                if busy and attempt < WRITE_ATTEMPTS:
                    continue
                self.failed += count
                log.warning("request log: writing %d records to %s failed: %s", count, self.path, exc)
                return False
            return True
        return False

    # ------------------------------------------------------------------------------------------ retention
    def maintain(self, cutoff: float | None, max_bytes: int) -> None:
        """Delete rows older than ``cutoff`` (epoch seconds; None: skip), then the oldest rows while the used
        size is over ``max_bytes`` (down to 90% of it)."""
        try:
            if cutoff is not None:
                while True:
                    n = self._transaction(_SQL_PURGE_AGE, (cutoff, DELETE_CHUNK))
                    self.purged += n
                    if n < DELETE_CHUNK:
                        break
                self._transaction(_SQL_PURGE_OPERATIONS, (cutoff,))
            used = used_bytes(self.conn)
            if used <= max_bytes:
                return
            target = max_bytes * EVICT_TO_FRACTION
            while used > target:
                count = self.conn.execute("SELECT count(*) FROM requests").fetchone()[0]
                if count == 0:
                    break
                # The oldest rows, at the average row's share of the used size, to get under the target.
                n = min(DELETE_CHUNK, max(1, math.ceil(count * (used - target) / used)))
                deleted = self._transaction(_SQL_EVICT, (n,))
                self.evicted += deleted
                if deleted == 0:
                    break
                used = used_bytes(self.conn)
            self._transaction(_SQL_TRIM_OPERATIONS, ())
        except Exception as exc:
            log.warning("request log: retention pass on %s failed: %s", self.path, exc)

    def _transaction(self, sql: str, params: Any, *, many: bool = False) -> int:
        """Run one statement in its own write transaction; returns the rows it changed."""
        conn = self.conn
        with _WriteTransaction(conn):
            result = (conn.executemany if many else conn.execute)(sql, params).rowcount
        return int(result)


def _enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """``sqlitetx.enable_wal``, copied (this module imports nothing from slipstream): the switch to WAL, retried
    while another process opening the same new file holds the lock it needs."""
    deadline = time.monotonic() + timeout
    pause = 0.001
    while True:
        try:
            conn.execute("PRAGMA journal_mode = WAL").fetchall()
            return
        except sqlite3.OperationalError as exc:
            if (
                getattr(exc, "sqlite_errorcode", 0) & 0xFF not in _BUSY_CODES
                or time.monotonic() + pause > deadline
            ):
                raise
        time.sleep(pause)
        pause = min(pause * 2, 0.05)


class _WriteTransaction:
    """``slipstream.sqlitetx.WriteTransaction``, copied: this module is also the writer process's program,
    which imports nothing from slipstream (see the module docstring). BEGIN IMMEDIATE; COMMIT at the end of the
    block, ROLLBACK when anything escapes it."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None:
            try:
                self.conn.execute("COMMIT")
                return
            except BaseException:  # a COMMIT that fails (busy, disk full) leaves the transaction open
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            self.conn.execute("ROLLBACK")


def used_bytes(conn: sqlite3.Connection) -> int:
    """Bytes in pages that hold data (free pages excluded: they are reused before the file grows)."""
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    free = conn.execute("PRAGMA freelist_count").fetchone()[0]
    size = conn.execute("PRAGMA page_size").fetchone()[0]
    return int((pages - free) * size)


# ---------------------------------------------------------------------------------------------- opening


def open_log(path: Path) -> sqlite3.Connection:
    """The writer's connection to a ready database; a damaged or foreign file is moved aside first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _connect_writer(path)
    except sqlite3.DatabaseError as exc:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if code not in _CORRUPTION_CODES and "schema" not in str(exc):
            raise
        aside = Path(f"{path}.corrupt-{int(time.time())}")
        for suffix in ("", "-wal", "-shm"):
            try:
                os.replace(f"{path}{suffix}", f"{aside}{suffix}")
            except FileNotFoundError:
                pass
        log.warning("request log %s is unusable (%s): moved it to %s, starting afresh", path, exc, aside)
    return _connect_writer(path)


def _connect_writer(path: Path) -> sqlite3.Connection:
    # isolation_level=None: the writer issues its own BEGIN IMMEDIATE. check_same_thread=False: the connection
    # may be opened by one thread and used by the writer thread only.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {WRITE_BUSY_TIMEOUT_MS}")
        _enable_wal(conn, WRITE_BUSY_TIMEOUT_MS / 1000)
        conn.execute("PRAGMA synchronous = NORMAL")
        with _WriteTransaction(conn):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            tables = conn.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
            if version == 0 and tables == 0:
                for statement in SCHEMA:
                    conn.execute(statement)
            elif version != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(f"unknown schema (user_version {version})")
            for statement in SCHEMA_OPERATIONS:
                conn.execute(statement)
    except BaseException:
        conn.close()
        raise
    return conn


# ---------------------------------------------------------------------------------------------- the child

_LENGTH = struct.Struct(">I")


def read_frame(stream: IO[bytes]) -> Any:
    """One message, or ``None`` at the end of input (a torn frame counts as the end)."""
    head = stream.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        return None
    (size,) = _LENGTH.unpack(head)
    body = stream.read(size)
    if len(body) < size:
        return None
    return marshal.loads(body)


def write_frame(stream: IO[bytes], message: Any) -> None:
    body = marshal.dumps(message)
    stream.write(_LENGTH.pack(len(body)) + body)
    stream.flush()


def serve(requests: IO[bytes], replies: IO[bytes]) -> None:
    """Answer requests until the end of input (the child's main loop)."""
    sink: LogSink | None = None
    try:
        while (message := read_frame(requests)) is not None:
            kind = message[0]
            try:
                if kind == "open":
                    sink = LogSink(message[1], message[2])
                elif sink is None:
                    raise RuntimeError("the request log is not open")
                elif kind == "write":
                    sink.write(message[1], message[2])
                elif kind == "maintain":
                    sink.maintain(message[1], message[2])
                else:
                    raise ValueError(f"unknown request {kind!r}")
            except Exception as exc:
                write_frame(replies, ("error", f"{type(exc).__name__}: {exc}"))
                continue
            write_frame(replies, ("ok", *sink.counts()))
    finally:
        if sink is not None:
            sink.close()


def main() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    serve(sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    main()
