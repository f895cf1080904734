from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import sys
import textwrap
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest

from slipstream.stores import CacheEntry, SqliteStore, StoreStats
from slipstream.stores.sqlite import (
    FORMAT_RAW,
    FORMAT_ZLIB,
    UPSERT_CHUNK,
    _prefix_upper_bound,
    decode_value,
    encode_value,
)

from . import FakeClock

SRC = Path(__file__).resolve().parents[2] / "src"

OpenStore = Callable[..., SqliteStore]

REPLY = orjson.dumps(
    {
        "id": "chatcmpl-123",
        "object": "chat.completion",
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "A rewritten prompt. " * 40},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 200, "total_tokens": 210},
    }
)


def key(namespace: str, n: int) -> str:
    return f"{namespace}:{n:032x}"


@pytest.fixture
async def open_store(tmp_path: Path) -> AsyncIterator[OpenStore]:
    stores: list[SqliteStore] = []

    def _open(path: Path | None = None, **kwargs: Any) -> SqliteStore:
        store = SqliteStore(path or tmp_path / "cache.db", **kwargs)
        stores.append(store)
        return store

    yield _open
    for store in stores:
        await store.aclose()


@contextmanager
def raw(path: Path) -> Iterator[sqlite3.Connection]:
    """An independent connection, as another process would have."""
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        conn.execute("PRAGMA busy_timeout = 5000")
        yield conn


def rows(path: Path) -> dict[str, tuple[bytes, float, float, int]]:
    with raw(path) as conn:
        found = conn.execute("SELECT key, value, created_at, expires_at, size FROM entries").fetchall()
    return {k: (v, c, e, s) for k, v, c, e, s in found}


# Values and codec.


def test_codec_round_trip_and_format_byte() -> None:
    packed = encode_value(REPLY)
    assert packed[0] == FORMAT_ZLIB and len(packed) < len(REPLY) / 2
    assert decode_value(packed) == REPLY
    noise = os.urandom(500)  # zlib cannot shrink it: stored raw
    assert encode_value(noise) == bytes((FORMAT_RAW,)) + noise
    assert decode_value(encode_value(noise)) == noise
    for bad in (b"", b"\x01not zlib", b"\x07" + REPLY, "text", None, 42):
        assert decode_value(bad) is None


