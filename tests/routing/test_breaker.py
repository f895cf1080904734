import asyncio

import pytest

from slipstream.errors import (
    AuthenticationError,
    InvalidRequest,
    RateLimited,
    UpstreamConnectionError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from slipstream.routing.breaker import BreakerState, CircuitBreaker, counts_as_failure

from . import FakeClock

CLOSED, OPEN, HALF_OPEN = BreakerState.CLOSED, BreakerState.OPEN, BreakerState.HALF_OPEN


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[BreakerState, BreakerState]] = []

    def __call__(self, old: BreakerState, new: BreakerState) -> None:
        self.changes.append((old, new))


def make(clock: FakeClock, **kw) -> tuple[CircuitBreaker, Recorder]:
    recorder = Recorder()
    return CircuitBreaker(clock=clock, on_change=recorder, **kw), recorder


def open_it(breaker: CircuitBreaker) -> None:
    for _ in range(breaker.failure_threshold):
        breaker.record_failure()
    assert breaker.state is OPEN


def test_states_are_strings():
    assert [s.value for s in BreakerState] == ["closed", "open", "half_open"]
    assert BreakerState.HALF_OPEN == "half_open"


def test_a_new_breaker_is_closed_and_allows():
    breaker, recorder = make(FakeClock())
    assert breaker.state is CLOSED
    assert all(breaker.allow() for _ in range(100))
    assert recorder.changes == []


def test_opens_after_consecutive_failures():
    clock = FakeClock()
    breaker, recorder = make(clock, failure_threshold=5)
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state is CLOSED
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is OPEN
    assert not breaker.allow()
    assert not breaker.would_allow()
    assert recorder.changes == [(CLOSED, OPEN)]
    snap = breaker.snapshot()
    assert snap["state"] == "open"
    assert snap["consecutive_failures"] == 5
    assert snap["opened_at"] == clock.now
    assert snap["retry_at"] == clock.now + 15.0


def test_a_success_resets_the_consecutive_count():
    breaker, _ = make(FakeClock(), failure_threshold=5)
    for _ in range(4):
        breaker.record_failure()
    breaker.record_success()
    assert breaker.snapshot()["consecutive_failures"] == 0
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state is CLOSED


def test_opens_when_the_error_rate_exceeds_the_limit():
    breaker, recorder = make(FakeClock(), failure_threshold=100, error_rate=0.5, min_requests=20)
    for _ in range(10):
        breaker.record_success()
        breaker.record_failure()
    assert breaker.snapshot()["error_rate"] == 0.5
    assert breaker.state is CLOSED  # exactly the limit is not above it
    breaker.record_failure()
    assert breaker.state is OPEN
    assert recorder.changes == [(CLOSED, OPEN)]
    assert breaker.snapshot()["error_rate"] == pytest.approx(11 / 21)


def test_the_error_rate_needs_min_requests():
    breaker, _ = make(FakeClock(), failure_threshold=100, error_rate=0.5, min_requests=20)
    for _ in range(6):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()
    assert breaker.snapshot()["requests"] == 18
    assert breaker.state is CLOSED  # 67% failed, but 18 calls are too few to judge
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state is OPEN  # 20 calls, 14 failed


def test_failures_older_than_the_window_do_not_count():
    clock = FakeClock()
    breaker, _ = make(clock, failure_threshold=100, error_rate=0.5, min_requests=20, window=30.0)
    for _ in range(6):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()
    clock.advance(31.0)
    for _ in range(10):
        breaker.record_success()
        breaker.record_failure()
    # Counted together the two rounds would be 22 failures in 38 calls (58%): only the recent 50% counts.
    assert breaker.snapshot()["requests"] == 20
    assert breaker.state is CLOSED


def test_an_error_rate_of_one_turns_rate_opening_off():
    breaker, _ = make(FakeClock(), failure_threshold=3, error_rate=1.0, min_requests=1)
    for _ in range(30):
        breaker.record_failure()
        breaker.record_failure()
        breaker.record_success()
    assert breaker.state is CLOSED


def test_open_turns_half_open_when_the_cooldown_passes():
    clock = FakeClock()
    breaker, recorder = make(clock, cooldown=15.0)
    open_it(breaker)
    clock.advance(14.9)
    assert not breaker.allow()
    assert breaker.state is OPEN
    clock.advance(0.1)
    assert breaker.state is HALF_OPEN
    assert recorder.changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN)]
    assert breaker.snapshot()["retry_at"] is None


def test_half_open_lets_one_probe_through_at_a_time():
    clock = FakeClock()
    breaker, _ = make(clock, cooldown=15.0, half_open_probes=1)
    open_it(breaker)
    clock.advance(15.0)
    assert breaker.allow()  # the allow() that finds the cooldown over takes the first probe slot
    assert breaker.state is HALF_OPEN
    assert not breaker.allow()
    assert not breaker.would_allow()


