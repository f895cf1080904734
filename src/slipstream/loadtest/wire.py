"""A minimal HTTP/1.1 keep-alive client connection: one request in flight, callbacks instead of coroutines.

Why hand-rolled: the load tester must drive >= 5,000 requests/s from one Python process on 2 cores that it shares
with the server under test. A general client (httpx, aiohttp) spends tens of microseconds per request building
requests, header objects, futures and tasks. Here the request is prebuilt ``bytes`` (see ``mix.py``), the
response is parsed only as far as needed — status line, ``content-length`` or chunked framing, the first body
chunk of a stream (its time is the TTFT) — and completion is a plain method call on the owner, which may write
the next request from inside that call. No task, future or buffer copy per request on the fast path (a whole
response arriving in one read). Fastest of all, a reply whose head is byte for byte the head of the previous
content-length reply on the connection (a fixed-reply server's: nginx's change only in ``Date``, once a second)
and whose body arrived with it is recognised by one ``startswith`` and not parsed at all: the same head means
the same status and framing. Against such a server that cuts the tester's user CPU per request from ~5 µs to
~2 µs (2 cores, Python 3.11), and on a small machine every µs the tester spends is taken from the server.

The owner (a driver in ``drivers.py``) implements :class:`ConnectionOwner`. A connection reports exactly one of
``on_response`` (a complete response, any status) or ``on_failure`` (the connection broke or the response could
not be parsed) per request it was given; ``on_closed`` says an idle connection went away.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import time
from typing import Protocol, cast

from .target import Target

__all__ = ["ConnectionOwner", "HttpConnection", "open_connection"]

MAX_HEAD_BYTES = 64 * 1024

# Parser states.
_IDLE = 0
_HEAD = 1
_BODY = 2  # content-length body: ``_left`` bytes to go
_CHUNK_SIZE = 3  # expecting a chunk-size line
_CHUNK_DATA = 4  # ``_left`` bytes of chunk payload + its CRLF to go
_TRAILER = 5  # after the last chunk: lines until an empty one
_UNTIL_CLOSE = 6  # no length given: the body ends when the server closes
_FRESH = 7  # like ``_HEAD``, nothing read yet of a reply to an unstreamed request: the fast path may apply

_NEVER = 1 << 62  # a ``_seen_size`` no read reaches

_now = time.perf_counter


class ConnectionOwner(Protocol):
    def on_response(self, conn: HttpConnection, status: int, now: float) -> None: ...

    def on_failure(self, conn: HttpConnection, kind: str, now: float) -> None: ...

    def on_closed(self, conn: HttpConnection) -> None: ...


class HttpConnection(asyncio.Protocol):
    """One keep-alive connection. ``send`` writes a request; the owner hears when its response is complete."""

    __slots__ = (
        "_buf",
        "_keep_alive",
        "_left",
        "_seen_head",
        "_seen_size",
        "_seen_status",
        "_state",
        "_status",
        "busy",
        "closed",
        "first_byte",
        "intended",
        "owner",
        "stream",
        "transport",
    )

    def __init__(self, owner: ConnectionOwner) -> None:
        self.owner = owner
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.closed = False
        self.intended = 0.0  # the time the request was due (open loop) or sent (closed loop)
        self.stream = False
        self.first_byte = 0.0  # when the first body chunk of a streamed reply arrived (0: not yet)
        self._state = _IDLE
        self._buf = b""
        self._left = 0
        self._status = 0
        self._keep_alive = True
        # The head of the last keep-alive reply framed by a content-length, with its status and its size (head
        # plus body), so that a reply under the very same head (a fixed-reply server's differ only in ``Date``,
        # once a second) arriving whole in one read is recognised by one ``startswith`` instead of being parsed.
        self._seen_head = b""
        self._seen_size = _NEVER
        self._seen_status = 0

    # ------------------------------------------------------------------------------------------ owner's side
    def send(self, request: bytes, stream: bool, intended: float) -> None:
        """Write ``request``; the connection must be open and idle (not ``busy``)."""
        self.busy = True
        self.intended = intended
        self.stream = stream
        self.first_byte = 0.0
        self._state = _HEAD if stream else _FRESH  # a streamed reply is parsed as it comes, for its TTFT
        self.transport.write(request)  # type: ignore[union-attr]  # connected: the owner only has open ones

    def abort(self) -> None:
        """Drop the connection at once (a timed-out request); the owner has already accounted for it."""
        self.busy = False
        self.closed = True
        self._state = _IDLE
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    # ------------------------------------------------------------------------------------------ asyncio
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        sock = transport.get_extra_info("socket")
        if sock is not None and sock.family in (socket.AF_INET, socket.AF_INET6):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.busy:
            self.owner.on_closed(self)
            return
        self.busy = False
        if self._state == _UNTIL_CLOSE:
            self._state = _IDLE
            self.owner.on_response(self, self._status, _now())
        else:
            self._state = _IDLE
            self.owner.on_failure(self, "connection", _now())

    def eof_received(self) -> bool | None:
        return None  # close our side too; connection_lost follows

    def data_received(self, data: bytes) -> None:
        state = self._state
        if state == _FRESH and len(data) >= self._seen_size and data.startswith(self._seen_head):
            # The fast path: the whole reply, under the same head as the last one.
            self.busy = False
            self._state = _IDLE
            self.owner.on_response(self, self._seen_status, _now())
            return
        if not self.busy:
            return  # bytes nobody asked for (after a timeout): ignore
        if self._buf:
            data = self._buf + data
            self._buf = b""
        elif state == _FRESH:
            state = _HEAD
        pos = 0
        end = len(data)
        while pos < end:
            if state == _HEAD:
                stop = data.find(b"\r\n\r\n", pos)
                if stop < 0:
                    if end - pos > MAX_HEAD_BYTES:
                        return self._fail("protocol")
                    self._buf = data[pos:]
                    break
                state = self._parse_head(data, pos, stop)
                if state < 0:
                    return self._fail("protocol")
                pos = stop + 4
                if state == _IDLE:
                    return self._finish()
            elif state == _BODY:
                if self.stream and not self.first_byte:
                    self.first_byte = _now()
                take = end - pos
                if take >= self._left:
                    return self._finish()
                self._left -= take
                break
            elif state == _CHUNK_DATA:
                take = min(self._left, end - pos)
                self._left -= take
                pos += take
                if not self._left:
                    state = _CHUNK_SIZE
            elif state == _CHUNK_SIZE:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    self._buf = data[pos:]
                    break
                try:
                    size = int(data[pos:eol].split(b";", 1)[0], 16)
                except ValueError:
                    return self._fail("protocol")
                pos = eol + 2
                if size:
                    if self.stream and not self.first_byte:
                        self.first_byte = _now()
                    self._left = size + 2  # payload and its CRLF
                    state = _CHUNK_DATA
                else:
                    state = _TRAILER
            elif state == _TRAILER:
                eol = data.find(b"\r\n", pos)
                if eol < 0:
                    self._buf = data[pos:]
                    break
                if eol == pos:
                    return self._finish()
                pos = eol + 2
            elif state == _UNTIL_CLOSE:
                if self.stream and not self.first_byte:
                    self.first_byte = _now()
                break  # the body ends with the connection
            else:  # _IDLE while busy cannot happen
                return self._fail("protocol")
        self._state = state

    # ------------------------------------------------------------------------------------------ parsing
    def _parse_head(self, data: bytes, start: int, stop: int) -> int:
        """Read the status line and the framing headers; return the next state (-1: not HTTP).

        Written for the common reply (a content-length, keep-alive by default): one lowercase copy of the
        head and a few ``find`` calls, no per-header work.
        """
        if not data.startswith(b"HTTP/1.", start) or stop - start < 12:
            return -1
        try:
            status = int(data[start + 9 : start + 12])
        except ValueError:
            return -1
        if status < 200:
            return _HEAD if status >= 100 else -1  # an interim response: the real one follows
        head = data[start:stop].lower()
        self._status = status
        http11 = (
            head[7] == 49
        )  # b"1": HTTP/1.1 keeps the connection unless told otherwise, HTTP/1.0 the reverse
        if http11 and b"close" not in head:
            self._keep_alive = True  # the common case, decided without reading the connection header
        else:
            connection = _header(head, b"\r\nconnection:")
            self._keep_alive = b"close" not in connection and (http11 or b"keep-alive" in connection)
        if status == 204 or status == 304:
            return _IDLE
        if b"chunked" in head and b"chunked" in _header(head, b"\r\ntransfer-encoding:"):
            return _CHUNK_SIZE
        i = head.find(b"\r\ncontent-length:")
        if i >= 0:
            j = head.find(b"\r\n", i + 17)
            try:
                self._left = left = int(head[i + 17 : j if j >= 0 else stop - start])  # int() skips spaces
            except ValueError:
                return -1
            if left < 0:
                return -1
            if self._keep_alive:
                self._seen_head = data[start : stop + 4]
                self._seen_size = stop + 4 - start + left
                self._seen_status = status
            return _BODY if left > 0 else _IDLE
        self._keep_alive = False
        return _UNTIL_CLOSE

    def _finish(self) -> None:
        self.busy = False
        self._state = _IDLE
        self._buf = b""
        if not self._keep_alive:
            self.close()
        self.owner.on_response(self, self._status, _now())

    def _fail(self, kind: str) -> None:
        self.busy = False
        self._state = _IDLE
        self._buf = b""
        self.close()
        self.owner.on_failure(self, kind, _now())


def _header(head: bytes, name: bytes) -> bytes:
    """The value of header ``name`` (given as ``b"\\r\\nname:"``, lowercase) in a lowercased head, or b""."""
    i = head.find(name)
    if i < 0:
        return b""
    i += len(name)
    j = head.find(b"\r\n", i)
    return head[i : j if j >= 0 else len(head)].strip()


async def open_connection(
    target: Target, owner: ConnectionOwner, ssl_context: ssl.SSLContext | None = None
) -> HttpConnection:
    """Connect to ``target``; raises ``OSError`` (refused, unreachable) like ``loop.create_connection``."""
    loop = asyncio.get_running_loop()
    _, conn = await loop.create_connection(
        lambda: HttpConnection(owner),
        target.host,
        target.port,
        ssl=ssl_context if target.tls else None,
    )
    return conn
