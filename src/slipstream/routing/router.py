"""The router: the pipeline's last step, carrying out the routing decisions made in this package.

For one call it orders the group's deployments (strategy), skips those whose breaker is open, waits for a
deployment's limits, tries the call under one deadline, fails over to the next deployment on a retryable error
(across providers: every adapter speaks the canonical types), and starts another round after a jittered backoff
while the retry policy, the retry budget and the deadline allow. Hedging sends a second attempt to another
deployment when the first has produced no first byte within a delay and keeps whichever answers first.

Streams are retried only before their first chunk: an attempt counts as answered once its first chunk has
arrived; a failure after that reaches the client as an error event (see the gateway's SSE framing).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

from ..call import Call, CallResult
from ..errors import NoHealthyDeployment, RateLimited, UpstreamProtocolError, UpstreamTimeout
from ..limits import Limiter, estimate_tokens
from ..providers.base import Deployment, Provider
from ..streams import prepend, replay_stream
from ..types import ChatRequest, Chunk, ChunkStream, Reply
from .breaker import CircuitBreaker, counts_as_failure
from .retry import GiveUp, RetryBudget
from .strategies import DeploymentStats, get_strategy

if TYPE_CHECKING:
    from ..config import ModelGroup
    from ..limits.shared import SharedLimits

__all__ = ["DeploymentRuntime", "Router"]

_P95_SAMPLES = 200  # time-to-first-byte samples kept per group for hedging at the observed p95
_P95_MIN_SAMPLES = 20


class DeploymentRuntime:
    """What the router knows about one deployment: its provider, stats, breaker and limiter."""

    __slots__ = ("breaker", "deployment", "limiter", "provider", "stats")

    def __init__(
        self,
        deployment: Deployment,
        provider: Provider,
        clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[Any]],
        shared: SharedLimits | None = None,
    ) -> None:
        self.deployment = deployment
        self.provider = provider
        self.stats = DeploymentStats(weight=deployment.weight, priority=deployment.priority)
        self.breaker: CircuitBreaker
        self.limiter = (
            Limiter(
                deployment.limits,
                name=deployment.label,
                clock=clock,
                sleep=sleep,
                shared=None if shared is None else shared.scope(f"dep:{deployment.label}"),
            )
            if deployment.limits is not None
            else None
        )

    def snapshot(self) -> dict[str, Any]:
        return {
            "deployment": self.deployment.label,
            "breaker": self.breaker.snapshot(),
            "in_flight": self.stats.in_flight,
            "latency_ewma": self.stats.latency if self.stats.measured else None,
            "limits": self.limiter.stats() if self.limiter is not None else None,
        }


class _GroupState:
    __slots__ = ("budget", "ttfb")

    def __init__(self, ratio: float, clock: Callable[[], float]) -> None:
        self.budget = RetryBudget(ratio=ratio, clock=clock)
        self.ttfb: deque[float] = deque(maxlen=_P95_SAMPLES)

    def p95(self) -> float | None:
        if len(self.ttfb) < _P95_MIN_SAMPLES:
            return None
        ordered = sorted(self.ttfb)
        return ordered[min(len(ordered) - 1, math.ceil(0.95 * len(ordered)) - 1)]


class Router:
    def __init__(
        self,
        resolve: Callable[[str], ModelGroup],
        provider_for: Callable[[Deployment], Provider],
        *,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] = asyncio.sleep,
        shared_limits: SharedLimits | None = None,
        on_runtime: Callable[[DeploymentRuntime], None] | None = None,
    ) -> None:
        self.resolve = resolve
        self.shared_limits = shared_limits
        self.on_runtime = on_runtime  # told of each deployment's runtime once (shared breaker state)
        self.provider_for = provider_for
        self.rng = rng or random.Random()
        self.clock = clock
        self.sleep = sleep
        self._runtimes: dict[int, DeploymentRuntime] = {}
        self._groups: dict[str, _GroupState] = {}
        self.retries = 0
        self.fallbacks = 0
        self.hedges = 0
        self.hedge_wins = 0
        self.static_fallbacks = 0

    # ------------------------------------------------------------------------------------------- state
    def runtime(self, group: ModelGroup, deployment: Deployment) -> DeploymentRuntime:
        rt = self._runtimes.get(id(deployment))
        if rt is None:
            rt = DeploymentRuntime(
                deployment, self.provider_for(deployment), self.clock, self.sleep, self.shared_limits
            )
            b = group.policy.breaker
            rt.breaker = CircuitBreaker(
                failure_threshold=b.failures,
                error_rate=b.error_rate,
                min_requests=b.min_requests,
                window=b.window,
                cooldown=b.cooldown,
                clock=self.clock,
            )
            self._runtimes[id(deployment)] = rt
            if self.on_runtime is not None:
                self.on_runtime(rt)
        return rt

    def _group_state(self, group: ModelGroup) -> _GroupState:
        state = self._groups.get(group.name)
        if state is None:
            state = self._groups[group.name] = _GroupState(group.policy.retry_budget, self.clock)
        return state

    def health(self, groups: list[ModelGroup]) -> dict[str, list[dict[str, Any]]]:
        return {g.name: [self.runtime(g, d).snapshot() for d in g.deployments] for g in groups}

    # ------------------------------------------------------------------------------------------- routing
    async def __call__(self, call: Call) -> CallResult:
        group = self.resolve(call.request.model)
        policy = group.policy
        state = self._group_state(group)
        state.budget.record_request()
        deadline = call.deadline
        if policy.timeout is not None:
            limit = self.clock() + policy.timeout
            deadline = limit if deadline is None else min(deadline, limit)
        strategy = get_strategy(policy.strategy)
        last: BaseException | None = None
        attempts = 0
        round_no = 0
        while True:
            round_no += 1
            runtimes = [self.runtime(group, d) for d in group.deployments]
            open_ = [rt for rt in runtimes if rt.breaker.would_allow()]
            stats = {id(rt): rt.stats for rt in open_}
            by_id = {id(rt): rt for rt in open_}
            order = [by_id[i] for i in strategy([id(rt) for rt in open_], stats, self.rng)]
            if not order and last is None:
                last = NoHealthyDeployment(
                    f"every deployment of '{group.name}' is unavailable (circuit open)"
                )
            while order:
                if attempts > 0:
                    if not state.budget.try_spend():
                        order = []
                        break
                    self.retries += 1
                    if order[0].deployment is not group.deployments[0]:
                        self.fallbacks += 1
                attempts += 1
                used: list[DeploymentRuntime] = []
                try:
                    hedge_delay = self._hedge_delay(group, state) if len(order) > 1 else None
                    if hedge_delay is not None:
                        result = await self._hedged(
                            call, order[0], order[1], hedge_delay, deadline, state, used
                        )
                    else:
                        used.append(order[0])
                        result = await self._attempt(call, order[0], deadline, state)
                    call.attempts = attempts
                    return result
                except (RateLimited, NoHealthyDeployment) as exc:  # its own limits are full, or its breaker
                    last = exc  # just opened: try the next deployment
                except Exception as exc:
                    last = exc
                    if not policy.retry.is_retryable(exc):
                        raise
                finally:
                    order = [rt for rt in order if rt not in used]
            assert last is not None
            if isinstance(last, NoHealthyDeployment):
                break
            decision = policy.retry.decide(round_no, last, now=self.clock(), deadline=deadline, rng=self.rng)
            if isinstance(decision, GiveUp):
                break
            await self.sleep(decision.delay)
        call.attempts = attempts
        if policy.fallback_reply is not None and not isinstance(last, RateLimited):
            self.static_fallbacks += 1
            call.fallback = "static"
            return _static_reply(call, policy.fallback_reply)
        raise last

    def _hedge_delay(self, group: ModelGroup, state: _GroupState) -> float | None:
        policy = group.policy
        if policy.hedge_after is not None:
            return policy.hedge_after
        if policy.hedge_p95:
            return state.p95()
        return None

    async def _hedged(
        self,
        call: Call,
        first: DeploymentRuntime,
        second: DeploymentRuntime,
        delay: float,
        deadline: float | None,
        state: _GroupState,
        used: list[DeploymentRuntime],
    ) -> CallResult:
        """Start ``first``; if it has no answer within ``delay``, start ``second`` too; keep the first answer."""
        used.append(first)
        primary_started = self.clock()
        primary = asyncio.ensure_future(self._attempt(call, first, deadline, state))
        try:
            done, _ = await asyncio.wait({primary}, timeout=delay)
        except BaseException:
            primary.cancel()
            raise
        if done:
            return primary.result()
        self.hedges += 1
        call.hedged = True
        used.append(second)
        backup = asyncio.ensure_future(self._attempt(call, second, deadline, state))
        pending = {primary, backup}
        error: BaseException | None = None
        try:
            while pending:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    if task.exception() is None:
                        if task is backup:
                            self.hedge_wins += 1
                        winner = second if task is backup else first
                        call.deployment = winner.deployment.label  # both may have answered; this one is used
                        return task.result()
                    error = task.exception()
        finally:
            if primary in pending:
                # The slow primary never reports its time to first byte; record what it had waited, a lower
                # bound, so the p95 the hedge delay follows is not computed from the fast answers alone.
                state.ttfb.append(self.clock() - primary_started)
            for task in pending:
                task.cancel()
                with contextlib.suppress(BaseException):
                    loser = await task
                    if not isinstance(loser, Reply):
                        await loser.aclose()  # type: ignore[attr-defined]
        assert error is not None
        raise error

    async def _attempt(
        self, call: Call, rt: DeploymentRuntime, deadline: float | None, state: _GroupState
    ) -> CallResult:
        """One try on one deployment, under the deadline, with its limiter and breaker."""
        if deadline is not None and self.clock() >= deadline:
            raise UpstreamTimeout("the request's deadline passed before it could be sent")
        permit = None
        if rt.limiter is not None:
            wait = rt.limiter.spec.max_wait
            if deadline is not None:
                wait = max(0.0, min(wait, deadline - self.clock()))
            permit = await rt.limiter.take(_estimate(call), max_wait=wait)
        if not rt.breaker.allow():
            if permit is not None:
                permit.refund()
                permit.release()
            raise NoHealthyDeployment(f"{rt.deployment.label}: circuit open")
        started = self.clock()
        rt.stats.start()
        try:
            async with _deadline(None if deadline is None else deadline - started):
                result = await self._send(call, rt)
        except BaseException as exc:
            rt.stats.finish(None)
            _report(rt, exc)
            if permit is not None:
                permit.finish(exc)
            _add_upstream_time(call, self.clock() - started)
            if not isinstance(exc, asyncio.CancelledError):  # a cancelled hedge loser says nothing
                # A request that fails is logged against the last deployment it tried (an answer overwrites it).
                call.deployment = rt.deployment.label
            raise
        call.deployment = rt.deployment.label  # set by the attempt that answered (a hedge may lose)
        ttfb = self.clock() - started
        _add_upstream_time(call, ttfb)
        state.ttfb.append(ttfb)
        if isinstance(result, Reply):
            rt.stats.finish(ttfb)
            rt.breaker.record_success()
            if permit is not None:
                _settle(permit, result.usage)
                permit.observe(result.headers)
                permit.finish(None)
            return result
        return _watched(result, rt, permit, ttfb, call, self.clock)

    async def _send(self, call: Call, rt: DeploymentRuntime) -> CallResult:
        request = call.request
        provider = rt.provider
        if not isinstance(request, ChatRequest):
            return await provider.embed(request)
        if not request.stream:
            return await provider.complete(request)
        stream = provider.stream(request)
        try:
            first = await anext(stream)
        except StopAsyncIteration:
            raise UpstreamProtocolError(
                f"{rt.deployment.label} ended the stream before sending anything"
            ) from None
        except BaseException:
            with contextlib.suppress(Exception):
                await stream.aclose()  # type: ignore[attr-defined]
            raise
        return prepend(first, stream)


def _report(rt: DeploymentRuntime, exc: BaseException) -> None:
    if counts_as_failure(exc) or isinstance(exc, TimeoutError):
        rt.breaker.record_failure()
    else:
        rt.breaker.release()


def _settle(permit: Any, usage: Any) -> None:
    if usage and usage.get("total_tokens") is not None:
        permit.settle(int(usage["total_tokens"]))


def _estimate(call: Call) -> int:
    return estimate_tokens(call.request.body)


@contextlib.asynccontextmanager
async def _deadline(remaining: float | None) -> AsyncIterator[None]:
    """Bound an attempt by the seconds left before the request's deadline (measured on the router's clock)."""
    if remaining is None:
        yield
        return
    try:
        async with asyncio.timeout(max(0.0, remaining)):
            yield
    except TimeoutError:
        raise UpstreamTimeout("the request's deadline passed while waiting for the upstream") from None


def _add_upstream_time(call: Call, seconds: float) -> None:
    call.upstream_ms = (call.upstream_ms or 0.0) + seconds * 1000


async def _watched(
    stream: ChunkStream,
    rt: DeploymentRuntime,
    permit: Any,
    ttfb: float,
    call: Call,
    clock: Callable[[], float],
) -> AsyncIterator[Chunk]:
    """Pass a stream through, then tell the breaker, stats, limiter and call how it ended."""
    usage = None
    error: BaseException | None = None
    first_byte_at = clock()
    try:
        async for chunk in stream:
            if chunk.data.get("usage"):
                usage = chunk.data["usage"]
            yield chunk
    except BaseException as exc:
        error = exc
        raise
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        _add_upstream_time(call, clock() - first_byte_at)
        rt.stats.finish(ttfb if error is None else None)
        if error is None or isinstance(error, GeneratorExit | asyncio.CancelledError):
            rt.breaker.record_success()
        else:
            _report(rt, error)
        if permit is not None:
            _settle(permit, usage)
            permit.finish(None if isinstance(error, GeneratorExit | asyncio.CancelledError) else error)


def _static_reply(call: Call, text: str) -> CallResult:
    reply = {
        "id": "chatcmpl-slipstream-fallback",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": call.request.model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }
    if isinstance(call.request, ChatRequest) and call.request.stream:
        return replay_stream(reply, include_usage=True)
    return Reply(reply)
