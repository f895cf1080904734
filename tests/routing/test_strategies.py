import random
from collections import Counter

import pytest

from slipstream.routing.breaker import CircuitBreaker
from slipstream.routing.strategies import (
    DEFAULT_EXPLORE,
    STRATEGIES,
    DeploymentStats,
    LowestLatency,
    available,
    failover,
    get_strategy,
    least_in_flight,
    lowest_latency,
    power_of_two,
    weighted,
)

from . import FakeClock

N = 10_000


def measured(latency: float, *, in_flight: int = 0, **kw) -> DeploymentStats:
    stats = DeploymentStats(**kw)
    stats.finish(latency)  # the first sample sets the average (in_flight stays at 0)
    stats.in_flight = in_flight
    return stats


def primaries(strategy, candidates, stats, *, seed: int = 1234, n: int = N) -> Counter[str]:
    rng = random.Random(seed)
    return Counter(strategy(candidates, stats, rng)[0] for _ in range(n))


# ------------------------------------------------------------------------------------------------ stats
def test_ewma_update_math():
    stats = DeploymentStats(alpha=0.5, prior=2.0)
    assert not stats.measured
    assert stats.latency is None
    assert stats.expected_latency == 2.0
    stats.start()
    stats.finish(1.0)
    assert stats.latency == 1.0  # the first sample replaces the prior
    stats.start()
    stats.finish(3.0)
    assert stats.latency == 2.0  # 1 + 0.5 * (3 - 1)
    stats.start()
    stats.finish(4.0)
    assert stats.latency == 3.0
    assert stats.samples == 3
    assert stats.measured
    assert stats.expected_latency == 3.0


def test_ewma_with_the_default_alpha():
    stats = DeploymentStats()
    for sample in (1.0, 2.0, 2.0):
        stats.finish(sample)
    assert stats.latency == pytest.approx(1.0 + 0.3 * 1.0 + 0.3 * (2.0 - 1.3))


def test_in_flight_counting():
    stats = DeploymentStats()
    stats.start()
    stats.start()
    assert stats.in_flight == 2
    stats.finish()  # a fast failure: no latency sample
    assert (stats.in_flight, stats.latency, stats.samples) == (1, None, 0)
    stats.finish(0.5)
    stats.finish(0.5)  # unmatched: clamps rather than going negative
    assert stats.in_flight == 0


@pytest.mark.parametrize("kwargs", [{"weight": -1.0}, {"alpha": 0.0}, {"alpha": 1.5}, {"prior": -1.0}])
def test_bad_stats_are_refused(kwargs):
    with pytest.raises(ValueError):
        DeploymentStats(**kwargs)


# ------------------------------------------------------------------------------------------------ all strategies
@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_returns_a_permutation(name):
    strategy = STRATEGIES[name]
    rng = random.Random(99)
    candidates = ["a", "b", "c", "d", "e"]
    for _ in range(200):
        stats = {
            c: measured(
                rng.uniform(0.1, 3.0),
                in_flight=rng.randrange(4),
                weight=rng.choice([0.0, 1.0, 3.0]),
                priority=rng.randrange(3),
            )
            for c in candidates
            if rng.random() < 0.8  # some candidates have no stats yet
        }
        assert sorted(strategy(candidates, stats, rng)) == candidates
    assert strategy([], {}, rng) == []
    assert strategy(["solo"], {}, rng) == ["solo"]


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_every_strategy_is_reproducible_from_the_rng(name):
    strategy = STRATEGIES[name]
    candidates = ["a", "b", "c", "d"]
    stats = {c: measured(0.5 + i / 10, in_flight=i % 2) for i, c in enumerate(candidates)}
    first = [strategy(candidates, stats, rng) for rng in [random.Random(5)] for _ in range(50)]
    again = [strategy(candidates, stats, rng) for rng in [random.Random(5)] for _ in range(50)]
    assert first == again


def test_registry_and_lookup():
    assert set(STRATEGIES) == {"failover", "weighted", "least_in_flight", "lowest_latency", "power_of_two"}
    assert get_strategy("weighted") is weighted
    with pytest.raises(ValueError, match="known: failover, least_in_flight"):
        get_strategy("round_robin")


