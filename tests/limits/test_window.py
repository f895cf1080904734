"""The sliding window's arithmetic, driven by explicit times: no event loop, no waiting."""

import random

import pytest

from slipstream.limits.window import SlidingWindow, acquire_all, wait_all


def _fill(window: SlidingWindow, n: int, now: float, cost: int = 1) -> None:
    for _ in range(n):
        assert window.try_acquire(cost, now) == 0.0
        window.commit(cost, now)


def test_admits_up_to_the_limit_then_tells_how_long_to_wait():
    w = SlidingWindow(3, 60.0)
    _fill(w, 3, now=10.2)
    assert w.try_acquire(1, 10.2) == pytest.approx(60.0)
    assert w.try_acquire(1, 40.0) == pytest.approx(30.2)
    assert w.try_acquire(1, 70.2) == 0.0


def test_a_refusal_changes_nothing():
    w = SlidingWindow(2)
    _fill(w, 2, now=0.0)
    first = w.try_acquire(1, 5.0)
    for _ in range(10):
        assert w.try_acquire(1, 5.0) == first
    assert w.used(5.0) == 2


def test_units_grouped_in_a_bucket_each_count_for_a_full_window():
    # Commits at 0.1 and 0.4 share an entry, which counts until the later one is a minute old.
    w = SlidingWindow(2, 60.0, granularity=0.5)
    w.commit(1, 0.1)
    w.commit(1, 0.4)
    assert w.used(60.39) == 2
    assert w.try_acquire(1, 60.39) == pytest.approx(0.01)
    assert w.used(60.4) == 0


def test_waits_for_enough_buckets_to_expire_for_a_big_cost():
    w = SlidingWindow(100, 60.0, granularity=1.0)  # one-second buckets
    w.commit(30, 0.0)
    w.commit(30, 10.0)
    w.commit(30, 20.0)
    # 90 used, 50 wanted: 40 must go, i.e. the first two buckets (expiring at 60 and 70).
    assert w.try_acquire(50, 25.0) == pytest.approx(70.0 - 25.0)
    assert w.try_acquire(10, 25.0) == 0.0


def test_a_cost_above_the_limit_waits_for_an_empty_window_and_is_charged_in_full():
    w = SlidingWindow(100, 60.0, granularity=1.0)
    w.commit(10, 0.0)
    assert w.try_acquire(150, 1.0) == pytest.approx(59.0)
    assert w.try_acquire(150, 60.0) == 0.0
    w.commit(150, 60.0)
    assert w.used(60.0) == 150
    assert w.try_acquire(1, 60.0) == pytest.approx(60.0)


def test_zero_cost_always_fits():
    w = SlidingWindow(1)
    _fill(w, 1, now=0.0)
    assert w.try_acquire(0, 0.0) == 0.0


def _windows_hold(times: list[float], costs: list[int], limit: int, *, until: float) -> None:
    """Every 60-second window, aligned or not, holds at most the limit; after the first, at least 95% of it."""
    start = 0.0
    while start <= until - 60.0:
        total = sum(c for t, c in zip(times, costs, strict=True) if start <= t < start + 60.0)
        assert total <= limit, (start, total)
        if start >= 60.0:
            assert total >= 0.95 * limit, (start, total)
        start += 0.37


@pytest.mark.parametrize("limit", [60, 100, 1000])
def test_admitted_requests_per_minute_stay_within_five_percent_of_the_limit(limit):
    """Five simulated minutes of requests arriving at random, ~1,000 a second, far above the limit."""
    rng = random.Random(limit)
    w = SlidingWindow(limit)
    admitted: list[float] = []
    now = 0.0
    while now < 300.0:
        now += rng.expovariate(1000.0)
        if w.try_acquire(1, now) == 0.0:
            w.commit(1, now)
            admitted.append(now)
    _windows_hold(admitted, [1] * len(admitted), limit, until=300.0)


def test_token_budget_holds_with_random_costs_under_fifo():
    """Requests of 50..1,000 tokens (up to 5% of the budget) queue in order: only the head may go, when it fits.

    Strict order wastes the room below a waiting head, more so as requests grow: with requests of up to 10% of
    the budget some windows fall to ~93%. That is the price of not starving big requests, not a leak."""
    rng = random.Random(7)
    limit = 20_000
    w = SlidingWindow(limit)
    times: list[float] = []
    costs: list[int] = []
    head = rng.randint(50, 1000)
    now = 0.0
    while now < 300.0:
        now += rng.expovariate(1000.0)  # the moments the queue looks again
        if w.try_acquire(head, now) == 0.0:
            w.commit(head, now)
            times.append(now)
            costs.append(head)
            head = rng.randint(50, 1000)
    _windows_hold(times, costs, limit, until=300.0)


def test_settle_refunds_into_the_bucket_the_estimate_went_to():
    w = SlidingWindow(1000, 60.0, granularity=1.0)
    w.commit(500, 0.0)
    w.commit(300, 30.0)
    w.settle(500, 200, 31.0, committed_at=0.0)
    assert w.used(31.0) == 500
    # The refunded bucket still expires when the estimate would have: at 60 only the 300 remain.
    assert w.used(60.0) == 300
    assert w.used(90.0) == 0


def test_settle_charges_an_underestimate():
    w = SlidingWindow(1000, 60.0, granularity=1.0)
    w.commit(100, 0.0)
    w.settle(100, 900, 2.0, committed_at=0.0)
    assert w.used(2.0) == 900
    assert w.try_acquire(200, 2.0) == pytest.approx(58.0)


def test_settle_after_the_bucket_expired_changes_nothing():
    w = SlidingWindow(1000, 60.0, granularity=1.0)
    w.commit(100, 0.0)
    w.commit(50, 40.0)
    w.settle(100, 900, 70.0, committed_at=0.0)
    assert w.used(70.0) == 50


def test_settle_never_drives_a_bucket_negative():
    w = SlidingWindow(1000, 60.0, granularity=1.0)
    w.commit(100, 0.0)
    w.settle(400, 0, 1.0, committed_at=0.0)  # a refund larger than the bucket holds
    assert w.used(1.0) == 0
    w.commit(10, 2.0)
    assert w.used(2.0) == 10


def test_acquire_all_commits_nothing_when_one_budget_refuses():
    rpm, tpm = SlidingWindow(10), SlidingWindow(1000)
    assert acquire_all([rpm, tpm], [1, 900], 0.0) == 0.0
    wait = acquire_all([rpm, tpm], [1, 200], 1.0)
    assert wait > 0.0
    assert rpm.used(1.0) == 1  # the refused request did not spend a request
    assert tpm.used(1.0) == 900
    assert acquire_all([rpm, tpm], [1, 100], 1.0) == 0.0
    assert (rpm.used(1.0), tpm.used(1.0)) == (2, 1000)


def test_wait_all_is_the_longest_single_wait():
    a, b = SlidingWindow(1, 60.0, granularity=1.0), SlidingWindow(1, 10.0, granularity=1.0)
    a.commit(1, 0.0)
    b.commit(1, 0.0)
    assert wait_all([a, b], [1, 1], 5.0) == pytest.approx(55.0)
    assert wait_all([b], [1], 5.0) == pytest.approx(5.0)


def test_rejects_a_nonsense_limit():
    with pytest.raises(ValueError):
        SlidingWindow(0)
    with pytest.raises(ValueError):
        SlidingWindow(10, 0.0)
