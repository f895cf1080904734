import asyncio
import math
import random
import statistics

import pytest

import slipstream.routing as routing
from slipstream.errors import (
    AuthenticationError,
    InvalidRequest,
    ModelNotFound,
    NoHealthyDeployment,
    RateLimited,
    UpstreamConnectionError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from slipstream.routing.retry import (
    DEFAULT_BASE_DELAY,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_DELAY,
    DEFAULT_RETRY_STATUSES,
    GiveUp,
    Retry,
    RetryBudget,
    RetryPolicy,
    SlidingWindow,
)

from . import FakeClock


def status_error(status: int, retry_after: float | None = None) -> UpstreamStatusError:
    return UpstreamStatusError(f"upstream said {status}", upstream_status=status, retry_after=retry_after)


def test_public_surface_is_sorted_and_importable():
    # isort-style order (constants, classes, functions), as ruff keeps it.
    assert routing.__all__ == sorted(routing.__all__, key=lambda n: (not n.isupper(), not n[0].isupper(), n))
    for name in routing.__all__:
        assert getattr(routing, name) is not None


# ------------------------------------------------------------------------------------------------ policy
def test_defaults_are_the_module_constants():
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.base_delay, policy.max_delay) == (3, 0.25, 8.0)
    assert (DEFAULT_MAX_ATTEMPTS, DEFAULT_BASE_DELAY, DEFAULT_MAX_DELAY) == (3, 0.25, 8.0)
    assert policy.retry_statuses == DEFAULT_RETRY_STATUSES == {408, 409, 429, 500, 502, 503, 504, 529}


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 0},
        {"base_delay": -1.0},
        {"base_delay": 10.0, "max_delay": 1.0},
        {"max_retry_after": -1.0},
    ],
)
def test_bad_policies_are_refused(kwargs):
    with pytest.raises(ValueError):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    "exc",
    [
        UpstreamConnectionError("refused"),
        UpstreamTimeout("first byte"),
        UpstreamProtocolError("malformed JSON"),
        *(status_error(s) for s in (408, 409, 429, 500, 502, 503, 504, 529)),
    ],
    ids=lambda e: f"{type(e).__name__}-{getattr(e, 'upstream_status', '')}",
)
def test_retryable_failures(exc):
    assert RetryPolicy().is_retryable(exc)
    assert isinstance(RetryPolicy().decide(1, exc, now=0.0, deadline=None, rng=random.Random(1)), Retry)


@pytest.mark.parametrize(
    "exc",
    [
        *(status_error(s) for s in (400, 401, 403, 404, 413, 422)),
        InvalidRequest("bad messages", param="messages"),
        AuthenticationError("bad key"),
        ModelNotFound("no such model"),
        RateLimited("local limit", retry_after=1.0),
        NoHealthyDeployment("all breakers open"),
        ValueError("a bug"),
        asyncio.CancelledError(),
    ],
    ids=lambda e: f"{type(e).__name__}-{getattr(e, 'upstream_status', '')}",
)
def test_failures_that_are_never_retried(exc):
    policy = RetryPolicy()
    assert not policy.is_retryable(exc)
    step = policy.decide(1, exc, now=0.0, deadline=None, rng=random.Random(1))
    assert isinstance(step, GiveUp)
    assert "not retryable" in step.reason


def test_retry_statuses_are_configurable():
    policy = RetryPolicy(retry_statuses=frozenset({503}))
    assert policy.is_retryable(status_error(503))
    assert not policy.is_retryable(status_error(500))
    # Transport failures do not depend on the status list.
    assert policy.is_retryable(UpstreamTimeout("total"))


# ------------------------------------------------------------------------------------------------ backoff
@pytest.mark.parametrize(
    ("attempt", "ceiling"), [(1, 0.25), (2, 0.5), (3, 1.0), (5, 4.0), (6, 8.0), (7, 8.0)]
)
def test_backoff_is_full_jitter_under_the_exponential_ceiling(attempt, ceiling):
    rng = random.Random(42)
    policy = RetryPolicy()
    draws = [policy.backoff(attempt, rng) for _ in range(5000)]
    assert all(0.0 <= d <= ceiling for d in draws)
    # Full jitter: uniform over the whole range, so it reaches near both ends and averages the middle.
    assert min(draws) < 0.02 * ceiling
    assert max(draws) > 0.98 * ceiling
    assert statistics.fmean(draws) == pytest.approx(ceiling / 2, rel=0.05)


