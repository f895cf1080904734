"""Breaking-point search: raise the open-loop rate step by step until the target misses its SLO.

Decisions without I/O: :class:`BreakingPointSearch` only says which rate to try next, given the results so far,
and :func:`find_breaking_point` is the thin loop that runs each step (a constant-rate open-loop run) and
reports back. The search multiplies the rate by ``factor`` while steps pass; after the first failing step it
bisects ``refine`` times between the last passing and the first failing rate. The answer is the highest rate
that passed — the "last good rate".

A step fails when its p95 latency (from the intended send times, so queueing counts) exceeds ``slo.p95_ms``, or
its error rate exceeds ``slo.error_rate``, or the tester itself fell behind its schedule by more than the p95
SLO (then the limit found is the tester's, and the report says so). The whole search is bounded by the same
time and request budgets as any run: it stops before a step that would not fit.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .drivers import LoadPlan, RunResult, run_load
from .record import Summary

__all__ = [
    "DEFAULT_SLO_ERROR_RATE",
    "DEFAULT_SLO_P95_MS",
    "BreakingPointSearch",
    "SearchResult",
    "Slo",
    "Step",
    "find_breaking_point",
]

DEFAULT_SLO_P95_MS = 1000.0
DEFAULT_SLO_ERROR_RATE = 0.01


@dataclass(frozen=True, slots=True)
class Slo:
    p95_ms: float = DEFAULT_SLO_P95_MS
    error_rate: float = DEFAULT_SLO_ERROR_RATE

    def violations(self, summary: Summary, send_lag_p95_ms: float = 0.0) -> tuple[str, ...]:
        """Why ``summary`` misses this SLO (empty: it meets it)."""
        found = []
        if summary.requests == 0:
            found.append("no request completed")
        if summary.error_rate > self.error_rate:
            found.append(f"error rate {summary.error_rate:.2%} > {self.error_rate:.2%}")
        p95 = summary.latency_ms.p95
        if summary.ok and (math.isnan(p95) or p95 > self.p95_ms):
            found.append(f"p95 {p95:.1f} ms > {self.p95_ms:g} ms")
        if send_lag_p95_ms > self.p95_ms:
            found.append(f"the load tester fell behind its schedule (send lag p95 {send_lag_p95_ms:.1f} ms)")
        return tuple(found)


@dataclass(frozen=True, slots=True)
class Step:
    rate: float
    run: RunResult
    violations: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.violations


@dataclass(slots=True)
class BreakingPointSearch:
    """Which rate to try next. Feed each step's outcome to :meth:`record`; ``next_rate`` None means done."""

    start_rate: float
    factor: float = 2.0
    max_rate: float = 100_000.0
    refine: int = 2
    steps: list[Step] = field(default_factory=list)
    last_good: Step | None = None
    first_bad: Step | None = None
    _refined: int = 0

    def __post_init__(self) -> None:
        if self.start_rate <= 0 or self.factor <= 1 or self.max_rate < self.start_rate or self.refine < 0:
            raise ValueError("need start_rate > 0, factor > 1, max_rate >= start_rate and refine >= 0")

    def next_rate(self) -> float | None:
        if not self.steps:
            return self.start_rate
        if self.first_bad is None:  # still climbing
            rate = min(self.steps[-1].rate * self.factor, self.max_rate)
            return None if rate <= self.steps[-1].rate else rate
        if self.last_good is None or self._refined >= self.refine:
            return None
        middle = (self.last_good.rate + self.first_bad.rate) / 2
        # Stop refining once the bracket is within 1% (or a request/s): more steps would not change the answer.
        if self.first_bad.rate - self.last_good.rate <= max(1.0, self.last_good.rate * 0.01):
            return None
        return middle

    def record(self, step: Step) -> None:
        if self.first_bad is not None:
            self._refined += 1
        self.steps.append(step)
        if step.ok:
            if self.last_good is None or step.rate > self.last_good.rate:
                self.last_good = step
        elif self.first_bad is None or step.rate < self.first_bad.rate:
            self.first_bad = step


@dataclass(frozen=True, slots=True)
class SearchResult:
    slo: Slo
    steps: tuple[Step, ...]
    last_good_rate: float | None  # None: even the start rate missed the SLO
    first_bad_rate: float | None  # None: the SLO held up to the last rate tried
    stopped_because: str


async def find_breaking_point(
    plan_for: Callable[[float, float, int], LoadPlan],
    search: BreakingPointSearch,
    slo: Slo,
    *,
    step_duration: float,
    max_duration: float,
    max_requests: int,
) -> SearchResult:
    """Run ``search`` to its end. ``plan_for(rate, duration, max_requests)`` builds one step's open-loop plan."""
    started = time.monotonic()
    sent = 0
    reason = ""
    while (rate := search.next_rate()) is not None:
        spent = time.monotonic() - started
        budget = max_requests - sent
        if spent + step_duration > max_duration:
            reason = f"the time budget ({max_duration:g} s) does not fit another step"
            break
        if budget < rate * step_duration:
            reason = f"the request budget ({max_requests:,}) does not fit another step"
            break
        plan = plan_for(rate, step_duration, budget)
        run = await run_load(plan)
        sent += run.started
        lag = run.send_lag_ms.p95 if run.send_lag_ms is not None and run.send_lag_ms.count else 0.0
        search.record(Step(rate=rate, run=run, violations=slo.violations(run.summary, lag)))
    else:
        if search.first_bad is None:
            reason = f"the SLO held up to the highest rate allowed ({search.max_rate:g}/s)"
        elif search.last_good is None:
            reason = "the first step already missed the SLO"
        else:
            reason = "the SLO was crossed"
    return SearchResult(
        slo=slo,
        steps=tuple(search.steps),
        last_good_rate=search.last_good.rate if search.last_good else None,
        first_bad_rate=search.first_bad.rate if search.first_bad else None,
        stopped_because=reason,
    )
