"""The request path's Redis commands over one connection, pipelined: ``PipelinedConnection.execute(*args)``.

Why not redis-py for these: under load redis-py spends ~85 µs of CPU per command on the development machine (a
pooled connection checked out and back, a retry wrapper, two timeouts: ~220 Python calls per GET). A cache miss
behind the Redis tier makes several round trips, which made it cost 2.4x a local miss. Here every command written
during one turn of the event loop goes out in one ``write``, and hiredis parses the replies: ~5 µs of CPU per GET
with 16 requests in flight, ~60 µs for one alone (mostly the two system calls).

Order is the protocol: Redis answers a connection's commands in the order it received them, so each reply
resolves the oldest waiting future. A caller that stops waiting (a timeout, a cancelled request) leaves its
future to be resolved and dropped when its reply comes: the connection never holds an unread reply, whatever is
cancelled when. A connection that fails fails every command waiting on it (``redis.exceptions.ConnectionError``,
a ``RedisError``, as redis-py would raise) and the next command opens a new one. A server that stops answering:
once the oldest command has waited ``socket_timeout``, the connection is dropped, with the same effect.

For one server only (``redis://`` and ``unix://`` URLs): TLS, Sentinel and Cluster clients stay on redis-py
(``for_url`` answers None for them). Callers use it for what every request sends (the cache tier's GET and SET,
the coalescing lease and its published reply, the limits' per-request scripts through ``run_script``); admin
commands, whose cost does not matter, stay on redis-py.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Any

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError

from .redis_connect import DEFAULT_SOCKET_TIMEOUT, RedisTarget, parse_redis_url

__all__ = ["Arg", "PipelinedConnection", "for_url", "run_script"]

Arg = bytes | str | int | float


def for_url(url: str, *, socket_timeout: float = DEFAULT_SOCKET_TIMEOUT) -> PipelinedConnection | None:
    """A pipelined connection to the one plain server ``url`` names; None for TLS, Sentinel and Cluster."""
    target = parse_redis_url(url)
    if target.kind != "server" or target.tls:
        return None
    timeout = float(target.options.get("socket_timeout", socket_timeout))
    return PipelinedConnection(target, socket_timeout=timeout)


async def run_script(
    conn: PipelinedConnection, sha: str, source: str | bytes | memoryview, keys: list[str], args: list[Arg]
) -> Any:
    """A Lua script by its SHA1 (``EVALSHA``), sent in full (``EVAL``, which also caches it) when this server
    does not know it yet, as redis-py's ``Script`` does."""
    try:
        return await conn.execute("EVALSHA", sha, len(keys), *keys, *args)
    except ResponseError as exc:
        if not str(exc).startswith("NOSCRIPT"):
            raise
    return await conn.execute(
        "EVAL", bytes(source) if isinstance(source, memoryview) else source, len(keys), *keys, *args
    )


