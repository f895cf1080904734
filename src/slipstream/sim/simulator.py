"""The simulator: one sim instance's state (options, RNG, rate windows, counters) and its per-request decisions.

``Simulator.chat`` / ``Simulator.embeddings`` decide everything about a request — the answer, the limit check,
the fault, the latency — and return it as an outcome, without any I/O. The in-process provider and the HTTP
server are thin drivers that carry an outcome out with their own ``sleep`` and transport.
"""

from __future__ import annotations

import itertools
import os
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidRequest
from .embeddings import EmbeddingsPlan, plan_embeddings
from .engine import ChatPlan, plan_chat, validate_chat
from .faults import decide_fault, error_status
from .latency import INSTANT, Timing, plan_timing
from .options import SimOptions
from .ratelimit import RateLimiter

__all__ = ["ChatOutcome", "EmbeddingsOutcome", "SimStats", "Simulator", "error_body"]

Clock = Callable[[], float]
Headers = list[tuple[str, str]]

_ERROR_MESSAGES = {
    500: "The server had an error while processing your request. Sorry about that! (simulated)",
    502: "Bad gateway. (simulated)",
    503: "The engine is currently overloaded, please try again later. (simulated)",
}


def error_body(
    message: str, type: str, *, param: str | None = None, code: str | None = None
) -> dict[str, Any]:
    """OpenAI's error JSON."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


@dataclass(slots=True)
class SimStats:
    """Counters a test or benchmark reads to see what reached the upstream."""

    requests: int = 0
    by_path: dict[str, int] = field(default_factory=dict)
    streams: int = 0
    faults: dict[str, int] = field(default_factory=dict)
    in_flight: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def count(self, path: str) -> None:
        self.requests += 1
        self.by_path[path] = self.by_path.get(path, 0) + 1

    def fault(self, kind: str) -> None:
        self.faults[kind] = self.faults.get(kind, 0) + 1

    def reset(self) -> None:
        in_flight = self.in_flight  # requests still running will still leave
        self.requests = self.streams = self.prompt_tokens = self.completion_tokens = 0
        self.by_path = {}
        self.faults = {}
        self.in_flight = in_flight

    def snapshot(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "by_path": dict(self.by_path),
            "streams": self.streams,
            "faults": dict(self.faults),
            "in_flight": self.in_flight,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
        }


@dataclass(slots=True, kw_only=True)
class _Outcome:
    options: SimOptions
    id: str
    created: int
    model: str
    # None: answer normally. Else a FAULT_KINDS name, or "rate_limit" when the sim's own RPM/TPM refused it.
    fault: str | None = None
    status: int = 200  # or the error status to answer with
    error: dict[str, Any] | None = None  # the OpenAI error body when status != 200
    retry_after: float | None = None
    headers: Headers = field(default_factory=list)  # x-ratelimit-* (and retry-after on 429s)
    timing: Timing = INSTANT


@dataclass(slots=True, kw_only=True)
class ChatOutcome(_Outcome):
    plan: ChatPlan | None = None
    stream: bool = False
    include_usage: bool = False


@dataclass(slots=True, kw_only=True)
class EmbeddingsOutcome(_Outcome):
    plan: EmbeddingsPlan | None = None


class Simulator:
    """One simulated upstream. Not thread-safe; one event loop drives it."""

    def __init__(
        self,
        options: SimOptions | None = None,
        *,
        clock: Clock = time.monotonic,
        wall_clock: Clock = time.time,
    ) -> None:
        self.options = options or SimOptions()
        self.clock = clock
        self.wall_clock = wall_clock
        self.stats = SimStats()
        self.limiter = RateLimiter(self.options.rate_window)
        self.rng = random.Random(self.options.seed)
        self._ids = itertools.count(1)
        self._id_prefix = os.urandom(4).hex()

    def reset(self) -> None:
        """Zero the counters and rate windows, and restart the RNG from its seed."""
        self.stats.reset()
        self.limiter.reset()
        self.rng = random.Random(self.options.seed)

    # ------------------------------------------------------------------------------------------ requests
    def chat(self, body: Any, *, stream: bool | None = None) -> ChatOutcome:
        """Decide a chat request. Raises ``InvalidRequest`` (or ``SimOptionError``) for a bad one."""
        validate_chat(body)
        options, rng = self._request_options(body)
        if stream is None:
            stream = body.get("stream") is True
        stream_options = body.get("stream_options")
        include_usage = isinstance(stream_options, dict) and stream_options.get("include_usage") is True
        plan = plan_chat(body, options)
        outcome = ChatOutcome(
            options=options,
            id=f"chatcmpl-sim{self._id_prefix}{next(self._ids):08x}",
            created=int(self.wall_clock()),
            model=body["model"],
            plan=plan,
            stream=stream,
            include_usage=include_usage,
        )
        if stream:
            self.stats.streams += 1
        self._decide(outcome, rng, plan.total_tokens, stream)
        if outcome.status == 200:
            self.stats.prompt_tokens += plan.prompt_tokens
            self.stats.completion_tokens += plan.completion_tokens
        return outcome

    def embeddings(self, body: Any) -> EmbeddingsOutcome:
        options, rng = self._request_options(body if isinstance(body, dict) else {})
        plan = plan_embeddings(body, options)
        outcome = EmbeddingsOutcome(
            options=options, id="", created=int(self.wall_clock()), model=plan.model, plan=plan
        )
        self._decide(outcome, rng, plan.prompt_tokens, False)
        if outcome.fault in ("broken_stream", "slow_stream"):
            outcome.fault = None  # an embeddings reply is small: it arrives whole or not at all
        if outcome.status == 200:
            self.stats.prompt_tokens += plan.prompt_tokens
        return outcome

    # ------------------------------------------------------------------------------------------ decisions
    def _request_options(self, body: dict[str, Any]) -> tuple[SimOptions, random.Random]:
        overrides = body.get("sim")
        if overrides is None:
            return self.options, self.rng
        if not isinstance(overrides, dict):
            raise InvalidRequest("'sim' must be an object of sim options", param="sim")
        options = self.options.merged(overrides)
        # A request that brings its own seed gets its own RNG: its faults and latency replay exactly.
        rng = self.rng if options.seed == self.options.seed else random.Random(options.seed)
        return options, rng

    def _decide(self, outcome: _Outcome, rng: random.Random, tokens: int, stream: bool) -> None:
        options = outcome.options
        if options.rpm_limit or options.tpm_limit:
            decision = self.limiter.check(
                self.clock(), rpm=options.rpm_limit, tpm=options.tpm_limit, tokens=tokens
            )
            outcome.headers = decision.headers
            if not decision.allowed:
                outcome.fault = "rate_limit"
                outcome.status = 429
                outcome.retry_after = decision.retry_after
                outcome.error = error_body(
                    decision.message, decision.exceeded or "requests", code="rate_limit_exceeded"
                )
                self.stats.fault("rate_limit")
                return
        fault = decide_fault(options, rng, stream=stream)
        if fault is None:
            outcome.timing = plan_timing(options, rng)
            return
        outcome.fault = fault
        self.stats.fault(fault)
        status = error_status(fault)
        if status is None:
            outcome.timing = plan_timing(options, rng)
        elif status == 429:
            outcome.status = 429
            outcome.retry_after = options.retry_after
            outcome.headers = [*outcome.headers, *_retry_headers(options.retry_after)]
            message = (
                f"Rate limit reached for {outcome.model} (simulated). "
                f"Please try again in {options.retry_after:g}s."
            )
            outcome.error = error_body(message, "requests", code="rate_limit_exceeded")
        else:
            outcome.status = status
            outcome.error = error_body(_ERROR_MESSAGES[status], "server_error")


def _retry_headers(seconds: float) -> Headers:
    whole = f"{seconds:g}" if seconds == int(seconds) else f"{seconds:.3f}".rstrip("0")
    return [("retry-after", whole), ("retry-after-ms", str(round(seconds * 1000)))]
