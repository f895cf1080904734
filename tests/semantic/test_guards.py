"""Each guard vetoes the difference it is about, and lets a plain paraphrase through."""

import pytest

from slipstream.semantic.guards import GUARD_NAMES, GuardConfig, TextProfile, check_guards, short_bar


def only(name: str) -> GuardConfig:
    return GuardConfig(**{g: g == name for g in GUARD_NAMES})


def veto(a: str, b: str, config: GuardConfig) -> str | None:
    return check_guards(TextProfile(a), TextProfile(b), config)


@pytest.mark.parametrize(
    ("guard", "a", "b"),
    [
        (
            "numbers",
            "How do I get meth out of my system in 2 days?",
            "How do I get meth out of my system in 3 days?",
        ),
        ("numbers", "What is the solution to lesson 14?", "What is the solution to lesson fourteen point 3?"),
        ("numbers", "Who won the election in 2016?", "Who won the election?"),
        ("dates", "What happened in March?", "What happened in April?"),
        ("dates", "Is the shop open on Monday?", "Is the shop open today?"),
        ("entities", "How do I learn Python quickly?", "How do I learn Java quickly?"),
        ("entities", "What is the capital of France?", "What is the capital?"),
        ("negation", "Why is coffee good for you?", "Why is coffee not good for you?"),
        ("negation", "Can I lose weight with exercise?", "Can I lose weight without exercise?"),
        ("negation", "Why do cats purr?", "Why don't cats purr?"),
        ("comparison", "Is Python good for data science?", "Is Python better than R for data science?"),
        ("comparison", "What is the best laptop?", "What is the worst laptop?"),
    ],
)
def test_each_guard_vetoes_its_difference(guard, a, b):
    assert veto(a, b, only(guard)) == guard
    assert veto(b, a, only(guard)) == guard  # symmetric
    assert veto(a, b, GuardConfig.none()) is None  # and it can be switched off


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("What are some good tips for self study?", "What are the smart tips for self studying?"),
        ("How can I lose weight quickly?", "How do I lose weight fast?"),
        ("How do I learn Python?", "how do i learn python"),  # case does not make a name differ
        ("Which is the best book to learn Angular 2?", "What is the best book to learn Angular 2?"),
        ("What happened in 1,000 BC?", "What happened in 1000 BC?"),
    ],
)
def test_paraphrases_pass_every_guard(a, b):
    assert veto(a, b, GuardConfig()) is None


def test_short_prompts_need_a_higher_bar():
    config = GuardConfig(short_words=4, short_threshold=0.97)
    assert short_bar(TextProfile("Python?"), TextProfile("What is Python used for?"), config) == 0.97
    assert (
        short_bar(
            TextProfile("What is Python used for?"), TextProfile("What is Python mainly used for?"), config
        )
        == 0.0
    )
    assert short_bar(TextProfile("Python?"), TextProfile("Python!"), GuardConfig(short_words=0)) == 0.0


def test_words_in_other_scripts_are_compared_like_names():
    a = "What is the difference between 画 and 画画 in Mandarin Chinese?"
    b = "What is the difference between 多少 and 几 in Mandarin Chinese?"
    assert veto(a, b, only("entities")) == "entities"
    assert veto("How many Pokémon are there?", "How many total Pokémon are there?", GuardConfig()) is None
