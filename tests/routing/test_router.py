"""The router driven directly: scripted fake upstreams, a fake clock and a fake sleep that advances it.

Every test here runs in (almost) no real time: backoffs, Retry-After waits, cooldowns and rate-limit windows
move the fake clock instead of sleeping. Only hedging uses short real delays, because it races real tasks.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from slipstream.call import Call
from slipstream.config import BreakerConfig, GroupPolicy, ModelGroup
from slipstream.errors import (
    RateLimited,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from slipstream.limits import LimitSpec
from slipstream.providers.base import Deployment
from slipstream.routing import RetryPolicy
from slipstream.routing.router import Router
from slipstream.schema import validate_chat_request
from slipstream.streams import replay_chunks
from slipstream.types import Chunk, Reply

MESSAGES = [{"role": "user", "content": "hello"}]
# A breaker that never opens, for tests about something else.
NO_BREAKER = BreakerConfig(failures=10_000, min_requests=10_000)


class Clock:
    """A fake monotonic clock; ``sleep`` records the delay, moves the clock and yields once."""

    def __init__(self, now: float | None = None) -> None:
        # Starts at the real monotonic time: the router turns deadlines into event-loop timeouts with
        # time.monotonic() (see test_group_timeout_with_an_injected_clock_not_near_monotonic).
        self.now = time.monotonic() if now is None else now
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class VirtualTime(Clock):
    """A fake clock for many concurrent sleepers: ``run`` lets the loop settle, then jumps the clock to the
    earliest pending sleep and wakes it (a discrete-event simulation of the event loop's timers)."""

    def __init__(self) -> None:
        super().__init__()
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        wake: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + seconds, next(self._seq), wake))
        await wake

    async def run(self, main: Awaitable[Any]) -> Any:
        task = asyncio.ensure_future(main)
        idle = 0
        while not task.done():
            await _settle()
            while self._timers and self._timers[0][2].done():  # cancelled sleeps
                heapq.heappop(self._timers)
            if not self._timers:
                idle += 1
                assert idle < 1000, "nothing to wake and nothing finishing: deadlock"
                continue
            idle = 0
            when, _, wake = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            wake.set_result(None)
        return task.result()


async def _settle() -> None:
    """Yield until every other task is blocked (the loop has nothing else ready to run)."""
    loop = asyncio.get_running_loop()
    ready = getattr(loop, "_ready", None)  # CPython's run queue; without it, a generous fixed number of turns
    for _ in range(100_000 if ready is not None else 2_000):
        await asyncio.sleep(0)
        if ready is not None and not ready:
            return


def reply_body(text: str) -> dict[str, Any]:
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
    }


def err(status: int, retry_after: float | None = None) -> UpstreamStatusError:
    return UpstreamStatusError(f"upstream said {status}", upstream_status=status, retry_after=retry_after)


class Upstream:
    """A scripted provider: each call takes the next outcome (an exception is raised, "ok" answers).

    ``hold`` makes every call wait on an event first (for hedging); ``times`` records the clock at each call.
    """

    def __init__(
        self,
        name: str,
        outcomes: list[Any] | None = None,
        *,
        default: Any = "ok",
        clock: Clock | None = None,
        hold: float | None = None,
        break_after: int | None = None,
    ) -> None:
        self.name = name
        self.outcomes = list(outcomes or [])
        self.default = default
        self.clock = clock
        self.hold = hold
        self.break_after = break_after
        self.calls = 0
        self.times: list[float] = []
        self.cancelled = 0

    async def _begin(self) -> None:
        self.calls += 1
        if self.clock is not None:
            self.times.append(self.clock())
        try:
            if self.hold is not None:
                await asyncio.sleep(self.hold)  # real time: only hedging tests use it
            else:
                await asyncio.sleep(0)  # a real upstream always yields to the loop
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        outcome = self.outcomes.pop(0) if self.outcomes else self.default
        if isinstance(outcome, BaseException):
            raise outcome

    async def complete(self, request: Any) -> Reply:
        await self._begin()
        return Reply(reply_body(f"from {self.name}"))

    def stream(self, request: Any) -> AsyncIterator[Chunk]:
        return self._stream()

    async def _stream(self) -> AsyncIterator[Chunk]:
        await self._begin()
        for i, chunk in enumerate(replay_chunks(reply_body(f"from {self.name} " * 20), include_usage=True)):
            if self.break_after is not None and i == self.break_after:
                raise UpstreamProtocolError("the stream broke off")
            yield chunk

    async def aclose(self) -> None:
        pass


