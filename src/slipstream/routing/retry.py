"""Retry decisions: which failures to retry, how long to wait, and how many retries the whole process may spend.

Nothing here sleeps or reads a clock of its own: ``RetryPolicy.decide`` returns ``Retry(delay)`` or
``GiveUp(reason)`` and a small driver carries it out, with the clock and the RNG injected (tenacity's shape)::

    attempt = 1
    budget.record_request()                          # once per logical request, not per attempt
    while True:
        try:
            return await send()
        except SlipstreamError as exc:
            step = policy.decide(attempt, exc, now=clock(), deadline=call.deadline, rng=rng)
            if isinstance(step, GiveUp) or not budget.try_spend():
                raise
            await sleep(step.delay)
            attempt += 1

The budget matters as much as the policy: when an upstream is down, per-request retries alone multiply the load
on it by ``max_attempts``; the budget caps retries at a fraction of the traffic across all requests.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

from ..errors import UpstreamConnectionError, UpstreamProtocolError, UpstreamStatusError, UpstreamTimeout

__all__ = [
    "DEFAULT_BASE_DELAY",
    "DEFAULT_MAX_ATTEMPTS",
    "DEFAULT_MAX_DELAY",
    "DEFAULT_MAX_RETRY_AFTER",
    "DEFAULT_RETRY_STATUSES",
    "GiveUp",
    "Retry",
    "RetryBudget",
    "RetryPolicy",
    "SlidingWindow",
]

DEFAULT_MAX_ATTEMPTS = 3  # attempts in all, the first one included
DEFAULT_BASE_DELAY = 0.25
DEFAULT_MAX_DELAY = 8.0
# A Retry-After longer than this is not waited out: the caller is better served by another deployment or an error.
DEFAULT_MAX_RETRY_AFTER = 60.0
# 408 timeout, 409 conflict (OpenAI's "try again"), 429 rate limited, 5xx, 529 Anthropic's "overloaded".
DEFAULT_RETRY_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504, 529})

DEFAULT_BUDGET_RATIO = 0.2
DEFAULT_BUDGET_MIN_PER_SECOND = 1.0
DEFAULT_BUDGET_WINDOW = 10.0
DEFAULT_BUCKETS = 10

# Failures that say nothing about the request itself: the same request may well succeed a moment later.
_TRANSIENT = (UpstreamConnectionError, UpstreamTimeout, UpstreamProtocolError)


@dataclass(frozen=True, slots=True)
class Retry:
    """Try again after ``delay`` seconds."""

    delay: float


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Stop and surface the failure; ``reason`` is for logs and spans."""

    reason: str


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """When and how long to retry one request. Attempts are counted from 1 and include the first one."""

    max_attempts: int = DEFAULT_MAX_ATTEMPTS
    base_delay: float = DEFAULT_BASE_DELAY
    max_delay: float = DEFAULT_MAX_DELAY
    retry_statuses: frozenset[int] = DEFAULT_RETRY_STATUSES
    # None: wait out any Retry-After (the deadline still caps it).
    max_retry_after: float | None = DEFAULT_MAX_RETRY_AFTER

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if not 0 <= self.base_delay <= self.max_delay:
            raise ValueError(f"need 0 <= base_delay <= max_delay, got {self.base_delay} and {self.max_delay}")
        if self.max_retry_after is not None and self.max_retry_after < 0:
            raise ValueError(f"max_retry_after must not be negative, got {self.max_retry_after}")

    def is_retryable(self, exc: BaseException) -> bool:
        """Upstream failures that may pass: connection errors, timeouts, malformed bodies and the retry statuses.

        Never the caller's own faults (``InvalidRequest``, ``AuthenticationError``, ``ModelNotFound``, an upstream
        400/401/403/404/413/422...): the same request would fail the same way. Not our own ``RateLimited`` either,
        which is a local limit that a retry would only hit again.
        """
        if isinstance(exc, UpstreamStatusError):
            return exc.upstream_status in self.retry_statuses
        return isinstance(exc, _TRANSIENT)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """The wait after failed attempt ``attempt``: exponential backoff with full jitter.

        Uniform over ``[0, min(max_delay, base_delay * 2**(attempt-1))]``. Full jitter (rather than a fixed delay
        plus some noise) spreads the retries of many clients that failed together, so they do not come back together.
        """
        exponent = max(attempt - 1, 0)
        # Cap the exponent before raising 2 to it: a large attempt number must not overflow a float.
        ceiling = self.max_delay if exponent >= 64 else min(self.max_delay, self.base_delay * 2.0**exponent)
        return rng.uniform(0.0, ceiling)

    def decide(
        self, attempt: int, exc: BaseException, *, now: float, deadline: float | None, rng: random.Random
    ) -> Retry | GiveUp:
        """What to do after attempt number ``attempt`` failed with ``exc``.

        The delay is the jittered backoff, raised to the failure's ``retry_after`` when it carries one (an
        upstream's ``Retry-After``): ``max(backoff, retry_after)``. The upstream knows when it will take requests
        again, so we never come back sooner, and the jitter still spreads clients when the hint is short. A hint
        longer than ``max_retry_after`` gives up instead of holding the caller.

        With a ``deadline`` (same clock as ``now``), a retry that would only *start* at or after the deadline is not
        started: it could not finish in time and would only add load.
        """
        if not self.is_retryable(exc):
            return GiveUp(f"{type(exc).__name__} is not retryable")
        if attempt >= self.max_attempts:
            return GiveUp(f"gave up after {attempt} attempts")
        delay = self.backoff(attempt, rng)
        hint = _retry_after(exc)
        if hint is not None:
            if self.max_retry_after is not None and hint > self.max_retry_after:
                return GiveUp(f"retry-after {hint:g}s is longer than {self.max_retry_after:g}s")
            delay = max(delay, hint)
        if deadline is not None and now + delay >= deadline:
            return GiveUp(f"a retry in {delay:.3f}s would start past the deadline")
        return Retry(delay)


