"""One write transaction on an autocommit SQLite connection, for every SQLite writer in slipstream.

``BEGIN IMMEDIATE`` takes the file's write lock up front, so two writers (threads or processes) never deadlock
upgrading a read lock; the block commits when it ends and rolls back when anything escapes it (Ctrl-C
included) or when the COMMIT itself fails, then the exception goes on. The connection must be in autocommit
mode (``isolation_level=None``).

``observe/logsink.py`` keeps a copy of this class: it is also the request log's child program, which imports
nothing from slipstream so that it starts in tens of milliseconds.
"""

from __future__ import annotations

import sqlite3
from types import TracebackType

__all__ = ["WriteTransaction"]


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