async def test_set_get_round_trip_with_times(open_store: OpenStore, tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    store = open_store(clock=clock)
    await store.set(key("a", 1), REPLY, ttl=60)
    await store.flush()
    assert await store.get(key("a", 1)) == CacheEntry(REPLY, 1000.0, 1060.0)
    assert await store.get(key("a", 2)) is None
    stored, created_at, expires_at, size = rows(tmp_path / "cache.db")[key("a", 1)]
    assert (created_at, expires_at) == (1000.0, 1060.0)
    assert stored[0] == FORMAT_ZLIB and size == len(stored) < len(REPLY)


async def test_rewrite_replaces_value(open_store: OpenStore) -> None:
    clock = FakeClock()
    store = open_store(clock=clock)
    await store.set(key("a", 1), b"old", ttl=60)
    clock.advance(5)
    await store.set(key("a", 1), b"new", ttl=60)
    await store.flush()
    assert await store.get(key("a", 1)) == CacheEntry(b"new", clock.now, clock.now + 60)
    assert (await store.stats()).entries == 1


async def test_many_queued_writes_land_in_order_with_exact_totals(
    open_store: OpenStore, tmp_path: Path
) -> None:
    """Sets are written several rows per statement: more than a statement holds, a delete between them, and a
    key set twice within one statement must end as if applied one by one."""
    store = open_store()
    n = UPSERT_CHUNK * 2 + 7
    for i in range(n):  # no await in between: the writer takes them in one or a few batches
        store.set_nowait(key("a", i), b"first %d" % i, ttl=60)
    store.set_nowait(key("a", 3), b"", ttl=0)  # a delete after the set of the same key
    for i in range(0, n, 2):
        store.set_nowait(key("a", i), b"second %d" % i, ttl=60)
    store.set_nowait(key("a", 1), b"x", ttl=60)
    store.set_nowait(key("a", 1), b"y", ttl=60)  # the same key twice in a row: the later one wins
    await store.flush()
    expected = {key("a", i): (b"second %d" if i % 2 == 0 else b"first %d") % i for i in range(n)}
    del expected[key("a", 3)]
    expected[key("a", 1)] = b"y"
    found = rows(tmp_path / "cache.db")
    assert {k: decode_value(v[0]) for k, v in found.items()} == expected
    stats = await store.stats()
    assert (stats.entries, stats.bytes) == (len(expected), sum(v[3] for v in found.values()))


async def test_parent_directory_is_created(open_store: OpenStore, tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "cache.db"
    store = open_store(path)
    await store.set(key("a", 1), b"v", ttl=60)
    await store.flush()
    assert path.exists() and await store.get(key("a", 1)) is not None


# TTL.


async def test_expired_entry_is_a_miss_then_purged(open_store: OpenStore, tmp_path: Path) -> None:
    clock = FakeClock()
    store = open_store(clock=clock)
    await store.set(key("a", 1), b"v", ttl=10)
    await store.flush()
    clock.advance(9.9)
    assert await store.get(key("a", 1)) is not None
    clock.advance(0.1)
    assert await store.get(key("a", 1)) is None
    # The writer purges expired rows when it next writes.
    await store.set(key("a", 2), b"v", ttl=10)
    await store.flush()
    assert set(rows(tmp_path / "cache.db")) == {key("a", 2)}
    assert await store.stats() == StoreStats(entries=1, bytes=2, evictions=0, expired=1)


async def test_non_positive_ttl_removes_the_key(open_store: OpenStore) -> None:
    store = open_store()
    await store.set(key("a", 1), b"v", ttl=60)
    await store.set(key("a", 1), b"w", ttl=0)
    await store.flush()
    assert await store.get(key("a", 1)) is None


# Size cap.


async def test_size_cap_evicts_oldest_to_below_ninety_percent(open_store: OpenStore) -> None:
    clock = FakeClock()
    store = open_store(max_bytes=10_000, clock=clock)
    for i in range(25):
        await store.set(key("a", i), os.urandom(1000), ttl=3600)  # incompressible: 1001 bytes stored
        clock.advance(1)
        if i % 3 == 0:
            await store.flush()
    await store.flush()
    stats = await store.stats()
    assert stats.bytes == stats.entries * 1001 <= 10_000
    assert stats.evictions == 25 - stats.entries > 0
    present = [i for i in range(25) if await store.get(key("a", i)) is not None]
    assert present == list(range(25 - stats.entries, 25))  # exactly the newest survive


async def test_one_write_over_the_cap_evicts_down_to_ninety_percent(open_store: OpenStore) -> None:
    clock = FakeClock()
    store = open_store(max_bytes=10_000, clock=clock)
    for i in range(9):
        await store.set(key("a", i), os.urandom(1000), ttl=3600)
        clock.advance(1)
    await store.flush()
    assert (await store.stats()).entries == 9  # 9009 bytes: under the cap
    await store.set(key("a", 9), os.urandom(1000), ttl=3600)
    await store.flush()
    # 10010 > 10000: evict the oldest until at most 9000 remain -> 8 entries.
    stats = await store.stats()
    assert (stats.entries, stats.bytes, stats.evictions) == (8, 8008, 2)
    assert await store.get(key("a", 0)) is None and await store.get(key("a", 1)) is None


async def test_expired_rows_go_before_live_ones_when_over_the_cap(open_store: OpenStore) -> None:
    clock = FakeClock()
    store = open_store(max_bytes=10_000, clock=clock)
    for i in range(5):
        await store.set(key("old", i), os.urandom(1000), ttl=3)
    await store.set(key("mid", 0), os.urandom(1000), ttl=3600)
    await store.flush()
    # The old rows expire, but the periodic purge is not due yet (PURGE_INTERVAL): only the cap forces it.
    clock.advance(5)
    for i in range(5):
        await store.set(key("new", i), os.urandom(1000), ttl=3600)
    await store.flush()
    stats = await store.stats()
    assert (stats.entries, stats.evictions, stats.expired) == (6, 0, 5)
    assert await store.get(key("mid", 0)) is not None


async def test_value_larger_than_the_cap_is_not_stored(open_store: OpenStore) -> None:
    store = open_store(max_bytes=5_000)
    await store.set(key("a", 1), b"small", ttl=60)
    await store.set(key("a", 2), b"old", ttl=60)
    await store.set(key("a", 2), os.urandom(6_000), ttl=60)
    await store.flush()
    assert await store.get(key("a", 1)) is not None
    assert await store.get(key("a", 2)) is None
    assert (await store.stats()).evictions == 0


# Persistence and sharing.


async def test_entries_survive_a_restart(open_store: OpenStore, tmp_path: Path) -> None:
    clock = FakeClock(1000.0)
    first = open_store(clock=clock)
    for i in range(50):
        await first.set(key("a", i), REPLY + b"%d" % i, ttl=60)
    await first.aclose()  # no explicit flush: closing writes what was queued
    second = open_store(clock=clock)
    assert await second.get(key("a", 7)) == CacheEntry(REPLY + b"7", 1000.0, 1060.0)
    assert (await second.stats()).entries == 50


_WRITER_SCRIPT = textwrap.dedent(
    """
    import asyncio, sys
    from slipstream.stores import SqliteStore

    async def main():
        store = SqliteStore(sys.argv[1])
        print("ready", flush=True)
        sys.stdin.readline()
        for i in range(300):
            await store.set(f"proc:{i:032x}", b"from the other process %d" % i, 3600)
            if i % 5 == 0:
                await store.flush()
        await store.aclose()
        print("done", flush=True)

    asyncio.run(main())
    """
)


async def test_two_instances_and_another_process_share_one_file(
    open_store: OpenStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="slipstream.stores")
    path = tmp_path / "shared.db"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(script),
        str(path),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    assert proc.stdin is not None and proc.stdout is not None
    try:
        assert await asyncio.wait_for(proc.stdout.readline(), 30) == b"ready\n"
        a = open_store(path)
        b = open_store(path)
        proc.stdin.write(b"go\n")
        await proc.stdin.drain()
        # Both in-process stores write while the other process does.
        for i in range(300):
            await a.set(key("a", i), b"from a %d" % i, ttl=3600)
            await b.set(key("b", i), b"from b %d" % i, ttl=3600)
            if i % 5 == 0:
                await asyncio.gather(a.flush(), b.flush())
        await asyncio.gather(a.flush(), b.flush())
        out, err = await asyncio.wait_for(proc.communicate(), 60)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, err.decode()
    assert out == b"done\n" and err == b""
    for store in (a, b):
        for i in (0, 151, 299):
            assert (await store.get(key("a", i))) == CacheEntry(b"from a %d" % i, *_times(store, key("a", i)))
            assert (await store.get(key("b", i))) is not None
            entry = await store.get(f"proc:{i:032x}")
            assert entry is not None and entry.value == b"from the other process %d" % i
        assert (await store.stats()).entries == 900
    assert len(rows(path)) == 900
    assert not [r for r in caplog.records if r.name.startswith("slipstream.stores")]


def _times(store: SqliteStore, k: str) -> tuple[float, float]:
    entry = store.get_nowait(k)
    assert entry is not None
    return entry.created_at, entry.expires_at


async def test_set_never_waits_on_a_locked_file_and_flush_waits_for_it(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    path = tmp_path / "cache.db"
    with raw(path) as other:
        other.execute("BEGIN IMMEDIATE")  # another process holds the write lock
        await asyncio.wait_for(store.flush(), 1)  # nothing queued: no need to wait for the lock
        await asyncio.wait_for(store.set(key("a", 1), b"v", ttl=60), 0.5)
        flushing = asyncio.ensure_future(store.flush())
        await asyncio.sleep(0.2)
        assert not flushing.done()  # the writer is waiting on the lock (busy_timeout), not failing
        assert store.get_nowait(key("a", 1)) is None
        other.execute("COMMIT")
        await asyncio.wait_for(flushing, 5)
    assert await store.get(key("a", 1)) is not None
    assert key("a", 1) in rows(path)  # visible to other connections once flushed


async def test_failed_batch_is_logged_and_nobody_hangs(
    open_store: OpenStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cache.db"
    store = open_store()
    await store.set(key("a", 1), b"v", ttl=60)
    with raw(path) as conn:  # make a write fail inside the transaction, as a full disk would
        conn.execute(
            "CREATE TRIGGER poison BEFORE DELETE ON entries WHEN OLD.key = ? "
            "BEGIN SELECT RAISE(ABORT, 'disk full'); END".replace("?", f"'{key('a', 1)}'")
        )
    with pytest.raises(sqlite3.IntegrityError, match="disk full"):
        await asyncio.wait_for(store.delete(key("a", 1)), 5)
    await store.set(key("a", 1), b"v", ttl=0)  # a delete nobody awaits fails quietly too
    await asyncio.wait_for(store.flush(), 5)
    assert "disk full" in caplog.text
    await store.set(key("a", 2), b"v", ttl=60)  # the writer carries on with the next batch
    await store.flush()
    assert await store.get(key("a", 2)) is not None


async def test_flush_makes_every_earlier_write_visible_to_others(
    open_store: OpenStore, tmp_path: Path
) -> None:
    store = open_store()
    for i in range(2000):
        await store.set(key("a", i), b"v%d" % i, ttl=60)
    await store.flush()
    assert len(rows(tmp_path / "cache.db")) == 2000


# Damage.


@pytest.mark.parametrize(
    ("column", "bad"),
    [
        ("value", b"\x01this is not zlib data"),
        ("value", b"\x09" + REPLY),  # unknown format byte
        ("value", b""),
        ("value", "a text value"),
        ("created_at", "yesterday"),
    ],
)
async def test_corrupt_row_is_a_miss_and_is_deleted(
    open_store: OpenStore, tmp_path: Path, column: str, bad: object, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cache.db"
    store = open_store()
    await store.set(key("a", 1), REPLY, ttl=60)
    await store.set(key("a", 2), REPLY, ttl=60)
    await store.flush()
    with raw(path) as conn:
        conn.execute(f"UPDATE entries SET {column} = ? WHERE key = ?", (bad, key("a", 1)))
    assert await store.get(key("a", 1)) is None
    await store.flush()
    assert set(rows(path)) == {key("a", 2)}
    assert (await store.stats()).entries == 1
    assert "corrupt cache row" in caplog.text


async def test_corrupt_row_rewritten_meanwhile_is_kept(open_store: OpenStore, tmp_path: Path) -> None:
    path = tmp_path / "cache.db"
    store = open_store()
    await store.set(key("a", 1), REPLY, ttl=60)
    await store.flush()
    with raw(path) as conn:
        conn.execute("UPDATE entries SET value = ? WHERE key = ?", (b"\x01junk", key("a", 1)))
        conn.execute("BEGIN IMMEDIATE")  # hold the writer off until the row is rewritten
        assert await store.get(key("a", 1)) is None
        conn.execute("UPDATE entries SET value = ? WHERE key = ?", (encode_value(b"fresh"), key("a", 1)))
        conn.execute("COMMIT")
    await store.flush()
    entry = await store.get(key("a", 1))
    assert entry is not None and entry.value == b"fresh"


def _moved_aside(directory: Path) -> list[Path]:
    return list(directory.glob("cache.db.corrupt-*"))


def _not_sqlite(path: Path) -> None:
    path.write_bytes(b"this is not a SQLite database\n" * 100)


def _malformed(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.executemany("INSERT INTO t VALUES (?)", [(os.urandom(500),) for _ in range(50)])
        conn.commit()
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\xab" * 3996  # keep the header, wreck the schema page
    path.write_bytes(bytes(data))


def _foreign_schema(path: Path) -> None:
    with closing(sqlite3.connect(path)) as conn:
        conn.execute("CREATE TABLE users (name TEXT)")
        conn.commit()


@pytest.mark.parametrize("damage", [_not_sqlite, _malformed, _foreign_schema])
async def test_unusable_file_is_moved_aside_and_store_starts_fresh(
    open_store: OpenStore, tmp_path: Path, damage: Callable[[Path], None], caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "cache.db"
    damage(path)
    original = path.read_bytes()
    store = open_store(path)
    assert "moved it to" in caplog.text
    (aside,) = _moved_aside(tmp_path)
    assert aside.read_bytes() == original
    await store.set(key("a", 1), b"v", ttl=60)
    await store.flush()
    assert await store.get(key("a", 1)) is not None
    assert await store.stats() == StoreStats(entries=1, bytes=2, evictions=0)


async def test_get_on_a_closed_store_is_a_miss(open_store: OpenStore) -> None:
    store = open_store()
    await store.set(key("a", 1), b"v", ttl=60)
    await store.aclose()
    assert await store.get(key("a", 1)) is None
    await store.set(key("a", 2), b"v", ttl=60)  # ignored, not an error
    await store.flush()
    with pytest.raises(RuntimeError):
        await store.delete(key("a", 1))


# Delete, clear, stats.


async def test_delete_reports_whether_the_key_was_there(open_store: OpenStore) -> None:
    store = open_store()
    await store.set(key("a", 1), b"v", ttl=60)
    assert await store.delete(key("a", 1)) is True  # queued after the set: sees it
    assert await store.delete(key("a", 1)) is False
    assert await store.get(key("a", 1)) is None


async def test_clear_by_prefix_is_exact(open_store: OpenStore) -> None:
    store = open_store()
    names = ["tenant-a", "tenant-a2", "Tenant-A", "tenant-b", "ten%", "ten_a"]
    for name in names:
        for i in range(3):
            await store.set(key(name, i), b"v", ttl=60)
    assert await store.clear("tenant-a:") == 3
    assert await store.get(key("tenant-a", 0)) is None
    for name in names[1:]:
        assert await store.get(key(name, 0)) is not None, name
    assert await store.clear("ten%") == 3  # % is not a wildcard
    assert await store.get(key("ten_a", 0)) is not None
    assert await store.clear() == 12
    assert (await store.stats()).entries == 0


def test_prefix_upper_bound() -> None:
    assert _prefix_upper_bound("tenant-a:") == "tenant-a;"
    assert _prefix_upper_bound("a" + chr(0x10FFFF)) == "b"
    assert _prefix_upper_bound(chr(0x10FFFF)) is None
    assert _prefix_upper_bound("x" + chr(0xD7FF)) == "x" + chr(0xE000)


async def test_stats_match_the_table(open_store: OpenStore, tmp_path: Path) -> None:
    store = open_store()
    for i in range(20):
        await store.set(key("a", i), REPLY[: 100 * (i + 1)], ttl=60)
    await store.set(key("a", 3), b"rewritten", ttl=60)
    await store.delete(key("a", 4))
    await store.flush()
    found = rows(tmp_path / "cache.db")
    stats = await store.stats()
    assert stats.entries == len(found) == 19
    assert stats.bytes == sum(size for *_, size in found.values()) == sum(len(v) for v, *_ in found.values())
