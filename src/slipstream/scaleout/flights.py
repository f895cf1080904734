"""Cross-instance coalescing: identical requests in flight on different instances make one upstream call.

It runs behind the in-process ``CoalescingLayer``, so each instance brings at most one request per key here.
For a key ``K`` (the cache key: namespace included, so tenants never share a flight)::

    slipstream:flight:{K}          string   the flight id of the instance calling upstream (the lease)
    slipstream:flight:{K}:<id>     stream   what that call produced: chunks, a reply, an error, an end mark

``{K}`` is a hash tag: a flight's keys live in one Redis Cluster slot.

- The first instance takes the lease (``SET NX GET PX``: one round trip tells it either "yours" or whose it
  is), calls upstream and publishes what comes back as it comes: every chunk of a stream, or the whole reply, or
  the error. A background publisher batches the entries (one pipelined round trip for whatever arrived since the
  last one) and renews the lease while the call lasts. After a success the lease and the stream stay for
  ``grace`` seconds, so a request that arrives just after the answer (before the cache has it) still joins; after
  an error or an abandoned call the lease is deleted at once: errors are never served to later arrivals.
- The other instances read the stream from its start (``XREAD BLOCK``), so a late joiner gets every chunk. If the
  stream stays silent and the lease is gone — the leader died, or its client left and nobody else there waits —
  a follower that has not yet sent anything calls upstream itself; one that has already streamed part of an
  answer ends with an upstream error, as a local stream would.
- Redis down or slow: every command is bounded (``RedisCalls``); a leader that cannot take the lease just calls
  upstream, so an outage costs duplicate upstream calls, never a failed request.

Cost: a miss pays one ``SET`` round trip (~0.1 ms on loopback); the publisher's writes are off the request path.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any

import orjson
from redis.exceptions import RedisError

from .. import errors
from ..cache.key import cache_key
from ..call import Call, CallResult, Handler
from ..errors import UpstreamConnectionError
from ..stores.redis import RedisCalls
from ..stores.redis_connect import RedisClient
from ..stores.redis_pipelined import PipelinedConnection
from ..streams import StreamAssembler, replay_stream
from ..types import Chunk, ChunkStream, Reply

__all__ = ["RedisFlights", "flight_keys"]

log = logging.getLogger(__name__)

KEY_PREFIX = "slipstream:flight:"
DEFAULT_LEASE = 5.0  # seconds; renewed every third of it while the leader's call lasts
DEFAULT_GRACE = 5.0  # seconds a finished flight stays readable
DEFAULT_POLL = 0.25  # seconds a follower blocks on the stream before checking the lease

# Entry kinds.
_CHUNK, _REPLY, _ERROR, _END, _ABANDONED = b"c", b"r", b"e", b"x", b"a"

# KEYS: lease [, stream]. ARGV: flight id, PX ms (0 = delete) [, the stream's PX ms]. Touches the lease only
# while it is still ours; a renewal extends the stream too, so a long silence between chunks never lets the
# stream expire under a live lease (a late joiner would read only its tail).
_OWN_LEASE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) == 0 then return redis.call('DEL', KEYS[1]) end
if KEYS[2] then redis.call('PEXPIRE', KEYS[2], ARGV[3]) end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""


def flight_keys(key: str, flight_id: str) -> tuple[str, str]:
    lease = f"{KEY_PREFIX}{{{key}}}"
    return lease, f"{lease}:{flight_id}"


class _LeaderGone(Exception):
    """The leader's lease ran out or it gave up before publishing an answer."""


class _LeaderGoneMidStream(UpstreamConnectionError):
    """The leader went away after part of a streamed answer: a streaming follower's caller sees an upstream
    connection error, as with a local stream; a non-streaming follower calls upstream itself."""


