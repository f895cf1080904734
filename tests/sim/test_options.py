"""SimOptions: defaults, presets, parsing from mappings and strings, per-request overrides, errors naming the key."""

from __future__ import annotations

import pytest

from slipstream.errors import InvalidRequest
from slipstream.sim.options import PRESETS, SimOptionError, SimOptions


def test_defaults_are_instant_with_no_faults_or_limits() -> None:
    options = SimOptions()
    assert options.preset == "instant"
    assert options.instant
    assert not options.has_fault_rates
    assert (options.rpm_limit, options.tpm_limit, options.fault) == (0, 0, None)


def test_unknown_key_is_refused_by_name() -> None:
    with pytest.raises(SimOptionError, match="'ttft_ms'") as info:
        SimOptions.from_dict({"ttft_ms": 5})
    assert info.value.param == "sim.ttft_ms"
    # Usable both as a config error and as a 400 at the HTTP edge.
    assert isinstance(info.value, ValueError)
    assert isinstance(info.value, InvalidRequest)
    assert info.value.status == 400


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("error_rate", 1.5),
        ("rate_429", -0.1),
        ("ttft", -1),
        ("ttft", "soon"),
        ("ttft", float("nan")),
        ("rpm_limit", 2.5),
        ("rpm_limit", True),
        ("ttft_dist", "gamma"),
        ("fault", "418"),
        ("reply_tokens_min", 0),
        ("embedding_dim", 0),
        ("tail_factor", 0.5),
        ("preset", "turbo"),
    ],
)
def test_bad_values_are_refused_naming_the_key(key: str, value: object) -> None:
    with pytest.raises(SimOptionError) as info:
        SimOptions.from_dict({key: value})
    assert key in info.value.message
    assert info.value.param == f"sim.{key}"


def test_min_above_max_is_refused() -> None:
    with pytest.raises(SimOptionError, match="reply_tokens_max"):
        SimOptions.from_dict({"reply_tokens_min": 50, "reply_tokens_max": 10})


def test_strings_are_converted_so_cli_pairs_work() -> None:
    options = SimOptions.from_dict({"ttft": "0.25", "rpm_limit": "600", "fault": "429", "seed": "7"})
    assert options.ttft == 0.25
    assert options.rpm_limit == 600
    assert options.fault == "429"
    assert options.seed == 7
    assert SimOptions.from_dict({"fault": 503}).fault == "503"
    assert SimOptions.from_dict({"fault": "none"}).fault is None


def test_preset_sets_its_values_and_explicit_keys_win() -> None:
    realistic = SimOptions.from_preset("realistic")
    assert realistic.ttft == PRESETS["realistic"]["ttft"]
    assert realistic.ttft_dist == "lognormal"
    assert not realistic.instant
    tuned = SimOptions.from_dict({"ttft": 2.0, "preset": "realistic"})  # order in the mapping does not matter
    assert tuned.ttft == 2.0
    assert tuned.tokens_per_s == PRESETS["realistic"]["tokens_per_s"]
    heavy = SimOptions.from_preset("heavy_tail")
    assert heavy.tail_prob > 0 and heavy.tail_dist == "pareto"


def test_merged_overrides_leave_the_original_alone() -> None:
    base = SimOptions.from_dict({"seed": 1, "error_rate": 0.1})
    merged = base.merged({"error_rate": 0.5, "fault": "hang"})
    assert (merged.error_rate, merged.fault, merged.seed) == (0.5, "hang", 1)
    assert (base.error_rate, base.fault) == (0.1, None)
    assert base.merged({}) is base
    assert merged.has_fault_rates
    with pytest.raises(SimOptionError, match="'nope'"):
        base.merged({"nope": 1})
    with pytest.raises(SimOptionError):
        base.merged(["fault"])  # type: ignore[arg-type]


def test_merged_preset_replaces_all_latency_settings() -> None:
    back = SimOptions.from_preset("heavy_tail").merged({"preset": "instant"})
    assert back.preset == "instant"
    assert back.instant and back.tail_prob == 0
    assert back == SimOptions()
    fast = SimOptions().merged({"preset": "realistic", "ttft": 0.1})
    assert fast.ttft == 0.1 and fast.tokens_per_s == PRESETS["realistic"]["tokens_per_s"]


def test_to_dict_round_trips() -> None:
    options = SimOptions.from_dict({"preset": "heavy_tail", "rpm_limit": 10, "seed": 3})
    assert SimOptions.from_dict(options.to_dict()) == options
