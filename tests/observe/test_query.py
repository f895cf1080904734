"""Window statistics over a real SQLite request log, with a fixed clock so every figure is known exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from slipstream.observe.query import (
    Window,
    breakdown,
    cache_outcomes,
    costs,
    percentiles,
    request_rate,
    timeseries,
)
from slipstream.observe.record import RequestRecord
from slipstream.observe.requestlog import RequestLog

NOW = 1_900_000_000.0


@pytest.fixture
def log(tmp_path: Path) -> Iterator[RequestLog]:
    request_log = RequestLog(tmp_path / "requests.db", clock=lambda: NOW)
    yield request_log
    request_log.close(timeout=10)


def write(log: RequestLog, *records: RequestRecord) -> None:
    for record in records:
        log.record(record)
    log.flush(timeout=10)


def req(latency_ms: float, *, ago: float = 10.0, **fields: object) -> RequestRecord:
    values: dict[str, object] = {"ts": NOW - ago, "group": "alpha", "status": 200, "latency_ms": latency_ms}
    values.update(fields)
    return RequestRecord(**values)  # type: ignore[arg-type]


def test_a_breakdown_by_model_has_exact_percentiles_and_adds_up_to_the_summary(log: RequestLog):
    alpha = [req(float(ms), deployment="a1", cache_status="miss") for ms in range(1, 101)]
    beta = [
        req(5.0, group="beta", cache_status="hit", stream=True, ttft_ms=2.0),
        req(7.0, group="beta", cache_status="miss", stream=True, ttft_ms=4.0, deployment="b1"),
        req(9.0, group="beta", status=502, error="UpstreamStatusError", cache_status="miss"),
    ]
    write(log, *alpha, *beta)

    rows = breakdown(log, Window(60), "model")

    assert [r["name"] for r in rows] == ["alpha", "beta"]  # busiest first
    first, second = rows
    assert first["count"] == 100 and first["errors"] == 0
    # nearest rank over 1..100: the p-th value is p itself
    assert first["latency_ms"] == {"p50": 50.0, "p95": 95.0, "p99": 99.0, "max": 100.0}
    assert first["ttft_ms"]["p50"] is None  # no streams
    assert second["count"] == 3 and second["errors"] == 1
    assert second["error_rate"] == pytest.approx(1 / 3)
    assert second["cache_hits"] == 1 and second["hit_rate"] == pytest.approx(1 / 3)
    assert second["latency_ms"]["p50"] == 7.0
    assert second["ttft_ms"] == {"p50": 2.0, "p95": 4.0, "p99": 4.0, "max": 4.0}
    summary = log.summary(60)
    assert sum(r["count"] for r in rows) == summary["count"] == 103
    assert sum(r["errors"] for r in rows) == summary["errors"]


def test_a_breakdown_by_deployment_keeps_requests_without_one_under_none(log: RequestLog):
    write(
        log,
        req(1.0, deployment="east"),
        req(2.0, deployment="east"),
        req(3.0, deployment="west"),
        req(0.5, cache_status="hit"),  # answered from the cache: no deployment
    )
    rows = {r["name"]: r["count"] for r in breakdown(log, Window(60), "deployment")}
    assert rows == {"east": 2, "west": 1, None: 1}


def test_breakdowns_by_key_and_operation_and_an_unknown_dimension(log: RequestLog):
    write(
        log,
        req(1.0, key_name="team-a", operation="draft"),
        req(2.0, key_name="team-a", operation="review"),
        req(3.0, key_name="team-b", operation="draft"),
    )
    by_key = breakdown(log, Window(60), "key")
    assert [(r["name"], r["count"]) for r in by_key] == [("team-a", 2), ("team-b", 1)]
    by_operation = breakdown(log, Window(60), "operation")
    assert {r["name"]: r["count"] for r in by_operation} == {"draft": 2, "review": 1}
    with pytest.raises(ValueError, match="cannot break down by 'status'"):
        breakdown(log, Window(60), "status")


def test_filters_narrow_every_statistic_and_unknown_values_give_empty_results(log: RequestLog):
    write(
        log,
        req(10.0, group="alpha", key_name="k1", deployment="d1", cost_usd=0.5),
        req(20.0, group="beta", key_name="k2", deployment="d2", cost_usd=1.5),
    )
    beta = Window(60, model="beta")
    assert [r["name"] for r in breakdown(log, beta, "model")] == ["beta"]
    assert costs(log, beta)["cost_usd"] == pytest.approx(1.5)
    assert percentiles(log, Window(60, key="k1"))["latency_ms"]["p50"] == 10.0
    assert timeseries(log, Window(60, deployment="d2"))["points"][-1]["count"] == 1

    nobody = Window(60, model="no-such-model")
    assert breakdown(log, nobody, "deployment") == []
    assert costs(log, nobody)["by_model"] == [] and costs(log, nobody)["cost_usd"] == 0.0
    assert cache_outcomes(log, nobody)["lookups"] == 0
    assert percentiles(log, nobody)["latency_ms"] == {"p50": None, "p95": None, "p99": None, "max": None}
    assert sum(p["count"] for p in timeseries(log, nobody)["points"]) == 0


def test_timing_percentiles_leave_out_requests_without_a_value(log: RequestLog):
    write(
        log,
        req(100.0, upstream_ms=90.0, overhead_ms=10.0),
        req(200.0, upstream_ms=150.0, overhead_ms=50.0, stream=True, ttft_ms=40.0),
        req(1.0, cache_status="hit"),  # a hit: no upstream time, no overhead split, no TTFT
    )
    timings = percentiles(log, Window(60))
    assert timings["latency_ms"] == {"p50": 100.0, "p95": 200.0, "p99": 200.0, "max": 200.0}
    assert timings["upstream_ms"]["p50"] == 90.0 and timings["upstream_ms"]["max"] == 150.0
    assert timings["overhead_ms"]["p95"] == 50.0
    assert timings["ttft_ms"] == {"p50": 40.0, "p95": 40.0, "p99": 40.0, "max": 40.0}
    with pytest.raises(ValueError):
        percentiles(log, Window(60), ["prompt_text"])


def test_cache_outcomes_count_each_status_and_what_hits_saved(log: RequestLog):
    write(
        log,
        req(1.0, cache_status="hit", prompt_tokens=10, completion_tokens=30, saved_usd=0.25),
        req(1.0, cache_status="hit", prompt_tokens=5, completion_tokens=15, saved_usd=0.75),
        req(9.0, cache_status="miss", prompt_tokens=100, completion_tokens=100),
        req(9.0, cache_status="refresh"),
        req(9.0, cache_status="bypass"),
        req(9.0, cache_status="off", coalesced=True),
    )
    outcomes = cache_outcomes(log, Window(60))
    assert outcomes["by_status"] == {"hit": 2, "miss": 1, "refresh": 1, "bypass": 1, "off": 1}
    assert outcomes["lookups"] == 4  # bypass and off never consulted the cache
    assert outcomes["hit_rate"] == 0.5
    assert outcomes["coalesced"] == 1
    assert outcomes["saved_usd"] == pytest.approx(1.0)
    assert outcomes["saved_tokens"] == {"prompt": 15, "completion": 45}
    assert outcomes["hit_rate"] == log.summary(60)["hit_rate"]


def test_costs_total_per_hour_per_model_and_per_key(log: RequestLog):
    write(
        log,
        req(1.0, group="big", key_name="k1", cost_usd=3.0, prompt_tokens=100, completion_tokens=50),
        req(1.0, group="big", key_name="k2", cost_usd=1.0, prompt_tokens=10, completion_tokens=5),
        req(1.0, group="small", key_name="k1", cost_usd=0.5),
        req(1.0, group="small", key_name="k1", cache_status="hit", saved_usd=0.5),
    )
    report = costs(log, Window(30))
    assert report["cost_usd"] == pytest.approx(4.5)
    assert report["saved_usd"] == pytest.approx(0.5)
    assert report["cost_per_hour_usd"] == pytest.approx(9.0)  # 4.5 in half an hour
    assert report["saved_fraction"] == pytest.approx(0.5 / 5.0)
    assert report["tokens"] == {"prompt": 110, "completion": 55}
    assert [(m["name"], m["count"]) for m in report["by_model"]] == [("big", 2), ("small", 2)]
    assert report["by_model"][0]["cost_usd"] == pytest.approx(4.0)
    assert report["by_model"][0]["tokens"] == {"prompt": 110, "completion": 55}
    keys = {k["name"]: k for k in report["by_key"]}
    assert keys["k1"]["cost_usd"] == pytest.approx(3.5) and keys["k1"]["count"] == 3
    assert keys["k2"]["cost_usd"] == pytest.approx(1.0)


def test_a_time_series_places_requests_in_their_slice_with_exact_percentiles(log: RequestLog):
    # A 10-minute window in 10 slices of 60 s: slice i covers [NOW-600+60i, NOW-600+60(i+1)).
    write(
        log,
        req(10.0, ago=590.0),  # slice 0
        req(30.0, ago=550.0),  # slice 0
        req(20.0, ago=545.0, stream=True, ttft_ms=5.0),  # slice 0
        req(99.0, ago=290.0, status=500, error="UpstreamStatusError", cache_status="miss"),  # slice 5
        req(1.0, ago=5.0, cache_status="hit", prompt_tokens=3, completion_tokens=4),  # slice 9
        req(2.0, ago=-3.0),  # stamped 3 s in the future by another clock: the last slice
        req(1.0, ago=601.0),  # before the window: left out
    )
    series = timeseries(log, Window(10), buckets=10)

    assert series["bucket_seconds"] == 60.0
    assert series["start"] == NOW - 600.0
    points = series["points"]
    assert len(points) == 10
    assert [p["count"] for p in points] == [3, 0, 0, 0, 0, 1, 0, 0, 0, 2]
    assert points[0]["start"] == NOW - 600.0 and points[9]["start"] == NOW - 60.0
    assert points[0]["latency_p50"] == 20.0 and points[0]["latency_p95"] == 30.0
    assert points[0]["ttft_p50"] == 5.0 and points[0]["rps"] == pytest.approx(3 / 60)
    assert points[1]["latency_p50"] is None and points[1]["hit_rate"] is None
    assert points[5]["errors"] == 1 and points[5]["hit_rate"] == 0.0
    assert points[9]["cache_hits"] == 1 and points[9]["hit_rate"] == 1.0 and points[9]["tokens"] == 7
    assert sum(p["count"] for p in points) == log.summary(10)["count"] == 6


def test_the_request_rate_counts_the_last_minute_only(log: RequestLog):
    write(log, *(req(1.0, ago=float(s)) for s in (1, 20, 59, 61, 300)))
    assert request_rate(log, Window(60)) == pytest.approx(3 / 60)
    assert request_rate(log, Window(60), seconds=600) == pytest.approx(5 / 600)
    with pytest.raises(ValueError):
        timeseries(log, Window(60), buckets=0)


def test_per_slice_percentiles_match_nearest_rank_on_random_data(log: RequestLog) -> None:
    import random

    from slipstream.observe.requestlog import percentile

    rng = random.Random(7)
    rows = [
        (rng.choice(["alpha", "beta", "gamma"]), round(rng.lognormvariate(3, 1), 3), rng.uniform(1, 3599))
        for _ in range(700)
    ]
    write(log, *(req(latency, group=group, ago=ago) for group, latency, ago in rows))

    def spread(values: list[float]) -> dict[str, float | None]:
        ordered = sorted(values)
        return {
            "p50": percentile(ordered, 50),
            "p95": percentile(ordered, 95),
            "p99": percentile(ordered, 99),
            "max": ordered[-1],
        }

    by_model = {row["name"]: row for row in breakdown(log, Window(60), "model")}
    for group in ("alpha", "beta", "gamma"):
        assert by_model[group]["latency_ms"] == spread([lat for g, lat, _ in rows if g == group])
    series = timeseries(log, Window(60), buckets=6)
    for i, point in enumerate(series["points"]):
        values = [lat for _, lat, ago in rows if 3600 - (i + 1) * 600 < ago <= 3600 - i * 600]
        assert point["count"] == len(values)
        assert point["latency_p95"] == spread(values)["p95"]