class RedisFlights:
    """The layer. ``timeout`` bounds each command on the request path."""

    def __init__(
        self,
        client: RedisClient,
        calls: RedisCalls,
        *,
        timeout: float = 0.1,
        lease: float = DEFAULT_LEASE,
        grace: float = DEFAULT_GRACE,
        poll: float = DEFAULT_POLL,
        reader: RedisClient | None = None,
        fast: PipelinedConnection | None = None,
    ) -> None:
        self.client = client
        # The lease and the publisher's writes are on every miss: over the pipelined connection when there is
        # one (a plain single server, see stores/redis_pipelined.py), else through redis-py.
        self.fast = fast
        self.reader = reader if reader is not None else client  # followers' blocking XREADs
        self.calls = calls
        self.timeout = timeout
        self.lease_ms = max(1, round(lease * 1000))
        self.grace_ms = max(1, round(grace * 1000))
        self.poll_ms = max(1, round(poll * 1000))
        self._own_lease = client.register_script(_OWN_LEASE)
        self.led = 0
        self.followed = 0
        self.takeovers = 0  # followers that called upstream themselves because the leader went away
        self._writes: set[asyncio.Task[Any]] = set()

    async def __call__(self, call: Call, next: Handler) -> CallResult:
        key = call.cache_key or cache_key(call.namespace, call.kind, call.request.body)
        flight_id = os.urandom(8).hex()
        lease, _ = flight_keys(key, flight_id)
        if not self.calls.allow():
            return await next(call)

        async def give_back(holder: Any) -> None:
            """The SET landed after we stopped waiting: if it made us the leader, nobody will publish."""
            if holder is None:
                await self._own_lease(keys=[lease], args=[flight_id, 0])

        fast = self.fast
        try:
            holder: Any
            if fast is not None:
                holder = await self.calls.send(
                    fast,
                    (b"SET", lease, flight_id, b"NX", b"GET", b"PX", self.lease_ms),
                    self.timeout,
                    on_abandon=give_back,
                )
            else:
                holder = await self.calls.call(
                    lambda: self.client.set(lease, flight_id, nx=True, get=True, px=self.lease_ms),
                    self.timeout,
                    on_abandon=give_back,
                )
        except (TimeoutError, RedisError, OSError):
            return await next(call)  # RedisCalls logs the outage once
        if holder is None:
            self.led += 1
            return await self._lead(call, next, key, flight_id)
        try:
            return await self._follow(call, key, holder.decode())
        except _LeaderGone:
            self.takeovers += 1
            call.coalesced = False
            return await next(call)

    async def aclose(self) -> None:
        if self._writes:
            await asyncio.wait(tuple(self._writes), timeout=max(1.0, self.timeout * 10))

    def _spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._writes.add(task)
        task.add_done_callback(self._writes.discard)
        return task

    # ------------------------------------------------------------------------------------------ leader
    async def _lead(self, call: Call, next: Handler, key: str, flight_id: str) -> CallResult:
        publisher = _Publisher(self, *flight_keys(key, flight_id), flight_id)
        try:
            result = await next(call)
        except asyncio.CancelledError:
            publisher.put(_ABANDONED, b"", final=True)
            raise
        except BaseException as exc:
            await publisher.fail(exc)
            raise
        if isinstance(result, Reply):
            publisher.put(_REPLY, result.body, final=True)
            return result
        return self._publish_stream(result, publisher)

    async def _publish_stream(self, stream: ChunkStream, publisher: _Publisher) -> AsyncIterator[Chunk]:
        ended = False
        try:
            async for chunk in stream:
                publisher.put(_CHUNK, chunk.raw)
                yield chunk
            ended = True
        except BaseException as exc:
            if isinstance(exc, GeneratorExit | asyncio.CancelledError):
                publisher.put(_ABANDONED, b"", final=True)
            else:
                await publisher.fail(exc)
            raise
        finally:
            if ended:
                publisher.put(_END, b"", final=True)
            elif not publisher.final:
                publisher.put(_ABANDONED, b"", final=True)
            await stream.aclose()  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------------------ follower
    async def _follow(self, call: Call, key: str, flight_id: str) -> CallResult:
        """Raises ``_LeaderGone`` only while nothing has been handed to the caller."""
        lease, stream_key = flight_keys(key, flight_id)
        reader = _Reader(self, lease, stream_key, flight_id)
        first = await reader.next()
        kind, payload = first
        if kind in (_ABANDONED,):
            raise _LeaderGone
        self.followed += 1
        call.coalesced = True
        if kind == _ERROR:
            raise _decode_error(payload)
        if kind == _REPLY:
            reply = Reply(body=payload)
            if call.stream:
                include_usage = getattr(call.request, "include_usage", False)
                return replay_stream(reply.data, include_usage=include_usage)
            return reply
        if call.stream:
            return _stream_from(reader, first)
        # Nothing reaches this caller before the whole answer has: if the leader goes away part way, call
        # upstream instead (as a follower that has sent nothing yet does), rather than fail.
        assembler = StreamAssembler()
        try:
            async for chunk in _stream_from(reader, first):
                assembler.feed(chunk)
        except _LeaderGoneMidStream:
            raise _LeaderGone from None
        return Reply(assembler.reply())


