"""Session state in one SQLite file: the embedded default, shared safely by every process on the machine.

One table, ``state(namespace, key, value, version, expires_at)``: the value is the JSON text (orjson), the
version as described in ``base``, ``expires_at`` a wall-clock time (NULL: no expiry). An expired row is absent
to every read and every ``if_version`` check; rows are purged in the write transactions, at most every
``PURGE_INTERVAL`` seconds and ``PURGE_CHUNK`` rows at a time, so an idle store costs nothing.

Off the event loop: every operation runs in the store's one worker thread, on that thread's own connection,
so the loop never waits on the disk or on another process's lock (sync ``sqlite3`` in a one-thread executor;
the hop costs ~60-90 µs, fine for session state, which is not on the per-token path).

Several processes: WAL lets reads run while another process writes. A conditional write reads the current
version and writes inside ONE ``BEGIN IMMEDIATE`` transaction: that takes the file's write lock before the
read, so no other process can slip a write between the check and the write — compare-and-set across
processes, with no lost update. ``busy_timeout`` makes a writer wait (up to ``BUSY_TIMEOUT_MS``) for another's
lock instead of failing; a lock held longer than that raises ``StateUnavailable``. ``synchronous=NORMAL``
in WAL mode: a committed write survives a crash of the process; the last commits may be lost on power loss.

Unlike the cache file, a state file that is damaged or holds another schema is never moved aside: it holds
data the application cannot rebuild, so opening it raises ``StateError`` and leaves it for a person to look at.
"""

from __future__ import annotations

import asyncio
import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from ..sqlitetx import WriteTransaction, enable_wal
from .base import (
    DEFAULT_NAMESPACE,
    Conflict,
    Entry,
    StateError,
    StateStore,
    StateUnavailable,
    check_key,
    decode,
    encode,
    next_version,
)

__all__ = ["SqliteStateStore"]

SCHEMA_VERSION = 1
# Tells our file from any other SQLite database (``PRAGMA application_id``): "SLST".
APPLICATION_ID = 0x534C5354
BUSY_TIMEOUT_MS = 5000
PURGE_INTERVAL = 10.0
PURGE_CHUNK = 1000

_SCHEMA = (
    """CREATE TABLE state (
        namespace TEXT NOT NULL,
        key TEXT NOT NULL,
        value BLOB NOT NULL,
        version INTEGER NOT NULL,
        expires_at REAL,
        PRIMARY KEY (namespace, key)
    )""",
    "CREATE INDEX state_expires_at ON state (expires_at) WHERE expires_at IS NOT NULL",
    f"PRAGMA application_id = {APPLICATION_ID}",
    f"PRAGMA user_version = {SCHEMA_VERSION}",
)
_SQL_IDENTITY = (
    "SELECT (SELECT application_id FROM pragma_application_id()), (SELECT user_version FROM pragma_user_version()), "
    "(SELECT count(*) FROM sqlite_master)"
)
_SQL_GET = "SELECT value, version, expires_at FROM state WHERE namespace = ? AND key = ?"
_SQL_VERSION = "SELECT version, expires_at FROM state WHERE namespace = ? AND key = ?"
_SQL_PUT = (
    "INSERT INTO state (namespace, key, value, version, expires_at) VALUES (?, ?, ?, ?, ?) "
    "ON CONFLICT (namespace, key) DO UPDATE SET value = excluded.value, version = excluded.version, "
    "expires_at = excluded.expires_at"
)
_SQL_DELETE = "DELETE FROM state WHERE namespace = ? AND key = ?"
_SQL_PURGE = (
    "DELETE FROM state WHERE rowid IN "
    "(SELECT rowid FROM state WHERE expires_at IS NOT NULL AND expires_at <= ? LIMIT ?)"
)

_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})

T = TypeVar("T")


