"""Calibration by replay: the correct-hit rule, the curve, the chosen threshold, and the CLI on a small
committed pairs file (real model)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import orjson
from click.testing import CliRunner

from slipstream.cli import main
from slipstream.semantic.calibrate import CurvePoint, Judge, Pair, ReplayResult, choose_threshold, load_pairs

PAIRS = Path(__file__).parent / "data" / "pairs.jsonl"


def test_the_judge_follows_the_data_readme():
    judge = Judge(
        [
            Pair("How do I lose weight?", "How can I lose weight?", True),
            Pair("How can I lose weight?", "What is the fastest way to lose weight?", True),
            Pair("How do I lose weight?", "How do I gain weight?", False),
            Pair("How do I lose weight?", "What is the fastest way to lose weight?", False),
        ]
    )
    assert judge.correct("how do i lose weight", "How do I lose weight?")  # equal after folding
    assert judge.correct("How do I lose weight?", "How can I lose weight?")  # labelled
    assert not judge.correct("How do I lose weight?", "How do I gain weight?")
    # Joined through the labels, but this exact pair is labelled not-duplicate: the label wins.
    assert not judge.correct("How do I lose weight?", "What is the fastest way to lose weight?")
    assert judge.correct("How can I lose weight?", "What is the fastest way to lose weight?")


def test_the_replay_serves_the_first_candidate_that_clears_the_bar_and_the_guards():
    result = ReplayResult(
        similarity=np.array([[0.97, 0.95], [0.93, 0.5], [0.99, 0.98]], dtype=np.float32),
        passes=np.array([[False, True], [True, True], [True, True]]),
        bar=np.zeros((3, 2), dtype=np.float32),
        correct=np.array([[False, True], [True, False], [False, False]]),
        answerable=np.array([True, True, False]),
    )
    at_94 = result.point(0.94)
    assert (at_94.hits, at_94.correct, at_94.answerable) == (2, 1, 2)  # query 0 -> its 2nd, query 2 -> wrong
    at_90 = result.point(0.90)
    assert (at_90.hits, at_90.correct) == (3, 2)
    assert at_90.precision == 2 / 3 and at_90.recall == 1.0
    assert result.point(0.94, rows=np.array([True, False, False])).hits == 1


def test_choose_threshold_takes_the_highest_recall_that_meets_the_target():
    curve = [CurvePoint(0.8, 100, 80, 100), CurvePoint(0.9, 50, 48, 100), CurvePoint(0.95, 20, 20, 100)]
    assert choose_threshold(curve, 0.95, min_hits=10).threshold == 0.9
    assert choose_threshold(curve, 0.95, min_hits=30).threshold == 0.9
    assert choose_threshold(curve, 0.99, min_hits=30) is None


def test_load_pairs_names_the_bad_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"a": "x", "b": "y", "duplicate": true}\n{"a": "x"}\n')
    try:
        load_pairs(bad)
    except ValueError as exc:
        assert "bad.jsonl:2" in str(exc)
    else:
        raise AssertionError("a line without b was accepted")


def test_the_cli_picks_a_threshold_that_meets_the_target_on_held_back_pairs(embedder):
    args = [
        "semantic",
        "calibrate",
        str(PAIRS),
        "--target-precision",
        "0.95",
        "--holdout",
        "0.5",
        "--min-hits",
        "3",
    ]
    result = CliRunner().invoke(main, [*args, "--json"])
    assert result.exit_code == 0, result.output
    report = orjson.loads(result.output)
    assert report["chosen"]["precision"] >= 0.95
    assert report["held_back"]["precision"] >= 0.95
    assert report["held_back"]["recall"] > 0.5
    assert len(report["curve"]) > 10

    text = CliRunner().invoke(main, args)
    assert text.exit_code == 0
    assert "threshold" in text.output and "precision" in text.output and "held-back" in text.output


def test_the_cli_says_so_when_no_threshold_reaches_the_target(embedder, tmp_path):
    hopeless = tmp_path / "hopeless.jsonl"
    rows = [
        {"a": "Why is coffee good for you?", "b": "Why is coffee great for you?", "duplicate": False},
        {"a": "How do I cook rice?", "b": "How do I cook rice well?", "duplicate": False},
    ]
    hopeless.write_bytes(b"\n".join(orjson.dumps(r) for r in rows))
    result = CliRunner().invoke(
        main, ["semantic", "calibrate", str(hopeless), "--min-hits", "1", "--no-guards"]
    )
    assert result.exit_code == 1
    assert "no threshold reaches precision 0.95" in result.output