def build(
    *upstreams: Upstream,
    clock: Clock | Callable[[], float],
    limits: dict[str, LimitSpec] | None = None,
    **policy: Any,
) -> tuple[Router, ModelGroup]:
    limits = limits or {}
    deployments = tuple(
        Deployment(provider="sim", model=u.name, name=u.name, limits=limits.get(u.name)) for u in upstreams
    )
    policy.setdefault("breaker", NO_BREAKER)
    group = ModelGroup("g", deployments, GroupPolicy(**policy))
    by_id = {id(d): u for d, u in zip(deployments, upstreams, strict=True)}
    router = Router(
        lambda model: group,
        lambda d: by_id[id(d)],  # type: ignore[arg-type, return-value]
        rng=random.Random(7),
        clock=clock,
        sleep=clock.sleep if isinstance(clock, Clock) else asyncio.sleep,
    )
    return router, group


def chat_call(*, stream: bool = False, deadline: float | None = None, content: str = "hello") -> Call:
    body: dict[str, Any] = {"model": "g", "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
    return Call(validate_chat_request(body), deadline=deadline)


def text_of(result: Any) -> str:
    assert isinstance(result, Reply)
    return str(result.data["choices"][0]["message"]["content"])


# ------------------------------------------------------------------------------------------ failover, retries
async def test_failover_answers_from_the_second_deployment_without_sleeping():
    clock = Clock()
    a, b = Upstream("a", default=err(503)), Upstream("b")
    router, _ = build(a, b, clock=clock)
    call = chat_call()
    assert text_of(await router(call)) == "from b"
    assert (a.calls, b.calls) == (1, 1)
    assert call.deployment == "b" and call.attempts == 2
    assert (router.retries, router.fallbacks) == (1, 1)
    assert clock.sleeps == []  # failing over to another deployment does not back off


async def test_an_upstream_400_is_not_retried_nor_failed_over():
    clock = Clock()
    a, b = Upstream("a", default=err(400)), Upstream("b")
    router, group = build(a, b, clock=clock)
    with pytest.raises(UpstreamStatusError) as info:
        await router(chat_call())
    assert info.value.status == 400
    assert (a.calls, b.calls) == (1, 0)
    assert clock.sleeps == [] and router.retries == 0
    # The request was at fault, not the deployment: its breaker did not count a failure.
    assert router.runtime(group, group.deployments[0]).breaker.snapshot()["consecutive_failures"] == 0


@pytest.mark.parametrize(
    "failure",
    [
        err(500),
        err(502),
        err(503),
        err(429),
        err(529),
        UpstreamTimeout("slow"),
        UpstreamProtocolError("junk"),
    ],
    ids=lambda e: type(e).__name__ + str(getattr(e, "upstream_status", "")),
)
async def test_transient_failures_are_retried(failure: Exception):
    clock = Clock()
    a = Upstream("a", [failure])
    router, _ = build(a, clock=clock, retry=RetryPolicy(max_attempts=3, base_delay=0.1, max_delay=1.0))
    call = chat_call()
    assert text_of(await router(call)) == "from a"
    assert a.calls == 2 and call.attempts == 2 and router.retries == 1
    assert len(clock.sleeps) == 1 and 0.0 <= clock.sleeps[0] <= 0.1


async def test_backoff_honours_retry_after_and_grows_exponentially():
    clock = Clock()
    a = Upstream("a", [err(429, retry_after=2.5), err(503), err(503)], clock=clock)
    router, _ = build(a, clock=clock, retry=RetryPolicy(max_attempts=4, base_delay=0.1, max_delay=0.3))
    assert text_of(await router(chat_call())) == "from a"
    assert a.calls == 4
    assert len(clock.sleeps) == 3
    assert clock.sleeps[0] >= 2.5  # never sooner than the upstream's Retry-After
    assert clock.sleeps[1] <= 0.2 and clock.sleeps[2] <= 0.3  # jittered: base * 2**(n-1), capped
    gaps = [b - a for a, b in zip(a.times, a.times[1:], strict=False)]
    assert gaps == pytest.approx(clock.sleeps)  # each retry starts right after its backoff


async def test_a_retry_after_longer_than_the_cap_gives_up_at_once():
    clock = Clock()
    a = Upstream("a", [err(429, retry_after=3600.0)])
    router, _ = build(a, clock=clock)
    with pytest.raises(UpstreamStatusError):
        await router(chat_call())
    assert a.calls == 1 and clock.sleeps == []


async def test_max_attempts_is_respected():
    clock = Clock()
    a = Upstream("a", default=err(503))
    router, _ = build(a, clock=clock, retry=RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.01))
    call = chat_call()
    with pytest.raises(UpstreamStatusError):
        await router(call)
    assert a.calls == 3 and call.attempts == 3 and len(clock.sleeps) == 2


