"""The ``sim`` provider: the simulated LLM in-process — no network, deterministic answers, controllable faults.

A deployment ``{provider: sim, model: anything, options: {...}}`` takes its options from
``slipstream.sim.SimOptions`` (``preset``, latency, fault rates, ``rpm_limit``…; unknown keys are refused). A
request may carry ``"sim": {...}`` overrides (e.g. ``{"fault": "429"}``) as it would to the sim server.

Faults become the errors a real upstream's would: a 429 or 5xx an ``UpstreamStatusError`` (with ``retry_after``
and the rate-limit headers), a malformed body or a broken stream an ``UpstreamProtocolError``, and a hang an
await that only ends when the caller cancels it. ``calls`` counts the calls that reached the provider.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any

from ..errors import InvalidRequest, UpstreamProtocolError, UpstreamStatusError
from ..sim.embeddings import embeddings_body
from ..sim.engine import completion_body, stream_chunks, usage_chunk
from ..sim.options import SimOptions
from ..sim.simulator import ChatOutcome, EmbeddingsOutcome, SimStats, Simulator
from ..types import ChatRequest, Chunk, EmbeddingsRequest, Reply
from .base import Deployment, Provider, register_provider
from .http import HttpPool

__all__ = ["SimProvider"]

Sleep = Callable[[float], Awaitable[Any]]


@register_provider
class SimProvider(Provider):
    name = "sim"
    default_base_url = "sim://local"

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> None:
        SimOptions.from_dict(options)

    def __init__(
        self,
        deployment: Deployment,
        http: HttpPool,
        *,
        sleep: Sleep = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(deployment, http)
        self.options = SimOptions.from_dict(deployment.options)
        self.simulator = Simulator(self.options, clock=clock)
        self._sleep = sleep

    @property
    def stats(self) -> SimStats:
        return self.simulator.stats

    @property
    def calls(self) -> int:
        """How many calls (complete, stream, embed) reached this provider."""
        return self.simulator.stats.requests

    # ------------------------------------------------------------------------------------------ chat
    async def complete(self, request: ChatRequest) -> Reply:
        self.stats.count("chat")
        outcome = self._chat(request, stream=False)
        self.stats.in_flight += 1
        try:
            await self._raise_for(outcome)
            assert outcome.plan is not None
            delay = outcome.timing.total(outcome.plan.completion_tokens)
            if delay > 0:
                await self._sleep(delay)
            if outcome.fault == "broken_stream":
                raise UpstreamProtocolError("sim upstream broke off mid-body (simulated)", provider=self.name)
            data = completion_body(outcome.plan, id=outcome.id, created=outcome.created, model=outcome.model)
            return Reply(data=data, headers=dict(outcome.headers) or None)
        finally:
            self.stats.in_flight -= 1

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        self.stats.count("stream")
        outcome = self._chat(request, stream=True)
        self.stats.in_flight += 1
        try:
            await self._raise_for(outcome)
            plan = outcome.plan
            assert plan is not None
            ident, created, model = outcome.id, outcome.created, outcome.model
            chunks = stream_chunks(
                plan, id=ident, created=created, model=model, chunk_tokens=outcome.options.chunk_tokens
            )
            timing = outcome.timing
            gap = outcome.options.slow_stream_gap if outcome.fault == "slow_stream" else 0.0
            # A broken stream delivers about half of its chunks (always at least the role chunk).
            break_at = max(1, len(chunks) // 2) if outcome.fault == "broken_stream" else -1
            for i, (data, tokens) in enumerate(chunks):
                if i == break_at:
                    raise UpstreamProtocolError("sim stream broke off (simulated)", provider=self.name)
                delay = (timing.ttft if i == 0 else tokens * timing.per_token) + (gap if i else 0.0)
                if delay > 0:
                    await self._sleep(delay)
                yield Chunk(data)
            yield Chunk(usage_chunk(plan, id=ident, created=created, model=model))
        finally:
            self.stats.in_flight -= 1

    def _chat(self, request: ChatRequest, *, stream: bool) -> ChatOutcome:
        try:
            return self.simulator.chat(request.with_model(self.deployment.model), stream=stream)
        except InvalidRequest as exc:
            raise _bad_request(exc, self.name) from None

    # ------------------------------------------------------------------------------------------ embeddings
    async def embed(self, request: EmbeddingsRequest) -> Reply:
        self.stats.count("embeddings")
        try:
            outcome = self.simulator.embeddings(request.with_model(self.deployment.model))
        except InvalidRequest as exc:
            raise _bad_request(exc, self.name) from None
        self.stats.in_flight += 1
        try:
            await self._raise_for(outcome)
            if outcome.timing.ttft > 0:
                await self._sleep(outcome.timing.ttft)
            assert outcome.plan is not None
            return Reply(data=embeddings_body(outcome.plan), headers=dict(outcome.headers) or None)
        finally:
            self.stats.in_flight -= 1

    # ------------------------------------------------------------------------------------------ faults
    async def _raise_for(self, outcome: ChatOutcome | EmbeddingsOutcome) -> None:
        """Raise what a faulty upstream's answer would raise; a hang waits until the caller cancels."""
        if outcome.status != 200:
            assert outcome.error is not None
            message = outcome.error["error"]["message"]
            raise UpstreamStatusError(
                f"{self.name}: {message}",
                upstream_status=outcome.status,
                provider=self.name,
                retry_after=outcome.retry_after,
                headers=dict(outcome.headers),
            )
        if outcome.fault == "hang":
            await asyncio.get_running_loop().create_future()  # never resolved: only cancellation ends it
        if outcome.fault == "malformed":
            raise UpstreamProtocolError(
                f"{self.name} answered with a body that is not JSON (simulated)", provider=self.name
            )


def _bad_request(exc: InvalidRequest, provider: str) -> UpstreamStatusError:
    """A request the sim refuses is the upstream's 400, as from a real provider."""
    return UpstreamStatusError(
        f"{provider}: {exc.message}", upstream_status=400, provider=provider, param=exc.param
    )
