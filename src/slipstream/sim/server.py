"""The sim as an OpenAI-compatible HTTP server: ``slipstream sim`` and the upstream of e2e tests and benchmarks.

Routes: ``POST /v1/chat/completions`` (JSON, or SSE when ``stream`` is true), ``POST /v1/embeddings``,
``GET /v1/models[/{id}]``, ``GET /healthz``, ``GET /sim/stats`` (counters), ``POST /sim/reset`` (zero counters
and rate windows). The ``/v1`` prefix is optional. Errors are OpenAI error JSON.

Faults are real at the HTTP level: a 429 carries ``Retry-After``, a broken stream (or body) drops the connection
mid-way, a malformed reply is a 200 whose body is not JSON, a hang holds the connection until the client leaves.

Why not ASGI on uvicorn: the sim stands upstream of slipstream in benchmarks on a 2-core machine and must not be
the bottleneck. Measured there with ``wrk -t1 -c16`` (POST of a ~100-byte chat request): a raw ASGI app on uvicorn
(uvloop + httptools, no access log) answering a constant body did ~34-41k requests/s; a bare asyncio ``Protocol``
with httptools answering the same did ~111k; this server, doing all of the sim's work, ~50k (JSON replies of
~1.3 kB, ~20 us of CPU each) and ~27k for streams of ~35 chunks. So this module speaks HTTP/1.1 itself:
keep-alive, pipelining (answered in order), chunked SSE, ``Expect: 100-continue``. A request that needs no waiting
is answered synchronously in ``data_received`` — no task, no ``sleep``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any, cast

import httptools
import orjson

from ..errors import InvalidRequest
from .embeddings import embeddings_body
from .engine import completion_body, stream_events, usage_chunk
from .options import SimOptions
from .simulator import ChatOutcome, Simulator, error_body

__all__ = ["MODELS", "SimServer", "serve"]

# The models ``GET /v1/models`` lists. The sim answers for any model name; these are for clients that look.
MODELS = ("sim-1", "sim-1-mini", "sim-embed-1")
MAX_BODY_BYTES = 32 * 1024 * 1024

logger = logging.getLogger(__name__)

Sleep = Callable[[float], Awaitable[Any]]
Job = Callable[["_Connection"], Awaitable[None]]
Response = bytes | tuple[Job, bool]  # bytes: written at once; (job, keep_alive): a coroutine writes it

_REASONS = {
    200: b"OK",
    400: b"Bad Request",
    404: b"Not Found",
    405: b"Method Not Allowed",
    413: b"Payload Too Large",
    429: b"Too Many Requests",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
}
_JSON = b"application/json"
_SSE_HEAD = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream; charset=utf-8\r\ncache-control: no-cache\r\n"
    b"x-accel-buffering: no\r\ntransfer-encoding: chunked\r\n"
)
_CLOSE = b"connection: close\r\n"
_DONE_EVENT = b"data: [DONE]\n\n"
_LAST_FRAME = b"0\r\n\r\n"
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"


def _head(status: int, content_type: bytes, length: int, extra: bytes, keep_alive: bool) -> bytes:
    return b"HTTP/1.1 %d %s\r\ncontent-type: %s\r\ncontent-length: %d\r\n%s%s\r\n" % (
        status,
        _REASONS.get(status, b"Unknown"),
        content_type,
        length,
        extra,
        b"" if keep_alive else _CLOSE,
    )


def _json(status: int, body: bytes, keep_alive: bool, extra: bytes = b"") -> bytes:
    return _head(status, _JSON, len(body), extra, keep_alive) + body


def _error(
    status: int, message: str, keep_alive: bool, *, type: str = "invalid_request_error", **kw: Any
) -> bytes:
    return _json(status, orjson.dumps(error_body(message, type, **kw)), keep_alive)


def _frame(data: bytes) -> bytes:
    """One HTTP chunk (chunked transfer encoding)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _event(data: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(data) + b"\n\n"


def _header_bytes(headers: list[tuple[str, str]]) -> bytes:
    return "".join(f"{k}: {v}\r\n" for k, v in headers).encode() if headers else b""


# ---------------------------------------------------------------------------------------------- connection
class _Connection(asyncio.Protocol):
    """One client connection: parses requests with httptools and answers them in order."""

    def __init__(self, server: SimServer) -> None:
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._url = b""
        self._body: list[bytes] = []
        self._body_size = 0
        self._expect_continue = False
        self._pending: deque[tuple[bytes, bytes, bytes, bool, bool]] = deque()
        self._task: asyncio.Task[None] | None = None
        self._paused = False
        self._drained: asyncio.Future[None] | None = None

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports are not asyncio subclasses
        self.server._connections.add(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.server._connections.discard(self)
        if self._task is not None:
            self._task.cancel()  # the client left: stop generating for it
        self._wake_writer()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(b"upgrades are not supported")
        except httptools.HttpParserError:
            self._fail(b"malformed HTTP request")

    def pause_writing(self) -> None:
        self._paused = True

    def resume_writing(self) -> None:
        self._paused = False
        self._wake_writer()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self._url = b""
        self._body = []
        self._body_size = 0

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        if len(name) == 6 and name.lower() == b"expect" and value.lower() == b"100-continue":
            self._expect_continue = True

    def on_headers_complete(self) -> None:
        if self._expect_continue:
            self._expect_continue = False
            self.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        self._body_size += len(body)
        if self._body_size <= self.server.max_body:
            self._body.append(body)

    def on_message_complete(self) -> None:
        too_large = self._body_size > self.server.max_body
        body = self._body[0] if len(self._body) == 1 else b"".join(self._body)
        request = (self.parser.get_method(), self._url, body, self.parser.should_keep_alive(), too_large)
        if self._task is not None or self._pending:
            self._pending.append(request)  # pipelined: answered after the one in progress
        else:
            self._answer(request)

    # answering
    def _answer(self, request: tuple[bytes, bytes, bytes, bool, bool]) -> None:
        while not self.closed:
            method, url, body, keep_alive, too_large = request
            if too_large:
                response: Response = _error(413, "request body too large", False)
            else:
                try:
                    response = self.server.respond(method, url, body, keep_alive)
                except Exception as exc:  # a bug in the sim: say so in the answer rather than stall
                    logger.exception("sim server error")
                    response = _error(500, f"sim internal error: {exc!r}", False, type="server_error")
                    keep_alive = False
            if isinstance(response, bytes):
                self.write(response)
                if not keep_alive or too_large:
                    self.close()
                    return
                if not self._pending:
                    return
                request = self._pending.popleft()
            else:
                job, keep_alive = response
                self._task = asyncio.get_running_loop().create_task(self._run(job, keep_alive))
                return

    async def _run(self, job: Job, keep_alive: bool) -> None:
        stats = self.server.simulator.stats
        stats.in_flight += 1
        try:
            await job(self)
        except Exception:
            logger.exception("sim server error while answering")
            self.abort()
            return
        finally:
            stats.in_flight -= 1
            self._task = None
        if not keep_alive:
            self.close()
        elif self._pending and not self.closed:
            self._answer(self._pending.popleft())

    # writing
    def write(self, data: bytes) -> None:
        if not self.closed and self.transport is not None:
            self.transport.write(data)

    async def drain(self) -> None:
        """Wait while the client reads slower than the stream is written."""
        if self._paused and not self.closed:
            self._drained = asyncio.get_running_loop().create_future()
            await self._drained

    def _wake_writer(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.closed = True  # pipelined requests still in the buffer are not answered
            self.transport.close()

    def abort(self) -> None:
        """Drop the connection at once (no FIN after the data): the client sees a body cut short."""
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.abort()

    def _fail(self, message: bytes) -> None:
        self.write(_error(400, message.decode(), False))
        self.close()


# ---------------------------------------------------------------------------------------------- server
class SimServer:
    """The sim HTTP server. ``async with SimServer(options) as server:`` listens on ``server.url``."""

    def __init__(
        self,
        options: SimOptions | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Sleep = asyncio.sleep,
        max_body: int = MAX_BODY_BYTES,
    ) -> None:
        self.options = options or SimOptions()
        self.max_body = max_body
        self.simulator = Simulator(self.options, clock=clock)
        self._sleep = sleep
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self.host = ""
        self.port = 0
        # path -> (method, handler, the name it is counted under in /sim/stats; None: not counted)
        self._routes: dict[bytes, tuple[bytes, Callable[[bytes, bool], Response], str | None]] = {}
        for prefix in (b"/v1", b""):
            self._routes[prefix + b"/chat/completions"] = (b"POST", self._chat, "/v1/chat/completions")
            self._routes[prefix + b"/embeddings"] = (b"POST", self._embeddings, "/v1/embeddings")
            self._routes[prefix + b"/models"] = (b"GET", self._models, "/v1/models")
        self._routes[b"/healthz"] = (b"GET", self._health, "/healthz")
        self._routes[b"/sim/stats"] = (b"GET", self._stats, None)
        self._routes[b"/sim/reset"] = (b"POST", self._reset, None)
        self._models_body = orjson.dumps({"object": "list", "data": [_model(m) for m in MODELS]})

    @property
    def url(self) -> str:
        """``http://host:port`` (the OpenAI base URL is this plus ``/v1``)."""
        return f"http://{self.host}:{self.port}"

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> SimServer:
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(lambda: _Connection(self), host, port, backlog=2048)
        self.host, self.port = self._server.sockets[0].getsockname()[:2]
        return self

    async def serve_forever(self) -> None:
        assert self._server is not None, "start() first"
        await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is None:
            return
        self._server.close()
        for conn in list(self._connections):
            conn.abort()
        await self._server.wait_closed()
        self._server = None

    async def __aenter__(self) -> SimServer:
        if self._server is None:
            await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # ------------------------------------------------------------------------------------------ routing
    def respond(self, method: bytes, url: bytes, body: bytes, keep_alive: bool) -> Response:
        """The answer to one request: bytes to write now, or a job that writes it over time."""
        q = url.find(b"?")
        path = url if q < 0 else url[:q]
        route = self._routes.get(path)
        stats = self.simulator.stats
        if route is None:
            if path.startswith((b"/v1/models/", b"/models/")) and method == b"GET":
                stats.count("/v1/models")
                name = path.rsplit(b"/", 1)[1].decode("utf-8", "replace")
                return _json(200, orjson.dumps(_model(name)), keep_alive)
            stats.count("other")
            where = f"{method.decode()} {path.decode('utf-8', 'replace')}"
            return _error(404, f"Unknown request URL: {where}.", keep_alive, code="unknown_url")
        wanted, handler, counted_as = route
        if counted_as is not None:
            stats.count(counted_as)
        if method != wanted:
            message = f"Method {method.decode()} not allowed on {path.decode()}; use {wanted.decode()}."
            return _error(405, message, keep_alive)
        return handler(body, keep_alive)

    def _health(self, body: bytes, keep_alive: bool) -> Response:
        return _json(200, b'{"status":"ok"}', keep_alive)

    def _models(self, body: bytes, keep_alive: bool) -> Response:
        return _json(200, self._models_body, keep_alive)

    def _stats(self, body: bytes, keep_alive: bool) -> Response:
        return _json(200, orjson.dumps(self.simulator.stats.snapshot()), keep_alive)

    def _reset(self, body: bytes, keep_alive: bool) -> Response:
        self.simulator.reset()
        return _json(200, b'{"status":"reset"}', keep_alive)

    # ------------------------------------------------------------------------------------------ embeddings
    def _embeddings(self, raw: bytes, keep_alive: bool) -> Response:
        try:
            outcome = self.simulator.embeddings(_parse(raw))
        except InvalidRequest as exc:
            return _json(400, orjson.dumps(exc.to_dict()), keep_alive)
        extra = _header_bytes(outcome.headers)
        if outcome.status != 200:
            return _json(outcome.status, orjson.dumps(outcome.error), keep_alive, extra)
        if outcome.fault == "hang":
            return _hang, keep_alive
        assert outcome.plan is not None
        if outcome.fault == "malformed":
            return _json(
                200, b'{"object": "list", "data": [{"object": "embedding", "embedd', keep_alive, extra
            )
        reply = _json(200, orjson.dumps(embeddings_body(outcome.plan)), keep_alive, extra)
        delay = outcome.timing.ttft
        if delay <= 0:
            return reply

        async def later(conn: _Connection) -> None:
            await self._sleep(delay)
            conn.write(reply)

        return later, keep_alive

    # ------------------------------------------------------------------------------------------ chat
    def _chat(self, raw: bytes, keep_alive: bool) -> Response:
        try:
            outcome = self.simulator.chat(_parse(raw))
        except InvalidRequest as exc:
            return _json(400, orjson.dumps(exc.to_dict()), keep_alive)
        extra = _header_bytes(outcome.headers)
        if outcome.status != 200:
            return _json(outcome.status, orjson.dumps(outcome.error), keep_alive, extra)
        if outcome.fault == "hang":
            return _hang, keep_alive
        if outcome.stream:
            return self._chat_stream(outcome, keep_alive, extra)
        plan = outcome.plan
        assert plan is not None
        if outcome.fault == "malformed":
            body = b'{"id": "%s", "object": "chat.completion", "choices": [{"index": 0, "message": {"con' % (
                outcome.id.encode()
            )
            return _json(200, body, keep_alive, extra)
        body = orjson.dumps(
            completion_body(plan, id=outcome.id, created=outcome.created, model=outcome.model)
        )
        reply = _json(200, body, keep_alive, extra)
        delay = outcome.timing.total(plan.completion_tokens)
        broken = outcome.fault == "broken_stream"
        if delay <= 0 and not broken:
            return reply
        sleep = self._sleep

        async def later(conn: _Connection) -> None:
            if delay > 0:
                await sleep(delay)
            if broken:  # the head promises the whole body; half of it arrives, then the connection drops
                conn.write(reply[: len(reply) - len(body) // 2])
                conn.abort()
            else:
                conn.write(reply)

        return later, keep_alive

    def _chat_stream(self, outcome: ChatOutcome, keep_alive: bool, extra: bytes) -> Response:
        plan = outcome.plan
        assert plan is not None
        ident, created, model = outcome.id, outcome.created, outcome.model
        events = stream_events(
            plan,
            id=ident,
            created=created,
            model=model,
            chunk_tokens=outcome.options.chunk_tokens,
            usage_field=outcome.include_usage,
        )
        tail = (
            _event(usage_chunk(plan, id=ident, created=created, model=model))
            if outcome.include_usage
            else b""
        )
        tail += _DONE_EVENT
        head = _SSE_HEAD + extra + (b"" if keep_alive else _CLOSE) + b"\r\n"
        fault = outcome.fault
        if fault == "malformed":
            garbage = b'data: {"id": "%s", "choices": [{"delta": {"con\n\n' % ident.encode()
            events = [*events[:1], (garbage, 0)]  # one good chunk, then an event that is not JSON
        timing = outcome.timing
        if timing.instant and fault in (None, "malformed"):
            return head + _frame(b"".join(e for e, _ in events) + tail) + _LAST_FRAME
        gap = outcome.options.slow_stream_gap if fault == "slow_stream" else 0.0
        break_at = max(1, len(events) // 2) if fault == "broken_stream" else -1
        sleep = self._sleep

        async def paced(conn: _Connection) -> None:
            for i, (event, tokens) in enumerate(events):
                if i == break_at:
                    conn.abort()  # no [DONE], no last chunk: the client sees the stream cut off
                    return
                delay = (timing.ttft if i == 0 else tokens * timing.per_token) + (gap if i else 0.0)
                if delay > 0:
                    await sleep(delay)
                conn.write(head + _frame(event) if i == 0 else _frame(event))
                await conn.drain()
            conn.write(_frame(tail) + _LAST_FRAME)

        return paced, keep_alive


async def _hang(conn: _Connection) -> None:
    """Hold the connection without answering; ends when the client disconnects (the task is cancelled)."""
    await asyncio.get_running_loop().create_future()


def _parse(raw: bytes) -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "We could not parse the JSON body of your request. (HINT: This likely means you aren't using your "
            "HTTP library correctly.)"
        ) from None


def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "slipstream-sim"}


# ---------------------------------------------------------------------------------------------- entry point
def serve(host: str = "127.0.0.1", port: int = 8001, options: SimOptions | None = None) -> None:
    """Run the sim server until interrupted (Ctrl-C or SIGTERM). Prints one line saying where it listens."""
    options = options or SimOptions()

    async def main() -> None:
        server = await SimServer(options).start(host, port)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, stop.set)
        print(f"slipstream sim listening on {server.url} (preset {options.preset})", flush=True)
        try:
            await stop.wait()
        finally:
            await server.close()

    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency everywhere but Windows
        asyncio.run(main())
    else:
        uvloop.run(main())
