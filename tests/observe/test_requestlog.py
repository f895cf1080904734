import sqlite3
import time
from pathlib import Path

import pytest

from slipstream.observe.record import RequestRecord
from slipstream.observe.requestlog import RequestLog, percentile

NOW = 1_800_000_000.0


class Clock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def rec(i: int = 0, **kw: object) -> RequestRecord:
    fields: dict[str, object] = {"ts": NOW - 1, "group": "fast", "status": 200, "latency_ms": float(i)}
    fields.update(kw)
    return RequestRecord(**fields)  # type: ignore[arg-type]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def make_log(tmp_path: Path, clock: Clock):
    logs: list[RequestLog] = []

    def make(**kw: object) -> RequestLog:
        kw.setdefault("clock", clock)
        log = RequestLog(tmp_path / "requests.db", **kw)  # type: ignore[arg-type]
        logs.append(log)
        return log

    yield make
    for log in logs:
        log.close(timeout=10)


def rows(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM requests").fetchone()[0])
    finally:
        conn.close()


def test_writes_in_batches_and_survives_restart(make_log, tmp_path: Path):
    log = make_log(batch_interval=10.0)
    for i in range(250):
        log.record(rec(i))
    log.flush(timeout=10)
    assert rows(tmp_path / "requests.db") == 250
    assert log.written == 250 and log.dropped == 0
    log.close(timeout=10)

    again = make_log()
    again.record(rec(999))
    again.flush(timeout=10)
    assert rows(tmp_path / "requests.db") == 251
    assert len(again.query(60, limit=None)) == 251


def test_batch_waits_for_more_records_within_the_interval(make_log, tmp_path: Path):
    # A long interval and a big batch: nothing is committed until the batch fills or a flush asks.
    log = make_log(batch_interval=30.0)
    log.record(rec(1))
    log.record(rec(2))
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:  # give a wrongly eager writer a chance to commit
        assert rows(tmp_path / "requests.db") == 0
        time.sleep(0.02)
    log.flush(timeout=10)
    assert rows(tmp_path / "requests.db") == 2


def test_full_queue_drops_instead_of_blocking(make_log, tmp_path: Path):
    log = make_log(queue_size=100, batch_interval=0.0)
    blocker = sqlite3.connect(tmp_path / "requests.db", isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # holds the write lock: the writer waits on busy_timeout
    try:
        started = time.perf_counter()
        for i in range(1000):
            log.record(rec(i))
        elapsed = time.perf_counter() - started
        assert blocker.execute("SELECT count(*) FROM requests").fetchone()[0] == 0  # nothing got through
        assert log.dropped >= 1000 - 100 - 10  # queue capacity plus at most one batch in the writer's hands
        assert elapsed < 0.5  # 1000 calls that never waited on the lock (each is ~1 µs)
    finally:
        blocker.execute("COMMIT")
        blocker.close()
    log.flush(timeout=10)
    assert log.failed == 0
    assert rows(tmp_path / "requests.db") + log.dropped == 1000


def test_retention_by_age(make_log, tmp_path: Path, clock: Clock):
    log = make_log(retention_days=1)
    for i in range(10):
        log.record(rec(i, ts=NOW - 2 * 86400))  # two days old
    for i in range(5):
        log.record(rec(i, ts=NOW - 3600))
    log.flush(timeout=10)
    assert rows(tmp_path / "requests.db") == 15
    log.maintain(timeout=10)
    assert rows(tmp_path / "requests.db") == 5
    assert log.purged == 10
    clock.now += 86400  # a day later the rest are past retention too
    log.maintain(timeout=10)
    assert rows(tmp_path / "requests.db") == 0


def test_retention_by_size_keeps_the_newest(make_log, tmp_path: Path):
    max_bytes = 256 * 1024
    log = make_log(max_bytes=max_bytes, store_text=True)
    for i in range(3000):
        log.record(rec(i, prompt_text="x" * 300, reply_text="y" * 300))
    log.flush(timeout=30)
    conn = sqlite3.connect(tmp_path / "requests.db")
    try:
        pages, free, size = (
            conn.execute(f"PRAGMA {p}").fetchone()[0] for p in ("page_count", "freelist_count", "page_size")
        )
        ids = [r[0] for r in conn.execute("SELECT latency_ms FROM requests ORDER BY id")]
    finally:
        conn.close()
    assert log.evicted > 0
    assert (pages - free) * size <= max_bytes
    assert 0 < len(ids) < 3000
    assert ids[-1] == 2999.0 and ids == [float(i) for i in range(3000 - len(ids), 3000)]  # oldest went first


def test_text_is_stored_only_when_enabled(make_log):
    log = make_log()
    log.record(rec(1, prompt_text="secret prompt", reply_text="reply"))
    log.flush(timeout=10)
    [row] = log.query(60)
    assert row["prompt_text"] is None and row["reply_text"] is None


def test_percentile_nearest_rank():
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 95) == 95.0
    assert percentile(values, 99) == 99.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0


def test_summary_is_exact_over_the_window(make_log, clock: Clock):
    log = make_log()
    # 200 requests in the window with latencies 1..200 (shuffled order), TTFT on the streamed half.
    for i in sorted(range(1, 201), key=lambda v: (v * 37) % 200):
        log.record(
            rec(
                i,
                ts=NOW - 60,
                stream=i % 2 == 0,
                ttft_ms=float(i) / 2 if i % 2 == 0 else None,
                cache_status="hit" if i <= 50 else "miss",
                saved_usd=0.01 if i <= 50 else 0.0,
                cost_usd=0.0 if i <= 50 else 0.02,
                prompt_tokens=10,
                completion_tokens=5,
                cached_tokens=1,
            )
        )
    log.record(rec(5000, ts=NOW - 3 * 3600))  # outside a 60-minute window
    log.record(rec(7, ts=NOW - 30, status=504, error="UpstreamTimeout", cache_status="bypass"))
    log.record(rec(8, ts=NOW - 30, status=429, error="RateLimited"))
    log.record(rec(9, ts=NOW - 30, status=500))
    log.flush(timeout=10)

    s = log.summary(60)
    assert s["count"] == 203
    assert s["errors"] == 3
    assert s["errors_by_class"] == {"UpstreamTimeout": 1, "RateLimited": 1, "HTTP 500": 1}
    latencies = sorted([*range(1, 201), 7, 8, 9])
    assert s["latency_ms"]["p50"] == float(latencies[101])  # rank ceil(0.5 * 203) = 102
    assert s["latency_ms"]["p95"] == float(latencies[192])  # rank ceil(192.85) = 193
    assert s["latency_ms"]["p99"] == float(latencies[200])  # rank ceil(200.97) = 201
    assert s["latency_ms"]["max"] == 200.0
    ttft = sorted(i / 2 for i in range(2, 201, 2))
    assert s["ttft_ms"]["p50"] == ttft[49] and s["ttft_ms"]["p99"] == ttft[98]
    assert s["cache_hits"] == 50 and s["cache_lookups"] == 200  # bypass and off did not consult the cache
    assert s["hit_rate"] == pytest.approx(50 / 200)
    assert s["tokens"] == {"prompt": 2000, "completion": 1000, "cached": 200}
    assert s["cost_usd"] == pytest.approx(150 * 0.02)
    assert s["saved_usd"] == pytest.approx(50 * 0.01)
    assert log.summary(240)["count"] == 204


@pytest.mark.parametrize("n", [1, 2, 19, 20, 21, 100, 101, 997])
def test_summary_percentiles_match_nearest_rank_at_every_size(make_log, n: int):
    import random

    rng = random.Random(n)
    latencies = [round(rng.lognormvariate(3, 1), 3) for _ in range(n)]
    log = make_log()
    for i, latency in enumerate(latencies):
        log.record(rec(0, latency_ms=latency, group="fast" if i % 3 else "slow", ts=NOW - 60))
    log.flush(timeout=10)
    for model, values in ((None, latencies), ("slow", latencies[::3])):
        ordered = sorted(values)
        got = log.summary(60, model=model)["latency_ms"]
        assert got == {
            "p50": percentile(ordered, 50),
            "p95": percentile(ordered, 95),
            "p99": percentile(ordered, 99),
            "max": ordered[-1],
        }
    assert log.summary(60, model="nobody")["latency_ms"] == {
        "p50": None,
        "p95": None,
        "p99": None,
        "max": None,
    }


def test_query_filters(make_log):
    log = make_log()
    log.record(rec(1, group="fast", key_name="alice", deployment="a"))
    log.record(rec(2, group="fast", key_name="bob", deployment="b"))
    log.record(rec(3, group="smart", key_name="alice", deployment="a"))
    log.flush(timeout=10)
    assert {r["latency_ms"] for r in log.query(60, model="fast")} == {1.0, 2.0}
    assert {r["latency_ms"] for r in log.query(60, key="alice")} == {1.0, 3.0}
    assert {r["latency_ms"] for r in log.query(60, deployment="b")} == {2.0}
    assert {r["latency_ms"] for r in log.query(60, model="fast", key="alice")} == {1.0}
    assert log.summary(60, key="alice")["count"] == 2
    assert log.summary(60, model="none")["count"] == 0
    [row] = log.query(60, deployment="b")
    assert row["model"] == "fast" and row["stream"] is False


def test_record_after_close_is_dropped(make_log):
    log = make_log()
    log.close(timeout=10)
    log.record(rec(1))
    assert log.dropped == 1


async def test_async_flush_and_close(make_log, tmp_path: Path):
    log = make_log()
    log.record(rec(1))
    await log.aflush()
    assert rows(tmp_path / "requests.db") == 1
    await log.aclose()


def test_foreign_file_is_moved_aside(tmp_path: Path, make_log):
    (tmp_path / "requests.db").write_bytes(b"not a database at all" * 100)
    log = make_log()
    log.record(rec(1))
    log.flush(timeout=10)
    assert len(log.query(60)) == 1
    assert list(tmp_path.glob("requests.db.corrupt-*"))


def test_rows_are_read_in_column_order_with_the_text_columns_last():
    from slipstream.observe import requestlog
    from slipstream.observe.logsink import COLUMNS, TEXT_COLUMNS

    assert COLUMNS[-2:] == TEXT_COLUMNS  # left off together when text is not stored
    record = rec(12, key_name="k", coalesced=True, prompt_text="p", reply_text="r")
    row = requestlog._row_getter(COLUMNS)(record)
    by_column = dict(zip(COLUMNS, row, strict=True))
    assert by_column["model"] == "fast" and by_column["latency_ms"] == 12.0 and by_column["coalesced"] is True
    assert (by_column["prompt_text"], by_column["reply_text"]) == ("p", "r")


def test_thread_writer_writes_the_same_rows(make_log, tmp_path: Path, clock: Clock):
    log = make_log(writer="thread", retention_days=1)
    assert log.writer == "thread"
    for i in range(50):
        log.record(rec(i))
    log.record(rec(99, ts=NOW - 3 * 86400))
    log.flush(timeout=10)
    assert rows(tmp_path / "requests.db") == 51 and log.written == 51
    log.maintain(timeout=10)
    assert rows(tmp_path / "requests.db") == 50 and log.purged == 1
    assert log.summary(60)["latency_ms"]["max"] == 49.0


def test_unknown_writer_is_refused(tmp_path: Path):
    with pytest.raises(ValueError, match="writer must be one of"):
        RequestLog(tmp_path / "requests.db", writer="fork")


def test_writer_process_that_dies_is_replaced(make_log, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    log = make_log()
    assert log.writer == "process"
    for i in range(10):
        log.record(rec(i))
    log.flush(timeout=10)
    child = log._writer.sink._proc
    child.kill()
    child.wait(timeout=10)
    for i in range(10, 25):
        log.record(rec(i))
    log.flush(timeout=10)
    # The child died between batches: the next batch went to a new one, nothing was lost.
    assert rows(tmp_path / "requests.db") == 25
    assert log.written == 25 and log.failed == 0
    assert log._writer.sink._proc.pid != child.pid
    assert any("writer process exited" in r.getMessage() for r in caplog.records)


def test_writer_process_that_cannot_open_the_file_is_a_clear_error(tmp_path: Path):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(RuntimeError, match="writer process could not open it"):
        RequestLog(blocker / "requests.db")


def test_writer_process_protocol_refuses_bad_requests_and_keeps_serving(tmp_path: Path):
    # The child's main loop, in-process: a request before "open" and an unknown request are refused with an
    # error reply; the loop goes on and the next good request is answered with the totals.
    import io

    from slipstream.observe import logsink

    requests = io.BytesIO()
    for message in (
        ("write", [], []),
        ("open", str(tmp_path / "requests.db"), logsink.COLUMNS[:-2]),
        ("drop table", 1),
        (
            "write",
            [
                (
                    NOW,
                    None,
                    "default",
                    "fast",
                    None,
                    200,
                    None,
                    1.0,
                    *([None] * 3),
                    0,
                    0,
                    0,
                    0.0,
                    0.0,
                    "off",
                    0,
                    0,
                    0,
                    None,
                    0,
                    None,
                )
            ],
            [],
        ),
    ):
        logsink.write_frame(requests, message)
    requests.seek(0)
    replies = io.BytesIO()
    logsink.serve(requests, replies)
    replies.seek(0)
    answers = [logsink.read_frame(replies) for _ in range(4)]
    assert answers[0] == ("error", "RuntimeError: the request log is not open")
    assert answers[1] == ("ok", 0, 0, 0, 0)
    assert answers[2] == ("error", "ValueError: unknown request 'drop table'")
    assert answers[3] == ("ok", 1, 0, 0, 0)
    assert logsink.read_frame(replies) is None
    assert rows(tmp_path / "requests.db") == 1
