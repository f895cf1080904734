"""The async limiter, driven by a virtual clock: time moves only when a test says so, and nothing really sleeps."""

import asyncio
import heapq
from collections.abc import Callable

import pytest

from slipstream.errors import RateLimited, UpstreamStatusError
from slipstream.limits.adaptive import AdaptiveRate, AdaptiveSpec
from slipstream.limits.limiter import Limiter, LimitSpec, Permit


class VirtualTime:
    """A clock and a ``sleep`` for the limiter. ``advance`` moves time, waking sleepers in order of deadline."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = 0
        self._probes: list[Callable[[], object]] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._timers, (self.now + max(0.0, delay), self._seq, fut))
        self._seq += 1
        await fut

    def watch(self, probe: Callable[[], object]) -> None:
        self._probes.append(probe)

    async def idle(self) -> None:
        """Let every task run until all of them wait for a timer or an event."""
        while True:
            mark = self._state()
            for _ in range(30):
                await asyncio.sleep(0)
            if self._state() == mark:
                return

    async def advance(self, seconds: float) -> None:
        target = self.now + seconds
        await self.idle()
        while self._timers and self._timers[0][0] <= target:
            when, _, fut = heapq.heappop(self._timers)
            if fut.done():  # its sleeper was cancelled
                continue
            self.now = max(self.now, when)
            fut.set_result(None)
            await self.idle()
        self.now = target
        await self.idle()

    def _state(self) -> tuple[object, ...]:
        return (self._seq, len(asyncio.all_tasks()), *(probe() for probe in self._probes))


@pytest.fixture
def vt() -> VirtualTime:
    return VirtualTime()


def make(vt: VirtualTime, spec: LimitSpec, **kw) -> Limiter:
    limiter = Limiter(spec, clock=vt.clock, sleep=vt.sleep, **kw)
    vt.watch(lambda: (limiter.admitted, limiter.in_flight, limiter.waiting, limiter.refused))
    return limiter


class Tasks:
    """Requests started by a test, cancelled at the end if still running."""

    def __init__(self) -> None:
        self.tasks: list[asyncio.Task] = []

    def start(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)


@pytest.fixture
async def tasks():
    t = Tasks()
    yield t
    await t.close()


async def hold(
    limiter: Limiter, vt: VirtualTime, log: list, name: object, tokens: int = 0, seconds: float = 0.0, **kw
) -> None:
    async with limiter.acquire(tokens, **kw):
        log.append((name, vt.now))
        if seconds:
            await vt.sleep(seconds)


# --------------------------------------------------------------------------------------------- basics
async def test_admits_at_once_when_there_is_room(vt):
    limiter = make(vt, LimitSpec(rpm=10, tpm=1000, max_concurrent=2))
    async with limiter.acquire(100) as permit:
        assert isinstance(permit, Permit)
        assert permit.admitted_at == vt.now
        assert limiter.in_flight == 1
        assert limiter.tpm.used(vt.now) == 100
    assert limiter.in_flight == 0
    assert limiter.rpm.used(vt.now) == 1


async def test_no_limits_means_no_waiting(vt):
    limiter = make(vt, LimitSpec())
    permits = [await limiter.take(10**9) for _ in range(1000)]
    assert limiter.in_flight == 1000
    for p in permits:
        p.release()
        p.release()  # releasing twice gives back one slot, not two
    assert limiter.in_flight == 0


async def test_the_block_releases_its_slot_when_it_raises(vt):
    limiter = make(vt, LimitSpec(max_concurrent=1))
    with pytest.raises(ZeroDivisionError):
        async with limiter.acquire():
            raise ZeroDivisionError
    assert limiter.in_flight == 0
    async with limiter.acquire(max_wait=0):
        pass


# ------------------------------------------------------------------------------------------ the minute
async def test_requests_per_minute_hold_within_five_percent_under_heavy_load(vt, tasks):
    """Ten requests a second offered for four minutes against 60 a minute: each minute admits ~60.

    The others are refused after waiting up to 10 s, as a gateway would."""
    limiter = make(vt, LimitSpec(rpm=60, max_wait=10.0))
    log: list = []

    async def arrivals():
        for i in range(10 * 240):
            tasks.start(hold(limiter, vt, log, i, seconds=0.5))
            await vt.sleep(0.1)

    tasks.start(arrivals())
    start = vt.now
    await vt.advance(240.0)
    times = [t - start for _, t in log]
    for minute in range(4):
        count = sum(1 for t in times if minute * 60 <= t < (minute + 1) * 60)
        assert 57 <= count <= 60, (minute, count)
    for offset in (13.7, 61.3, 100.0, 150.05):  # unaligned windows too
        assert 57 <= sum(1 for t in times if offset <= t < offset + 60) <= 60
    assert [name for name, _ in log] == sorted(name for name, _ in log)  # first come, first served
    assert limiter.refused == 10 * 240 - len(log) - limiter.waiting


async def test_tokens_per_minute_hold_and_settle_hands_back_the_overestimate(vt, tasks):
    """Every request is estimated at 1,000 tokens but uses 250: settling lets ~4x as many through."""
    limiter = make(vt, LimitSpec(tpm=10_000, max_wait=float("inf")))
    log: list = []

    async def request(i):
        async with limiter.acquire(1000) as permit:
            log.append((i, vt.now))
            await vt.sleep(0.2)
            permit.settle(250)

    async def arrivals():
        for i in range(10 * 180):
            tasks.start(request(i))
            await vt.sleep(0.1)

    tasks.start(arrivals())
    start = vt.now
    await vt.advance(180.0)
    for minute in range(1, 3):
        count = sum(1 for _, t in log if minute * 60 <= t - start < (minute + 1) * 60)
        # 10,000 tokens a minute at 250 each is 40 requests; the estimate alone would allow 10.
        assert 36 <= count <= 40, (minute, count)


# ----------------------------------------------------------------------------------------- two phases
async def test_a_request_refused_for_tokens_spends_no_request(vt):
    limiter = make(vt, LimitSpec(rpm=10, tpm=1000))
    await limiter.take(900)
    with pytest.raises(RateLimited):
        await limiter.take(200, max_wait=0)
    assert limiter.rpm.used(vt.now) == 1
    assert limiter.tpm.used(vt.now) == 900


async def test_a_request_refused_for_a_slot_spends_no_budget(vt):
    limiter = make(vt, LimitSpec(rpm=10, tpm=1000, max_concurrent=1))
    await limiter.take(100)
    with pytest.raises(RateLimited):
        await limiter.take(100, max_wait=0)
    assert (limiter.rpm.used(vt.now), limiter.tpm.used(vt.now)) == (1, 100)


async def test_refund_gives_back_request_and_tokens(vt):
    limiter = make(vt, LimitSpec(rpm=1, tpm=1000))
    permit = await limiter.take(600)
    permit.refund()
    permit.release()
    assert (limiter.rpm.used(vt.now), limiter.tpm.used(vt.now)) == (0, 0)
    await limiter.take(1000, max_wait=0)


# -------------------------------------------------------------------------------------------- settling
async def test_settling_a_smaller_usage_wakes_a_request_waiting_for_tokens(vt, tasks):
    limiter = make(vt, LimitSpec(tpm=1000))
    first = await limiter.take(900)
    log: list = []
    tasks.start(hold(limiter, vt, log, "second", tokens=500))
    await vt.idle()
    assert log == []
    first.settle(100)
    await vt.idle()
    assert log == [("second", vt.now)]  # at once: no time has passed
    assert limiter.tpm.used(vt.now) == 600


async def test_settling_a_larger_usage_holds_back_the_next_request(vt):
    limiter = make(vt, LimitSpec(tpm=1000))
    permit = await limiter.take(100)
    permit.settle(950)
    permit.release()
    # Nothing in flight could free tokens sooner: refused at once.
    with pytest.raises(RateLimited) as refused:
        await limiter.take(100, max_wait=1.0)
    assert refused.value.retry_after == pytest.approx(60.0)


async def test_a_wait_for_tokens_is_waited_out_while_a_request_in_flight_may_settle(vt, tasks):
    limiter = make(vt, LimitSpec(tpm=1000))
    await limiter.take(950)
    waiter = tasks.start(limiter.take(100, max_wait=1.0))
    await vt.advance(0.9)
    assert not waiter.done()
    await vt.advance(0.2)
    with pytest.raises(RateLimited) as refused:
        await waiter
    assert refused.value.retry_after == pytest.approx(59.0)  # refused at the deadline, 1 s in


# ------------------------------------------------------------------------------------------- fairness
async def test_a_later_small_request_does_not_overtake_an_earlier_big_one(vt, tasks):
    limiter = make(vt, LimitSpec(tpm=1000, max_wait=120))
    await limiter.take(900)
    log: list = []
    tasks.start(hold(limiter, vt, log, "big", tokens=500))
    await vt.idle()
    tasks.start(hold(limiter, vt, log, "small", tokens=50))  # would fit now: 950 <= 1000
    await vt.advance(30.0)
    assert log == []  # the small one waits its turn behind the big one
    await vt.advance(31.0)
    assert [name for name, _ in log] == ["big", "small"]
    assert log[0][1] == log[1][1]  # and goes right after it


async def test_waiters_are_served_in_arrival_order(vt, tasks):
    limiter = make(vt, LimitSpec(max_concurrent=1, max_wait=100))
    log: list = []
    for i in range(8):
        tasks.start(hold(limiter, vt, log, i, seconds=1.0))
        await vt.idle()
    await vt.advance(10.0)
    assert [name for name, _ in log] == list(range(8))


# ------------------------------------------------------------------------------------------- max_wait
async def test_a_wait_longer_than_max_wait_is_refused_at_once_with_retry_after(vt):
    limiter = make(vt, LimitSpec(rpm=2, max_wait=5.0))
    await limiter.take()
    vt.now += 10.0
    await limiter.take()
    before = vt.now
    with pytest.raises(RateLimited) as refused:
        await limiter.take()
    assert vt.now == before  # told now, not after five seconds
    assert refused.value.retry_after == pytest.approx(50.0)
    assert refused.value.status == 429
    assert limiter.refused == 1


async def test_a_wait_within_max_wait_is_waited_out(vt, tasks):
    limiter = make(vt, LimitSpec(rpm=1, max_wait=5.0))
    await limiter.take()
    vt.now += 57.0
    log: list = []
    tasks.start(hold(limiter, vt, log, "next"))
    await vt.advance(2.9)
    assert log == []
    await vt.advance(0.2)
    assert [name for name, _ in log] == ["next"]
    assert log[0][1] == pytest.approx(vt.now - 0.1)


async def test_waiting_for_a_slot_gives_up_after_max_wait(vt, tasks):
    limiter = make(vt, LimitSpec(max_concurrent=1, max_wait=5.0))
    await limiter.take()
    start = vt.now
    waiter = tasks.start(limiter.take())
    await vt.advance(4.9)
    assert not waiter.done()
    await vt.advance(0.2)
    with pytest.raises(RateLimited) as refused:
        await waiter
    assert refused.value.retry_after is None  # no budget to wait for: only a slot, whose end nobody knows
    assert vt.now - start == pytest.approx(5.1)
    assert limiter.waiting == 0


async def test_per_call_max_wait_overrides_the_spec(vt):
    limiter = make(vt, LimitSpec(max_concurrent=1, max_wait=60.0))
    await limiter.take()
    with pytest.raises(RateLimited):
        await limiter.take(max_wait=0)


# ------------------------------------------------------------------------------------- cancellation
async def test_cancelled_waiters_leave_the_queue_and_hold_no_slot(vt, tasks):
    limiter = make(vt, LimitSpec(max_concurrent=1, max_wait=100))
    holder = await limiter.take()
    log: list = []
    waiters = [tasks.start(hold(limiter, vt, log, i)) for i in range(3)]
    await vt.idle()
    assert limiter.waiting == 3
    waiters[0].cancel()  # the head
    waiters[1].cancel()
    await vt.idle()
    assert limiter.waiting == 1
    holder.release()
    await vt.idle()
    assert [name for name, _ in log] == [2]
    assert (limiter.in_flight, limiter.waiting) == (0, 0)


async def test_cancelling_the_head_just_after_it_was_woken_passes_the_slot_on(vt, tasks):
    limiter = make(vt, LimitSpec(max_concurrent=1, max_wait=100))
    holder = await limiter.take()
    log: list = []
    head = tasks.start(hold(limiter, vt, log, "head"))
    tasks.start(hold(limiter, vt, log, "next"))
    await vt.idle()
    holder.release()  # wakes the head...
    head.cancel()  # ...which is cancelled before it runs
    await vt.idle()
    assert [name for name, _ in log] == ["next"]
    assert (limiter.in_flight, limiter.waiting) == (0, 0)


async def test_a_timeout_around_acquire_leaks_nothing(vt, tasks):
    limiter = make(vt, LimitSpec(rpm=1, max_wait=100))
    await limiter.take()

    async def impatient():
        async with asyncio.timeout(0):  # real loop time: fires on the next loop turn
            await limiter.take()

    with pytest.raises(TimeoutError):
        await impatient()
    await vt.idle()
    assert (limiter.in_flight, limiter.waiting) == (1, 0)
    assert limiter.rpm.used(vt.now) == 1  # the cancelled request spent nothing


# ---------------------------------------------------------------------------------------- concurrency
async def test_never_more_than_max_concurrent_in_flight(vt, tasks):
    limiter = make(vt, LimitSpec(max_concurrent=3, max_wait=100))
    peak = 0

    async def work(i):
        nonlocal peak
        async with limiter.acquire():
            peak = max(peak, limiter.in_flight)
            await vt.sleep(1.0 + (i % 3) * 0.5)

    jobs = [tasks.start(work(i)) for i in range(20)]
    await vt.advance(30.0)
    assert all(job.done() and job.exception() is None for job in jobs)
    assert peak == 3
    assert limiter.in_flight == 0
    assert limiter.admitted == 20


# -------------------------------------------------------------------------------------------- adaptive
async def test_an_upstream_429_cuts_the_adaptive_rate_and_pauses_the_queue(vt, tasks):
    adaptive = AdaptiveRate(AdaptiveSpec(ceiling=10.0))
    limiter = make(vt, LimitSpec(max_wait=100), adaptive=adaptive)
    with pytest.raises(UpstreamStatusError):
        async with limiter.acquire():
            raise UpstreamStatusError("slow down", upstream_status=429, retry_after=2.0)
    assert adaptive.rate == 5.0
    log: list = []
    for i in range(3):
        tasks.start(hold(limiter, vt, log, i))
    start = vt.now
    await vt.advance(1.9)
    assert log == []  # paused for the Retry-After
    await vt.advance(0.6)
    # After the pause, paced at the cut rate (5 a second), not released all at once.
    assert [round(t - start, 6) for _, t in log] == [2.0, 2.2, 2.4]


async def test_other_errors_do_not_touch_the_adaptive_rate(vt):
    adaptive = AdaptiveRate(AdaptiveSpec(ceiling=10.0))
    limiter = make(vt, LimitSpec(), adaptive=adaptive)
    with pytest.raises(UpstreamStatusError):
        async with limiter.acquire():
            raise UpstreamStatusError("broken", upstream_status=500)
    assert adaptive.cuts == 0


async def test_response_headers_feed_the_adaptive_rate(vt):
    limiter = make(vt, LimitSpec(adaptive=True))
    async with limiter.acquire() as permit:
        permit.observe(
            {
                "x-ratelimit-limit-requests": "120",
                "x-ratelimit-remaining-requests": "0",
                "x-ratelimit-reset-requests": "30s",
            }
        )
    assert limiter.adaptive.provider_ceiling == 2.0
    assert limiter.adaptive.cuts == 1
    with pytest.raises(RateLimited) as refused:
        await limiter.take(max_wait=0)
    assert refused.value.retry_after == pytest.approx(30.0 / 120)


async def test_adaptive_spec_takes_its_ceiling_from_rpm(vt):
    limiter = make(vt, LimitSpec(rpm=120, adaptive=True))
    assert limiter.adaptive.ceiling == 2.0


# ---------------------------------------------------------------------------------------------- misc
def test_limit_spec_validation():
    for bad in ({"rpm": 0}, {"tpm": -1}, {"max_concurrent": 1.5}, {"max_wait": -1.0}, {"rpm": True}):
        with pytest.raises(ValueError):
            LimitSpec(**bad)
    assert LimitSpec(max_wait=float("inf")).max_wait == float("inf")


async def test_stats(vt):
    limiter = make(vt, LimitSpec(rpm=5, tpm=100, max_concurrent=2), name="gpt")
    await limiter.take(40)
    assert limiter.stats() == {
        "shared": None,
        "in_flight": 1,
        "waiting": 0,
        "admitted": 1,
        "refused": 0,
        "rpm_used": 1,
        "tpm_used": 40,
        "rate": None,
    }


async def test_the_refusal_names_the_scope(vt):
    limiter = make(vt, LimitSpec(rpm=1), name="key:team-a")
    await limiter.take()
    with pytest.raises(RateLimited, match="key:team-a"):
        await limiter.take(max_wait=0)


async def test_default_clock_and_sleep_are_the_loops():
    limiter = Limiter(LimitSpec(max_concurrent=1, max_wait=1.0))
    permit = await limiter.take()
    loop = asyncio.get_running_loop()
    loop.call_later(0.01, permit.release)
    async with limiter.acquire() as second:
        assert second.admitted_at >= permit.admitted_at + 0.005