async def _stream_from(reader: _Reader, first: tuple[bytes, bytes]) -> AsyncIterator[Chunk]:
    kind, payload = first
    while True:
        if kind == _CHUNK:
            yield Chunk.from_raw(payload)
        elif kind == _END:
            return
        elif kind == _ERROR:
            raise _decode_error(payload)
        else:  # abandoned, or the lease ran out, after part of the answer went out
            raise _LeaderGoneMidStream("the instance calling upstream for this request went away")
        try:
            kind, payload = await reader.next()
        except _LeaderGone:
            kind, payload = _ABANDONED, b""


class _Reader:
    """Reads a flight's stream entry by entry, from the start; raises ``_LeaderGone`` when it goes silent."""

    def __init__(self, flights: RedisFlights, lease: str, stream_key: str, flight_id: str) -> None:
        self.flights = flights
        self.lease = lease
        self.stream_key = stream_key
        self.flight_id = flight_id
        self.last = b"0-0"
        self.buffered: list[tuple[bytes, bytes]] = []

    async def next(self) -> tuple[bytes, bytes]:
        flights = self.flights
        while not self.buffered:
            try:
                reply: Any = await flights.calls.call(
                    lambda: flights.reader.xread(
                        {self.stream_key: self.last}, count=256, block=flights.poll_ms
                    ),
                    flights.poll_ms / 1000 + flights.timeout,
                )
                if not reply:
                    holder: Any = await flights.calls.call(
                        lambda: flights.client.get(self.lease), flights.timeout
                    )
                    if holder is None or holder.decode() != self.flight_id:
                        raise _LeaderGone
                    continue
            except (TimeoutError, RedisError, OSError):
                raise _LeaderGone from None
            for entry_id, fields in reply[0][1]:
                self.last = entry_id
                self.buffered.append((fields[b"k"], fields.get(b"v", b"")))
        return self.buffered.pop(0)


