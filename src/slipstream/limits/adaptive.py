"""The adaptive rate of one deployment: slows down when the provider pushes back, speeds up when it stops.

A configured RPM is a guess; the provider's real limit is shared with every other client of the same key and
changes with its tier. So the rate a deployment is sent is steered by what the provider says (AIMD, as TCP does):

- a 429, or a response whose rate-limit headers say a budget is spent, cuts the rate at once (multiplicative
  decrease, ``decrease``) and pauses sending until the budget refills (Retry-After, or the refill time the
  headers imply), capped at ``max_pause`` so that a bogus header cannot stall a deployment for an hour;
- each ``period`` of successes without a cut adds ``increase`` times the reference rate (the ceiling, or the
  rate seen when the first cut came) back, up to the ceiling (additive increase);
- a ``*-limit-requests`` header tells the provider's own per-minute limit: the rate is capped at it from then on,
  before any 429.

Only one cut per "generation": a 429 for a request that was sent before the last cut says nothing new (it was
sent at the old rate), so a burst of in-flight 429s halves the rate once, not down to the floor.

Until the first cut or the first stated limit the rate is unlimited (only the windows of
``slipstream.limits.window`` apply). From then on admissions are paced (a GCRA with ``burst`` requests of
tolerance), so that the end of a pause does not release the whole queue at once. Everything here is pure: the
caller passes ``now`` (the limiter's monotonic clock) and, to read Anthropic's timestamps, ``wall_now`` (Unix
time).

Header formats (names are matched case-insensitively):

- OpenAI: ``x-ratelimit-{limit,remaining}-{requests,tokens}`` as integers and ``x-ratelimit-reset-{requests,tokens}``
  as Go-style durations ("1s", "6m0s", "20ms", "1h2m3.5s") until the budget is full again; Azure OpenAI may send
  ``-1`` for unknown, which is read as absent;
- Anthropic: ``anthropic-ratelimit-{requests,tokens}-{limit,remaining,reset}`` (``tokens-*`` is the most restrictive
  token limit in effect; ``input-tokens-*`` is read when it is missing), the reset as an RFC 3339 timestamp;
- ``retry-after`` in seconds or as an HTTP date, and ``retry-after-ms`` (preferred when both are sent).

The request limit header is taken as per minute, which OpenAI and Anthropic mean; a provider that states a daily
figure there only raises the ceiling, which is the harmless direction.
"""

from __future__ import annotations

import math
import re
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

__all__ = [
    "DEFAULT_DECREASE",
    "DEFAULT_FLOOR",
    "DEFAULT_INCREASE",
    "DEFAULT_MAX_PAUSE",
    "DEFAULT_PERIOD",
    "AdaptiveRate",
    "AdaptiveSpec",
    "RateLimitInfo",
    "parse_duration",
    "parse_rate_limit_headers",
    "parse_reset",
    "parse_retry_after",
]

DEFAULT_FLOOR = 1 / 60  # requests per second: never slower than one request a minute
DEFAULT_DECREASE = 0.5  # the rate is multiplied by this on a cut
DEFAULT_INCREASE = 0.1  # of the reference rate, added back per quiet period: ~50 s from half to full speed
DEFAULT_PERIOD = 5.0  # seconds of successes without a cut that earn one increase
DEFAULT_MAX_PAUSE = 60.0  # seconds: the longest pause a header can impose
DEFAULT_TOKEN_RESERVE = 0.02  # a token budget below this share of its limit counts as spent
PROVIDER_WINDOW = 60.0  # seconds: the period of the limits providers state in their headers
_OBSERVE_WINDOW = 10  # seconds of admissions looked at to measure the rate before the first cut


# ------------------------------------------------------------------------------------------------- headers
@dataclass(frozen=True, slots=True)
class RateLimitInfo:
    """What a response's headers say about the provider's budgets; resets are seconds from now."""

    requests_limit: int | None = None
    requests_remaining: int | None = None
    requests_reset: float | None = None
    tokens_limit: int | None = None
    tokens_remaining: int | None = None
    tokens_reset: float | None = None
    retry_after: float | None = None


_DURATION_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_UNIT_SECONDS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "μs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_EPOCH_FLOOR = 1e9  # a bare number this large is a Unix timestamp (2001 on), not a number of seconds


def parse_duration(value: str) -> float | None:
    """Seconds in a Go-style duration ("6m0s", "20ms", "1h2m3.5s") or a bare number of seconds; else None."""
    text = value.strip()
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        return seconds if seconds >= 0 and math.isfinite(seconds) else None
    total = 0.0
    pos = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            return None
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return total if pos == len(text) and pos > 0 else None


def parse_reset(value: str, *, wall_now: float) -> float | None:
    """Seconds until a reset given as a duration, a number of seconds, a Unix time or an RFC 3339 timestamp."""
    seconds = parse_duration(value)
    if seconds is not None:
        return max(0.0, seconds - wall_now) if seconds >= _EPOCH_FLOOR else seconds
    try:
        when = datetime.fromisoformat(value.strip())
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - wall_now)


