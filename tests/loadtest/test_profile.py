"""Scenario shapes and the open-loop schedule: pure arithmetic, checked exactly."""

from __future__ import annotations

import itertools
import math

import pytest

from slipstream.loadtest import SCENARIOS, Profile, Stage, constant, scenario_profile
from slipstream.loadtest.profile import SPIKE_FACTOR


def test_constant_rate_gives_exactly_rate_times_duration_evenly_spaced() -> None:
    times = list(constant(200, 1.5).arrivals())
    assert len(times) == 300
    assert times[0] == 0.0
    assert times[1] == pytest.approx(0.005)
    assert times[-1] == pytest.approx(299 / 200)
    assert all(b > a for a, b in itertools.pairwise(times))


def test_linear_ramp_arrivals_follow_the_integral_of_the_rate() -> None:
    # 0 -> 100 req/s over 2 s: 100 arrivals, half of them in the last 30% of the ramp (N(t) = 25 t^2).
    times = list(Profile((Stage(2.0, 100.0),)).arrivals())
    assert len(times) == 100
    assert sum(1 for t in times if t < 1.0) == 25
    assert times[49] == pytest.approx(math.sqrt(49 / 25))


def test_ramp_down_and_holds_add_up_across_stages() -> None:
    profile = Profile((Stage(1.0, 50.0), Stage(1.0, 50.0), Stage(1.0, 0.0)), start_level=50.0)
    times = list(profile.arrivals())
    assert len(times) == 50 + 50 + 25
    assert times == sorted(times)
    assert times[-1] < profile.duration


def test_zero_level_gives_no_arrivals_and_no_users() -> None:
    profile = Profile((Stage(1.0, 0.0),))
    assert list(profile.arrivals()) == []
    assert profile.users_at(0.5) == 0


def test_users_round_up_during_a_ramp() -> None:
    profile = Profile((Stage(1.0, 10.0), Stage(1.0, 10.0)))
    assert profile.users_at(0.0) == 0
    assert profile.users_at(0.01) == 1
    assert profile.users_at(0.5) == 5
    assert profile.users_at(1.5) == 10
    assert profile.users_at(5.0) == 10  # past the end: the last level


@pytest.mark.parametrize("name", SCENARIOS)
def test_every_scenario_lasts_its_duration(name: str) -> None:
    profile = scenario_profile(name, 10.0, 60.0)
    assert profile.duration == pytest.approx(60.0)
    assert profile.peak_level >= 10.0


def test_stress_climbs_to_twice_the_level_in_four_steps() -> None:
    profile = scenario_profile("stress", 100.0, 40.0)
    assert [round(profile.level_at(t)) for t in (9, 19, 29, 39)] == [50, 100, 150, 200]


def test_spike_jumps_to_the_spike_factor_and_comes_back() -> None:
    profile = scenario_profile("spike", 20.0, 100.0)
    assert profile.level_at(10) == 20.0
    assert profile.level_at(50) == pytest.approx(20.0 * SPIKE_FACTOR)
    assert profile.level_at(90) == pytest.approx(20.0)


def test_custom_ramp_and_bad_values() -> None:
    profile = scenario_profile("custom", 8.0, 10.0, ramp=4.0)
    assert profile.level_at(2.0) == pytest.approx(4.0)
    assert profile.level_at(6.0) == 8.0
    assert scenario_profile("custom", 8.0, 10.0).level_at(0.0) == 8.0  # no ramp by default
    with pytest.raises(ValueError, match="ramp"):
        scenario_profile("peak", 8.0, 10.0, ramp=11.0)
    with pytest.raises(ValueError, match="unknown scenario"):
        scenario_profile("tsunami", 8.0, 10.0)
    with pytest.raises(ValueError, match="positive"):
        scenario_profile("peak", 0.0, 10.0)
