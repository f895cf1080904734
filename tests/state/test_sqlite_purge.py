"""The SQLite state store's purge of expired rows keeps up with a sustained stream of short-lived keys."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from slipstream.state import SqliteStateStore
from slipstream.state.sqlite import PURGE_CHUNK, PURGE_INTERVAL


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM state").fetchone()[0])
    finally:
        conn.close()


async def test_a_backlog_of_expired_rows_is_purged_a_chunk_per_write(tmp_path: Path) -> None:
    clock = Clock()
    path = tmp_path / "state.db"
    store = SqliteStateStore(path, clock=clock)
    try:
        for i in range(PURGE_CHUNK * 3 + 10):  # written within one purge interval, all with a 1 s TTL
            await store.set(f"k{i}", i, ttl=1.0)
        clock.now += PURGE_INTERVAL + 2  # all of them expired; the next write starts purging
        for i in range(4):  # one chunk per write while full chunks keep coming, not one per 10 s
            await store.set(f"live{i}", i)
        assert rows(path) == 4
    finally:
        await store.aclose()
