"""The limits the sim enforces on itself: requests and tokens per minute, OpenAI style.

Arithmetic only: the caller passes ``now`` (from an injected clock). Two windows:

- ``sliding``: a log of the last 60 s of admitted requests; a request fits when the log's requests/tokens plus
  its own stay within the limits. When it does not, the wait is until enough of the oldest entries expire.
- ``fixed``: counters that reset at each 60 s boundary (``floor(now / 60)``).

Every decision carries OpenAI's headers: ``x-ratelimit-{limit,remaining,reset}-{requests,tokens}``, the reset
written as a Go duration ("1s", "6m0s", "12ms"), the time until that limit is back to its initial state.
A refused request also gets ``retry-after`` (whole seconds, rounded up) and ``retry-after-ms``.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

__all__ = ["WINDOW_SECONDS", "LimitDecision", "RateLimiter", "go_duration"]

WINDOW_SECONDS = 60.0

Headers = list[tuple[str, str]]


@dataclass(frozen=True, slots=True)
class LimitDecision:
    allowed: bool
    headers: Headers
    exceeded: str | None = None  # "requests" or "tokens"
    retry_after: float | None = None
    message: str = ""


class RateLimiter:
    """RPM/TPM state for one sim instance. Limits are passed per call (a request may override them)."""

    def __init__(self, window: str = "sliding", period: float = WINDOW_SECONDS) -> None:
        if window not in ("sliding", "fixed"):
            raise ValueError(f"unknown rate window {window!r}")
        self.window = window
        self.period = period
        self._log: deque[tuple[float, int]] = deque()  # sliding: (admitted at, tokens)
        self._log_tokens = 0
        self._fixed_start = -math.inf  # fixed: the current window's start
        self._fixed_requests = 0
        self._fixed_tokens = 0

    def reset(self) -> None:
        self._log.clear()
        self._log_tokens = 0
        self._fixed_start = -math.inf
        self._fixed_requests = 0
        self._fixed_tokens = 0

    def check(self, now: float, *, rpm: int, tpm: int, tokens: int) -> LimitDecision:
        """Admit (and count) a request of ``tokens`` tokens, or refuse it with the wait until it would fit."""
        if self.window == "fixed":
            return self._check_fixed(now, rpm, tpm, tokens)
        return self._check_sliding(now, rpm, tpm, tokens)

    # ------------------------------------------------------------------------------------------ sliding
    def _check_sliding(self, now: float, rpm: int, tpm: int, tokens: int) -> LimitDecision:
        log = self._log
        horizon = now - self.period
        while log and log[0][0] <= horizon:
            self._log_tokens -= log.popleft()[1]
        exceeded: str | None = None
        retry = 0.0
        if rpm and len(log) + 1 > rpm:
            exceeded = "requests"
            retry = log[len(log) - rpm][0] + self.period - now  # when enough entries have expired
        elif tpm and self._log_tokens + tokens > tpm:
            exceeded = "tokens"
            retry = self._token_wait(now, tpm, tokens)
        else:
            log.append((now, tokens))
            self._log_tokens += tokens
        reset = (log[-1][0] + self.period - now) if log else 0.0
        headers = _headers(rpm, tpm, rpm - len(log), tpm - self._log_tokens, reset, reset)
        return self._decision(exceeded, retry, headers, rpm, tpm, len(log), self._log_tokens, tokens)

    def _token_wait(self, now: float, tpm: int, tokens: int) -> float:
        if tokens > tpm:
            return self.period  # never fits: say so with a full window, as a real provider would refuse
        need = self._log_tokens + tokens - tpm
        for at, used in self._log:
            need -= used
            if need <= 0:
                return at + self.period - now
        return self.period

    # ------------------------------------------------------------------------------------------ fixed
    def _check_fixed(self, now: float, rpm: int, tpm: int, tokens: int) -> LimitDecision:
        start = math.floor(now / self.period) * self.period
        if start != self._fixed_start:
            self._fixed_start, self._fixed_requests, self._fixed_tokens = start, 0, 0
        reset = start + self.period - now
        exceeded: str | None = None
        if rpm and self._fixed_requests + 1 > rpm:
            exceeded = "requests"
        elif tpm and self._fixed_tokens + tokens > tpm:
            exceeded = "tokens"
        else:
            self._fixed_requests += 1
            self._fixed_tokens += tokens
        requests, used = self._fixed_requests, self._fixed_tokens
        wait = self.period if exceeded == "tokens" and tokens > tpm else reset
        headers = _headers(
            rpm, tpm, rpm - requests, tpm - used, reset if requests else 0.0, reset if used else 0.0
        )
        return self._decision(exceeded, wait, headers, rpm, tpm, requests, used, tokens)

    # ------------------------------------------------------------------------------------------ shared
    @staticmethod
    def _decision(
        exceeded: str | None,
        retry: float,
        headers: Headers,
        rpm: int,
        tpm: int,
        requests: int,
        used: int,
        tokens: int,
    ) -> LimitDecision:
        if exceeded is None:
            return LimitDecision(True, headers)
        retry = max(retry, 0.001)
        if exceeded == "requests":
            what = f"requests per min (RPM): Limit {rpm}, Used {requests}, Requested 1"
        else:
            what = f"tokens per min (TPM): Limit {tpm}, Used {used}, Requested {tokens}"
        headers.append(("retry-after", str(max(1, math.ceil(retry)))))
        headers.append(("retry-after-ms", str(round(retry * 1000))))
        message = f"Rate limit reached on {what}. Please try again in {go_duration(retry)}. (simulated)"
        return LimitDecision(False, headers, exceeded, retry, message)


def _headers(
    rpm: int, tpm: int, left_requests: int, left_tokens: int, reset_r: float, reset_t: float
) -> Headers:
    headers: Headers = []
    if rpm:
        headers += [
            ("x-ratelimit-limit-requests", str(rpm)),
            ("x-ratelimit-remaining-requests", str(max(0, left_requests))),
            ("x-ratelimit-reset-requests", go_duration(reset_r)),
        ]
    if tpm:
        headers += [
            ("x-ratelimit-limit-tokens", str(tpm)),
            ("x-ratelimit-remaining-tokens", str(max(0, left_tokens))),
            ("x-ratelimit-reset-tokens", go_duration(reset_t)),
        ]
    return headers


def go_duration(seconds: float) -> str:
    """A duration as Go prints it, the way OpenAI's reset headers do: "0s", "12ms", "1s", "1.5s", "6m0s", "1h0m0s"."""
    if seconds <= 0:
        return "0s"
    ms = round(seconds * 1000)
    if ms < 1000:
        return f"{ms}ms" if ms else "0s"
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs = f"{rest / 1000:.3f}".rstrip("0").rstrip(".")
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
