"""The write transaction every SQLite writer uses (and the request-log child's copy of it)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from slipstream.observe.logsink import _WriteTransaction
from slipstream.sqlitetx import WriteTransaction

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