class _Publisher:
    """The leader's writer: pipelines whatever entries are pending in one round trip, one flush at a time, and
    renews the lease on a timer while the call lasts (no task of its own while there is nothing to write)."""

    def __init__(self, flights: RedisFlights, lease: str, stream_key: str, flight_id: str) -> None:
        self.flights = flights
        self.lease = lease
        self.stream_key = stream_key
        self.flight_id = flight_id
        self.pending: list[tuple[bytes, bytes]] = []
        self.final = False
        self.success = False
        self._flushing: asyncio.Task[None] | None = None
        self._loop = asyncio.get_running_loop()
        self._renew_every = flights.lease_ms / 3000
        self._timer: asyncio.TimerHandle | None = self._loop.call_later(self._renew_every, self._renew)

    def put(self, kind: bytes, payload: bytes, *, final: bool = False) -> None:
        if self.final:
            return
        self.pending.append((kind, payload))
        if final:
            self.final = True
            self.success = kind in (_REPLY, _END)
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        if self._flushing is None:
            self._flushing = self.flights._spawn(self._flush())

    async def fail(self, exc: BaseException) -> None:
        """Publish the error and give the lease back before the caller sees the error, so that a request
        arriving after it goes upstream again instead of being handed the same error (one bounded round trip
        more, on the error path only)."""
        if self.final:
            return
        self.put(_ERROR, _encode_error(exc), final=True)
        flushing = self._flushing
        if flushing is not None:
            await asyncio.wait((flushing,), timeout=max(self.flights.timeout, 1.0))

    def _renew(self) -> None:
        if self.final:
            return
        flights = self.flights
        flights._spawn(
            self._send(
                lambda: flights._own_lease(
                    keys=[self.lease, self.stream_key],
                    args=[self.flight_id, flights.lease_ms, flights.lease_ms + flights.grace_ms],
                )
            )
        )
        self._timer = self._loop.call_later(self._renew_every, self._renew)

    async def _flush(self) -> None:
        try:
            while self.pending:
                batch, self.pending = self.pending, []
                final = self.final and not self.pending
                await self._send(lambda b=batch, f=final: self._write(b, f))  # type: ignore[misc]
        finally:
            self._flushing = None

    async def _write(self, batch: list[tuple[bytes, bytes]], final: bool) -> Any:
        flights = self.flights
        commands: list[tuple[Any, ...]] = [
            ("XADD", self.stream_key, "*", b"k", kind, b"v", payload) for kind, payload in batch
        ]
        if not final:
            commands.append(("PEXPIRE", self.stream_key, flights.lease_ms + flights.grace_ms))
        elif self.success:
            # Kept for the grace period so that a request arriving right after the answer still joins. The lease
            # is extended without checking it is still ours: at worst another flight's lease lasts ``grace``.
            commands.append(("PEXPIRE", self.stream_key, flights.grace_ms))
            commands.append(("PEXPIRE", self.lease, flights.grace_ms))
        else:
            # Followers still reading finish.
            commands.append(("PEXPIRE", self.stream_key, max(1000, flights.poll_ms * 4)))
        fast = flights.fast
        if fast is not None:  # sent in one write: one round trip, as a pipeline
            result: Any = await asyncio.gather(*(fast.execute(*command) for command in commands))
        else:
            pipe = flights.client.pipeline(transaction=False)
            for command in commands:
                pipe.execute_command(*command)
            result = await pipe.execute()
        if final and not self.success:
            # Errors are never served to later arrivals: give the key back at once (only if still ours).
            await flights._own_lease(keys=[self.lease], args=[self.flight_id, 0])
        return result

    async def _send(self, factory: Callable[[], Awaitable[Any]]) -> None:
        flights = self.flights
        if not flights.calls.allow():
            return
        try:
            await flights.calls.call(factory, max(flights.timeout, 1.0))
        except (TimeoutError, RedisError, OSError):
            pass  # followers see the lease run out and call upstream themselves


# ---------------------------------------------------------------------------------------------- errors
_ERROR_ATTRS = ("status", "type", "param", "code", "provider", "upstream_status", "retry_after", "headers")


def _encode_error(exc: BaseException) -> bytes:
    attrs = {name: getattr(exc, name) for name in _ERROR_ATTRS if hasattr(exc, name)}
    return orjson.dumps({"cls": type(exc).__name__, "message": str(exc), "attrs": attrs})


def _decode_error(payload: bytes) -> BaseException:
    """The leader's error as the same class from ``slipstream.errors``; anything else as a connection error."""
    try:
        data = orjson.loads(payload)
        cls = getattr(errors, data["cls"], None)
        message = str(data["message"])
    except (ValueError, KeyError, TypeError):
        return UpstreamConnectionError("the coalesced upstream call failed")
    if not (isinstance(cls, type) and issubclass(cls, errors.SlipstreamError)):
        return UpstreamConnectionError(message)
    exc = cls.__new__(cls)
    Exception.__init__(exc, message)
    exc.message = message
    for name, value in data.get("attrs", {}).items():
        setattr(exc, name, value)
    return exc
