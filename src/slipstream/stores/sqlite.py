"""The embedded persistent cache store: one SQLite file, shareable by several processes on one machine.

Reads and writes take different roads, because they cost different things:

- ``get`` runs its primary-key lookup synchronously on the caller's connection. On a warm WAL database it
  costs ~10 µs for a 2 KB reply (~5 µs of it zlib), ~3 µs for a miss; handing the same call to a thread
  (``run_in_executor``/``to_thread``) costs 65-90 µs, most of it the hop itself (an empty call: 55-65 µs).
- ``set``/``delete``/``clear`` are queued to ONE writer thread with its own connection. It drains whatever
  has queued up, compresses the values and applies them in one transaction, then purges expired rows and
  enforces the size cap in that same transaction. The request path never waits on the disk (a ``set`` is a
  queue put, <1 µs); ``flush()`` waits until what was queued before it is committed.

Sharing: WAL lets readers run while one writer commits; ``busy_timeout`` makes writers in other processes
wait for the file lock instead of failing; ``BEGIN IMMEDIATE`` takes that lock up front, so two writers never
deadlock upgrading a read lock. ``synchronous=NORMAL``: a commit survives a crash of the process (that is
what "durable" means for ``flush``); the last commits may be lost on power loss, acceptable for a cache.

Stored values start with a format byte so the codec can change without a migration: ``0`` raw, ``1`` zlib.
On 1-4 KB chat-completion JSON zlib's levels barely differ (size ratio 0.48 at level 1, 0.46 at 6 and 9;
~25 µs to compress, ~5 µs to decompress at every level), so the default is zlib's own 6, and compression runs
in the writer thread. A value zlib does not shrink is stored raw.

Sizes: ``size`` is the stored (compressed) value's length and ``max_bytes`` caps their sum; the file is larger
by the row, index and page-fill overhead (measured: 1.37x for 5,000 replies of 1-4 KB). The totals live in a
one-row table kept by triggers inside each write transaction, so ``stats()`` and the cap check cost O(1),
not a scan of a file of up to a gigabyte.

Damage is a miss, never a crash: a row that fails to decode is deleted; a file at ``path`` that is not a
SQLite database (or holds another schema) is moved aside to ``path + ".corrupt-<ts>"``; a fresh one starts.
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
import zlib
from collections.abc import Callable
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from ..sqlitetx import WriteTransaction, enable_wal
from .base import CacheEntry, CacheStore, StoreStats

__all__ = [
    "DEFAULT_COMPRESS_LEVEL",
    "FORMAT_RAW",
    "FORMAT_ZLIB",
    "SqliteStore",
    "decode_value",
    "encode_value",
]

log = logging.getLogger(__name__)

FORMAT_RAW = 0
FORMAT_ZLIB = 1
DEFAULT_COMPRESS_LEVEL = 6
DEFAULT_MAX_BYTES = 1024 * 1024 * 1024

SCHEMA_VERSION = 1
# After a write pushes the total over the cap, evict down to this fraction, so the next writes need not evict.
EVICT_TO_FRACTION = 0.9
# Expired rows are purged at most this often (store clock seconds), and at most PURGE_CHUNK per pass, so one
# transaction never holds the file lock for long after a long idle period.
PURGE_INTERVAL = 10.0
PURGE_CHUNK = 1000
# How many queued operations go into one transaction.
MAX_BATCH = 1000
# How long the writer gathers writes after the first one arrives (flush, delete and clear are not delayed).
GATHER_SECONDS = 0.005
# Pending writes beyond this are dropped (a cache write is best-effort): a stalled disk must not grow memory.
DEFAULT_MAX_PENDING = 50_000
# Writers wait this long for another process's write lock (per attempt) before giving up on a batch.
WRITE_BUSY_TIMEOUT_MS = 5000
WRITE_ATTEMPTS = 3
# The reader runs on the event loop: it may only wait briefly (WAL readers are blocked only during recovery).
READ_BUSY_TIMEOUT_MS = 50

_SCHEMA = (
    """CREATE TABLE entries (
        key TEXT PRIMARY KEY,
        value BLOB NOT NULL,
        created_at REAL NOT NULL,
        expires_at REAL NOT NULL,
        size INTEGER NOT NULL
    )""",
    "CREATE INDEX entries_created_at ON entries (created_at)",
    "CREATE INDEX entries_expires_at ON entries (expires_at)",
    "CREATE TABLE totals ("
    "id INTEGER PRIMARY KEY CHECK (id = 0), entries INTEGER NOT NULL, bytes INTEGER NOT NULL)",
    "INSERT INTO totals VALUES (0, 0, 0)",
    """CREATE TRIGGER entries_insert AFTER INSERT ON entries BEGIN
        UPDATE totals SET entries = entries + 1, bytes = bytes + NEW.size WHERE id = 0;
    END""",
    """CREATE TRIGGER entries_delete AFTER DELETE ON entries BEGIN
        UPDATE totals SET entries = entries - 1, bytes = bytes - OLD.size WHERE id = 0;
    END""",
    """CREATE TRIGGER entries_update AFTER UPDATE OF size ON entries BEGIN
        UPDATE totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 0;
    END""",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)

# An upsert, not INSERT OR REPLACE: REPLACE deletes without firing the delete trigger, skewing the totals.
# Rows per statement: every ``execute`` releases the GIL around its step and the writer then waits to take it
# back from the event loop; one statement per row was a GIL round trip per cached reply (in-process, a miss
# cost ~10 us more of the event loop's CPU). 190 rows x 5 values stays under SQLite's old 999-variable bound.
# Within one statement a key that comes twice is inserted, then updated: the later value wins, as in order.
UPSERT_CHUNK = 190


def _sql_set(rows: int) -> str:
    return (
        "INSERT INTO entries (key, value, created_at, expires_at, size) VALUES "
        + ", ".join(["(?, ?, ?, ?, ?)"] * rows)
        + " ON CONFLICT (key) DO UPDATE SET value = excluded.value, created_at = excluded.created_at, "
        "expires_at = excluded.expires_at, size = excluded.size"
    )


_SQL_SET_CHUNK = _sql_set(UPSERT_CHUNK)
_SQL_GET = "SELECT value, created_at, expires_at FROM entries WHERE key = ?"
_SQL_TOTALS = "SELECT entries, bytes FROM totals WHERE id = 0"
_SQL_PURGE = "DELETE FROM entries WHERE rowid IN (SELECT rowid FROM entries WHERE expires_at <= ? LIMIT ?)"
_SQL_EVICT = "DELETE FROM entries WHERE rowid IN (SELECT rowid FROM entries ORDER BY created_at LIMIT ?)"

_CORRUPTION_CODES = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB})
_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

T = TypeVar("T")


def encode_value(value: bytes, level: int = DEFAULT_COMPRESS_LEVEL) -> bytes:
    """The stored form: a format byte, then zlib data (or the raw value when zlib does not shrink it)."""
    packed = zlib.compress(value, level)
    if len(packed) < len(value):
        return bytes((FORMAT_ZLIB,)) + packed
    return bytes((FORMAT_RAW,)) + value


def decode_value(stored: object) -> bytes | None:
    """The value back from its stored form; ``None`` when it is not something ``encode_value`` produced."""
    if not isinstance(stored, bytes) or not stored:
        return None
    fmt = stored[0]
    if fmt == FORMAT_ZLIB:
        try:
            return zlib.decompress(memoryview(stored)[1:])
        except zlib.error:
            return None
    if fmt == FORMAT_RAW:
        return stored[1:]
    return None


class _IncompatibleFile(Exception):
    """The file is a SQLite database, but not one of ours (or of a schema version we do not know)."""


# Writer operations. Each is created on the caller's side and applied by the writer thread.


@dataclass(slots=True)
class _Set:
    key: str
    value: bytes
    created_at: float
    expires_at: float
    stored: bytes = b""  # encoded in the writer thread, before the transaction starts


@dataclass(slots=True)
class _Delete:
    key: str
    result: Future[bool] | None = None


@dataclass(slots=True)
class _DeleteCorrupt:
    """Delete a row that failed to decode — only if it still holds the same bytes (another process may have
    rewritten it since)."""

    key: str
    stored: object


@dataclass(slots=True)
class _Clear:
    prefix: str
    result: Future[int]


@dataclass(slots=True)
class _Flush:
    result: Future[None]


@dataclass(slots=True)
class _Stop:
    result: Future[None]


_Op = _Set | _Delete | _DeleteCorrupt | _Clear | _Flush | _Stop
_WRITES = (_Set, _Delete, _DeleteCorrupt, _Clear)


@dataclass(slots=True)
class _BatchOutcome:
    results: list[tuple[Future[Any], Any]] = field(default_factory=list)
    evicted: int = 0
    expired: int = 0


class SqliteStore(CacheStore):
    """A cache store in one SQLite file. Use it from one event loop; several processes may share the file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        max_bytes: int = DEFAULT_MAX_BYTES,
        compress_level: int = DEFAULT_COMPRESS_LEVEL,
        clock: Callable[[], float] = time.time,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        if max_bytes < 1:
            raise ValueError("max_bytes must be positive")
        if not -1 <= compress_level <= 9:
            raise ValueError("compress_level must be between -1 and 9 (zlib levels)")
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.compress_level = compress_level
        self.clock = clock
        self.max_pending = max_pending
        self.evictions = 0
        self.expired = 0
        self.dropped_writes = 0
        self._closed = False
        self._queue: queue.SimpleQueue[_Op] = queue.SimpleQueue()
        self._reader, writer = _open(self.path)
        self._writer = _Writer(self, writer)
        self._writer.start()

    # Reads: on the caller's thread.

    def get_nowait(self, key: str) -> CacheEntry | None:
        if self._closed:
            return None
        try:
            # fetchall, not fetchone: stepping the statement to its end releases the read snapshot at once,
            # so this connection never holds back a WAL checkpoint.
            rows = self._reader.execute(_SQL_GET, (key,)).fetchall()
        except sqlite3.Error as exc:
            log.warning("cache read failed in %s, treating as a miss: %s", self.path, exc)
            return None
        if not rows:
            return None
        stored, created_at, expires_at = rows[0]
        if type(created_at) is float and type(expires_at) is float:
            if expires_at <= self.clock():
                return None  # the writer purges it later
            value = decode_value(stored)
            if value is not None:
                return CacheEntry(value, created_at, expires_at)
        log.warning("corrupt cache row %r in %s: deleting it", key, self.path)
        self._queue.put(_DeleteCorrupt(key, stored))
        return None

    async def get(self, key: str) -> CacheEntry | None:
        return self.get_nowait(key)

    async def stats(self) -> StoreStats:
        self._check_open()
        (entries, total), *_ = self._reader.execute(_SQL_TOTALS).fetchall()
        return StoreStats(int(entries), int(total), self.evictions, self.expired)

    # Writes: queued to the writer thread.

    def set_nowait(self, key: str, value: bytes, ttl: float) -> None:
        if self._closed:
            return
        if ttl <= 0:
            self._queue.put(_Delete(key))
            return
        if self._queue.qsize() >= self.max_pending:
            self.dropped_writes += 1
            if self.dropped_writes == 1:
                log.warning(
                    "cache writer for %s is %d writes behind: dropping new ones", self.path, self.max_pending
                )
            return
        now = self.clock()
        self._queue.put(_Set(key, value, now, now + ttl))

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        self.set_nowait(key, value, ttl)

    async def delete(self, key: str) -> bool:
        self._check_open()
        result: Future[bool] = Future()
        self._queue.put(_Delete(key, result))
        return await asyncio.wrap_future(result)

    async def clear(self, prefix: str = "") -> int:
        self._check_open()
        result: Future[int] = Future()
        self._queue.put(_Clear(prefix, result))
        return await asyncio.wrap_future(result)

    async def flush(self) -> None:
        if self._closed:
            return
        result: Future[None] = Future()
        self._queue.put(_Flush(result))
        await asyncio.wrap_future(result)

    async def aclose(self) -> None:
        """Write what is queued, then close. Close the reader first so the last connection to close — the one
        that checkpoints the WAL into the main file — is the writer, in its thread."""
        if self._closed:
            return
        self._closed = True
        self._reader.close()
        done: Future[None] = Future()
        self._queue.put(_Stop(done))
        await asyncio.wrap_future(done)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError(f"SqliteStore({str(self.path)!r}) is closed")


