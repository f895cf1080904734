"""Requests-per-minute and tokens-per-minute arithmetic: pure, with the clock passed in as ``now``.

A ``SlidingWindow`` keeps at most ``limit`` units (requests, or tokens) in any ``window`` seconds: a log of
commits, each counting until it is ``window`` seconds old. Commits less than ``granularity`` apart share an entry,
which counts until its *last* commit is a window old, so every unit counts for at least a full window (the limit
holds over every window, not only aligned ones) and memory stays bounded (``window / granularity`` entries, 60,000
for a minute) whatever the traffic. Grouping costs at most ``granularity`` of extra wait per window: nothing a
saturated limiter would notice.

Why not a token bucket (GCRA): with a burst of ``limit`` it admits twice the limit in a fresh minute, which is not
what "60 requests per minute" means to a user; smoothing the flow against a provider's real limit is the
adaptive rate's job (``slipstream.limits.adaptive``), not the window's.

Asking never changes anything: ``try_acquire(cost, now)`` answers 0.0 (it fits now) or the seconds until it would
fit; ``commit(cost, now)`` records it. A request passes several limits (RPM, TPM, the adaptive rate), and one
refused by any of them must consume none: ``acquire_all`` checks every limit, then commits to all or none.
The clock must be monotonic (``loop.time`` is).
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Protocol

__all__ = [
    "DEFAULT_GRANULARITY",
    "DEFAULT_WINDOW",
    "Budget",
    "SlidingWindow",
    "acquire_all",
    "wait_all",
]

DEFAULT_WINDOW = 60.0  # seconds: provider limits are per minute
DEFAULT_GRANULARITY = 0.001  # seconds: commits closer than this share one entry of the log


class Budget(Protocol):
    """Anything a request must pass: a window, the adaptive rate. ``cost`` is in the budget's own unit."""

    def try_acquire(self, cost: int, now: float) -> float: ...

    def commit(self, cost: int, now: float) -> None: ...


class _Entry:
    __slots__ = ("cost", "index", "last")

    def __init__(self, index: int, now: float) -> None:
        self.index = index
        self.cost = 0
        self.last = now  # the latest commit grouped here: the entry counts until last + window


class SlidingWindow:
    """At most ``limit`` units in any ``window`` seconds."""

    __slots__ = ("_by_index", "_entries", "_total", "_width", "limit", "window")

    def __init__(
        self, limit: int, window: float = DEFAULT_WINDOW, *, granularity: float = DEFAULT_GRANULARITY
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if not window > 0 or not 0 < granularity <= window:
            raise ValueError("window must be positive and granularity between 0 and the window")
        self.limit = limit  # may be changed at run time; the units already counted stay counted
        self.window = window
        self._width = granularity
        self._entries: deque[_Entry] = deque()  # the log, oldest first; expiries rise along it
        self._by_index: dict[int, _Entry] = {}
        self._total = 0

    def used(self, now: float) -> int:
        """Units that still count at ``now``."""
        total = self._total
        for entry in self._entries:
            if entry.last + self.window > now:
                break
            total -= entry.cost
        return total

    def try_acquire(self, cost: int, now: float) -> float:
        """0.0 if ``cost`` more units fit at ``now``, else the seconds until they would. Changes nothing.

        A cost above the whole limit fits an empty window (and is charged in full), so a request bigger than the
        budget waits for it to drain instead of waiting forever.
        """
        if cost <= 0:
            return 0.0
        excess = self.used(now) + min(cost, self.limit) - self.limit
        if excess <= 0:
            return 0.0
        freed = 0  # the walk ends after the few oldest entries that cover the excess
        for entry in self._entries:
            expiry = entry.last + self.window
            if expiry <= now:
                continue
            freed += entry.cost
            if freed >= excess:
                return expiry - now
        raise AssertionError("unreachable: an empty log has room for a cost of at most the limit")

    def commit(self, cost: int, now: float) -> None:
        """Count ``cost`` units at ``now``, whether or not they fit (``try_acquire`` is the check)."""
        self._prune(now)
        if cost <= 0:
            return
        index = math.floor(now / self._width)
        entries = self._entries
        if entries and index <= entries[-1].index:
            # The newest entry; should the clock step back, it is still the one that lives longest: the safe side.
            entry = entries[-1]
            entry.last = max(entry.last, now)
        else:
            entry = self._by_index[index] = _Entry(index, now)
            entries.append(entry)
        entry.cost += cost
        self._total += cost

    def settle(self, estimated: int, actual: int, now: float, *, committed_at: float) -> None:
        """Replace a cost of ``estimated`` committed at ``committed_at`` by the ``actual`` one.

        The correction goes to the entry the estimate went to, so it stops counting when the estimate would
        have: a refund put into a newer entry would undercount once the old entry expired. A cost whose entry
        has already expired no longer counts, and needs no correction.
        """
        self._prune(now)
        entry = self._by_index.get(math.floor(committed_at / self._width))
        if entry is None:
            return
        after = max(0, entry.cost + actual - estimated)
        self._total += after - entry.cost
        entry.cost = after

    def _prune(self, now: float) -> None:
        entries = self._entries
        while entries and entries[0].last + self.window <= now:
            entry = entries.popleft()
            del self._by_index[entry.index]
            self._total -= entry.cost

    def __repr__(self) -> str:
        return f"SlidingWindow(limit={self.limit}, window={self.window:g}, total={self._total})"


def wait_all(budgets: Sequence[Budget], costs: Sequence[int], now: float) -> float:
    """The seconds until every budget takes its cost (0.0: now). Changes nothing.

    Budgets only free up as time passes, so the longest single wait is when all of them fit together.
    """
    wait = 0.0
    for budget, cost in zip(budgets, costs, strict=True):
        wait = max(wait, budget.try_acquire(cost, now))
    return wait


def acquire_all(budgets: Sequence[Budget], costs: Sequence[int], now: float) -> float:
    """Two-phase acquisition: commit every cost if every budget takes it (0.0), else commit none (the wait)."""
    wait = wait_all(budgets, costs, now)
    if wait > 0.0:
        return wait
    for budget, cost in zip(budgets, costs, strict=True):
        budget.commit(cost, now)
    return 0.0
