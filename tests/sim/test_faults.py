"""Fault decisions: forced faults, seeded rates, which faults apply to which requests."""

from __future__ import annotations

import random
from collections import Counter

import pytest

from slipstream.sim.faults import decide_fault, error_status
from slipstream.sim.options import FAULT_KINDS, SimOptions

DRAWS = 20_000


def frequencies(options: SimOptions, *, stream: bool, seed: int = 11) -> Counter[str | None]:
    rng = random.Random(seed)
    return Counter(decide_fault(options, rng, stream=stream) for _ in range(DRAWS))


@pytest.mark.parametrize("kind", FAULT_KINDS)
def test_a_forced_fault_always_happens(kind: str) -> None:
    options = SimOptions.from_dict({"fault": kind})
    assert decide_fault(options, random.Random(0), stream=True) == kind


def test_slow_stream_does_not_apply_to_a_non_streamed_request() -> None:
    assert (
        decide_fault(SimOptions.from_dict({"fault": "slow_stream"}), random.Random(0), stream=False) is None
    )
    assert decide_fault(SimOptions.from_dict({"fault": "broken_stream"}), random.Random(0), stream=False) == (
        "broken_stream"
    )
    always_slow = SimOptions.from_dict({"slow_stream_rate": 1.0})
    assert frequencies(always_slow, stream=False) == Counter({None: DRAWS})
    assert frequencies(always_slow, stream=True) == Counter({"slow_stream": DRAWS})


def test_no_rates_no_draw() -> None:
    rng = random.Random(3)
    state = rng.getstate()
    assert decide_fault(SimOptions(), rng, stream=True) is None
    assert rng.getstate() == state


def test_seeded_rates_give_each_fault_its_share() -> None:
    options = SimOptions.from_dict(
        {
            "rate_429": 0.05,
            "error_rate": 0.05,
            "rate_5xx": 0.1,
            "hang_rate": 0.02,
            "malformed_rate": 0.03,
            "broken_stream_rate": 0.05,
            "slow_stream_rate": 0.1,
        }
    )
    seen = frequencies(options, stream=True)
    expected = {
        "429": 0.05,
        "500": 0.05,
        "502": 0.05,
        "503": 0.05,
        "hang": 0.02,
        "malformed": 0.03,
        "broken_stream": 0.05,
        "slow_stream": 0.1,
        None: 0.6,
    }
    for kind, share in expected.items():
        # ±5 standard errors of a binomial share over DRAWS draws.
        tolerance = 5 * (share * (1 - share) / DRAWS) ** 0.5
        assert seen[kind] / DRAWS == pytest.approx(share, abs=tolerance), kind
    # The same seed replays the same faults.
    assert frequencies(options, stream=True) == seen
    first = [decide_fault(options, random.Random(7), stream=True) for _ in range(1)]
    assert first == [decide_fault(options, random.Random(7), stream=True)]


def test_a_rate_of_one_always_faults() -> None:
    assert frequencies(SimOptions.from_dict({"error_rate": 1.0}), stream=False) == Counter({"500": DRAWS})


def test_error_statuses() -> None:
    assert [error_status(k) for k in ("429", "500", "502", "503")] == [429, 500, 502, 503]
    assert error_status("hang") is None and error_status(None) is None