class PipelinedConnection:
    """One lazily opened connection; ``execute`` sends a command and waits for its reply."""

    def __init__(self, target: RedisTarget, *, socket_timeout: float = DEFAULT_SOCKET_TIMEOUT) -> None:
        self.target = target
        self.socket_timeout = socket_timeout
        self.connect_timeout = float(target.options.get("socket_connect_timeout", socket_timeout))
        self._protocol: _Protocol | None = None
        self._connecting: asyncio.Task[_Protocol] | None = None
        self._closed = False

    async def execute(self, *args: Arg) -> Any:
        """The command's reply (bytes, int, None or a list of them); raises ``ResponseError`` for an error reply,
        ``redis.exceptions.ConnectionError`` when the connection cannot be opened or is lost."""
        future = self.send_nowait(args)
        if future is None:
            future = (await self._connect()).send(args)
        return await future

    def send_nowait(self, command: tuple[Arg, ...]) -> asyncio.Future[Any] | None:
        """Send on the open connection and return the reply's future; None when there is no open connection
        (``execute`` opens one). The future is never cancelled here: its caller may stop waiting for it."""
        protocol = self._protocol
        if protocol is None or protocol.closed or protocol.loop is not asyncio.get_running_loop():
            return None
        return protocol.send(command)

    async def aclose(self) -> None:
        self._closed = True
        if self._connecting is not None:
            self._connecting.cancel()
        if self._protocol is not None:
            self._protocol.close(RedisConnectionError("the connection was closed"))
            self._protocol = None

    async def _connect(self) -> _Protocol:
        if self._closed:
            raise RedisConnectionError("the connection was closed")
        # Concurrent callers share one attempt (asyncio.shield: one caller's cancellation does not end it).
        if self._connecting is None or self._connecting.get_loop() is not asyncio.get_running_loop():
            self._connecting = asyncio.get_running_loop().create_task(self._open())
        try:
            return await asyncio.shield(self._connecting)
        finally:
            if self._connecting is not None and self._connecting.done():
                self._connecting = None

    async def _open(self) -> _Protocol:
        loop = asyncio.get_running_loop()
        target = self.target
        protocol: _Protocol | None = None
        try:
            async with asyncio.timeout(self.connect_timeout):
                if target.path is not None:
                    _, protocol = await loop.create_unix_connection(
                        lambda: _Protocol(loop, self.socket_timeout), target.path
                    )
                else:
                    host, port = target.hosts[0]
                    _, protocol = await loop.create_connection(
                        lambda: _Protocol(loop, self.socket_timeout), host, port
                    )
                handshake = []
                if target.password is not None:
                    auth = (target.username, target.password) if target.username else (target.password,)
                    handshake.append(protocol.send(("AUTH", *auth)))
                if target.db:
                    handshake.append(protocol.send(("SELECT", target.db)))
                if handshake:
                    await asyncio.gather(*handshake)
        except (ResponseError, OSError, TimeoutError, asyncio.CancelledError) as exc:
            if protocol is not None:  # connected, but the setup failed: do not leave the socket open
                protocol.close(RedisConnectionError("the connection's setup failed"))
            if isinstance(exc, asyncio.CancelledError):
                raise
            if isinstance(exc, ResponseError):
                raise RedisConnectionError(f"Redis refused the connection's setup: {exc}") from exc
            raise RedisConnectionError(f"cannot connect to Redis: {exc or type(exc).__name__}") from exc
        self._protocol = protocol
        return protocol


class _Protocol(asyncio.Protocol):
    """The connection: commands queued in this loop turn, futures waiting in send order."""

    def __init__(self, loop: asyncio.AbstractEventLoop, socket_timeout: float) -> None:
        self.loop = loop
        self.socket_timeout = socket_timeout
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.waiting: deque[tuple[asyncio.Future[Any], float]] = deque()  # (future, time sent)
        self.out: list[bytes] = []
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._watchdog: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def send(self, args: tuple[Arg, ...]) -> asyncio.Future[Any]:
        if self.closed:
            raise RedisConnectionError("the connection to Redis was lost")
        if not self.out:
            self.loop.call_soon(self._flush)
        self.out.append(hiredis.pack_command(args))  # type: ignore[arg-type]  # the stub types a 1-tuple
        future: asyncio.Future[Any] = self.loop.create_future()
        self.waiting.append((future, self.loop.time()))
        if self._watchdog is None:
            self._watchdog = self.loop.call_later(self.socket_timeout, self._check_stalled)
        return future

    def _flush(self) -> None:
        if self.out and not self.closed and self.transport is not None:
            self.transport.write(b"".join(self.out))
        self.out = []

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        waiting = self.waiting
        try:
            while (reply := reader.gets()) is not False:
                future, _ = waiting.popleft()
                if future.done():  # its caller stopped waiting
                    continue
                if isinstance(reply, ResponseError):
                    future.set_exception(reply)
                else:
                    future.set_result(reply)
        except (hiredis.ProtocolError, IndexError) as exc:  # garbage, or a reply nobody asked for
            self.close(RedisConnectionError(f"unreadable reply from Redis: {exc}"))

    def _check_stalled(self) -> None:
        self._watchdog = None
        if not self.waiting or self.closed:
            return
        oldest = self.waiting[0][1]
        if self.loop.time() - oldest >= self.socket_timeout:
            self.close(RedisConnectionError(f"Redis did not answer within {self.socket_timeout:g}s"))
            return
        self._watchdog = self.loop.call_later(
            oldest + self.socket_timeout - self.loop.time(), self._check_stalled
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(RedisConnectionError(f"the connection to Redis was lost: {exc or 'closed by the server'}"))

    def close(self, error: Exception) -> None:
        if self.transport is not None:
            self.transport.abort()
        self._fail(error)

    def _fail(self, error: Exception) -> None:
        self.closed = True
        if self._watchdog is not None:
            self._watchdog.cancel()
            self._watchdog = None
        while self.waiting:
            future, _ = self.waiting.popleft()
            if not future.done():
                future.set_exception(error)
