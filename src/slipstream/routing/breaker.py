"""A circuit breaker per deployment: stop sending traffic to an upstream that keeps failing, probe it, come back.

A state machine over an injected clock; it never sleeps and never does I/O::

    closed ──(N consecutive failures, or error rate > error_rate over the window)──> open
    open ──(cooldown passed; the next allow() or state read)──> half_open
    half_open ──(a probe succeeds)──> closed   (counters reset)
    half_open ──(a probe fails)──> open        (fresh cooldown)

The breaker counts **upstream** failures only. Callers must not record client faults, the upstream's 4xx other
than 408 and 429 (the request was bad, the deployment is fine), nor our own errors or cancellations, as failures:
``counts_as_failure`` draws that line. A client fault still proves the upstream answered, so it may be recorded
as a success; a call that ends without a verdict (cancelled) should ``release()`` its probe slot.

State changes with time (open becomes half_open when the cooldown passes), so every method first brings the
state up to date with the clock. One breaker per deployment per event loop: it is not thread-safe.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from ..errors import UpstreamError, UpstreamStatusError
from .retry import DEFAULT_BUCKETS, SlidingWindow

__all__ = [
    "DEFAULT_COOLDOWN",
    "DEFAULT_ERROR_RATE",
    "DEFAULT_FAILURE_THRESHOLD",
    "DEFAULT_HALF_OPEN_PROBES",
    "DEFAULT_MIN_REQUESTS",
    "DEFAULT_WINDOW",
    "BreakerState",
    "CircuitBreaker",
    "counts_as_failure",
]

DEFAULT_FAILURE_THRESHOLD = 5
DEFAULT_ERROR_RATE = 0.5
DEFAULT_MIN_REQUESTS = 20
DEFAULT_WINDOW = 30.0
DEFAULT_COOLDOWN = 15.0
DEFAULT_HALF_OPEN_PROBES = 1

_REQUESTS, _FAILURES = 0, 1


class BreakerState(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


def counts_as_failure(exc: BaseException) -> bool:
    """Whether a failed call should count against its deployment's breaker.

    Upstream errors do (connection, timeout, malformed body, 5xx, 408 and 429), except an upstream 4xx other
    than 408/429, which blames the request. Anything that is not an ``UpstreamError`` (our own validation, limits,
    bugs, cancellation) says nothing about the upstream.
    """
    if isinstance(exc, UpstreamStatusError):
        status = exc.upstream_status
        return not (400 <= status < 500 and status not in (408, 429))
    return isinstance(exc, UpstreamError)


OnChange = Callable[[BreakerState, BreakerState], None]


class CircuitBreaker:
    """Decides whether a deployment may be tried now; fed with the outcome of each call.

    Opens after ``failure_threshold`` consecutive failures, or when more than ``error_rate`` of the calls over the
    last ``window`` seconds failed and there were at least ``min_requests`` of them (so a single failure on a quiet
    deployment is not a 100% error rate). After ``cooldown`` seconds it lets up to ``half_open_probes`` calls
    through at once; the first verdict closes or reopens it. A probe that never reports back is presumed lost after
    another ``cooldown``, so a leaked probe cannot shut a deployment out forever.

    ``on_change(old, new)`` is called after each transition (for metrics and logs); it must not raise.
    """

    __slots__ = (
        "_clock",
        "_consecutive",
        "_counts",
        "_opened_at",
        "_probe_at",
        "_probes",
        "_state",
        "cooldown",
        "error_rate",
        "failure_threshold",
        "half_open_probes",
        "min_requests",
        "on_change",
    )

    def __init__(
        self,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        error_rate: float = DEFAULT_ERROR_RATE,
        min_requests: int = DEFAULT_MIN_REQUESTS,
        window: float = DEFAULT_WINDOW,
        cooldown: float = DEFAULT_COOLDOWN,
        half_open_probes: int = DEFAULT_HALF_OPEN_PROBES,
        *,
        clock: Callable[[], float] = time.monotonic,
        on_change: OnChange | None = None,
        buckets: int = DEFAULT_BUCKETS,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError(f"failure_threshold must be at least 1, got {failure_threshold}")
        if not 0 <= error_rate <= 1:
            # 1 turns opening on the error rate off (a rate cannot exceed 1), leaving consecutive failures.
            raise ValueError(f"error_rate must be within [0, 1], got {error_rate}")
        if min_requests < 1:
            raise ValueError(f"min_requests must be at least 1, got {min_requests}")
        if cooldown <= 0:
            raise ValueError(f"cooldown must be positive, got {cooldown}")
        if half_open_probes < 1:
            raise ValueError(f"half_open_probes must be at least 1, got {half_open_probes}")
        self.failure_threshold = failure_threshold
        self.error_rate = error_rate
        self.min_requests = min_requests
        self.cooldown = cooldown
        self.half_open_probes = half_open_probes
        self.on_change = on_change
        self._clock = clock
        self._counts = SlidingWindow(window, clock=clock, counters=2, buckets=buckets)
        self._state = BreakerState.CLOSED
        self._consecutive = 0
        self._opened_at: float | None = None
        self._probes = 0  # probes let through in half_open that have not reported yet
        self._probe_at = 0.0  # when the last probe was let through

    # ---------------------------------------------------------------------------------------------- reading
    @property
    def state(self) -> BreakerState:
        self._tick(self._clock())
        return self._state

    def would_allow(self) -> bool:
        """What ``allow()`` would answer now, without taking a probe slot (for filtering candidates)."""
        now = self._clock()
        self._tick(now)
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            return False
        return self._probes < self.half_open_probes or self._probes_lost(now)

    def snapshot(self) -> dict[str, Any]:
        """State and counters for /readyz and metrics; times are on the breaker's clock."""
        self._tick(self._clock())
        requests = self._counts.total(_REQUESTS)
        failures = self._counts.total(_FAILURES)
        opened = self._opened_at
        retry_at = opened + self.cooldown if opened is not None and self._state is BreakerState.OPEN else None
        return {
            "state": self._state.value,
            "consecutive_failures": self._consecutive,
            "requests": requests,
            "failures": failures,
            "error_rate": failures / requests if requests else 0.0,
            "opened_at": opened,
            "retry_at": retry_at,
        }

    # ---------------------------------------------------------------------------------------------- deciding
    def allow(self) -> bool:
        """May a call go to this deployment now? In half_open a True takes one of the probe slots, which the
        call's ``record_success``/``record_failure`` (or ``release``) gives back."""
        now = self._clock()
        self._tick(now)
        if self._state is BreakerState.CLOSED:
            return True
        if self._state is BreakerState.OPEN:
            return False
        if self._probes >= self.half_open_probes:
            if not self._probes_lost(now):
                return False
            self._probes = 0
        self._probes += 1
        self._probe_at = now
        return True

    def record_success(self) -> None:
        self._tick(self._clock())
        if self._state is BreakerState.HALF_OPEN:
            self._close()
        elif self._state is BreakerState.CLOSED:
            self._consecutive = 0
            self._counts.add(_REQUESTS)
        # open: a late answer to a call sent before the breaker opened; the cooldown stands.

    def record_failure(self) -> None:
        now = self._clock()
        self._tick(now)
        if self._state is BreakerState.HALF_OPEN:
            self._open(now)
        elif self._state is BreakerState.CLOSED:
            self._consecutive += 1
            self._counts.add(_REQUESTS)
            self._counts.add(_FAILURES)
            if self._consecutive >= self.failure_threshold or self._rate_exceeded():
                self._open(now)
        # open: already open; a late failure does not extend the cooldown.

    def trip(self) -> bool:
        """Open now, for a full cooldown, on another instance's word (shared breaker state); True if it opened.

        An open breaker is left as it is (its own cooldown stands); a half-open one reopens.
        """
        now = self._clock()
        self._tick(now)
        if self._state is BreakerState.OPEN:
            return False
        self._open(now)
        return True

    def release(self) -> None:
        """Give back a half-open probe slot without a verdict (the probe was cancelled)."""
        if self._state is BreakerState.HALF_OPEN and self._probes > 0:
            self._probes -= 1

    # ---------------------------------------------------------------------------------------------- transitions
    def _rate_exceeded(self) -> bool:
        requests = self._counts.total(_REQUESTS)
        return requests >= self.min_requests and self._counts.total(_FAILURES) > self.error_rate * requests

    def _probes_lost(self, now: float) -> bool:
        return now - self._probe_at >= self.cooldown

    def _tick(self, now: float) -> None:
        if (
            self._state is BreakerState.OPEN
            and self._opened_at is not None
            and now >= self._opened_at + self.cooldown
        ):
            self._probes = 0
            self._move(BreakerState.HALF_OPEN)

    def _open(self, now: float) -> None:
        self._opened_at = now
        self._probes = 0
        self._move(BreakerState.OPEN)

    def _close(self) -> None:
        self._consecutive = 0
        self._counts.clear()
        self._opened_at = None
        self._probes = 0
        self._move(BreakerState.CLOSED)

    def _move(self, new: BreakerState) -> None:
        old, self._state = self._state, new
        if self.on_change is not None and old is not new:
            self.on_change(old, new)