def _retry_after(exc: BaseException) -> float | None:
    """The failure's ``retry_after`` in seconds, if it has a usable one."""
    value = getattr(exc, "retry_after", None)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return float(value)


class SlidingWindow:
    """Counters summed over the last ``window`` seconds, kept in ``buckets`` time slices so every call is O(1).

    Each slice covers ``window / buckets`` seconds and is dropped whole, so the sums cover between
    ``window - window/buckets`` and ``window`` seconds of history. A clock that steps backwards counts into the
    current slice. Counters are named by position (``add(0)``, ``total(1)``...), as many as ``counters``.
    """

    __slots__ = ("_clock", "_counts", "_head", "_totals", "_width", "window")

    def __init__(
        self, window: float, *, clock: Callable[[], float], counters: int = 2, buckets: int = DEFAULT_BUCKETS
    ) -> None:
        if window <= 0:
            raise ValueError(f"window must be positive, got {window}")
        if buckets < 1:
            raise ValueError(f"buckets must be at least 1, got {buckets}")
        self.window = window
        self._clock = clock
        self._width = window / buckets
        self._counts = [[0] * counters for _ in range(buckets)]
        self._totals = [0] * counters
        self._head = self._slice(clock())

    def add(self, counter: int, amount: int = 1) -> None:
        self._advance()
        self._counts[self._head % len(self._counts)][counter] += amount
        self._totals[counter] += amount

    def total(self, counter: int) -> int:
        self._advance()
        return self._totals[counter]

    def clear(self) -> None:
        for counts in self._counts:
            counts[:] = [0] * len(counts)
        self._totals[:] = [0] * len(self._totals)

    def _slice(self, now: float) -> int:
        return math.floor(now / self._width)

    def _advance(self) -> None:
        current = self._slice(self._clock())
        steps = current - self._head
        if steps <= 0:
            return
        if steps >= len(self._counts):
            self.clear()
        else:
            for index in range(self._head + 1, current + 1):
                counts = self._counts[index % len(self._counts)]
                for counter, value in enumerate(counts):
                    self._totals[counter] -= value
                    counts[counter] = 0
        self._head = current


_REQUESTS, _RETRIES = 0, 1


class RetryBudget:
    """Caps retries at ``ratio`` of the requests seen over the last ``window`` seconds, process-wide.

    Allowed retries in the window: ``ratio * requests + min_per_second * window``. The floor lets a quiet service
    still retry its rare failures; the ratio keeps a busy one from tripling the load on an upstream that is already
    failing (Finagle's retry budget). Call ``record_request()`` once per logical request (not per attempt) and
    ``try_spend()`` before each retry. One budget per event loop: it is not thread-safe.
    """

    __slots__ = ("_counts", "min_per_second", "ratio")

    def __init__(
        self,
        ratio: float = DEFAULT_BUDGET_RATIO,
        min_per_second: float = DEFAULT_BUDGET_MIN_PER_SECOND,
        window: float = DEFAULT_BUDGET_WINDOW,
        *,
        clock: Callable[[], float] = time.monotonic,
        buckets: int = DEFAULT_BUCKETS,
    ) -> None:
        if ratio < 0 or min_per_second < 0:
            raise ValueError(
                f"ratio and min_per_second must not be negative, got {ratio} and {min_per_second}"
            )
        self.ratio = ratio
        self.min_per_second = min_per_second
        self._counts = SlidingWindow(window, clock=clock, counters=2, buckets=buckets)

    def record_request(self) -> None:
        self._counts.add(_REQUESTS)

    def try_spend(self) -> bool:
        """Take one retry from the budget if there is one left; False means: do not retry."""
        # The tolerance keeps float rounding (0.7 * 90 is 62.99999999999999) from moving the limit by one.
        if self._counts.total(_RETRIES) + 1 > self._allowed() + 1e-9:
            return False
        self._counts.add(_RETRIES)
        return True

    def snapshot(self) -> dict[str, float]:
        """Requests, retries and the retry allowance over the current window (for metrics)."""
        return {
            "requests": self._counts.total(_REQUESTS),
            "retries": self._counts.total(_RETRIES),
            "allowed": self._allowed(),
        }

    def _allowed(self) -> float:
        return self.ratio * self._counts.total(_REQUESTS) + self.min_per_second * self._counts.window
