"""Choosing a threshold from labelled pairs, by replay: the way the cache is used, not pair by pair.

Input: JSON lines ``{"a": question, "b": question, "duplicate": bool}``. Replay stores every ``a`` (the
answers the cache holds) and asks every ``b`` that is not itself stored verbatim (those are exact-tier hits;
the semantic tier never sees them). Each asked question gets the matcher's decision at every threshold.

A hit is *correct* when the entry it returns is a duplicate of the question asked (``Judge``): the two are
equal after case and punctuation folding, or are joined through duplicate labels anywhere in the file (the
union of all duplicate pairs) — unless that exact pair is labelled not-duplicate. Labels are incomplete, so
this under-counts correct hits; it does so equally for every method compared on the same sample.

Precision = correct hits / hits. Recall = correct hits / asked questions that have a correct entry stored.
``calibrate`` picks the threshold with the highest recall whose precision meets the target (with at least
``min_hits`` hits, so a lucky handful does not decide), optionally on one part of the pairs while reporting
on the part held back.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

from .guards import GuardConfig, TextProfile, check_guards, fold, short_bar

__all__ = [
    "CurvePoint",
    "Judge",
    "Pair",
    "Replay",
    "ReplayResult",
    "choose_threshold",
    "load_pairs",
    "split_pairs",
]

DEFAULT_THRESHOLDS = tuple(round(0.80 + i * 0.0025, 4) for i in range(81))  # 0.80 ... 1.00
DEFAULT_MIN_HITS = 10
_CHUNK = 2048

Vectors = npt.NDArray[np.float32]


@dataclass(frozen=True, slots=True)
class Pair:
    a: str
    b: str
    duplicate: bool


def load_pairs(path: str | Path) -> list[Pair]:
    pairs = []
    for n, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = orjson.loads(line)
            pairs.append(Pair(str(row["a"]), str(row["b"]), bool(row["duplicate"])))
        except (orjson.JSONDecodeError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{n}: expected {{'a', 'b', 'duplicate'}}: {exc}") from None
    return pairs


def split_pairs(pairs: Sequence[Pair], fraction: float, seed: int = 7) -> tuple[list[Pair], list[Pair]]:
    """A seeded random split: (the first ``fraction`` of the pairs, the rest)."""
    order = list(range(len(pairs)))
    random.Random(seed).shuffle(order)
    cut = int(len(order) * fraction)
    return [pairs[i] for i in sorted(order[:cut])], [pairs[i] for i in sorted(order[cut:])]


class Judge:
    """The correct-hit rule of the dev data (see the module docstring)."""

    def __init__(self, pairs: Iterable[Pair]) -> None:
        self._parent: dict[str, str] = {}
        self._not_duplicate: set[frozenset[str]] = set()
        duplicate: set[frozenset[str]] = set()
        for pair in pairs:
            a, b = fold(pair.a), fold(pair.b)
            if pair.duplicate:
                self._parent[self._root(a)] = self._root(b)
                duplicate.add(frozenset((a, b)))
            else:
                self._not_duplicate.add(frozenset((a, b)))
        self._not_duplicate -= duplicate  # a pair labelled both ways is not vetoed

    def group(self, text: str) -> str:
        return self._root(fold(text))

    def correct(self, asked: str, returned: str) -> bool:
        a, b = fold(asked), fold(returned)
        if a == b:
            return True
        if frozenset((a, b)) in self._not_duplicate:
            return False
        return self._root(a) == self._root(b)

    def _root(self, x: str) -> str:
        parent = self._parent
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x


@dataclass(frozen=True, slots=True)
class CurvePoint:
    threshold: float
    hits: int
    correct: int
    answerable: int

    @property
    def precision(self) -> float:
        return self.correct / self.hits if self.hits else 0.0

    @property
    def recall(self) -> float:
        return self.correct / self.answerable if self.answerable else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "hits": self.hits,
            "correct": self.correct,
            "precision": round(self.precision, 4),
            "recall": round(self.recall, 4),
        }


@dataclass(slots=True)
class ReplayResult:
    """Per asked question: its top-k candidates' similarities, whether each passes the guards, the bar each
    needs (the short-prompt bar) and whether each is a correct answer; and whether any stored entry is."""

    similarity: npt.NDArray[np.float32]  # (queries, k), best first
    passes: npt.NDArray[np.bool_]
    bar: npt.NDArray[np.float32]
    correct: npt.NDArray[np.bool_]
    answerable: npt.NDArray[np.bool_]

    def point(self, threshold: float, rows: npt.NDArray[np.bool_] | None = None) -> CurvePoint:
        """What the matcher does at ``threshold``: the first candidate that clears it and its own bar and
        passes the guards is served (``matcher.decide``)."""
        ok = self.passes & (self.similarity >= np.maximum(threshold, self.bar))
        served = ok.any(axis=1)
        first = ok.argmax(axis=1)
        right = served & self.correct[np.arange(len(first)), first]
        if rows is not None:
            served, right, answerable = served & rows, right & rows, self.answerable & rows
        else:
            answerable = self.answerable
        return CurvePoint(threshold, int(served.sum()), int(right.sum()), int(answerable.sum()))

    def curve(
        self, thresholds: Sequence[float] = DEFAULT_THRESHOLDS, rows: npt.NDArray[np.bool_] | None = None
    ) -> list[CurvePoint]:
        return [self.point(t, rows) for t in thresholds]


class Replay:
    """Stores the ``a`` side of ``pairs``, asks the ``b`` side, with vectors from ``embed``."""

    def __init__(
        self, pairs: Sequence[Pair], embed: Callable[[list[str]], Vectors], *, judge: Judge | None = None
    ) -> None:
        self.judge = judge or Judge(pairs)
        self.entries = sorted({p.a for p in pairs})
        stored = set(self.entries)
        self.queries = sorted({p.b for p in pairs if p.b not in stored})
        self.entry_vectors = embed(self.entries)
        self.query_vectors = embed(self.queries)
        by_group: dict[str, list[str]] = {}
        for entry in self.entries:
            by_group.setdefault(self.judge.group(entry), []).append(entry)
        self._by_group = by_group
        self._profiles: dict[str, TextProfile] = {}

    def profile(self, text: str) -> TextProfile:
        found = self._profiles.get(text)
        if found is None:
            found = self._profiles[text] = TextProfile(text)
        return found

    def neighbours(self, k: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        """Each query's ``k`` nearest entries (exact search) and their cosine similarities, best first."""
        rows = len(self.queries)
        top = np.zeros((rows, k), dtype=np.int64)
        sims = np.zeros((rows, k), dtype=np.float32)
        for start in range(0, rows, _CHUNK):
            scores = self.query_vectors[start : start + _CHUNK] @ self.entry_vectors.T
            part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
            part_scores = np.take_along_axis(scores, part, axis=1)
            order = np.argsort(-part_scores, axis=1)
            top[start : start + _CHUNK] = np.take_along_axis(part, order, axis=1)
            sims[start : start + _CHUNK] = np.take_along_axis(part_scores, order, axis=1)
        return top, sims

    def run(self, guards: GuardConfig, k: int) -> ReplayResult:
        if not self.entries or not self.queries:
            raise ValueError("the pairs leave nothing to replay: no stored prompt, or no question to ask")
        k = min(k, len(self.entries))
        top, sims = self.neighbours(k)
        passes = np.zeros(top.shape, dtype=bool)
        bars = np.zeros(top.shape, dtype=np.float32)
        correct = np.zeros(top.shape, dtype=bool)
        answerable = np.zeros(len(self.queries), dtype=bool)
        for i, query in enumerate(self.queries):
            qp = self.profile(query)
            for j in range(k):
                entry = self.entries[top[i, j]]
                ep = self.profile(entry)
                passes[i, j] = check_guards(qp, ep, guards) is None
                bars[i, j] = short_bar(qp, ep, guards)
                correct[i, j] = self.judge.correct(query, entry)
            answerable[i] = any(
                self.judge.correct(query, e) for e in self._by_group.get(self.judge.group(query), ())
            )
            answerable[i] |= bool(correct[i].any())  # equal after folding, though not in a labelled group
        return ReplayResult(sims, passes, bars, correct, answerable)

    def query_rows(self, pairs: Iterable[Pair]) -> npt.NDArray[np.bool_]:
        """A mask of the asked questions that come from ``pairs`` (for reporting on a held-back part)."""
        wanted = {p.b for p in pairs}
        return np.array([q in wanted for q in self.queries], dtype=bool)


def choose_threshold(
    curve: Sequence[CurvePoint], target_precision: float, *, min_hits: int = DEFAULT_MIN_HITS
) -> CurvePoint | None:
    """The point with the highest recall whose precision meets the target (``None``: no threshold does)."""
    good = [p for p in curve if p.hits >= min_hits and p.precision >= target_precision]
    if not good:
        return None
    return max(good, key=lambda p: (p.recall, -p.threshold))
