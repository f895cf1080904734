import math
import random
from pathlib import Path
from typing import Any

import pytest

from slipstream.observe.alertwindow import AlertWindow
from slipstream.observe.record import RequestRecord
from slipstream.observe.requestlog import RequestLog

NOW = 1_800_000_000.0


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def log(tmp_path: Path, clock: Clock):
    request_log = RequestLog(tmp_path / "requests.db", clock=clock)
    yield request_log
    request_log.close(timeout=10)


def random_records(rng: random.Random, n: int, start: float, end: float) -> list[RequestRecord]:
    return [
        RequestRecord(
            ts=rng.uniform(start, end),
            group=rng.choice(["fast", "smart"]),
            key_name=rng.choice([None, "team-a", "team-b"]),
            deployment=rng.choice([None, "openai/a", "anthropic/b"]),
            status=rng.choice([200, 200, 200, 429, 502]),
            error=rng.choice([None, None, "UpstreamTimeout"]),
            latency_ms=rng.lognormvariate(5, 1.5),
            cache_status=rng.choice(["hit", "miss", "refresh", "bypass", "off"]),
            cost_usd=rng.choice([0.0, 0.001, 0.02]),
        )
        for _ in range(n)
    ]


def scan(log: RequestLog, window: float, **filters: Any) -> dict[str, Any]:
    """The figures read again from every row of the window (what alert rules read before the slots), with
    the same ~2%-wide latency buckets: the slots must give exactly this."""
    where, params = log.window_filter(window / 60.0, **filters)
    with log.reader() as conn:
        count, errors, hits, lookups, cost = conn.execute(
            "SELECT count(*), coalesce(sum(error IS NOT NULL OR status >= 400), 0), "
            "coalesce(sum(cache_status = 'hit'), 0), "
            "coalesce(sum(cache_status IN ('hit', 'miss', 'refresh')), 0), coalesce(sum(cost_usd), 0.0) "
            f"FROM requests WHERE {where}",
            params,
        ).fetchone()
        latencies = [row[0] for row in conn.execute(f"SELECT latency_ms FROM requests WHERE {where}", params)]
    buckets: dict[int, list[float]] = {}
    for value in latencies:
        seen = buckets.setdefault(int(math.log(max(value, 0.001)) * 50), [0, value])
        seen[0] += 1
        seen[1] = max(seen[1], value)
    spread: dict[str, float | None] = {
        "p50": None,
        "p95": None,
        "p99": None,
        "max": max(latencies, default=None),
    }
    for name, p in (("p50", 50), ("p95", 95), ("p99", 99)):
        rank, seen_n = max(1, math.ceil(p * len(latencies) / 100)), 0
        for _, (n, largest) in sorted(buckets.items()):
            seen_n += n
            if latencies and seen_n >= rank:
                spread[name] = largest
                break
    return {
        "count": count,
        "errors": errors,
        "error_rate": errors / count if count else 0.0,
        "cache_hits": hits,
        "cache_lookups": lookups,
        "hit_rate": hits / lookups if lookups else 0.0,
        "cost_usd": cost,
        "latency_ms": spread,
    }


FILTERS = [
    {},
    {"model": "fast"},
    {"key": "team-a"},
    {"deployment": "openai/a"},
    {"model": "smart", "key": "team-b", "deployment": "anthropic/b"},
    {"model": "nobody"},
]


def test_incremental_figures_equal_a_scan_of_the_window(log: RequestLog, clock: Clock):
    # Rows arrive in three batches between refreshes, some with timestamps older than the previous batch's
    # (another worker's late batch); every figure must equal the whole-window scan's.
    rng = random.Random(4)
    window = AlertWindow(clock)
    for batch in range(3):
        for rec in random_records(rng, 700, NOW - 290, NOW):
            log.record(rec)
        log.flush(timeout=10)
        window.refresh(log, 300.0)
        for filters in FILTERS:
            incremental = window.figures(300.0, **filters)  # type: ignore[arg-type]
            scanned = scan(log, 300.0, **filters)
            assert incremental["count"] == scanned["count"], (batch, filters)
            for name in ("errors", "cache_hits", "cache_lookups", "error_rate", "hit_rate", "cost_usd"):
                assert incremental[name] == pytest.approx(scanned[name]), (batch, filters, name)
            assert incremental["latency_ms"] == scanned["latency_ms"], (batch, filters)
    assert window.last_id == 2100


def test_each_row_is_read_once_and_old_slots_are_dropped(log: RequestLog, clock: Clock):
    window = AlertWindow(clock)
    for i in range(10):
        log.record(RequestRecord(ts=NOW - 1, group="fast", status=200, latency_ms=float(i + 1)))
    log.flush(timeout=10)
    window.refresh(log, 60.0)
    window.refresh(log, 60.0)  # nothing new: nothing counted twice
    assert window.figures(60.0)["count"] == 10
    assert window.figures(60.0)["latency_ms"]["max"] == 10.0

    clock.now += 120  # the rows have left every window
    window.refresh(log, 60.0)
    assert window.figures(60.0)["count"] == 0
    assert window.figures(60.0)["latency_ms"] == {"p50": None, "p95": None, "p99": None, "max": None}


def test_a_longer_window_starts_over_and_sees_older_rows(log: RequestLog, clock: Clock):
    window = AlertWindow(clock)
    log.record(RequestRecord(ts=NOW - 3000, group="fast", status=200, latency_ms=1.0))
    log.record(RequestRecord(ts=NOW - 10, group="fast", status=200, latency_ms=2.0))
    log.flush(timeout=10)
    window.refresh(log, 60.0)
    assert window.figures(60.0)["count"] == 1
    window.refresh(log, 3600.0)
    assert window.figures(3600.0)["count"] == 2
    # The slot width follows the longest window (12 s for an hour); a short window rounds down to a slot.
    assert window.width == 12.0
    assert window.figures(60.0)["count"] == 1


def test_figures_agree_with_the_summary_and_bound_the_percentiles(log: RequestLog, clock: Clock):
    rng = random.Random(3)
    for _ in range(2000):
        failed = rng.random() < 0.1
        log.record(
            RequestRecord(
                ts=NOW - 60,
                group="fast",
                latency_ms=round(rng.lognormvariate(5, 1.2), 3),
                status=502 if failed else 200,
                error="UpstreamStatusError" if failed else None,
                cache_status=rng.choice(["hit", "miss", "bypass"]),
                cost_usd=0.001,
            )
        )
    log.flush(timeout=10)
    window = AlertWindow(clock)
    window.refresh(log, 3600.0)
    exact, quick = log.summary(60), window.figures(3600.0)
    for name in ("count", "errors", "error_rate", "cache_hits", "cache_lookups", "hit_rate"):
        assert quick[name] == exact[name], name
    assert quick["cost_usd"] == pytest.approx(exact["cost_usd"])
    for p in ("p50", "p95", "p99", "max"):
        assert exact["latency_ms"][p] <= quick["latency_ms"][p] <= exact["latency_ms"][p] * 1.021, p
    assert window.figures(3600.0, latency=False)["latency_ms"]["p95"] is None
    assert window.figures(3600.0, model="nobody")["count"] == 0
