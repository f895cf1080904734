"""Breaking-point search: the decisions on made-up steps, then the whole loop against sims that break on cue."""

from __future__ import annotations

from array import array
from collections.abc import Callable

import pytest

from slipstream.loadtest import (
    BreakingPointSearch,
    LoadPlan,
    Recorder,
    RunResult,
    Slo,
    Step,
    constant,
    find_breaking_point,
)

from .conftest import Sim, ask, mix_for

SLO = Slo(p95_ms=100.0, error_rate=0.01)


def fake_run(rate: float, *, latency_ms: float, errors: int = 0, requests: int = 100) -> RunResult:
    recorder = Recorder()
    for i in range(requests - errors):
        recorder.ok(latency_ms / 1000, i / rate)
    for i in range(errors):
        recorder.error("http_429", i / rate)
    return RunResult(
        mode="open",
        profile=constant(rate, requests / rate),
        summary=recorder.summary(requests / rate),
        timeline=[],
        started=requests,
        send_lag_ms=None,
        latencies=array("d"),
        tester_cpu_s=0.0,
    )


def step(rate: float, **kwargs: float) -> Step:
    run = fake_run(rate, **kwargs)  # type: ignore[arg-type]
    return Step(rate=rate, run=run, violations=SLO.violations(run.summary))


def test_slo_violations_name_what_was_missed() -> None:
    assert SLO.violations(fake_run(10, latency_ms=50).summary) == ()
    (slow,) = SLO.violations(fake_run(10, latency_ms=150).summary)
    assert "p95 150.0 ms > 100 ms" in slow
    (failing,) = SLO.violations(fake_run(10, latency_ms=50, errors=5).summary)
    assert "error rate 5.00% > 1.00%" in failing
    assert any("fell behind" in v for v in SLO.violations(fake_run(10, latency_ms=50).summary, 250.0))


def test_search_climbs_by_the_factor_then_bisects_between_good_and_bad() -> None:
    search = BreakingPointSearch(start_rate=100, factor=2, refine=2)
    latency_at = {100: 10, 200: 20, 400: 500, 300: 40, 350: 300}
    tried = []
    while (rate := search.next_rate()) is not None:
        tried.append(rate)
        search.record(step(rate, latency_ms=latency_at[int(rate)]))
    assert tried == [100, 200, 400, 300, 350]
    assert search.last_good is not None and search.last_good.rate == 300
    assert search.first_bad is not None and search.first_bad.rate == 350


def test_search_stops_at_max_rate_when_nothing_breaks() -> None:
    search = BreakingPointSearch(start_rate=10, factor=3, max_rate=50, refine=2)
    tried = []
    while (rate := search.next_rate()) is not None:
        tried.append(rate)
        search.record(step(rate, latency_ms=1))
    assert tried == [10, 30, 50]
    assert search.first_bad is None


def test_search_with_a_failing_first_step_has_no_good_rate() -> None:
    search = BreakingPointSearch(start_rate=10, refine=3)
    search.record(step(10, latency_ms=1000))
    assert search.next_rate() is None
    assert search.last_good is None


def test_bad_search_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        BreakingPointSearch(start_rate=10, factor=1.0)
    with pytest.raises(ValueError):
        BreakingPointSearch(start_rate=10, max_rate=5)


def _plans(url: str, **sim: object) -> Callable[[float, float, int], LoadPlan]:
    target, mix = mix_for(url, [ask(**sim)])

    def plan_for(rate: float, seconds: float, budget: int) -> LoadPlan:
        return LoadPlan(
            target=target,
            mix=mix,
            profile=constant(rate, seconds),
            mode="open",
            max_requests=budget,
            timeout=2,
        )

    return plan_for


async def test_search_stops_where_the_sim_starts_refusing(sim: Sim) -> None:
    # 50 requests a minute: steps of 0.5 s at 20, 40, 80 req/s send 10, 20 then 40 requests; the third step
    # finds only 20 left in the window, so half of it is refused with 429.
    sim.reset()
    search = BreakingPointSearch(start_rate=20, factor=2, refine=0)
    slo = Slo(p95_ms=5_000, error_rate=0.01)
    result = await find_breaking_point(
        _plans(sim.url, rpm_limit=50), search, slo, step_duration=0.5, max_duration=30, max_requests=10_000
    )
    assert [s.rate for s in result.steps] == [20, 40, 80]
    assert [s.ok for s in result.steps] == [True, True, False]
    third = result.steps[2].run.summary
    assert third.errors_by_class == {"http_429": 20}
    assert result.last_good_rate == 40
    assert result.first_bad_rate == 80
    assert result.stopped_because == "the SLO was crossed"


async def test_search_stops_at_once_when_latency_misses_the_slo(sim: Sim) -> None:
    # Every reply takes at least 50 ms; the SLO asks for a p95 of 20 ms.
    search = BreakingPointSearch(start_rate=10, factor=2, refine=2)
    result = await find_breaking_point(
        _plans(sim.url, ttft=0.05),
        search,
        Slo(p95_ms=20),
        step_duration=0.5,
        max_duration=30,
        max_requests=10_000,
    )
    assert len(result.steps) == 1
    assert result.last_good_rate is None
    assert "p95" in result.steps[0].violations[0]
    assert result.stopped_because == "the first step already missed the SLO"


async def test_search_respects_its_time_and_request_budgets(sim: Sim) -> None:
    search = BreakingPointSearch(start_rate=20, factor=2, refine=0)
    result = await find_breaking_point(
        _plans(sim.url), search, Slo(), step_duration=0.5, max_duration=1.4, max_requests=10_000
    )
    # A step lasts at least until its last arrival (0.475 s), so a third one would end past 1.4 s.
    assert 1 <= len(result.steps) <= 2
    assert "time budget" in result.stopped_because
    search = BreakingPointSearch(start_rate=20, factor=2, refine=0)
    result = await find_breaking_point(
        _plans(sim.url), search, Slo(), step_duration=0.5, max_duration=60, max_requests=25
    )
    assert [s.rate for s in result.steps] == [20]  # 10 sent; 20 more do not fit in the 15 left
    assert "request budget" in result.stopped_because
