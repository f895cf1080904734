"""Keeping the semantic index across restarts: a SQLite file beside the exact cache's.

``semantic.db`` sits in the same folder as ``cache.db`` and holds one row per entry: its id (the exact-cache
key of the reply), partition, text, vector (float32 bytes), the embedding model's name, and the same
``created_at``/``expires_at`` the reply got. The reply itself is never copied here: a semantic hit reads it
from the exact store, so TTL and eviction are shared — an entry whose reply the exact tier expired or evicted
is a miss, and is removed when a search meets it.

On start the live rows made by the same embedding model are loaded into the index (vectors of another model
are not comparable: each model's rows are loaded by its own index), and expired rows are purged. After that
the index's changes are written through: adds and removes go to one worker thread with its own connection,
so the request path never waits on the disk.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..sqlitetx import enable_wal
from .index import Entry, SemanticIndex

__all__ = ["SqliteIndexStore"]

log = logging.getLogger("slipstream.semantic")

_SCHEMA = """CREATE TABLE IF NOT EXISTS semantic_entries (
    id TEXT PRIMARY KEY,
    partition TEXT NOT NULL,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    vector BLOB NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL NOT NULL
)"""
_UPSERT = (  # keyed by id alone: one exact-cache key has one reply, so one entry
    "INSERT INTO semantic_entries (id, partition, model, text, vector, created_at, expires_at) "
    "VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET partition = excluded.partition, "
    "model = excluded.model, text = excluded.text, vector = excluded.vector, "
    "created_at = excluded.created_at, expires_at = excluded.expires_at"
)


class SqliteIndexStore:
    """Loads an index from ``path`` and writes its later changes back."""

    def __init__(self, path: str | Path, model: str, *, clock: Callable[[], float] = time.time) -> None:
        self.path = Path(path)
        self.model = model
        self.clock = clock
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slipstream-semantic-db")
        self._conn: sqlite3.Connection | None = None
        self._pending: set[asyncio.Future[None]] = set()

    async def start(self, index: SemanticIndex) -> None:
        loop = asyncio.get_running_loop()
        rows = await loop.run_in_executor(self._executor, self._open_and_load)
        for id, partition, text, blob, created_at, expires_at in rows:
            vector = np.frombuffer(blob, dtype=np.float32)
            if vector.shape[0] != index.dim:
                continue
            index.add(Entry(id, partition, text, created_at, expires_at, vector.copy()), notify=False)
        index.listeners.append(self.changed)

    def changed(self, op: str, entry: Entry) -> None:
        """The index's listener: queue the write (called on the event loop, returns at once)."""
        loop = asyncio.get_running_loop()
        if op == "add":
            args = (
                entry.id,
                entry.partition,
                self.model,
                entry.text,
                entry.vector.astype(np.float32).tobytes(),
                entry.created_at,
                entry.expires_at,
            )
            future = loop.run_in_executor(self._executor, self._write, _UPSERT, args)
        else:
            future = loop.run_in_executor(
                self._executor, self._write, "DELETE FROM semantic_entries WHERE id = ?", (entry.id,)
            )
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)

    async def flush(self) -> None:
        """Wait for the writes queued so far."""
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
        await self.flush()
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._close)
        self._executor.shutdown(wait=True)

    # ------------------------------------------------------------------------------------ worker thread
    def _open_and_load(self) -> list[tuple[str, str, str, bytes, float, float]]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            conn = self._connect()
        except sqlite3.DatabaseError as exc:  # not a database: start afresh, as the exact store does
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(time.time())}")
            log.warning("semantic index file %s is unusable (%s): moved it to %s", self.path, exc, aside)
            self.path.replace(aside)
            conn = self._connect()
        self._conn = conn
        now = self.clock()
        with conn:
            conn.execute("DELETE FROM semantic_entries WHERE expires_at <= ?", (now,))
        rows = conn.execute(
            "SELECT id, partition, text, vector, created_at, expires_at FROM semantic_entries "
            "WHERE model = ? ORDER BY created_at",
            (self.model,),
        ).fetchall()
        return [(str(r[0]), str(r[1]), str(r[2]), bytes(r[3]), float(r[4]), float(r[5])) for r in rows]

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            enable_wal(conn, 5.0)
            conn.execute("PRAGMA synchronous = NORMAL")
            conn.execute(_SCHEMA)
        except BaseException:
            conn.close()
            raise
        return conn

    def _write(self, sql: str, args: tuple[object, ...]) -> None:
        if self._conn is None:
            return
        try:
            self._conn.execute(sql, args)
        except sqlite3.Error as exc:  # a cache that cannot write must not fail anything
            log.warning("semantic index write to %s failed: %s", self.path, exc)

    def _close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
