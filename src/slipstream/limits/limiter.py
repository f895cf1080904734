"""The limiter of one scope (a deployment, an API key): concurrency slots, RPM, TPM and the adaptive rate.

The arithmetic lives in ``window`` and ``adaptive``; this module only waits. Requests that cannot start at once
queue first come, first served: only the head of the queue is ever admitted, so a small request that arrives later
never overtakes a big one waiting for its tokens (no starvation), at the price of waiting behind it. The head
sleeps until the budgets would take it, or until something frees room early (a finished request, a settled
estimate, a new signal from the provider); the others sleep until they become the head.

A waiter gives up after ``max_wait`` with ``RateLimited`` carrying ``retry_after``. The head gives up at once when
it cannot start within its ``max_wait`` whatever happens meanwhile: a client is better told now than after the
wait. Only time frees the requests-per-minute window and ends a pause; the tokens-per-minute window can also free
room early, when a request in flight settles below its estimate, so a wait for tokens is certain only when nothing
is in flight. A cancelled waiter leaves the queue and holds nothing: a slot and a budget are taken only at the
moment of admission, which has no ``await`` between it and the caller getting the permit.

Usage::

    async with limiter.acquire(estimate_tokens(body)) as permit:
        reply = await provider.complete(request)
        permit.settle(reply_usage_total_tokens)   # correct the TPM charge
        permit.observe(reply.headers)             # feed the adaptive rate (optional)

Leaving the block releases the slot; a block that raised a provider's 429 (``UpstreamStatusError``) cuts the
adaptive rate and pauses it for the Retry-After. For a stream, which outlives the block that opened it, use
``permit = await limiter.take(...)`` and ``permit.release()`` when the stream ends.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..errors import RateLimited, UpstreamStatusError
from .adaptive import AdaptiveRate, AdaptiveSpec, parse_rate_limit_headers
from .window import Budget, SlidingWindow, acquire_all, wait_all

if TYPE_CHECKING:
    from .redis import Grant
    from .shared import SharedScope

__all__ = ["DEFAULT_MAX_WAIT", "LimitBackendUnavailable", "LimitSpec", "Limiter", "Permit"]

DEFAULT_MAX_WAIT = 30.0  # seconds a request may queue before it is refused with a 429
# With shared limits a full set of slots is polled: a slot freed by another instance sends no signal here.
SHARED_SLOT_POLL = 0.02
# The least time a request waits for its turn to ask Redis, whatever its own max_wait (see _take_shared).
SHARED_TURN_GRACE = 0.25


class LimitBackendUnavailable(Exception):
    """A shared limit backend (Redis) did not answer in time or could not be reached; nothing is known to be
    committed. Defined here, not beside the Redis backend, so the limiter never imports redis."""


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """The limits of one scope; ``None`` is no limit. ``adaptive`` steers the rate by the provider's 429s."""

    rpm: int | None = None
    tpm: int | None = None
    max_concurrent: int | None = None
    max_wait: float = DEFAULT_MAX_WAIT
    adaptive: bool = False

    def __post_init__(self) -> None:
        for name in ("rpm", "tpm", "max_concurrent"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ValueError(f"{name} must be a positive integer or None, got {value!r}")
        if not self.max_wait >= 0:
            raise ValueError(f"max_wait must not be negative, got {self.max_wait!r}")


class Permit:
    """One admitted request. ``settle`` corrects its token charge; ``release`` gives its slot back (once)."""

    __slots__ = ("_limiter", "_released", "_reported", "admitted_at", "grant", "lease", "tokens")

    def __init__(self, limiter: Limiter, tokens: int, admitted_at: float) -> None:
        self._limiter = limiter
        self.tokens = tokens  # what the TPM window holds for this request now
        self.admitted_at = admitted_at
        self._released = False
        self._reported = False  # the adaptive rate has heard how this request went
        self.grant: Grant | None = None  # admitted by the shared (Redis) windows
        self.lease: str | None = None  # the shared concurrency slot it holds

    def settle(self, actual_tokens: int) -> None:
        """Replace the estimated tokens by what the provider reported (prompt + completion)."""
        actual = max(0, int(actual_tokens))
        self._limiter._settle(self, actual)
        self.tokens = actual

    def observe(self, headers: Mapping[str, str] | None) -> None:
        """The response's rate-limit headers (a success): the adaptive rate learns from them."""
        self._reported = True
        self._limiter._observe(self, headers)

    def rate_limited(
        self, retry_after: float | None = None, headers: Mapping[str, str] | None = None
    ) -> None:
        """The provider answered 429: cut the adaptive rate and pause it (done for you on an upstream 429)."""
        self._reported = True
        self._limiter._rate_limited(self, retry_after, headers)

    def refund(self) -> None:
        """The request was never sent (say, another scope refused it): give back its request and its tokens."""
        self._reported = True
        self._limiter._refund(self)
        self.tokens = 0

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter._release(self)

    def finish(self, exc: BaseException | None = None) -> None:
        """The call is over (``exc`` is how it failed, if it did): report it if nothing was reported, release."""
        self._finish(exc)

    def _finish(self, exc: BaseException | None) -> None:
        try:
            if not self._reported and not self._released:
                if isinstance(exc, UpstreamStatusError) and exc.upstream_status == 429:
                    self.rate_limited(exc.retry_after, exc.headers)
                elif exc is None:
                    self.observe(None)
        finally:
            self.release()


class _Waiter:
    __slots__ = ("tokens", "wake")

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self.wake: asyncio.Future[None] | None = None


class Limiter:
    """Concurrency slots, RPM and TPM windows and an optional adaptive rate, with a fair (FIFO) queue.

    ``clock`` must be monotonic (default: the running loop's ``time``); ``sleep`` waits on it (default
    ``asyncio.sleep``); ``wall_clock`` (Unix time) only reads absolute reset times in provider headers.
    ``shared``: keep the RPM/TPM windows and the slots in Redis, shared by every instance (``limits.shared``).
    """

    def __init__(
        self,
        spec: LimitSpec,
        *,
        name: str = "",
        adaptive: AdaptiveRate | None = None,
        clock: Callable[[], float] | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
        wall_clock: Callable[[], float] = time.time,
        shared: SharedScope | None = None,
    ) -> None:
        self.spec = spec
        self.shared = shared
        self._turn: asyncio.Lock | None = None  # shared mode: the head of this instance's queue asks Redis
        self.name = name
        self.rpm = SlidingWindow(spec.rpm) if spec.rpm is not None else None
        self.tpm = SlidingWindow(spec.tpm) if spec.tpm is not None else None
        if adaptive is None and spec.adaptive:
            adaptive = AdaptiveRate(AdaptiveSpec(ceiling=None if spec.rpm is None else spec.rpm / 60.0))
        self.adaptive = adaptive
        self.in_flight = 0
        self.admitted = 0
        self.refused = 0
        self._clock = clock
        self._sleep = sleep or asyncio.sleep
        self._wall_clock = wall_clock
        self._queue: deque[_Waiter] = deque()
        self._budgets: list[Budget] = [b for b in (self.rpm, self.tpm, self.adaptive) if b is not None]

    @property
    def waiting(self) -> int:
        return len(self._queue)

    # ---------------------------------------------------------------------------------------------- public
    def acquire(self, estimated_tokens: int = 0, *, max_wait: float | None = None) -> _Acquire:
        """``async with limiter.acquire(tokens) as permit:`` waits for room (FIFO) and holds it for the block."""
        return _Acquire(self, estimated_tokens, max_wait)

    async def take(self, estimated_tokens: int = 0, *, max_wait: float | None = None) -> Permit:
        """Wait for room and return the permit; the caller must ``release`` it."""
        tokens = max(0, int(estimated_tokens))
        if self.shared is not None:
            return await self._take_shared(tokens, max_wait)
        return await self._take_local(tokens, max_wait)

    async def _take_local(self, tokens: int, max_wait: float | None) -> Permit:
        now = self._now()
        if not self._queue:
            wait = self._try_admit(tokens, now)
            if wait == 0.0:
                return self._admit(tokens, now)
        deadline = now + (self.spec.max_wait if max_wait is None else max_wait)
        waiter = _Waiter(tokens)
        self._queue.append(waiter)
        try:
            while True:
                wait = math.inf  # not the head: wait to become it
                if self._queue[0] is waiter:
                    wait = self._try_admit(tokens, now)
                    if wait == 0.0:
                        self._queue.popleft()
                        self._wake_head()  # the next one may fit too
                        return self._admit(tokens, now)
                left = deadline - now
                if left <= 0.0 or (math.inf > wait > left and self._certain_wait(tokens, now) > left):
                    raise self._refusal(tokens, now)
                await self._park(waiter, min(wait, left))
                now = self._now()
        finally:
            if waiter in self._queue:  # cancelled or refused: leave, and let the next one move up
                head = self._queue[0] is waiter
                self._queue.remove(waiter)
                if head:
                    self._wake_head()

    def stats(self) -> dict[str, Any]:
        now = self._now()
        shared = None if self.shared is None else {"healthy": self.shared.limits.healthy}
        return {
            "shared": shared,
            "in_flight": self.in_flight,
            "waiting": len(self._queue),
            "admitted": self.admitted,
            "refused": self.refused,
            "rpm_used": None if self.rpm is None else self.rpm.used(now),
            "tpm_used": None if self.tpm is None else self.tpm.used(now),
            "rate": None if self.adaptive is None else self.adaptive.rate,
        }

    # ---------------------------------------------------------------------------------------------- shared
    async def _take_shared(self, tokens: int, max_wait: float | None) -> Permit:
        """Ask Redis, one request of this instance at a time (FIFO: ``asyncio.Lock`` wakes in order)."""
        assert self.shared is not None
        now = self._now()
        deadline = now + (self.spec.max_wait if max_wait is None else max_wait)
        if self._turn is None:
            self._turn = asyncio.Lock()
        # The turn is bounded by this request's own wait (a head that waits on Redis for its max_wait must not
        # hold the rest past theirs), but never below a grace of a few round trips: max_wait 0 means "no
        # queueing for the limit", not "refused whenever another request is asking Redis right now".
        try:
            async with asyncio.timeout(max(deadline - now, SHARED_TURN_GRACE)):
                await self._turn.acquire()
        except TimeoutError:
            self.refused += 1
            scope = f" for {self.name}" if self.name else ""
            raise RateLimited(
                f"Rate limit reached{scope}: too many requests waiting for the shared limit", retry_after=1.0
            ) from None
        try:
            while True:
                try:
                    outcome = await self._ask_shared(tokens)
                except LimitBackendUnavailable as exc:
                    if self.shared.limits.fail_closed:
                        self.refused += 1
                        raise RateLimited(
                            f"Shared rate limits cannot be checked ({exc}); refusing while Redis is down",
                            retry_after=1.0,
                        ) from None
                    break  # fail open: this instance's own windows decide, below
                if isinstance(outcome, Permit):
                    return outcome
                now = self._now()
                if now + outcome > deadline:
                    self.refused += 1
                    scope = f" for {self.name}" if self.name else ""
                    raise RateLimited(
                        f"Rate limit reached{scope}: retry in {outcome:.1f}s", retry_after=outcome
                    )
                await self._sleep(outcome)
        finally:
            self._turn.release()
        return await self._take_local(tokens, max(0.0, deadline - self._now()))

    async def _ask_shared(self, tokens: int) -> Permit | float:
        """A permit, or the seconds to wait before asking again. Raises ``LimitBackendUnavailable``."""
        assert self.shared is not None
        limits, scope, spec = self.shared.limits, self.shared.name, self.spec
        now = self._now()
        if self.adaptive is not None and (wait := self.adaptive.try_acquire(1, now)) > 0.0:
            return wait
        lease = None
        if spec.max_concurrent is not None:
            lease, wait = await limits.backend.acquire_slot(scope, spec.max_concurrent, limits.lease_ttl)
            if lease is None:
                return min(max(wait, 0.001), SHARED_SLOT_POLL)
        grant = None
        if spec.rpm is not None or spec.tpm is not None:
            try:
                grant = await limits.backend.try_acquire(scope, spec.rpm, spec.tpm, tokens)
            except BaseException:  # Redis down, or the request cancelled (client gone): the slot goes back
                if lease is not None:
                    limits.spawn(limits.backend.release_slot(scope, lease))
                raise
            if not grant.admitted:
                if lease is not None:
                    limits.spawn(limits.backend.release_slot(scope, lease))
                return grant.wait
        now = self._now()
        if self.adaptive is not None:
            self.adaptive.commit(1, now)
        permit = self._admit(tokens, now)
        permit.grant = grant
        if lease is not None:
            permit.lease = lease
            limits.hold(scope, lease)
        return permit

    # ------------------------------------------------------------------------------------------- decisions
    def _try_admit(self, tokens: int, now: float) -> float:
        """0.0: room now; else the seconds the budgets need, or inf when only a slot is missing."""
        if self.spec.max_concurrent is not None and self.in_flight >= self.spec.max_concurrent:
            return wait_all(self._budgets, self._costs(tokens), now) or math.inf
        return acquire_all(self._budgets, self._costs(tokens), now)

    def _certain_wait(self, tokens: int, now: float) -> float:
        """The part of the wait that only time can shorten (see the module docstring)."""
        if self.tpm is None or self.in_flight == 0:
            return wait_all(self._budgets, self._costs(tokens), now)
        budgets = [b for b in self._budgets if b is not self.tpm]
        return wait_all(budgets, [1] * len(budgets), now)

    def _costs(self, tokens: int) -> list[int]:
        costs = []
        if self.rpm is not None:
            costs.append(1)
        if self.tpm is not None:
            costs.append(tokens)
        if self.adaptive is not None:
            costs.append(1)
        return costs

    def _admit(self, tokens: int, now: float) -> Permit:
        self.in_flight += 1
        self.admitted += 1
        return Permit(self, tokens, now)

    def _refusal(self, tokens: int, now: float) -> RateLimited:
        self.refused += 1
        wait = wait_all(self._budgets, self._costs(tokens), now)
        scope = f" for {self.name}" if self.name else ""
        if wait > 0.0:
            return RateLimited(f"Rate limit reached{scope}: retry in {wait:.1f}s", retry_after=wait)
        return RateLimited(f"Too many requests in flight{scope}; try again later", retry_after=None)

    # ---------------------------------------------------------------------------------- permit callbacks
    def _release(self, permit: Permit) -> None:
        self.in_flight -= 1
        if permit.lease is not None and self.shared is not None:
            self.shared.limits.drop(self.shared.name, permit.lease)
            permit.lease = None
        self._wake_head()

    def _settle(self, permit: Permit, actual: int) -> None:
        if permit.grant is not None and self.shared is not None:
            if self.spec.tpm is not None and actual != permit.grant.tokens:
                limits = self.shared.limits
                limits.spawn(limits.backend.settle(self.shared.name, permit.grant, actual))
            return
        if self.tpm is not None:
            self.tpm.settle(permit.tokens, actual, self._now(), committed_at=permit.admitted_at)
            self._wake_head()

    def _refund(self, permit: Permit) -> None:
        if permit.grant is not None and self.shared is not None:
            limits = self.shared.limits
            limits.spawn(limits.backend.refund(self.shared.name, permit.grant))
            return
        now = self._now()
        if self.rpm is not None:
            self.rpm.settle(1, 0, now, committed_at=permit.admitted_at)
        if self.tpm is not None:
            self.tpm.settle(permit.tokens, 0, now, committed_at=permit.admitted_at)
        self._wake_head()

    def _observe(self, permit: Permit, headers: Mapping[str, str] | None) -> None:
        if self.adaptive is None:
            return
        now = self._now()
        if headers:
            info = parse_rate_limit_headers(headers, wall_now=self._wall_clock())
            self.adaptive.observe(info, now, started_at=permit.admitted_at)
        else:
            self.adaptive.on_success(now)
        self._wake_head()

    def _rate_limited(
        self, permit: Permit, retry_after: float | None, headers: Mapping[str, str] | None
    ) -> None:
        if self.adaptive is None:
            return
        if retry_after is None and headers:
            retry_after = parse_rate_limit_headers(headers, wall_now=self._wall_clock()).retry_after
        self.adaptive.on_rate_limited(self._now(), retry_after=retry_after, started_at=permit.admitted_at)
        self._wake_head()  # the head's sleep was set for the old rate: let it measure again

    # ---------------------------------------------------------------------------------------------- waiting
    def _now(self) -> float:
        return self._clock() if self._clock is not None else asyncio.get_running_loop().time()

    def _wake_head(self) -> None:
        if self._queue:
            wake = self._queue[0].wake
            if wake is not None and not wake.done():
                wake.set_result(None)

    async def _park(self, waiter: _Waiter, delay: float) -> None:
        """Sleep ``delay`` seconds, or less if woken."""
        wake = waiter.wake = asyncio.get_running_loop().create_future()
        timer = None if delay == math.inf else asyncio.ensure_future(self._sleep(delay))
        try:
            if timer is None:
                await wake
            else:
                await asyncio.wait((wake, timer), return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.wake = None
            if timer is not None:
                timer.cancel()


class _Acquire:
    """The ``async with`` of ``Limiter.acquire``: a class, not a generator, as it runs on every request."""

    __slots__ = ("_limiter", "_max_wait", "_permit", "_tokens")

    def __init__(self, limiter: Limiter, tokens: int, max_wait: float | None) -> None:
        self._limiter = limiter
        self._tokens = tokens
        self._max_wait = max_wait
        self._permit: Permit | None = None

    async def __aenter__(self) -> Permit:
        self._permit = await self._limiter.take(self._tokens, max_wait=self._max_wait)
        return self._permit

    async def __aexit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        if self._permit is not None:
            self._permit._finish(exc)