class SqliteStateStore(StateStore):
    """Session state in a SQLite file (created with its folder when missing). Use it from any event loop."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        namespace: str = DEFAULT_NAMESPACE,
        default_ttl: float | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        super().__init__(namespace=namespace, default_ttl=default_ttl)
        self.path = Path(path)
        self.clock = clock
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"slipstream-state:{self.path.name}")
        self._local = threading.local()  # the worker thread's connection
        self._last_purge = -math.inf

    # The interface.

    async def get(self, key: str) -> Entry | None:
        check_key(key)
        row = await self._run(self._get, self.namespace, key)
        return None if row is None else Entry(decode(row[0], key), row[1])

    async def set(
        self, key: str, value: Any, ttl: float | None = None, *, if_version: int | None = None
    ) -> int:
        check_key(key)
        stored = encode(value)
        return await self._run(self._set, self.namespace, key, stored, self._ttl(ttl), if_version)

    async def delete(self, key: str, *, if_version: int | None = None) -> bool:
        check_key(key)
        return await self._run(self._delete, self.namespace, key, if_version)

    async def _close(self) -> None:
        await asyncio.wrap_future(self._executor.submit(self._disconnect))
        self._executor.shutdown(wait=False)

    # In the worker thread.

    def _get(self, namespace: str, key: str) -> tuple[bytes, int] | None:
        rows = self._conn().execute(_SQL_GET, (namespace, key)).fetchall()
        if not rows:
            return None
        value, version, expires_at = rows[0]
        if expires_at is not None and expires_at <= self.clock():
            return None
        return bytes(value), int(version)

    def _set(self, namespace: str, key: str, stored: bytes, ttl: float | None, if_version: int | None) -> int:
        def write(conn: sqlite3.Connection, now: float) -> int:
            previous, live = _version(conn, namespace, key, now)
            if if_version is not None and if_version != live:
                raise Conflict(key, if_version, live)
            version = next_version(previous, int(now * 1_000_000))
            expires_at = None if ttl is None else now + ttl
            conn.execute(_SQL_PUT, (namespace, key, stored, version, expires_at))
            return version

        return self._transaction(write)

    def _delete(self, namespace: str, key: str, if_version: int | None) -> bool:
        def remove(conn: sqlite3.Connection, now: float) -> bool:
            _, live = _version(conn, namespace, key, now)
            if if_version is not None and if_version != live:
                raise Conflict(key, if_version, live)
            conn.execute(_SQL_DELETE, (namespace, key))  # an expired row goes too: it was absent already
            return live != 0

        return self._transaction(remove)

    def _transaction(self, body: Callable[[sqlite3.Connection, float], T]) -> T:
        """Run ``body`` in a write transaction that holds the file lock from its first read to its commit."""
        conn = self._conn()
        with WriteTransaction(conn):
            now = self.clock()
            result = body(conn, now)
            if now - self._last_purge >= PURGE_INTERVAL:
                purged = conn.execute(_SQL_PURGE, (now, PURGE_CHUNK)).rowcount
                # A full chunk means more are waiting: purge again on the next write instead of in 10 s, so a
                # sustained stream of short-lived keys never outgrows the purge (each pass stays one chunk).
                self._last_purge = now if purged < PURGE_CHUNK else now - PURGE_INTERVAL
        return result

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = self._local.conn = _open(self.path)
        return conn

    def _disconnect(self) -> None:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is not None:
            self._local.conn = None
            conn.close()

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        self._check_open()
        future = self._executor.submit(fn, *args)
        try:
            return await asyncio.wrap_future(future)
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorcode", 0) & 0xFF in _BUSY_CODES:
                raise StateUnavailable(
                    f"state file {self.path} stayed locked by another process: {exc}"
                ) from None
            raise StateError(f"state file {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise StateError(f"state file {self.path}: {exc}") from exc


def _version(conn: sqlite3.Connection, namespace: str, key: str, now: float) -> tuple[int, int]:
    """(the row's last version, whether expired or not; the live version, 0 when absent or expired)."""
    rows = conn.execute(_SQL_VERSION, (namespace, key)).fetchall()
    if not rows:
        return 0, 0
    version, expires_at = int(rows[0][0]), rows[0][1]
    return version, (0 if expires_at is not None and expires_at <= now else version)


def _open(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    # isolation_level=None: autocommit, so reads are short snapshots and writes issue their own BEGIN IMMEDIATE.
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        conn.execute("PRAGMA synchronous = NORMAL")
        _check_schema(conn, path)
        enable_wal(conn, BUSY_TIMEOUT_MS / 1000)
        _prepare_schema(conn, path)
    except BaseException:
        conn.close()
        raise
    return conn


def _check_schema(conn: sqlite3.Connection, path: Path) -> None:
    try:
        # One statement, so one snapshot: read one by one, a file another process was creating could show its
        # tables but not yet its application id, and be taken for somebody else's database.
        app, version, tables = conn.execute(_SQL_IDENTITY).fetchall()[0]
    except sqlite3.DatabaseError as exc:
        raise StateError(f"{path} is not a usable SQLite database ({exc}); it was left as it is") from None
    if app == 0 and version == 0 and tables == 0:
        return  # a new, empty file
    if app != APPLICATION_ID:
        raise StateError(
            f"{path} is a SQLite database, but not a slipstream state file; it was left as it is"
        )
    if version != SCHEMA_VERSION:
        raise StateError(f"{path} has state schema version {version}; this slipstream knows {SCHEMA_VERSION}")


def _prepare_schema(conn: sqlite3.Connection, path: Path) -> None:
    """Create the schema in a new file, under the write lock, so processes opening it together create it once."""
    with WriteTransaction(conn):
        _check_schema(conn, path)
        if conn.execute("PRAGMA user_version").fetchall()[0][0] == 0:
            for statement in _SCHEMA:
                conn.execute(statement)
