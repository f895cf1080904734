"""Deciding whether a stored prompt answers a new one: threshold, guards, and thresholds that learn.

The index hands over the partition's nearest entries (``top_k``, best first). The matcher walks them in order
and serves the first that clears the bar and passes every enabled guard:

1. cosine similarity at least the scope's threshold (below it, nothing further down the list can clear it);
2. a short prompt's raised bar (``guards.short_bar``);
3. the guards (``guards.check_guards``). A vetoed candidate does not end the search: the next one may be the
   same question without the differing number or name.

No I/O, no clock: the layer gives it the candidates and carries out the decision.

Thresholds are per model group (``MatchPolicy.threshold``, from config or ``slipstream semantic calibrate``),
and adapt per scope (namespace + group) from feedback. ``FeedbackThresholds`` counts the similarity of every hit
it served and of every hit reported bad, and raises the scope's threshold to the lowest value at which the
hits above it have met ``target_precision`` (unreported hits count as good). One bad report at 0.96 after
three good hits above it moves a 0.95 threshold just past 0.96; later good hits can bring it back down, never
below the configured value. The state lives in memory, per instance.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .guards import GuardConfig, TextProfile, check_guards, short_bar

if TYPE_CHECKING:
    from .index import Entry

__all__ = ["Decision", "FeedbackThresholds", "MatchPolicy", "decide"]

DEFAULT_THRESHOLD = 0.97
DEFAULT_TOP_K = 4
DEFAULT_TARGET_PRECISION = 0.95
_BINS = 1000  # similarity resolution of the feedback counts: 0.001


@dataclass(frozen=True, slots=True)
class MatchPolicy:
    """How one model group matches. ``threshold`` is a cosine similarity in [0, 1]."""

    threshold: float = DEFAULT_THRESHOLD
    guards: GuardConfig = field(default_factory=GuardConfig)
    top_k: int = DEFAULT_TOP_K
    adaptive: bool = True  # let feedback raise this group's threshold per namespace
    target_precision: float = DEFAULT_TARGET_PRECISION


@dataclass(frozen=True, slots=True)
class Decision:
    """The entry to serve (or ``None``), the best similarity seen, and why the best candidate was refused."""

    entry: Entry | None
    similarity: float | None
    reason: str  # "hit", "empty", "threshold", "short" or a guard's name


def decide(
    query: TextProfile,
    candidates: list[tuple[Entry, float]],
    policy: MatchPolicy,
    threshold: float | None = None,
) -> Decision:
    """Serve the first candidate that clears ``threshold`` (default: the policy's) and every guard."""
    if not candidates:
        return Decision(None, None, "empty")
    bar = policy.threshold if threshold is None else threshold
    best = candidates[0][1]
    reason = "threshold"
    for entry, similarity in candidates:
        if similarity < bar:
            break
        if similarity < short_bar(query, entry.profile, policy.guards):
            reason = reason if reason != "threshold" else "short"
            continue
        veto = check_guards(query, entry.profile, policy.guards)
        if veto is not None:
            reason = reason if reason != "threshold" else veto
            continue
        return Decision(entry, similarity, "hit")
    return Decision(None, best, reason)


class _ScopeCounts:
    __slots__ = ("bad", "served", "threshold")

    def __init__(self) -> None:
        self.served = [0] * (_BINS + 1)
        self.bad = [0] * (_BINS + 1)
        self.threshold: float | None = None  # cached; None = recompute


class FeedbackThresholds:
    """Per-scope thresholds raised by bad-hit reports (see the module docstring)."""

    def __init__(self, target_precision: float = DEFAULT_TARGET_PRECISION) -> None:
        self.target_precision = target_precision
        self._scopes: dict[str, _ScopeCounts] = {}

    def threshold(self, scope: str, base: float) -> float:
        counts = self._scopes.get(scope)
        if counts is None:
            return base
        if counts.threshold is None:
            counts.threshold = self._solve(counts)
        return max(base, counts.threshold)

    def served(self, scope: str, similarity: float) -> None:
        counts = self._scopes.get(scope)
        if counts is None:
            counts = self._scopes[scope] = _ScopeCounts()
        counts.served[_bin(similarity)] += 1
        if any(counts.bad):
            counts.threshold = None

    def bad(self, scope: str, similarity: float) -> None:
        counts = self._scopes.get(scope)
        if counts is None:
            counts = self._scopes[scope] = _ScopeCounts()
            counts.served[_bin(similarity)] += 1  # reported without having been counted as served here
        counts.bad[_bin(similarity)] += 1
        counts.threshold = None

    def _solve(self, counts: _ScopeCounts) -> float:
        """The lowest similarity t such that hits at or above t were good often enough."""
        served = bad = 0
        answer = 1.0 + 1.0 / _BINS  # nothing qualifies: above every possible similarity
        for i in range(_BINS, -1, -1):
            served += counts.served[i]
            bad += counts.bad[i]
            if served and (served - bad) / served < self.target_precision:
                break
            answer = i / _BINS
        return answer


def _bin(similarity: float) -> int:
    return min(_BINS, max(0, round(similarity * _BINS)))