def test_backoff_of_a_huge_attempt_number_is_capped_without_overflow():
    rng = random.Random(3)
    assert all(0.0 <= RetryPolicy().backoff(10_000, rng) <= DEFAULT_MAX_DELAY for _ in range(100))


def test_jitter_is_reproducible_from_the_rng():
    policy = RetryPolicy()
    assert policy.backoff(3, random.Random(7)) == policy.backoff(3, random.Random(7))


# ------------------------------------------------------------------------------------------------ decide
def test_attempts_are_counted_including_the_first():
    policy = RetryPolicy(max_attempts=3)
    exc = UpstreamTimeout("slow")
    rng = random.Random(0)
    assert isinstance(policy.decide(1, exc, now=0.0, deadline=None, rng=rng), Retry)
    assert isinstance(policy.decide(2, exc, now=0.0, deadline=None, rng=rng), Retry)
    step = policy.decide(3, exc, now=0.0, deadline=None, rng=rng)
    assert isinstance(step, GiveUp)
    assert "3 attempts" in step.reason
    assert isinstance(RetryPolicy(max_attempts=1).decide(1, exc, now=0.0, deadline=None, rng=rng), GiveUp)


def test_the_delay_is_the_jittered_backoff():
    policy = RetryPolicy()
    step = policy.decide(2, UpstreamTimeout("slow"), now=0.0, deadline=None, rng=random.Random(11))
    assert step == Retry(policy.backoff(2, random.Random(11)))


def test_retry_after_is_honoured_as_a_floor():
    policy = RetryPolicy()
    step = policy.decide(1, status_error(429, retry_after=5.0), now=0.0, deadline=None, rng=random.Random(1))
    assert step == Retry(5.0)  # the jitter (at most 0.25 s here) is below the upstream's hint


def test_a_short_retry_after_keeps_the_longer_jittered_backoff():
    policy = RetryPolicy(base_delay=4.0, max_delay=4.0)
    for seed in range(200):
        step = policy.decide(
            1, status_error(503, retry_after=0.5), now=0.0, deadline=None, rng=random.Random(seed)
        )
        assert isinstance(step, Retry)
        assert step.delay == max(policy.backoff(1, random.Random(seed)), 0.5)
        assert step.delay >= 0.5


def test_a_retry_after_longer_than_the_cap_gives_up():
    exc = status_error(429, retry_after=120.0)
    step = RetryPolicy().decide(1, exc, now=0.0, deadline=None, rng=random.Random(1))
    assert isinstance(step, GiveUp)
    assert "retry-after" in step.reason
    uncapped = RetryPolicy(max_retry_after=None).decide(1, exc, now=0.0, deadline=None, rng=random.Random(1))
    assert uncapped == Retry(120.0)


@pytest.mark.parametrize("hint", [-1.0, math.nan, math.inf, True, "5"])
def test_unusable_retry_after_values_are_ignored(hint):
    exc = UpstreamTimeout("slow")
    exc.retry_after = hint  # type: ignore[attr-defined]
    step = RetryPolicy().decide(1, exc, now=0.0, deadline=None, rng=random.Random(5))
    assert step == Retry(RetryPolicy().backoff(1, random.Random(5)))


def test_a_retry_that_would_start_past_the_deadline_is_not_started():
    policy = RetryPolicy()
    exc = status_error(503, retry_after=0.5)
    assert policy.decide(1, exc, now=100.0, deadline=101.0, rng=random.Random(1)) == Retry(0.5)
    step = policy.decide(1, exc, now=100.0, deadline=100.4, rng=random.Random(1))
    assert isinstance(step, GiveUp)
    assert "deadline" in step.reason
    # Landing exactly on the deadline leaves no time for the attempt itself.
    assert isinstance(policy.decide(1, exc, now=100.0, deadline=100.5, rng=random.Random(1)), GiveUp)


def test_the_deadline_caps_the_jittered_delay_too():
    policy = RetryPolicy(base_delay=2.0, max_delay=2.0)
    exc = UpstreamConnectionError("reset")
    outcomes = set()
    for seed in range(200):
        delay = policy.backoff(1, random.Random(seed))
        step = policy.decide(1, exc, now=10.0, deadline=11.0, rng=random.Random(seed))
        assert isinstance(step, Retry) == (delay < 1.0)
        outcomes.add(type(step))
    assert outcomes == {Retry, GiveUp}


