"""The latency model with a seeded RNG: each distribution's median and spread, the tail, the no-latency mode.

The RNG is seeded, so every number here is fixed; the tolerances are statistical (several standard errors
wide) so the assertions also hold for any other seed.
"""

from __future__ import annotations

import math
import random
import statistics

import pytest

from slipstream.sim.latency import INSTANT, Timing, plan_timing, sample
from slipstream.sim.options import SimOptions

DRAWS = 4000


def ttfts(options: SimOptions, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    return sorted(plan_timing(options, rng).ttft for _ in range(DRAWS))


def quantile(values: list[float], q: float) -> float:
    return values[int(q * (len(values) - 1))]


def test_no_latency_draws_nothing_and_never_waits() -> None:
    rng = random.Random(5)
    state = rng.getstate()
    timing = plan_timing(SimOptions(), rng)
    assert timing is INSTANT and timing.instant
    assert timing.total(500) == 0
    assert rng.getstate() == state  # no draw: instant mode costs nothing and shifts no fault decision


def test_fixed_is_exact() -> None:
    options = SimOptions.from_dict({"ttft": 0.25, "tokens_per_s": 50})
    timing = plan_timing(options, random.Random(1))
    assert timing == Timing(0.25, 0.02)
    assert timing.total(100) == pytest.approx(0.25 + 2.0)


def test_normal_has_the_configured_median_and_spread() -> None:
    values = ttfts(SimOptions.from_dict({"ttft": 1.0, "ttft_dist": "normal", "ttft_sigma": 0.1}))
    assert statistics.median(values) == pytest.approx(1.0, abs=0.02)
    assert statistics.stdev(values) == pytest.approx(0.1, rel=0.1)
    assert min(values) >= 0


def test_normal_is_clamped_at_zero() -> None:
    values = ttfts(SimOptions.from_dict({"ttft": 0.1, "ttft_dist": "normal", "ttft_sigma": 1.0}))
    assert min(values) == 0.0
    assert sum(v == 0 for v in values) > DRAWS * 0.3  # ~46% of N(0.1, 1) is below zero


def test_lognormal_keeps_the_median_and_has_a_right_skew() -> None:
    sigma = 0.5
    values = ttfts(SimOptions.from_dict({"ttft": 0.5, "ttft_dist": "lognormal", "ttft_sigma": sigma}))
    median = statistics.median(values)
    assert median == pytest.approx(0.5, rel=0.05)
    # The 84th percentile of a lognormal is median * e^sigma, the 16th median / e^sigma.
    assert quantile(values, 0.8413) / median == pytest.approx(math.exp(sigma), rel=0.08)
    assert median / quantile(values, 0.1587) == pytest.approx(math.exp(sigma), rel=0.08)
    assert statistics.fmean(values) > median  # skewed right


def test_fixed_tail_multiplies_a_share_of_ttfts() -> None:
    options = SimOptions.from_dict({"ttft": 0.2, "tail_prob": 0.1, "tail_factor": 5})
    values = ttfts(options)
    slow = [v for v in values if v > 0.2]
    assert slow and all(v == pytest.approx(1.0) for v in slow)
    assert len(slow) / DRAWS == pytest.approx(0.1, abs=0.02)  # 4 standard errors wide
    assert sum(v == pytest.approx(0.2) for v in values) == DRAWS - len(slow)


def test_pareto_tail_is_unbounded_and_heavy() -> None:
    alpha = 1.5
    options = SimOptions.from_dict(
        {"ttft": 0.1, "tail_prob": 0.2, "tail_dist": "pareto", "tail_factor": 2, "tail_alpha": alpha}
    )
    values = ttfts(options, seed=3)
    tail = sorted(v for v in values if v > 0.1 + 1e-12)
    assert len(tail) / DRAWS == pytest.approx(0.2, abs=0.03)
    assert min(tail) >= 0.2  # scale: ttft * tail_factor
    # Pareto: P(X > 10 * scale) = 10^-alpha ≈ 3.2% of the tail, and the largest is far beyond the scale.
    beyond = sum(v > 2.0 for v in tail) / len(tail)
    assert 0.01 < beyond < 0.07
    assert max(tail) > 3.0


def test_tokens_per_second_sets_the_per_token_time() -> None:
    rng = random.Random(2)
    options = SimOptions.from_dict({"tokens_per_s": 40, "tps_dist": "normal", "tps_sigma": 4})
    per_token = sorted(plan_timing(options, rng).per_token for _ in range(DRAWS))
    assert 1 / statistics.median(per_token) == pytest.approx(40, rel=0.03)
    assert all(p > 0 for p in per_token)


def test_tokens_per_second_never_collapses_to_near_zero() -> None:
    rng = random.Random(4)
    options = SimOptions.from_dict({"tokens_per_s": 10, "tps_dist": "normal", "tps_sigma": 50})
    worst = max(plan_timing(options, rng).per_token for _ in range(DRAWS))
    assert worst <= 1 / (10 * 0.05) + 1e-9


def test_sample_rejects_unknown_distributions() -> None:
    with pytest.raises(ValueError, match="gamma"):
        sample("gamma", 1.0, 0.5, random.Random(0))