def test_half_open_probe_limit_is_configurable():
    clock = FakeClock()
    breaker, _ = make(clock, half_open_probes=3)
    open_it(breaker)
    clock.advance(15.0)
    assert [breaker.allow() for _ in range(5)] == [True, True, True, False, False]


def test_would_allow_takes_no_probe_slot():
    clock = FakeClock()
    breaker, _ = make(clock)
    open_it(breaker)
    assert not breaker.would_allow()
    clock.advance(15.0)
    assert all(breaker.would_allow() for _ in range(10))
    assert breaker.allow()
    assert not breaker.would_allow()


def test_a_half_open_success_closes_and_resets_the_counters():
    clock = FakeClock()
    breaker, recorder = make(clock)
    open_it(breaker)
    clock.advance(15.0)
    assert breaker.allow()
    breaker.record_success()
    assert breaker.state is CLOSED
    assert recorder.changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, CLOSED)]
    snap = breaker.snapshot()
    counters = (snap["consecutive_failures"], snap["requests"], snap["failures"], snap["error_rate"])
    assert counters == (0, 0, 0, 0.0)
    assert (snap["opened_at"], snap["retry_at"]) == (None, None)
    for _ in range(4):
        breaker.record_failure()
    assert breaker.state is CLOSED  # the old failures were forgotten: it takes 5 new ones
    assert all(breaker.allow() for _ in range(10))


def test_a_half_open_failure_reopens_with_a_fresh_cooldown():
    clock = FakeClock()
    breaker, recorder = make(clock, cooldown=15.0)
    open_it(breaker)
    clock.advance(20.0)
    assert breaker.allow()
    breaker.record_failure()
    assert breaker.state is OPEN
    assert recorder.changes == [(CLOSED, OPEN), (OPEN, HALF_OPEN), (HALF_OPEN, OPEN)]
    assert breaker.snapshot()["opened_at"] == clock.now
    assert breaker.snapshot()["retry_at"] == clock.now + 15.0
    clock.advance(14.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.allow()


def test_release_gives_back_a_probe_slot():
    clock = FakeClock()
    breaker, _ = make(clock)
    open_it(breaker)
    clock.advance(15.0)
    assert breaker.allow()
    assert not breaker.allow()
    breaker.release()
    assert breaker.state is HALF_OPEN  # no verdict, no transition
    assert breaker.allow()


def test_a_lost_probe_is_given_up_after_another_cooldown():
    clock = FakeClock()
    breaker, _ = make(clock, cooldown=15.0)
    open_it(breaker)
    clock.advance(15.0)
    assert breaker.allow()  # this probe never reports back
    clock.advance(14.9)
    assert not breaker.allow()
    clock.advance(0.1)
    assert breaker.would_allow()
    assert breaker.allow()
    assert not breaker.allow()


def test_late_answers_while_open_change_nothing():
    clock = FakeClock()
    breaker, recorder = make(clock, cooldown=15.0)
    open_it(breaker)
    retry_at = breaker.snapshot()["retry_at"]
    clock.advance(5.0)
    breaker.record_success()  # a call sent before the breaker opened
    assert breaker.state is OPEN
    breaker.record_failure()
    assert breaker.snapshot()["retry_at"] == retry_at  # the cooldown is not extended
    assert recorder.changes == [(CLOSED, OPEN)]


def test_works_without_on_change():
    clock = FakeClock()
    breaker = CircuitBreaker(failure_threshold=1, clock=clock)
    breaker.record_failure()
    assert breaker.state is OPEN


@pytest.mark.parametrize(
    "kwargs",
    [
        {"failure_threshold": 0},
        {"error_rate": 1.5},
        {"error_rate": -0.1},
        {"min_requests": 0},
        {"window": 0.0},
        {"cooldown": 0.0},
        {"half_open_probes": 0},
    ],
)
def test_bad_settings_are_refused(kwargs):
    with pytest.raises(ValueError):
        CircuitBreaker(clock=FakeClock(), **kwargs)


@pytest.mark.parametrize(
    ("exc", "counts"),
    [
        (UpstreamConnectionError("refused"), True),
        (UpstreamTimeout("slow"), True),
        (UpstreamProtocolError("bad JSON"), True),
        (UpstreamError("broke"), True),
        *((UpstreamStatusError("x", upstream_status=s), True) for s in (408, 429, 500, 502, 503, 529)),
        *((UpstreamStatusError("x", upstream_status=s), False) for s in (400, 401, 403, 404, 409, 413, 422)),
        (InvalidRequest("bad"), False),
        (AuthenticationError("who"), False),
        (RateLimited("local"), False),
        (ValueError("bug"), False),
        (asyncio.CancelledError(), False),
    ],
    ids=lambda v: (
        f"{type(v).__name__}-{getattr(v, 'upstream_status', '')}" if isinstance(v, BaseException) else ""
    ),
)
def test_only_upstream_faults_count_as_failures(exc, counts):
    assert counts_as_failure(exc) is counts