class _Writer(threading.Thread):
    """Drains the store's queue into batched transactions on its own connection."""

    def __init__(self, store: SqliteStore, conn: sqlite3.Connection) -> None:
        # Daemon: a store that is never closed must not hang interpreter exit (its queued writes are lost).
        super().__init__(name=f"slipstream-sqlite-writer:{store.path.name}", daemon=True)
        self.store = store
        self.conn = conn
        self.last_purge = -math.inf

    def run(self) -> None:
        stop: _Stop | None = None
        try:
            while stop is None:
                batch = [self.store._queue.get()]
                if isinstance(batch[0], _Set):
                    # Gather for a moment before writing: while this thread sleeps, puts wake nobody, so a busy
                    # gateway pays one wake-up and one transaction per window instead of one per cached reply.
                    time.sleep(GATHER_SECONDS)
                while len(batch) < MAX_BATCH:
                    try:
                        batch.append(self.store._queue.get_nowait())
                    except queue.Empty:
                        break
                stop = next((op for op in batch if isinstance(op, _Stop)), None)
                self._apply(batch)
        finally:
            self.conn.close()
            if stop is not None:
                _resolve(stop.result, None)

    def _apply(self, batch: list[_Op]) -> None:
        if not any(isinstance(op, _WRITES) for op in batch):
            # Only flushes (and the stop): everything before them is committed already. No need to take the
            # file lock, which another process may be holding.
            for op in batch:
                if isinstance(op, _Flush):
                    _resolve(op.result, None)
            return
        level = self.store.compress_level
        for op in batch:
            if isinstance(op, _Set):
                op.stored = encode_value(op.value, level)  # before BEGIN: keep the file lock short
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                outcome = self._transaction(batch)
            except Exception as exc:  # never let the thread die with callers waiting on it
                busy = getattr(exc, "sqlite_errorcode", 0) & 0xFF in _BUSY_CODES
                if busy and attempt < WRITE_ATTEMPTS:
                    continue
                log.warning("cache write of %d operations to %s failed: %s", len(batch), self.store.path, exc)
                for op in batch:
                    if isinstance(op, _Delete | _Clear) and op.result is not None:
                        _fail(op.result, exc)
                    elif isinstance(op, _Flush):
                        _resolve(op.result, None)
                return
            self.store.evictions += outcome.evicted
            self.store.expired += outcome.expired
            for future, value in outcome.results:
                _resolve(future, value)
            return

    def _transaction(self, batch: list[_Op]) -> _BatchOutcome:
        conn = self.conn
        outcome = _BatchOutcome()
        with WriteTransaction(conn):
            sets: list[_Set] = []  # consecutive sets, written as one statement per chunk
            for op in batch:
                if isinstance(op, _Set) and len(op.stored) <= self.store.max_bytes:
                    sets.append(op)
                    continue
                self._upsert(sets)  # first: a delete queued after a set must find the row
                sets.clear()
                self._apply_one(op, outcome)
            self._upsert(sets)
            self._maintain(outcome)
        return outcome

    def _upsert(self, sets: list[_Set]) -> None:
        for start in range(0, len(sets), UPSERT_CHUNK):
            chunk = sets[start : start + UPSERT_CHUNK]
            params: list[Any] = []
            for op in chunk:
                params += (op.key, op.stored, op.created_at, op.expires_at, len(op.stored))
            sql = _SQL_SET_CHUNK if len(chunk) == UPSERT_CHUNK else _sql_set(len(chunk))
            self.conn.execute(sql, params)

    def _apply_one(self, op: _Op, outcome: _BatchOutcome) -> None:
        conn = self.conn
        if isinstance(op, _Set):  # one that could never fit (the others go through _upsert)
            conn.execute("DELETE FROM entries WHERE key = ?", (op.key,))  # storing it would evict the rest
        elif isinstance(op, _Delete):
            removed = conn.execute("DELETE FROM entries WHERE key = ?", (op.key,)).rowcount > 0
            if op.result is not None:
                outcome.results.append((op.result, removed))
        elif isinstance(op, _DeleteCorrupt):
            conn.execute("DELETE FROM entries WHERE key = ? AND value IS ?", (op.key, op.stored))
        elif isinstance(op, _Clear):
            outcome.results.append((op.result, _clear(conn, op.prefix)))
        elif isinstance(op, _Flush):  # done once this transaction commits
            outcome.results.append((op.result, None))
        # _Stop is resolved by the thread itself, after its connection is closed.

    def _maintain(self, outcome: _BatchOutcome) -> None:
        """Purge expired rows now and then, and evict the oldest rows when the total is over the cap."""
        conn = self.conn
        store = self.store
        now = store.clock()
        total = _total_bytes(conn)
        over = total > store.max_bytes
        if over or now - self.last_purge >= PURGE_INTERVAL:
            self.last_purge = now
            while True:  # over the cap, expired rows go first, before any live row is evicted
                purged = conn.execute(_SQL_PURGE, (now, PURGE_CHUNK)).rowcount
                outcome.expired += purged
                if not over or purged < PURGE_CHUNK:
                    break
                total = _total_bytes(conn)
                if total <= store.max_bytes * EVICT_TO_FRACTION:
                    break
            total = _total_bytes(conn)
        if total <= store.max_bytes:
            return
        target = store.max_bytes * EVICT_TO_FRACTION
        while total > target:
            count = conn.execute(_SQL_TOTALS).fetchall()[0][0]
            if count <= 0:
                break
            # Enough of the oldest rows, at the average row size, to get under the target in one statement.
            n = max(1, math.ceil((total - target) / (total / count)))
            evicted = conn.execute(_SQL_EVICT, (n,)).rowcount
            if evicted == 0:
                break
            outcome.evicted += evicted
            total = _total_bytes(conn)


