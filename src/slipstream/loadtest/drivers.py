"""The two ways to apply load: a closed loop of users and an open loop of arrivals.

**Closed loop** (``--users``): N users, each with its own keep-alive connection, send back to back — the next
request goes out from inside the callback that completed the previous one. Throughput is whatever the target
sustains; latency is measured from the actual send. This is what ``wrk`` does, and it suffers coordinated
omission by design: a user stuck on a slow reply sends nothing meanwhile, so a stall shows up as one slow sample.

**Open loop** (``--rate``): requests are due at the fixed times of :meth:`Profile.arrivals`, whatever the target
does. A due request takes an idle connection, or waits for one (new connections are opened up to
``connections``). Latency and TTFT are measured from the *intended* send time, so time spent waiting behind a
stalled target — in its queue or ours — is counted for every request that would have been sent during the
stall. Free of coordinated omission, like wrk2. The tester's own lateness in sending a request that found a free
connection (timer granularity, ~1 ms; more when the tester is short of CPU) is reported as ``send lag``, so a
saturated tester is visible rather than silently blamed on the target.

Both run on callbacks from :class:`~.wire.HttpConnection`, with one small control loop that adjusts the number
of users (closed) or dispatches due requests (open), and sweeps requests past ``timeout``. Every run is bounded:
nothing new starts after the profile's duration or ``max_requests``, and whatever is still out ``timeout``
seconds later is counted as timed out.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from array import array
from collections import deque
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

from .mix import RequestMix
from .profile import Profile
from .record import Distribution, Recorder, Second, Summary
from .target import Target
from .wire import HttpConnection, open_connection

__all__ = ["DEFAULT_CONNECTIONS", "DEFAULT_TIMEOUT", "LoadPlan", "RunResult", "run_load"]

DEFAULT_TIMEOUT = 30.0
DEFAULT_CONNECTIONS = 256  # open loop: the most connections it opens to keep up with its schedule
WARM_CONNECTIONS = 16  # open loop: opened before the clock starts
TICK = 0.02  # the control loop's period: ramp steps, timeout sweeps
MIN_SLEEP = 0.001  # the open loop's shortest wait: libuv and epoll timers have millisecond resolution
INF = float("inf")
CONNECT_BACKOFF = (
    0.01  # a closed-loop user whose connect failed waits this long, so a dead target is not spun on
)

_now = time.perf_counter
Mode = Literal["open", "closed"]


@dataclass(frozen=True, slots=True)
class LoadPlan:
    target: Target
    mix: RequestMix
    profile: Profile  # level: users (closed) or requests/s (open)
    mode: Mode
    max_requests: int
    timeout: float = DEFAULT_TIMEOUT
    connections: int = DEFAULT_CONNECTIONS
    ssl_context: ssl.SSLContext | None = None


@dataclass(frozen=True, slots=True)
class RunResult:
    mode: Mode
    profile: Profile
    summary: Summary
    timeline: list[Second]
    started: int  # requests started: sent, or given a connection attempt
    send_lag_ms: Distribution | None  # open loop: how late requests left against their schedule
    # The raw samples behind ``summary.latency_ms``: seconds, in completion order. Left out of ``repr``: on
    # Python 3.11, ``asyncio.Runner`` restoring its SIGINT handler formats that handler (a partial holding the main
    # task) with ``repr``, task result included, twice: with the samples in it, ~0.08 s per 100,000 of them.
    latencies: array[float] = field(repr=False)
    tester_cpu_s: float  # CPU seconds the load tester itself used during the run (near elapsed: saturated)


async def run_load(plan: LoadPlan) -> RunResult:
    driver: _Driver = _OpenLoop(plan) if plan.mode == "open" else _ClosedLoop(plan)
    return await driver.run()


class _Driver:
    """What both loops share: connections, recording, timeouts, the bounded drain and cleanup."""

    def __init__(self, plan: LoadPlan) -> None:
        self.plan = plan
        self.mix = plan.mix
        self.timeout = plan.timeout
        self.max_requests = plan.max_requests
        self.recorder = Recorder()
        self._latencies, self._ok_ends = self.recorder.ok_appenders()
        self.conns: set[HttpConnection] = set()
        self.started = 0
        self.t0 = 0.0
        self.cpu0 = time.process_time()  # the tester's own CPU, to tell a saturated tester from a slow target
        self.end = 0.0  # nothing new starts at or after this time
        self._tasks: set[asyncio.Task[None]] = set()
        self._crash: BaseException | None = None  # a bug in a background task, re-raised when the run ends
        # One TLS context for all connections (building one costs milliseconds).
        self._ssl = plan.ssl_context or (ssl.create_default_context() if plan.target.tls else None)

    async def run(self) -> RunResult:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------------ recording
    def on_response(self, conn: HttpConnection, status: int, now: float) -> None:
        # The hot path: every reply passes here, so the recorder's columns are appended to directly.
        if status < 400 and not conn.stream:
            self._latencies(now - conn.intended)
            self._ok_ends(now - self.t0)
        else:
            self._record(conn, status, now)
        self.after(conn, now)

    def _record(self, conn: HttpConnection, status: int, now: float) -> None:
        """Record any reply (the hot paths inline the unstreamed success)."""
        if status < 400:
            self._latencies(now - conn.intended)
            self._ok_ends(now - self.t0)
            if conn.stream and conn.first_byte:
                self.recorder.ttft(conn.first_byte - conn.intended)
        else:
            self.recorder.error(f"http_{status}", now - self.t0)

    def on_failure(self, conn: HttpConnection, kind: str, now: float) -> None:
        self.recorder.error(kind, now - self.t0)
        self.conns.discard(conn)
        self.after(conn, now)

    def on_closed(self, conn: HttpConnection) -> None:
        self.conns.discard(conn)

    def after(self, conn: HttpConnection, now: float) -> None:
        """A request on ``conn`` is over (``conn`` may be closed): carry on."""
        raise NotImplementedError

    def _send(self, conn: HttpConnection, intended: float) -> None:
        request, stream = self.mix.next()
        conn.send(request, stream, intended)

    # ------------------------------------------------------------------------------------------ plumbing
    async def _connect(self) -> HttpConnection:
        async with asyncio.timeout(self.timeout):
            conn = await open_connection(self.plan.target, self, self._ssl)
        self.conns.add(conn)
        return conn

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self._crash = self._crash or task.exception()

    def _sweep(self, now: float, *, everything: bool = False) -> None:
        """Time out requests in flight longer than ``timeout`` (from their intended time), or all of them."""
        limit = float("inf") if everything else now - self.timeout
        for conn in [c for c in self.conns if c.busy and c.intended < limit]:
            conn.abort()
            self.conns.discard(conn)
            self.recorder.error("timeout", now - self.t0)
            self.after(conn, now)

    def _outstanding(self) -> bool:
        raise NotImplementedError

    async def _drain(self) -> None:
        """Let requests still out finish, for at most ``timeout`` plus a tick; then count them as timed out."""
        deadline = _now() + self.timeout + TICK
        while self._outstanding() and _now() < deadline:
            await asyncio.sleep(TICK)
            self._sweep(_now())
        self._sweep(_now(), everything=True)

    async def _close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task
        for conn in list(self.conns):
            conn.close()
        self.conns.clear()
        # Let the transports finish closing before the loop may end (no "unclosed transport" warnings).
        for _ in range(3):
            await asyncio.sleep(0)
        if self._crash is not None:
            raise self._crash

    def _result(self, mode: Mode, stopped: float, lag: array[float] | None) -> RunResult:
        cpu = time.process_time() - self.cpu0  # the run's, not the sorting below
        elapsed = max(self.recorder.last_end, stopped - self.t0)
        return RunResult(
            mode=mode,
            profile=self.plan.profile,
            summary=self.recorder.summary(elapsed),
            timeline=self.recorder.timeline(elapsed),
            started=self.started,
            send_lag_ms=Distribution.of(lag) if lag is not None else None,
            latencies=self.recorder.latencies,
            tester_cpu_s=cpu,
        )


class _ClosedLoop(_Driver):
    """N users back to back; the control loop only changes N (ramps) and sweeps timeouts."""

    def __init__(self, plan: LoadPlan) -> None:
        super().__init__(plan)
        self.users = 0  # the profile's current number of users
        self.working = 0  # users in the loop: in flight, connecting or backing off
        self.parked: list[HttpConnection] = []  # connections of users the profile stood down

    async def run(self) -> RunResult:
        profile = self.plan.profile
        self.t0 = _now()
        self.cpu0 = time.process_time()
        self.end = self.t0 + profile.duration
        try:
            while (now := _now()) < self.end and self.started < self.max_requests:
                self.users = profile.users_at(now - self.t0)
                while self.working < self.users and self.started < self.max_requests:
                    self.working += 1
                    self._issue(self.parked.pop() if self.parked else None, now)
                self._sweep(now)
                await asyncio.sleep(min(TICK, self.end - now))
            stopped = min(_now(), self.end)
            await self._drain()
        finally:
            await self._close()
        return self._result("closed", stopped, None)

    def on_response(self, conn: HttpConnection, status: int, now: float) -> None:
        # The hottest path of all: ``_Driver.on_response`` and the first branch of ``after``, inlined.
        if status < 400 and not conn.stream:
            self._latencies(now - conn.intended)
            self._ok_ends(now - self.t0)
        else:
            self._record(conn, status, now)
        if (
            now < self.end
            and self.started < self.max_requests
            and self.working <= self.users
            and not conn.closed
        ):
            self.started += 1
            request, stream = self.mix.next()
            conn.send(request, stream, now)  # straight back out on the same connection
        else:
            self.after(conn, now)

    def after(self, conn: HttpConnection | None, now: float) -> None:
        if now < self.end and self.started < self.max_requests and self.working <= self.users:
            if conn is not None and not conn.closed:  # back out on the same connection
                self.started += 1
                request, stream = self.mix.next()
                conn.send(request, stream, now)
            else:
                self._issue(conn, now)
            return
        self.working -= 1
        if conn is not None and not conn.closed:
            self.parked.append(conn)

    def _issue(self, conn: HttpConnection | None, now: float) -> None:
        self.started += 1
        if conn is None or conn.closed:
            self._spawn(self._connect_and_send(now))
        else:
            self._send(conn, now)

    async def _connect_and_send(self, intended: float) -> None:
        try:
            conn = await self._connect()
        except (OSError, TimeoutError):
            self.recorder.error("connect", _now() - self.t0)
            await asyncio.sleep(CONNECT_BACKOFF)
            self.after(None, _now())
            return
        self._send(conn, intended)  # the latency includes connecting, as a fresh client's would

    def on_closed(self, conn: HttpConnection) -> None:
        super().on_closed(conn)
        if conn in self.parked:
            self.parked.remove(conn)

    def _outstanding(self) -> bool:
        return self.working > 0


class _OpenLoop(_Driver):
    """Requests due on a fixed schedule; each takes an idle connection or queues for the next free one."""

    def __init__(self, plan: LoadPlan) -> None:
        super().__init__(plan)
        self.idle: list[HttpConnection] = []
        self.pending: deque[float] = deque()  # intended times of due requests waiting for a connection
        self.connecting = 0
        self.lag = array("d")
        self.arrivals: Iterator[float] = iter(())
        self.next_due = INF  # the next request's intended send time (INF: the schedule is done)
        self.stopped = 0.0  # when the schedule ended (its end, or the request that reached max_requests)

    async def run(self) -> RunResult:
        plan = self.plan
        try:
            await self._warm(min(WARM_CONNECTIONS, plan.connections))
            self.t0 = _now()
            self.cpu0 = time.process_time()
            self.end = self.stopped = self.t0 + plan.profile.duration
            self.arrivals = plan.profile.arrivals()
            self.next_due = self.t0 + next(self.arrivals, INF)
            last_sweep = self.t0
            while self.next_due < INF:
                now = _now()
                self._pump(now)
                if now - last_sweep >= TICK:
                    self._sweep(now)
                    last_sweep = now
                if self.next_due < INF:
                    # Never less than the event loop's timer resolution: a shorter sleep returns at once and
                    # the loop would spin a core (taken from the target). Requests that fall due meanwhile go
                    # out at the next wake-up, a timer's or a reply's (see ``after``): that lateness is the
                    # send lag.
                    await asyncio.sleep(max(MIN_SLEEP, min(self.next_due - now, TICK)))
            await self._drain()
        finally:
            await self._close()
        return self._result("open", self.stopped, self.lag)

    def _pump(self, now: float) -> None:
        """Send every request that is due by ``now``."""
        while self.next_due <= now:
            self.started += 1
            self._dispatch(self.next_due, now)
            if self.started >= self.max_requests:
                self.next_due = INF
                self.stopped = now
                return
            self.next_due = self.t0 + next(self.arrivals, INF)

    async def _warm(self, count: int) -> None:
        results = await asyncio.gather(*(self._connect() for _ in range(count)), return_exceptions=True)
        self.idle.extend(conn for conn in results if isinstance(conn, HttpConnection))

    def _dispatch(self, due: float, now: float) -> None:
        if self.idle:
            self.lag.append(now - due)
            self._send(self.idle.pop(), due)
        else:
            self.pending.append(due)
            self._grow()

    def _grow(self) -> None:
        """Open connections for queued requests, up to the cap."""
        while (
            self.connecting < len(self.pending) and len(self.conns) + self.connecting < self.plan.connections
        ):
            self.connecting += 1
            self._spawn(self._open_one())

    async def _open_one(self) -> None:
        try:
            conn = await self._connect()
        except (OSError, TimeoutError):
            self.connecting -= 1
            if self.pending:  # the request that waited for this connection fails with it
                self.pending.popleft()
                self.recorder.error("connect", _now() - self.t0)
            self._grow()
            return
        self.connecting -= 1
        self.after(conn, _now())

    def after(self, conn: HttpConnection, now: float) -> None:
        if conn.closed:
            self._grow()  # a queued request may need a replacement connection
        elif self.pending:
            self._send(conn, self.pending.popleft())
        else:
            self.idle.append(conn)
        if self.next_due <= now:  # a reply woke the loop: send what fell due since the last timer
            self._pump(now)

    def on_closed(self, conn: HttpConnection) -> None:
        super().on_closed(conn)
        if conn in self.idle:
            self.idle.remove(conn)

    def _sweep(self, now: float, *, everything: bool = False) -> None:
        super()._sweep(now, everything=everything)
        limit = float("inf") if everything else now - self.timeout
        while self.pending and self.pending[0] < limit:
            self.pending.popleft()
            self.recorder.error("timeout", now - self.t0)

    def _outstanding(self) -> bool:
        return bool(self.pending) or any(conn.busy for conn in self.conns)
