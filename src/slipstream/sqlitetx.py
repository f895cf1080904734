"""One write transaction on an autocommit SQLite connection, and the switch to WAL, for every SQLite writer.

``BEGIN IMMEDIATE`` takes the file's write lock up front, so two writers (threads or processes) never deadlock
upgrading a read lock; the block commits when it ends and rolls back when anything escapes it (Ctrl-C
included) or when the COMMIT itself fails, then the exception goes on. The connection must be in autocommit
mode (``isolation_level=None``).

``enable_wal`` switches a file to WAL, waiting for the lock it needs: processes that open a new file together
(gateway workers sharing a cache, state or request log) would otherwise get "database is locked" at once.

``observe/logsink.py`` keeps a copy of both: it is also the request log's child program, which imports nothing
from slipstream so that it starts in tens of milliseconds.
"""

from __future__ import annotations

import sqlite3
import time
from types import TracebackType

__all__ = ["WriteTransaction", "enable_wal"]

_BUSY_CODES = frozenset({sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED})


def enable_wal(conn: sqlite3.Connection, timeout: float) -> None:
    """``PRAGMA journal_mode = WAL``, retried for up to ``timeout`` seconds while another connection holds the lock
    it needs. ``busy_timeout`` does not cover every case: when two connections both hold a read lock and both want
    the exclusive one (two processes opening a new file together), SQLite answers one of them "database is
    locked" at once instead of waiting, to avoid a deadlock. Three processes opening 300 new files in lockstep:
    51 of the 900 opens failed that way before this retry."""
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


class WriteTransaction:
    """``with WriteTransaction(conn): ...`` — a class, not ``@contextmanager``: it runs per state write."""

    __slots__ = ("conn",)

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn

    def __enter__(self) -> sqlite3.Connection:
        self.conn.execute("BEGIN IMMEDIATE")
        return self.conn

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
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