def _total_bytes(conn: sqlite3.Connection) -> int:
    return int(conn.execute(_SQL_TOTALS).fetchall()[0][1])


def _clear(conn: sqlite3.Connection, prefix: str) -> int:
    if not prefix:
        return conn.execute("DELETE FROM entries").rowcount
    # A key range, not LIKE: LIKE is case-insensitive and treats % and _ as wildcards, and a range uses the
    # primary-key index. SQLite compares TEXT as UTF-8 bytes, which orders like Python's code points.
    upper = _prefix_upper_bound(prefix)
    if upper is None:
        return conn.execute("DELETE FROM entries WHERE key >= ?", (prefix,)).rowcount
    return conn.execute("DELETE FROM entries WHERE key >= ? AND key < ?", (prefix, upper)).rowcount


def _prefix_upper_bound(prefix: str) -> str | None:
    """The smallest string greater than every string starting with ``prefix`` (None: there is none)."""
    stripped = prefix.rstrip(chr(0x10FFFF))
    if not stripped:
        return None
    nxt = ord(stripped[-1]) + 1
    if 0xD800 <= nxt <= 0xDFFF:  # surrogates cannot be encoded in UTF-8; none can occur in a stored key
        nxt = 0xE000
    return stripped[:-1] + chr(nxt)