# ------------------------------------------------------------------------------------------------ failover
def test_failover_orders_by_priority_then_config_order():
    stats = {
        "a": DeploymentStats(priority=1),
        "b": DeploymentStats(priority=0),
        "c": DeploymentStats(priority=1),
        "d": DeploymentStats(priority=0),
    }
    rng = random.Random(0)
    assert all(failover(["a", "b", "c", "d"], stats, rng) == ["b", "d", "a", "c"] for _ in range(20))
    assert failover(["x", "y", "z"], {}, rng) == ["x", "y", "z"]


# ------------------------------------------------------------------------------------------------ weighted
def test_weighted_primary_follows_the_weights():
    stats = {"a": DeploymentStats(weight=1), "b": DeploymentStats(weight=2), "c": DeploymentStats(weight=7)}
    counts = primaries(weighted, ["a", "b", "c"], stats)
    assert counts["a"] / N == pytest.approx(0.1, abs=0.015)
    assert counts["b"] / N == pytest.approx(0.2, abs=0.015)
    assert counts["c"] / N == pytest.approx(0.7, abs=0.015)


def test_weighted_fallbacks_go_by_priority():
    stats = {
        "a": DeploymentStats(weight=1, priority=2),
        "b": DeploymentStats(weight=1, priority=0),
        "c": DeploymentStats(weight=1, priority=1),
    }
    rng = random.Random(3)
    seen = set()
    for _ in range(300):
        primary, *rest = weighted(["a", "b", "c"], stats, rng)
        assert rest == [c for c in ["b", "c", "a"] if c != primary]
        seen.add(primary)
    assert seen == {"a", "b", "c"}


def test_weighted_never_draws_a_zero_weight_as_primary():
    stats = {"a": DeploymentStats(weight=0), "b": DeploymentStats(weight=1), "c": DeploymentStats(weight=0)}
    counts = primaries(weighted, ["a", "b", "c"], stats, n=1000)
    assert counts == {"b": 1000}
    assert weighted(["a", "b", "c"], stats, random.Random(1))[1:] == ["a", "c"]


def test_weighted_with_no_weight_at_all_is_failover():
    stats = {"a": DeploymentStats(weight=0, priority=1), "b": DeploymentStats(weight=0, priority=0)}
    assert weighted(["a", "b"], stats, random.Random(1)) == ["b", "a"]


def test_weighted_without_stats_spreads_evenly():
    counts = primaries(weighted, ["a", "b"], {})
    assert counts["a"] / N == pytest.approx(0.5, abs=0.02)


# ------------------------------------------------------------------------------------------------ least in flight
def test_least_in_flight_orders_by_load():
    stats = {"a": DeploymentStats(), "b": DeploymentStats(), "c": DeploymentStats()}
    stats["a"].in_flight, stats["b"].in_flight, stats["c"].in_flight = 3, 1, 2
    assert least_in_flight(["a", "b", "c"], stats, random.Random(0)) == ["b", "c", "a"]


def test_least_in_flight_breaks_ties_at_random():
    stats = {"a": DeploymentStats(), "b": DeploymentStats(), "c": DeploymentStats()}
    stats["c"].in_flight = 1
    counts = primaries(least_in_flight, ["a", "b", "c"], stats)
    assert counts["c"] == 0
    assert counts["a"] / N == pytest.approx(0.5, abs=0.02)


# ------------------------------------------------------------------------------------------------ lowest latency
def test_lowest_latency_orders_by_the_average():
    stats = {"a": measured(0.5), "b": measured(0.2), "c": measured(0.9)}
    strategy = LowestLatency(explore=0.0)
    assert all(strategy(["a", "b", "c"], stats, random.Random(s)) == ["b", "a", "c"] for s in range(20))


def test_lowest_latency_explores_an_unmeasured_deployment_one_call_at_a_time():
    strategy = LowestLatency(explore=0.0)
    stats = {"fast": measured(0.1), "new": DeploymentStats(prior=1.0), "slow": measured(0.5)}
    assert strategy(["fast", "new", "slow"], stats, random.Random(0)) == ["new", "fast", "slow"]
    stats["new"].start()  # its probe is under way: now it ranks by its prior
    assert strategy(["fast", "new", "slow"], stats, random.Random(0)) == ["fast", "slow", "new"]
    stats["new"].finish(0.05)
    assert strategy(["fast", "new", "slow"], stats, random.Random(0)) == ["new", "fast", "slow"]