async def test_max_attempts_counts_rounds_over_every_deployment():
    clock = Clock()
    a, b = Upstream("a", default=err(503)), Upstream("b", default=err(502))
    router, _ = build(a, b, clock=clock, retry=RetryPolicy(max_attempts=2, base_delay=0.01, max_delay=0.01))
    call = chat_call()
    with pytest.raises(UpstreamStatusError):
        await router(call)
    assert (a.calls, b.calls) == (2, 2) and call.attempts == 4 and len(clock.sleeps) == 1


async def test_retry_budget_stops_retries_under_an_outage():
    clock = Clock()
    a = Upstream("a", default=err(503))
    router, _ = build(
        a, clock=clock, retry=RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.0), retry_budget=0.2
    )
    requests = 200
    for i in range(requests):
        with pytest.raises(UpstreamStatusError):
            await router(chat_call(content=f"q{i}"))
    # Without a budget: 3 attempts each (600 calls). The budget allows 20% of the requests plus a floor of
    # 1/s over its 10 s window: at most 0.2 * 200 + 10 = 50 retries.
    assert router.retries <= 0.2 * requests + 10
    assert router.retries >= 0.2 * requests  # ... and it does spend what it has
    assert a.calls == requests + router.retries


async def test_a_deployments_own_rate_limit_fails_over_and_is_not_retried():
    clock = Clock()
    a, b = Upstream("a"), Upstream("b")
    limits = {"a": LimitSpec(rpm=1, max_wait=0.0), "b": LimitSpec(rpm=1, max_wait=0.0)}
    router, _ = build(a, b, clock=clock, limits=limits, fallback_reply="sorry")
    assert text_of(await router(chat_call(content="1"))) == "from a"
    second = chat_call(content="2")
    assert text_of(await router(second)) == "from b"
    assert second.deployment == "b"
    third = chat_call(content="3")
    with pytest.raises(RateLimited):  # not the static fallback: a local limit is a 429 for the client
        await router(third)
    assert (a.calls, b.calls) == (1, 1) and clock.sleeps == []


# ------------------------------------------------------------------------------------------ deadline
@pytest.mark.parametrize("where", ["group timeout", "call deadline"])
async def test_no_retry_starts_past_the_deadline(where: str):
    clock = Clock()
    a = Upstream("a", default=err(503, retry_after=0.6), clock=clock)
    retry = RetryPolicy(max_attempts=10, base_delay=0.0, max_delay=0.0)
    if where == "group timeout":
        router, _ = build(a, clock=clock, retry=retry, timeout=1.0)
        call = chat_call()
    else:
        router, _ = build(a, clock=clock, retry=retry)
        call = chat_call(deadline=clock() + 1.0)
    start = clock()
    with pytest.raises(UpstreamStatusError):
        await router(call)
    # t=0 fails, retry at 0.6 fails; a retry at 1.2 would start past the 1.0 deadline: not started.
    assert a.times == pytest.approx([start, start + 0.6])
    assert clock.sleeps == pytest.approx([0.6])


async def test_the_tighter_of_call_deadline_and_group_timeout_wins():
    clock = Clock()
    a = Upstream("a", default=err(503, retry_after=0.3), clock=clock)
    retry = RetryPolicy(max_attempts=10, base_delay=0.0, max_delay=0.0)
    router, _ = build(a, clock=clock, retry=retry, timeout=10.0)
    with pytest.raises(UpstreamStatusError):
        await router(chat_call(deadline=clock() + 1.0))
    assert len(a.times) == 4  # 0, 0.3, 0.6, 0.9 — never 1.2
    assert max(a.times) < clock.now + 1.0


