import random
from pathlib import Path

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
            scanned = log.alert_figures(5.0, **filters)  # type: ignore[arg-type]
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
