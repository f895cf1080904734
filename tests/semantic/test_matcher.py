"""The matcher's decision and the thresholds that feedback raises (no model: vectors are not needed here)."""

import numpy as np

from slipstream.semantic.guards import GuardConfig, TextProfile
from slipstream.semantic.index import Entry
from slipstream.semantic.matcher import FeedbackThresholds, MatchPolicy, decide


def entry(text: str) -> Entry:
    return Entry(f"default:chat:{abs(hash(text))}", "p", text, 0.0, 1e12, np.zeros(4, dtype=np.float32))


def test_the_first_candidate_over_the_threshold_that_passes_the_guards_is_served():
    learn_java = entry("How do I learn Java fast?")
    learn_python = entry("How can I learn Python fast?")
    query = TextProfile("How do I learn Python fast?")
    decision = decide(query, [(learn_java, 0.97), (learn_python, 0.96)], MatchPolicy(threshold=0.9))
    assert decision.entry is learn_python
    assert decision.similarity == 0.96
    assert decision.reason == "hit"


def test_below_the_threshold_nothing_is_served_and_the_reason_is_kept():
    query = TextProfile("How do I learn Python fast?")
    miss = decide(query, [(entry("How can I learn Python fast?"), 0.89)], MatchPolicy(threshold=0.9))
    assert (miss.entry, miss.similarity, miss.reason) == (None, 0.89, "threshold")
    vetoed = decide(query, [(entry("How do I learn Java fast?"), 0.97)], MatchPolicy(threshold=0.9))
    assert (vetoed.entry, vetoed.reason) == (None, "entities")
    assert decide(query, [], MatchPolicy()).reason == "empty"


def test_an_explicit_threshold_overrides_the_policy():
    query = TextProfile("How do I learn Python fast?")
    candidates = [(entry("How can I learn Python fast?"), 0.95)]
    assert decide(query, candidates, MatchPolicy(threshold=0.9), threshold=0.96).entry is None


def test_short_prompts_are_held_to_their_bar():
    policy = MatchPolicy(threshold=0.9, guards=GuardConfig(short_words=4, short_threshold=0.98))
    decision = decide(TextProfile("Python tips?"), [(entry("Python tricks?"), 0.95)], policy)
    assert (decision.entry, decision.reason) == (None, "short")


def test_a_bad_report_raises_the_scope_threshold_past_it():
    thresholds = FeedbackThresholds(target_precision=0.95)
    for score in (0.97, 0.98, 0.99):
        thresholds.served("t/sim", score)
    thresholds.served("t/sim", 0.96)
    assert thresholds.threshold("t/sim", 0.95) == 0.95  # no complaint yet
    thresholds.bad("t/sim", 0.96)
    raised = thresholds.threshold("t/sim", 0.95)
    assert 0.96 < raised <= 0.962
    assert thresholds.threshold("other/sim", 0.95) == 0.95  # other scopes are untouched


def test_good_hits_above_a_bad_one_bring_the_threshold_back_down_but_never_below_config():
    thresholds = FeedbackThresholds(target_precision=0.95)
    thresholds.served("s", 0.96)
    thresholds.bad("s", 0.96)
    assert thresholds.threshold("s", 0.9) > 0.96
    for _ in range(40):
        thresholds.served("s", 0.99)
    assert thresholds.threshold("s", 0.9) == 0.9
    assert thresholds.threshold("s", 0.93) == 0.93