async def test_a_hanging_upstream_is_cut_at_the_deadline():
    # Real clock and sleep: the attempt really hangs and the deadline really cuts it.
    a = Upstream("a", hold=30.0)
    router, _ = build(
        a, clock=time.monotonic, retry=RetryPolicy(max_attempts=5, base_delay=0.0, max_delay=0.0)
    )
    started = time.monotonic()
    with pytest.raises(UpstreamTimeout):
        await router(chat_call(deadline=time.monotonic() + 0.1))
    assert time.monotonic() - started < 1.0
    assert a.cancelled == 1


async def test_group_timeout_with_an_injected_clock_not_near_monotonic():
    clock = Clock(now=0.0)
    a = Upstream("a")
    router, _ = build(a, clock=clock, timeout=10.0)
    assert text_of(await router(chat_call())) == "from a"


# ------------------------------------------------------------------------------------------ breaker
async def test_breaker_opens_skips_the_deployment_then_half_opens_and_closes():
    clock = Clock()
    a, b = Upstream("a", default=err(503)), Upstream("b")
    router, group = build(
        a, b, clock=clock, breaker=BreakerConfig(failures=3, cooldown=10.0), retry=RetryPolicy(max_attempts=1)
    )
    health = lambda: [d["breaker"]["state"] for d in router.health([group])["g"]]  # noqa: E731

    for i in range(3):
        assert text_of(await router(chat_call(content=f"{i}"))) == "from b"
    assert a.calls == 3
    assert health() == ["open", "closed"]

    for i in range(5):  # open: skipped, its call count stops growing
        assert text_of(await router(chat_call(content=f"skip{i}"))) == "from b"
    assert a.calls == 3 and b.calls == 8

    clock.now += 10.0  # cooldown over
    assert health() == ["half_open", "closed"]
    a.default = "ok"
    call = chat_call(content="probe")
    assert text_of(await router(call)) == "from a"  # the probe goes to it and succeeds
    assert a.calls == 4 and call.deployment == "a"
    assert health() == ["closed", "closed"]


async def test_a_failed_probe_reopens_the_breaker():
    clock = Clock()
    a, b = Upstream("a", default=err(503)), Upstream("b")
    router, group = build(
        a, b, clock=clock, breaker=BreakerConfig(failures=1, cooldown=5.0), retry=RetryPolicy(max_attempts=1)
    )
    await router(chat_call(content="1"))
    clock.now += 5.0
    await router(chat_call(content="2"))  # the probe fails: open again, fresh cooldown
    assert a.calls == 2
    state = router.health([group])["g"][0]["breaker"]
    assert state["state"] == "open" and state["retry_at"] == pytest.approx(clock.now + 5.0)
    await router(chat_call(content="3"))
    assert a.calls == 2


# ------------------------------------------------------------------------------------------ streams
async def test_a_stream_failing_before_its_first_chunk_fails_over():
    clock = Clock()
    a, b = Upstream("a", default=err(502)), Upstream("b")
    router, _ = build(a, b, clock=clock)
    call = chat_call(stream=True)
    stream = await router(call)
    chunks = [c async for c in stream]  # type: ignore[union-attr]
    assert chunks and call.deployment == "b" and (a.calls, b.calls) == (1, 1)


async def test_a_failure_mid_stream_reaches_the_reader_and_is_not_retried():
    clock = Clock()
    a, b = Upstream("a", break_after=3), Upstream("b")
    router, group = build(a, b, clock=clock)
    stream = await router(chat_call(stream=True))
    got: list[Chunk] = []
    with pytest.raises(UpstreamProtocolError):
        async for chunk in stream:  # type: ignore[union-attr]
            got.append(chunk)
    assert len(got) == 3
    assert (a.calls, b.calls) == (1, 0)  # content already reached the client: no silent retry
    assert router.runtime(group, group.deployments[0]).breaker.snapshot()["consecutive_failures"] == 1


# ------------------------------------------------------------------------------------------ hedging
async def test_hedge_goes_to_the_second_deployment_when_the_first_is_slow():
    clock = Clock()
    a, b = Upstream("a", hold=5.0), Upstream("b")
    router, _ = build(a, b, clock=clock, hedge_after=0.02)
    call = chat_call()
    started = time.monotonic()
    assert text_of(await router(call)) == "from b"
    assert time.monotonic() - started < 1.0
    assert call.hedged and call.deployment == "b"
    assert (router.hedges, router.hedge_wins) == (1, 1)
    assert a.cancelled == 1  # the loser is cancelled, not left running


