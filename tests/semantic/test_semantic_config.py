"""The `semantic` section of a model group: off by default, validated with file, line and field."""

import pytest

from slipstream.config import ConfigError, parse_config
from slipstream.semantic.guards import GuardConfig

GROUP = "    deployments: [{provider: sim, model: sim-1}]\n"


def test_off_unless_enabled():
    config = parse_config("model_groups:\n  sim:\n" + GROUP, environ={})
    assert config.model_groups["sim"].policy.semantic is None
    config = parse_config("model_groups:\n  sim:\n    semantic: {threshold: 0.9}\n" + GROUP, environ={})
    assert config.model_groups["sim"].policy.semantic is None


def test_settings_are_read():
    text = (
        "model_groups:\n  emb:\n" + GROUP + "  sim:\n"
        "    semantic: {enabled: true, threshold: 0.93, top_k: 8, adaptive: false, embedder: emb,\n"
        "               guards: {numbers: false, short_words: 3, short_threshold: 0.99}}\n" + GROUP
    )
    semantic = parse_config(text, environ={}).model_groups["sim"].policy.semantic
    assert semantic is not None
    assert (semantic.threshold, semantic.top_k, semantic.adaptive, semantic.embedder) == (
        0.93,
        8,
        False,
        "emb",
    )
    assert semantic.guards == GuardConfig(numbers=False, short_words=3, short_threshold=0.99)


def test_defaults_are_precision_first():
    text = "model_groups:\n  sim:\n    semantic: {enabled: true}\n" + GROUP
    semantic = parse_config(text, environ={}).model_groups["sim"].policy.semantic
    assert semantic is not None
    assert semantic.threshold == 0.97
    assert semantic.guards == GuardConfig()


@pytest.mark.parametrize(
    ("section", "problem"),
    [
        (
            "{enabled: true, threshold: 1.5}",
            "model_groups.sim.semantic.threshold: must be a cosine similarity",
        ),
        (
            "{enabled: true, embedder: nowhere}",
            "model_groups.sim.semantic.embedder: expected 'local' or the name",
        ),
        ("{enabled: true, guards: {names: true}}", "model_groups.sim.semantic.guards.names: unknown field"),
        ("{enabled: true, top_k: 0}", "model_groups.sim.semantic.top_k: must be between 1 and 100"),
    ],
)
def test_problems_name_the_line_and_field(section, problem):
    text = f"model_groups:\n  sim:\n    semantic: {section}\n" + GROUP
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="s.yaml", environ={})
    assert any(p.startswith("s.yaml:3: ") and problem in p for p in info.value.problems), info.value.problems


def test_the_semantic_cache_needs_the_exact_cache():
    text = "cache: {enabled: false}\nmodel_groups:\n  sim:\n    semantic: {enabled: true}\n" + GROUP
    with pytest.raises(
        ConfigError, match=r"cache\.enabled: the semantic cache of a model group needs the exact"
    ):
        parse_config(text, environ={})