def test_lowest_latency_ranks_a_busy_unmeasured_deployment_by_its_prior():
    strategy = LowestLatency(explore=0.0)
    stats = {"a": measured(0.5), "b": DeploymentStats(prior=0.3)}
    stats["b"].start()
    assert strategy(["a", "b"], stats, random.Random(0)) == ["b", "a"]


def test_lowest_latency_sends_a_share_to_random_deployments():
    stats = {c: measured(lat) for c, lat in [("a", 0.1), ("b", 0.2), ("c", 0.3), ("d", 0.4)]}
    counts = primaries(LowestLatency(explore=0.2), ["a", "b", "c", "d"], stats)
    # 20% explore, a quarter of which lands on the best one anyway.
    assert counts["a"] / N == pytest.approx(0.8 + 0.2 / 4, abs=0.015)
    for other in "bcd":
        assert counts[other] / N == pytest.approx(0.05, abs=0.01)


def test_the_registered_lowest_latency_explores_a_little():
    assert isinstance(lowest_latency, LowestLatency)
    assert lowest_latency.explore == DEFAULT_EXPLORE
    with pytest.raises(ValueError):
        LowestLatency(explore=1.5)


# ------------------------------------------------------------------------------------------------ power of two
def test_power_of_two_with_two_candidates_takes_the_less_loaded():
    stats = {"busy": measured(0.5, in_flight=5), "idle": measured(0.5)}
    counts = primaries(power_of_two, ["busy", "idle"], stats, n=1000)
    assert counts == {"idle": 1000}


def test_power_of_two_cost_is_latency_times_load():
    # a: 1 s * (3 + 1) = 4; b: 3 s * (0 + 1) = 3. Fewer calls in flight alone would pick b too, latency alone a.
    stats = {"a": measured(1.0, in_flight=3), "b": measured(3.0, in_flight=0)}
    assert power_of_two(["a", "b"], stats, random.Random(0))[0] == "b"
    # c: 1 s * (1 + 1) = 2 beats b's 3, though c has more calls in flight.
    stats["c"] = measured(1.0, in_flight=1)
    assert power_of_two(["b", "c"], stats, random.Random(0))[0] == "c"


def test_power_of_two_equal_cost_goes_to_fewer_in_flight():
    stats = {"a": measured(1.0, in_flight=1), "b": measured(2.0, in_flight=0)}  # both cost 2
    assert primaries(power_of_two, ["a", "b"], stats, n=500) == {"b": 500}


def test_power_of_two_prefers_the_cheap_and_never_picks_the_worst():
    candidates = ["best", "good", "fair", "worst"]
    stats = {c: measured(0.5, in_flight=i) for i, c in enumerate(candidates)}
    counts = primaries(power_of_two, candidates, stats)
    # A candidate is primary when drawn with one costlier than itself: 3, 2, 1 and 0 of the 6 pairs.
    assert counts["best"] / N == pytest.approx(3 / 6, abs=0.015)
    assert counts["good"] / N == pytest.approx(2 / 6, abs=0.015)
    assert counts["fair"] / N == pytest.approx(1 / 6, abs=0.015)
    assert counts["worst"] == 0


def test_power_of_two_fallbacks_go_by_cost():
    candidates = ["w", "x", "y", "z"]
    stats = {c: measured(0.5, in_flight=i) for i, c in enumerate(candidates)}
    rng = random.Random(8)
    for _ in range(100):
        primary, *rest = power_of_two(candidates, stats, rng)
        assert rest == [c for c in candidates if c != primary]


# ------------------------------------------------------------------------------------------------ available
def test_available_drops_open_breakers_without_taking_probes():
    clock = FakeClock()
    breakers = {
        name: CircuitBreaker(failure_threshold=1, cooldown=10.0, clock=clock) for name in ("a", "b", "c")
    }
    breakers["a"].record_failure()
    assert available(["a", "b", "c", "d"], breakers) == ["b", "c", "d"]  # d has no breaker: always available
    clock.advance(10.0)
    for _ in range(3):
        assert available(["a", "b", "c", "d"], breakers) == ["a", "b", "c", "d"]
    assert breakers["a"].allow()  # the half-open probe slot was still free
    assert available(["a", "b"], breakers) == ["b"]