# ------------------------------------------------------------------------------------------------ window
def test_sliding_window_drops_whole_slices_as_time_passes():
    clock = FakeClock(0.0)
    window = SlidingWindow(10.0, clock=clock, counters=2, buckets=10)
    window.add(0)
    clock.advance(5.0)
    window.add(0, 2)
    window.add(1)
    assert (window.total(0), window.total(1)) == (3, 1)
    clock.advance(4.9)  # t=9.9: the slice holding t=0 is still inside
    assert window.total(0) == 3
    clock.advance(0.1)  # t=10: it is dropped
    assert (window.total(0), window.total(1)) == (2, 1)
    clock.advance(5.0)  # t=15: so is the one holding t=5
    assert (window.total(0), window.total(1)) == (0, 0)


def test_sliding_window_survives_long_gaps_and_a_clock_going_back():
    clock = FakeClock(0.0)
    window = SlidingWindow(10.0, clock=clock, counters=1)
    window.add(0, 5)
    clock.advance(1e6)
    assert window.total(0) == 0
    window.add(0)
    clock.advance(-3.0)  # counts into the current slice rather than corrupting the ring
    window.add(0)
    assert window.total(0) == 2
    clock.advance(3.0 + 10.0)
    assert window.total(0) == 0


def test_sliding_window_refuses_bad_sizes():
    with pytest.raises(ValueError):
        SlidingWindow(0.0, clock=FakeClock())
    with pytest.raises(ValueError):
        SlidingWindow(1.0, clock=FakeClock(), buckets=0)


# ------------------------------------------------------------------------------------------------ budget
def spend_all(budget: RetryBudget) -> int:
    spent = 0
    while budget.try_spend():
        spent += 1
        assert spent < 10_000
    return spent


def test_the_floor_lets_a_quiet_service_retry():
    budget = RetryBudget(ratio=0.2, min_per_second=1.0, window=10.0, clock=FakeClock())
    assert spend_all(budget) == 10  # 1 per second over a 10 s window, with no traffic at all
    assert not budget.try_spend()


def test_retries_are_capped_at_a_ratio_of_requests():
    budget = RetryBudget(ratio=0.2, min_per_second=0.0, window=10.0, clock=FakeClock())
    assert not budget.try_spend()
    for _ in range(100):
        budget.record_request()
    assert spend_all(budget) == 20
    for _ in range(5):
        budget.record_request()
    assert spend_all(budget) == 1  # 105 requests allow 21 retries in all
    assert budget.snapshot() == {"requests": 105, "retries": 21, "allowed": pytest.approx(21.0)}


def test_float_rounding_does_not_cost_a_retry():
    budget = RetryBudget(ratio=0.7, min_per_second=0.0, window=10.0, clock=FakeClock())
    for _ in range(90):
        budget.record_request()
    assert 0.7 * 90 < 63
    assert spend_all(budget) == 63  # 0.7 * 90 is 62.99999999999999 in floats


def test_an_exhausted_budget_recovers_as_the_window_slides():
    clock = FakeClock(0.0)
    budget = RetryBudget(ratio=0.0, min_per_second=0.5, window=10.0, clock=clock)
    assert spend_all(budget) == 5
    clock.advance(9.9)
    assert not budget.try_spend()  # the retries spent at t=0 are still in the window
    clock.advance(0.1)
    assert spend_all(budget) == 5  # t=10: they slid out


def test_requests_slide_out_of_the_window_too():
    clock = FakeClock(0.0)
    budget = RetryBudget(ratio=0.5, min_per_second=0.0, window=10.0, clock=clock)
    for _ in range(10):
        budget.record_request()
    clock.advance(10.0)
    assert not budget.try_spend()  # the requests that earned the allowance are gone


def test_steady_traffic_gets_its_ratio_of_retries():
    clock = FakeClock(0.0)
    budget = RetryBudget(ratio=0.1, min_per_second=0.0, window=10.0, clock=clock)
    granted = 0
    for _ in range(60):  # 60 s at 10 requests per second, each one failing and asking for a retry
        for _ in range(10):
            budget.record_request()
            granted += budget.try_spend()
        clock.advance(1.0)
    # 10% of 600 requests: never more than the allowance, never starved.
    assert granted == 60
    assert budget.snapshot()["retries"] <= budget.snapshot()["allowed"]


def test_budget_refuses_negative_settings():
    with pytest.raises(ValueError):
        RetryBudget(ratio=-0.1)
    with pytest.raises(ValueError):
        RetryBudget(min_per_second=-1.0)