def parse_retry_after(value: str, *, wall_now: float) -> float | None:
    """Seconds in a Retry-After value: a number of seconds or an HTTP date."""
    try:
        seconds = float(value.strip())
    except ValueError:
        pass
    else:
        return max(0.0, seconds) if math.isfinite(seconds) else None
    try:
        when = parsedate_to_datetime(value.strip())
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - wall_now)


def parse_rate_limit_headers(headers: Mapping[str, str], *, wall_now: float) -> RateLimitInfo:
    """The budgets an OpenAI-style or Anthropic-style response states; absent or unreadable values are None."""
    h = {k.lower(): v for k, v in headers.items()}
    retry_after = None
    if "retry-after-ms" in h:
        ms = parse_duration(h["retry-after-ms"])
        retry_after = None if ms is None else ms / 1000.0
    if retry_after is None and "retry-after" in h:
        retry_after = parse_retry_after(h["retry-after"], wall_now=wall_now)
    if any(k.startswith("anthropic-ratelimit-") for k in h):
        tokens = "tokens" if "anthropic-ratelimit-tokens-remaining" in h else "input-tokens"
        return RateLimitInfo(
            requests_limit=_count(h.get("anthropic-ratelimit-requests-limit")),
            requests_remaining=_count(h.get("anthropic-ratelimit-requests-remaining")),
            requests_reset=_reset(h.get("anthropic-ratelimit-requests-reset"), wall_now),
            tokens_limit=_count(h.get(f"anthropic-ratelimit-{tokens}-limit")),
            tokens_remaining=_count(h.get(f"anthropic-ratelimit-{tokens}-remaining")),
            tokens_reset=_reset(h.get(f"anthropic-ratelimit-{tokens}-reset"), wall_now),
            retry_after=retry_after,
        )
    return RateLimitInfo(
        requests_limit=_count(h.get("x-ratelimit-limit-requests")),
        requests_remaining=_count(h.get("x-ratelimit-remaining-requests")),
        requests_reset=_reset(h.get("x-ratelimit-reset-requests"), wall_now),
        tokens_limit=_count(h.get("x-ratelimit-limit-tokens")),
        tokens_remaining=_count(h.get("x-ratelimit-remaining-tokens")),
        tokens_reset=_reset(h.get("x-ratelimit-reset-tokens"), wall_now),
        retry_after=retry_after,
    )


def _count(value: str | None) -> int | None:
    if value is None:
        return None
    try:
        number = float(value.strip())
    except ValueError:
        return None
    return int(number) if 0 <= number < math.inf else None  # Azure's -1 means "unknown"


def _reset(value: str | None, wall_now: float) -> float | None:
    return None if value is None else parse_reset(value, wall_now=wall_now)


# ------------------------------------------------------------------------------------------------ the rate
@dataclass(frozen=True, slots=True)
class AdaptiveSpec:
    """How the rate adapts. Rates are in requests per second (a configured RPM / 60)."""

    ceiling: float | None = None  # never faster than this; None: no ceiling until the headers state one
    floor: float = DEFAULT_FLOOR
    decrease: float = DEFAULT_DECREASE
    increase: float = DEFAULT_INCREASE
    period: float = DEFAULT_PERIOD
    burst: int = 1  # requests the pacer lets through back to back
    max_pause: float = DEFAULT_MAX_PAUSE
    token_reserve: float = DEFAULT_TOKEN_RESERVE

    def __post_init__(self) -> None:
        if not 0.0 < self.floor < math.inf:
            raise ValueError(f"floor must be a positive rate, got {self.floor}")
        if self.ceiling is not None and self.ceiling < self.floor:
            raise ValueError(f"ceiling {self.ceiling} is below the floor {self.floor}")
        if not 0.0 < self.decrease < 1.0:
            raise ValueError(f"decrease must be between 0 and 1, got {self.decrease}")
        if self.increase <= 0.0 or self.period <= 0.0:
            raise ValueError("increase and period must be positive")
        if self.burst < 1 or self.max_pause < 0.0 or not 0.0 <= self.token_reserve < 1.0:
            raise ValueError("burst must be at least 1, max_pause not negative, token_reserve in [0, 1)")


