"""The write transaction and the WAL switch every SQLite writer uses (and the request-log child's copies)."""

from __future__ import annotations

import multiprocessing
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from slipstream.observe.logsink import _enable_wal, _WriteTransaction
from slipstream.sqlitetx import WriteTransaction, enable_wal

KINDS = [WriteTransaction, _WriteTransaction]


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(tmp_path / "t.db", isolation_level=None)
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TABLE parent (id INTEGER PRIMARY KEY)")
    # Checked at COMMIT: a way to make the COMMIT itself fail.
    conn.execute("CREATE TABLE child (parent INTEGER REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)")
    yield conn
    conn.close()


def count(conn: sqlite3.Connection, table: str) -> int:
    return int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


@pytest.mark.parametrize("kind", KINDS)
def test_commits_at_the_end_of_the_block(conn: sqlite3.Connection, kind: type[WriteTransaction]) -> None:
    with kind(conn) as inside:
        assert inside is conn and conn.in_transaction
        conn.execute("INSERT INTO parent VALUES (1)")
    assert not conn.in_transaction and count(conn, "parent") == 1


@pytest.mark.parametrize("kind", KINDS)
def test_rolls_back_what_escapes_the_block(conn: sqlite3.Connection, kind: type[WriteTransaction]) -> None:
    with pytest.raises(KeyboardInterrupt), kind(conn):
        conn.execute("INSERT INTO parent VALUES (1)")
        raise KeyboardInterrupt
    assert not conn.in_transaction and count(conn, "parent") == 0


@pytest.mark.parametrize("kind", KINDS)
def test_a_failed_commit_is_rolled_back_and_raised(
    conn: sqlite3.Connection, kind: type[WriteTransaction]
) -> None:
    with pytest.raises(sqlite3.IntegrityError), kind(conn):
        conn.execute("INSERT INTO parent VALUES (1)")
        conn.execute("INSERT INTO child VALUES (99)")  # no parent 99: the COMMIT refuses
    assert not conn.in_transaction and count(conn, "parent") == 0
    with kind(conn):  # the connection is usable again
        conn.execute("INSERT INTO parent VALUES (2)")
    assert count(conn, "parent") == 1


WAL_SWITCHES = [enable_wal, _enable_wal]


def _open_in_lockstep(
    switch: Callable[[sqlite3.Connection, float], None], paths: list[str], barrier: Any, errors: Any
) -> None:
    for path in paths:
        barrier.wait()
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            conn.execute("PRAGMA busy_timeout = 5000")
            switch(conn, 5.0)
        except sqlite3.Error as exc:
            errors.put(f"{path}: {exc}")
        finally:
            conn.close()


@pytest.mark.parametrize("switch", WAL_SWITCHES)
def test_processes_opening_new_files_together_all_switch_to_wal(
    tmp_path: Path, switch: Callable[[sqlite3.Connection, float], None]
) -> None:
    # Without the retry, about one open in 18 failed here with "database is locked" (busy_timeout set).
    context = multiprocessing.get_context("fork")
    paths = [str(tmp_path / f"{i}.db") for i in range(100)]
    barrier, errors = context.Barrier(3), context.Queue()
    workers = [
        context.Process(target=_open_in_lockstep, args=(switch, paths, barrier, errors)) for _ in range(3)
    ]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=60)
    assert [worker.exitcode for worker in workers] == [0, 0, 0]
    failures = []
    while not errors.empty():
        failures.append(errors.get())
    assert failures == []
    for path in paths:
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


@pytest.mark.parametrize("switch", WAL_SWITCHES)
def test_the_wal_switch_gives_up_after_its_timeout(
    tmp_path: Path, switch: Callable[[sqlite3.Connection, float], None]
) -> None:
    holder = sqlite3.connect(tmp_path / "held.db", isolation_level=None)
    holder.execute("CREATE TABLE t (x)")
    holder.execute("BEGIN EXCLUSIVE")
    conn = sqlite3.connect(tmp_path / "held.db", isolation_level=None)
    conn.execute("PRAGMA busy_timeout = 0")
    started = time.monotonic()
    try:
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            switch(conn, 0.2)
        assert 0.15 <= time.monotonic() - started < 2.0
    finally:
        conn.close()
        holder.execute("ROLLBACK")
        holder.close()
