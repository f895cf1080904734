"""Single-flight coalescing: identical requests in flight at the same time make one upstream call.

The first request for a key (namespace + cache key) starts a *flight*: the upstream call runs in its own task,
so no single waiter owns it. Every identical request that arrives while it runs joins the flight:

- a streamed flight fans its chunks out to every streamed waiter as they arrive; a waiter that joins late first
  receives what was already sent;
- a non-streamed waiter of a streamed flight gets the assembled reply; a streamed waiter of a non-streamed
  flight gets the reply replayed as a stream;
- a waiter that is cancelled (or stops reading) leaves; the upstream call is cancelled only when every waiter
  has gone;
- an upstream error reaches every waiter, at the point of the stream where it happened.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from .cache.key import cache_key
from .call import Call, CallResult, Handler
from .errors import UpstreamConnectionError
from .streams import StreamAssembler, replay_stream
from .types import Chunk, Reply

__all__ = ["CoalescingLayer"]


class _Flight:
    """One upstream call and the waiters sharing it."""

    __slots__ = ("_sleepers", "chunks", "done", "error", "reply", "streamed", "task", "waiters")

    def __init__(self) -> None:
        self.waiters = 0
        self.chunks: list[Chunk] = []
        self.streamed = False
        self.reply: Reply | None = None
        self.error: BaseException | None = None
        self.done = False
        self.task: asyncio.Task[None] | None = None
        # One future per waiting waiter: cancelling a waiter cancels only its own future (cheaper than a
        # shared future behind asyncio.shield, which costs a future and two callbacks per wait).
        self._sleepers: list[asyncio.Future[None]] = []

    def notify(self) -> None:
        sleepers, self._sleepers = self._sleepers, []
        for sleeper in sleepers:
            if not sleeper.done():
                sleeper.set_result(None)

    async def changed(self) -> None:
        sleeper = asyncio.get_running_loop().create_future()
        self._sleepers.append(sleeper)
        await sleeper

    async def run(self, call: Call, next: Handler, forget: Callable[[], None]) -> None:
        try:
            result = await next(call)
            if isinstance(result, Reply):
                self.reply = result
                return
            self.streamed = True
            self.notify()
            try:
                async for chunk in result:
                    self.chunks.append(chunk)
                    self.notify()
            finally:
                await result.aclose()  # type: ignore[attr-defined]
        except asyncio.CancelledError:
            self.error = asyncio.CancelledError()
            raise
        except BaseException as exc:  # delivered to every waiter
            self.error = exc
        finally:
            self.done = True
            forget()
            self.notify()


class CoalescingLayer:
    def __init__(self) -> None:
        self._flights: dict[str, _Flight] = {}
        self.coalesced = 0  # requests answered by another request's upstream call
        self.flights = 0

    @property
    def in_flight(self) -> int:
        return len(self._flights)

    async def __call__(self, call: Call, next: Handler) -> CallResult:
        key = call.cache_key or cache_key(call.namespace, call.kind, call.request.body)
        flight = self._flights.get(key)
        if flight is None:
            flight = _Flight()
            self._flights[key] = flight
            self.flights += 1
            flight.task = asyncio.get_running_loop().create_task(
                flight.run(call, next, lambda: self._forget(key, flight))
            )
        else:
            self.coalesced += 1
            call.coalesced = True
        flight.waiters += 1
        try:
            # Wait until the flight knows its shape: a reply, a stream under way, or an error.
            while not flight.done and not flight.streamed:
                await flight.changed()
        except BaseException:
            self._leave(flight)
            raise
        if flight.streamed and call.stream:
            return self._follow(flight)
        try:
            while not flight.done:
                await flight.changed()
        finally:
            self._leave(flight)
        return self._result(flight, call)

    def _result(self, flight: _Flight, call: Call) -> CallResult:
        if flight.error is not None:
            raise _copy(flight.error)
        if flight.reply is not None:
            if call.stream:
                return replay_stream(flight.reply.data, include_usage=True)
            return flight.reply
        assembler = StreamAssembler()
        for chunk in flight.chunks:
            assembler.feed(chunk)
        return Reply(assembler.reply())

    async def _follow(self, flight: _Flight) -> AsyncIterator[Chunk]:
        sent = 0
        try:
            while True:
                while sent < len(flight.chunks):
                    yield flight.chunks[sent]
                    sent += 1
                if flight.done:
                    if flight.error is not None:
                        raise _copy(flight.error)
                    return
                await flight.changed()
        finally:
            self._leave(flight)

    def _forget(self, key: str, flight: _Flight) -> None:
        if self._flights.get(key) is flight:
            del self._flights[key]

    def _leave(self, flight: _Flight) -> None:
        flight.waiters -= 1
        if flight.waiters <= 0 and not flight.done and flight.task is not None:
            flight.task.cancel()  # nobody is waiting any more: stop the upstream call (and its billing)


def _copy(error: BaseException) -> BaseException:
    """Each waiter raises its own exception object, so one waiter's traceback never piles onto another's."""
    if isinstance(error, asyncio.CancelledError):
        return UpstreamConnectionError("the upstream call was cancelled")
    clone = type(error).__new__(type(error))
    clone.args = error.args
    clone.__dict__.update(error.__dict__)
    return clone