async def test_no_hedge_when_the_first_answers_in_time():
    clock = Clock()
    a, b = Upstream("a"), Upstream("b")
    router, _ = build(a, b, clock=clock, hedge_after=0.5)
    call = chat_call()
    assert text_of(await router(call)) == "from a"
    assert not call.hedged and b.calls == 0 and router.hedges == 0


async def test_the_primary_can_still_win_after_the_hedge_started():
    clock = Clock()
    a, b = Upstream("a", hold=0.05), Upstream("b", hold=5.0)
    router, _ = build(a, b, clock=clock, hedge_after=0.01)
    call = chat_call()
    assert text_of(await router(call)) == "from a"
    assert call.hedged and (router.hedges, router.hedge_wins) == (1, 0)
    assert b.cancelled == 1


async def test_the_deployment_reported_is_the_one_that_answered_a_hedged_call():
    clock = Clock()
    a, b = Upstream("a", hold=0.05), Upstream("b", hold=5.0)
    router, _ = build(a, b, clock=clock, hedge_after=0.01)
    call = chat_call()
    assert text_of(await router(call)) == "from a"
    assert call.deployment == "a"


# ------------------------------------------------------------------------------------------ static fallback
async def test_static_fallback_when_every_deployment_fails():
    clock = Clock()
    a, b = Upstream("a", default=err(503)), Upstream("b", default=UpstreamTimeout("slow"))
    router, _ = build(
        a, b, clock=clock, fallback_reply="Sorry, try later.", retry=RetryPolicy(max_attempts=2, base_delay=0)
    )
    call = chat_call()
    assert text_of(await router(call)) == "Sorry, try later."
    assert call.fallback == "static" and router.static_fallbacks == 1
    assert (a.calls, b.calls) == (2, 2)

    stream_call = chat_call(stream=True)
    stream = await router(stream_call)
    chunks = [c async for c in stream]  # type: ignore[union-attr]
    text = "".join(ch["delta"].get("content") or "" for c in chunks for ch in c.data["choices"])
    assert text == "Sorry, try later." and stream_call.fallback == "static"


async def test_no_static_fallback_for_a_request_at_fault():
    clock = Clock()
    router, _ = build(Upstream("a", default=err(400)), clock=clock, fallback_reply="Sorry")
    call = chat_call()
    with pytest.raises(UpstreamStatusError):
        await router(call)
    assert call.fallback is None and router.static_fallbacks == 0


# ------------------------------------------------------------------------------------------ limits
async def test_deployment_rpm_holds_over_a_simulated_minute():
    """The router's deployment limiter, on the router's fake clock."""
    clock = VirtualTime()
    a = Upstream("a", clock=clock)
    rpm = 120
    spec = LimitSpec(rpm=rpm, max_wait=120.0)
    router, _ = build(a, clock=clock, limits={"a": spec})
    start = clock()

    async def client(n: int) -> None:
        for i in range(n):
            await router(chat_call(content=f"{n}-{i}"))

    await clock.run(asyncio.gather(*(client(100) for _ in range(5))))  # 500 requests wanting to go at once
    times = sorted(a.times)
    assert len(times) == 500
    for minute in range(3):
        lo = start + 60.0 * minute
        in_window = sum(1 for t in times if lo <= t < lo + 60.0)
        assert abs(in_window - rpm) <= 0.05 * rpm, (minute, in_window)
    # ... and over any 60 s, not only aligned minutes.
    assert max(sum(1 for t in times if s <= t < s + 60.0) for s in times) <= rpm


async def test_deployment_limiter_uses_the_routers_clock_and_sleep():
    clock = Clock()
    a = Upstream("a", clock=clock)
    router, _ = build(a, clock=clock, limits={"a": LimitSpec(rpm=1, max_wait=120.0)})
    await router(chat_call(content="1"))
    # The second request must wait ~60 s of *fake* time; with real sleeps it would not finish in 0.5 s.
    await asyncio.wait_for(router(chat_call(content="2")), timeout=0.5)
    assert a.times[1] - a.times[0] >= 60.0