class AdaptiveRate:
    """AIMD over a request rate, with pauses; a ``Budget`` (``try_acquire``/``commit``) costed in requests."""

    def __init__(self, spec: AdaptiveSpec | None = None) -> None:
        self.spec = spec or AdaptiveSpec()
        self.rate = math.inf  # requests per second; inf until the first cut or a stated limit
        self.paused_until = -math.inf
        self.provider_ceiling: float | None = None  # learned from a *-limit-requests header
        self.cuts = 0
        self._reference: float | None = None  # without a ceiling, the rate at the last cut sizes the steps
        self._tat = -math.inf  # GCRA's theoretical arrival time of the next request
        self._last_cut = -math.inf
        self._last_change = -math.inf
        self._admitted: deque[list[int]] = deque()  # [whole second, admissions in it], for the measured rate

    @property
    def ceiling(self) -> float:
        ceiling = math.inf if self.spec.ceiling is None else self.spec.ceiling
        if self.provider_ceiling is not None:
            ceiling = min(ceiling, self.provider_ceiling)
        return ceiling

    # ------------------------------------------------------------------------------------------- Budget
    def try_acquire(self, cost: int, now: float) -> float:
        wait = self.paused_until - now
        if self.rate < math.inf:
            tolerance = (self.spec.burst - 1) / self.rate
            wait = max(wait, self._tat - tolerance - now)
        return max(0.0, wait)

    def commit(self, cost: int, now: float) -> None:
        if self.rate < math.inf:
            self._tat = max(self._tat, now) + cost / self.rate
        second = math.floor(now)
        if self._admitted and self._admitted[-1][0] == second:
            self._admitted[-1][1] += cost
        else:
            self._admitted.append([second, cost])
            while self._admitted[0][0] <= second - _OBSERVE_WINDOW:
                self._admitted.popleft()

    # ------------------------------------------------------------------------------------------ signals
    def on_success(self, now: float) -> None:
        """A request went through: one quiet period after the last change, the rate earns an increase."""
        if self.rate == math.inf or now - self._last_change < self.spec.period:
            return
        ceiling = self.ceiling
        reference = ceiling if ceiling < math.inf else self._reference or self.rate
        self.rate = min(self.rate + self.spec.increase * reference, ceiling)
        self._last_change = now

    def on_rate_limited(
        self, now: float, *, retry_after: float | None = None, started_at: float | None = None
    ) -> None:
        """The provider answered 429 to a request sent at ``started_at``: pause, and cut the rate."""
        if retry_after is not None:
            self.pause(now, retry_after)
        self._cut(now, started_at)

    def observe(self, info: RateLimitInfo, now: float, *, started_at: float | None = None) -> None:
        """A successful response's rate-limit headers: learn the limit; a spent budget is a cut, else a success."""
        if info.requests_limit:
            self.provider_ceiling = max(info.requests_limit / PROVIDER_WINDOW, self.spec.floor)
            self.rate = min(self.rate, self.ceiling)
        wait = max(
            _refill_wait(info.requests_remaining, info.requests_limit, info.requests_reset, 1.0),
            _refill_wait(
                info.tokens_remaining,
                info.tokens_limit,
                info.tokens_reset,
                max(1.0, self.spec.token_reserve * (info.tokens_limit or 0)),
            ),
        )
        if info.retry_after is not None:
            wait = max(wait, info.retry_after)
        if wait > 0.0:
            self.pause(now, wait)
            self._cut(now, started_at)
        else:
            self.on_success(now)

    def pause(self, now: float, seconds: float) -> None:
        """Send nothing for ``seconds`` (at most ``max_pause``); a longer pause already set stands."""
        until = now + min(max(0.0, seconds), self.spec.max_pause)
        self.paused_until = max(self.paused_until, until)
        self._tat = max(self._tat, self.paused_until)

    def measured_rate(self, now: float) -> float:
        """Admissions per second over the last ``_OBSERVE_WINDOW`` seconds (at least one second of them)."""
        horizon = math.floor(now) - _OBSERVE_WINDOW
        seen = [(second, n) for second, n in self._admitted if second > horizon]
        if not seen:
            return 0.0
        span = max(1.0, now - seen[0][0])
        return sum(n for _, n in seen) / span

    # ------------------------------------------------------------------------------------------ private
    def _cut(self, now: float, started_at: float | None) -> None:
        if started_at is not None and started_at < self._last_cut:
            return  # sent before the last cut, at the old rate: that cut already answered it
        base = min(self.rate, self.ceiling)
        if base == math.inf:
            base = self.measured_rate(now)
        self._reference = max(base, self.spec.floor)  # the rate that drew this cut sizes the steps back up
        self.rate = max(self.spec.floor, base * self.spec.decrease)
        self._tat = max(self._tat, now)
        self._last_cut = self._last_change = now
        self.cuts += 1

    def __repr__(self) -> str:
        return f"AdaptiveRate(rate={self.rate:.3g}/s, ceiling={self.ceiling:.3g}/s, cuts={self.cuts})"


def _refill_wait(remaining: int | None, limit: int | None, reset: float | None, need: float) -> float:
    """Seconds until ``need`` units are back, if the budget refills evenly until full at ``reset``."""
    if remaining is None or reset is None or remaining >= need:
        return 0.0
    if limit is None or limit <= remaining:
        return reset
    return reset * min(1.0, (need - remaining) / (limit - remaining))