def _resolve(future: Future[T], value: T) -> None:
    try:
        future.set_result(value)
    except InvalidStateError:  # the awaiting task was cancelled
        pass


def _fail(future: Future[Any], exc: BaseException) -> None:
    try:
        future.set_exception(exc)
    except InvalidStateError:
        pass


# Opening, with recovery from a damaged file.


def _open(path: Path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    """(reader, writer) connections to a ready database at ``path``; a damaged file is moved aside first."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        return _connect_both(path)
    except (sqlite3.DatabaseError, _IncompatibleFile) as exc:
        code = getattr(exc, "sqlite_errorcode", 0) & 0xFF
        if isinstance(exc, sqlite3.DatabaseError) and code not in _CORRUPTION_CODES:
            raise  # e.g. permissions or a lock held too long: moving the file would not help
        aside = _move_aside(path)
        log.warning("cache file %s is unusable (%s): moved it to %s, starting afresh", path, exc, aside)
    return _connect_both(path)


def _connect_both(path: Path) -> tuple[sqlite3.Connection, sqlite3.Connection]:
    writer = _connect(path, WRITE_BUSY_TIMEOUT_MS)
    try:
        _check_schema(writer)  # before anything writes: someone else's database is left exactly as it was
        enable_wal(writer, WRITE_BUSY_TIMEOUT_MS / 1000)
        _prepare_schema(writer)
        reader = _connect(path, READ_BUSY_TIMEOUT_MS)
    except BaseException:
        writer.close()
        raise
    try:
        reader.execute("PRAGMA query_only = ON")
        reader.execute(_SQL_TOTALS).fetchall()
    except BaseException:
        reader.close()
        writer.close()
        raise
    return reader, writer


def _connect(path: Path, busy_timeout_ms: int) -> sqlite3.Connection:
    # isolation_level=None: autocommit, so each read is its own short snapshot and the writer issues its own
    # BEGIN IMMEDIATE. check_same_thread=False: the writer's connection is opened here and used by its thread.
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
        conn.execute("PRAGMA synchronous = NORMAL")
    except BaseException:
        conn.close()
        raise
    return conn


_SQL_IDENTITY = (
    "SELECT (SELECT user_version FROM pragma_user_version()), (SELECT count(*) FROM sqlite_master)"
)


def _check_schema(conn: sqlite3.Connection) -> None:
    """Raise if the file is not a database (the first read of it fails) or holds something other than ours."""
    # One statement, so one snapshot: read apart, a file another process was creating could show its tables
    # but not yet its version, and be taken for a foreign database (and moved aside).
    version, tables = conn.execute(_SQL_IDENTITY).fetchall()[0]
    if version == 0 and tables:
        raise _IncompatibleFile("a SQLite database with an unknown schema")
    if version not in (0, SCHEMA_VERSION):
        raise _IncompatibleFile(f"schema version {version}, this code knows {SCHEMA_VERSION}")


def _prepare_schema(conn: sqlite3.Connection) -> None:
    """Create the schema in a fresh file, or check that an existing file holds ours. One write transaction, so
    processes opening a new file at the same time do not both create it."""
    with WriteTransaction(conn):
        _check_schema(conn)  # again, under the lock: another process may have created it meanwhile
        if conn.execute("PRAGMA user_version").fetchall()[0][0] == 0:
            for statement in _SCHEMA:
                conn.execute(statement)


def _move_aside(path: Path) -> Path:
    """Rename the damaged file (and its WAL/SHM companions, which belong to it) out of the way."""
    stamp = int(time.time())
    aside = Path(f"{path}.corrupt-{stamp}")
    n = 0
    while aside.exists():
        n += 1
        aside = Path(f"{path}.corrupt-{stamp}-{n}")
    for suffix in ("", "-wal", "-shm"):
        try:
            os.replace(f"{path}{suffix}", f"{aside}{suffix}")
        except FileNotFoundError:  # no companion, or another process moved it first
            pass
    return aside
