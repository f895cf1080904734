"""Recording: exact nearest-rank percentiles, error accounting, per-second slices, JSON-safe output."""

from __future__ import annotations

import json
import math

from slipstream.loadtest import Distribution, Recorder
from slipstream.loadtest.record import percentile


def test_percentiles_are_exact_nearest_rank() -> None:
    ordered = [float(i) for i in range(1, 101)]  # 1..100
    assert percentile(ordered, 50) == 50
    assert percentile(ordered, 95) == 95
    assert percentile(ordered, 99) == 99
    assert percentile(ordered, 100) == 100
    assert percentile([7.0], 99) == 7
    assert math.isnan(percentile([], 50))


def test_one_slow_sample_in_a_hundred_is_the_max_not_the_p99() -> None:
    d = Distribution.of([0.001] * 99 + [0.5])
    assert d.count == 100
    assert d.p99 == 1.0 and d.max == 500.0  # milliseconds
    assert d.min == 1.0


def test_summary_counts_errors_by_class_and_keeps_them_out_of_latency() -> None:
    rec = Recorder()
    for i in range(8):
        rec.ok(0.010, i * 0.1)
    rec.error("http_500", 0.85)
    rec.error("timeout", 0.9)
    rec.ttft(0.004)
    s = rec.summary(elapsed=1.0)
    assert (s.requests, s.ok, s.errors) == (10, 8, 2)
    assert s.error_rate == 0.2
    assert s.requests_per_s == 10 and s.ok_per_s == 8
    assert s.errors_by_class == {"http_500": 1, "timeout": 1}
    assert s.latency_ms.count == 8 and s.latency_ms.p99 == 10.0
    assert s.streamed == 1 and s.ttft_ms.p50 == 4.0


def test_timeline_slices_by_second_and_folds_a_short_tail_into_the_last_one() -> None:
    rec = Recorder()
    for i in range(20):
        rec.ok(0.001 * (i + 1), i * 0.1)  # 10 in second 0, 10 in second 1
    rec.error("connect", 2.2)  # in a 0.2 s tail: joins second 1
    rows = rec.timeline(elapsed=2.2)
    assert [(r.t, r.requests, r.errors) for r in rows] == [(0.0, 10, 0), (1.0, 11, 1)]
    assert rows[1].span == 1.2 or math.isclose(rows[1].span, 1.2)
    assert math.isclose(rows[1].requests_per_s, 11 / 1.2)


def test_empty_runs_serialize_to_valid_json() -> None:
    s = Recorder().summary(elapsed=0.0)
    text = json.dumps(s.to_dict(), allow_nan=False)  # NaN would make the file invalid JSON
    assert '"p50": null' in text
    assert s.requests_per_s == 0 and s.error_rate == 0


def test_last_end_is_the_latest_completion_of_any_outcome() -> None:
    rec = Recorder()
    assert rec.last_end == 0.0
    rec.ok(0.01, 0.5)
    rec.error("timeout", 1.25)
    rec.ok(0.01, 1.0)
    assert rec.last_end == 1.25
