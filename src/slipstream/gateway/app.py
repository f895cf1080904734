"""The gateway as a plain ASGI application (no framework on the hot path; see PERF.md).

A client that goes away cancels its upstream call: streams are watched for the whole response; a non-streamed
call is watched only once it has taken longer than ``_WATCH_AFTER`` seconds — cache hits and fast upstreams
finish before that and never pay for a watcher task.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import orjson

from ..errors import RequestTooLarge, SlipstreamError
from ..observe.alerts import build_alerts
from ..pipeline import Pipeline
from .edge import JSON_HEADERS, Edge, EdgeResponse, error_response, not_found

__all__ = ["GatewayApp", "create_app"]

log = logging.getLogger("slipstream.gateway")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

_WATCH_AFTER = 0.05
# Request headers the edge reads; the rest are never decoded.
_WANTED_HEADERS = frozenset(
    {
        b"authorization",
        b"x-api-key",
        b"api-key",
        b"x-slipstream-cache",
        b"x-slipstream-cache-ttl",
        b"x-slipstream-timeout",
        b"x-slipstream-feedback",
        b"cache-control",
    }
)
_OK_BODY = b'{"status":"ok"}'


class GatewayApp:
    def __init__(self, pipeline: Pipeline) -> None:
        self.pipeline = pipeline
        self.alerts = build_alerts(pipeline)  # None without alert rules
        self.edge = Edge(pipeline, alerts=self.alerts)
        self.max_body_bytes = pipeline.config.server.max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "http":
            await self._http(scope, receive, send)
        elif kind == "lifespan":
            await self._lifespan(receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await self.pipeline.start()
                if self.alerts is not None:
                    self.alerts.start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.alerts is not None:
                    await self.alerts.aclose()
                await self.pipeline.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope["path"]
        if path == "/healthz":
            await _send(send, EdgeResponse(200, list(JSON_HEADERS), _OK_BODY))
            return
        if path == "/readyz":
            await _send(send, self._ready())
            return
        if path == "/metrics":
            await _send(send, self._metrics(scope))
            return
        headers: dict[str, str] = {}
        content_length = -1
        for name, value in scope["headers"]:
            if name in _WANTED_HEADERS:
                headers[name.decode()] = value.decode("latin-1")
            elif name == b"content-length":
                content_length = int(value) if value.isdigit() else -1
        if content_length > self.max_body_bytes:
            await _send(send, error_response(_too_large(self.max_body_bytes)))
            return
        body = await self._read_body(receive)
        if body is None:
            await _send(send, error_response(_too_large(self.max_body_bytes)))
            return
        task = asyncio.current_task()
        assert task is not None
        watch = _DisconnectWatch(receive, task)
        timer = asyncio.get_running_loop().call_later(_WATCH_AFTER, watch.start)
        try:
            response = await self.edge.handle(
                scope["method"], path, headers, body, query=scope.get("query_string", b"")
            )
            timer.cancel()
            if response.stream is None:
                watch.stop()
                await _send(send, response)
                return
            watch.start()
            await send(
                {"type": "http.response.start", "status": response.status, "headers": response.headers}
            )
            stream = response.stream
            try:
                async for piece in stream:
                    await send({"type": "http.response.body", "body": piece, "more_body": True})
            finally:
                await stream.aclose()  # type: ignore[attr-defined]
            watch.stop()
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except asyncio.CancelledError:
            if not watch.fired:
                raise
            task.uncancel()  # the client left: the upstream call is cancelled and nobody is waiting for an answer
        finally:
            timer.cancel()
            watch.stop()

    async def _read_body(self, receive: Receive) -> bytes | None:
        message = await receive()
        body: bytes = message.get("body", b"")
        if not message.get("more_body"):
            return body if len(body) <= self.max_body_bytes else None
        parts = [body]
        size = len(body)
        while message.get("more_body"):
            message = await receive()
            piece = message.get("body", b"")
            size += len(piece)
            if size > self.max_body_bytes:
                return None
            parts.append(piece)
        return b"".join(parts)

    def _metrics(self, scope: Scope) -> EdgeResponse:
        """Prometheus exposition; behind the admin key when one is configured (scrapers send it as a bearer)."""
        observer = self.pipeline.observer
        if observer is None or not self.pipeline.config.observe.metrics:
            return error_response(not_found("/metrics"))
        headers = {k.decode(): v.decode("latin-1") for k, v in scope["headers"] if k in _WANTED_HEADERS}
        try:
            self.edge.authenticate_admin(headers)
        except SlipstreamError as exc:
            return error_response(exc)
        body, content_type = observer.metrics.render()
        return EdgeResponse(200, [(b"content-type", content_type.encode())], body)

    def _ready(self) -> EdgeResponse:
        """Ready while every model group has a deployment whose breaker lets calls through."""
        health = self.pipeline.health()
        down = [
            group
            for group, deployments in health.items()
            if all(d["breaker"]["state"] == "open" for d in deployments)
        ]
        body = {
            "status": "degraded" if down else "ready",
            "models": self.pipeline.models(),
            "unavailable": down,
            "deployments": health,
        }
        redis = self.pipeline.redis_status()
        if redis is not None:
            # Still ready without Redis: every shared piece falls back to local behaviour (see scaleout).
            body["redis"] = redis
        return EdgeResponse(503 if down else 200, list(JSON_HEADERS), orjson.dumps(body))


class _DisconnectWatch:
    """Cancels the request's task when the client disconnects (``http.disconnect`` from ``receive``)."""

    __slots__ = ("_task", "fired", "receive", "target")

    def __init__(self, receive: Receive, target: asyncio.Task[Any]) -> None:
        self.receive = receive
        self.target = target
        self.fired = False
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())

    def stop(self) -> None:
        if self._task is not None and not self._task.done():
            self._task.cancel()

    async def _watch(self) -> None:
        with contextlib.suppress(asyncio.CancelledError):
            while True:
                message = await self.receive()
                if message["type"] == "http.disconnect":
                    self.fired = True
                    self.target.cancel()
                    return


async def _send(send: Send, response: EdgeResponse) -> None:
    headers = response.headers
    headers.append((b"content-length", str(len(response.body)).encode()))
    await send({"type": "http.response.start", "status": response.status, "headers": headers})
    await send({"type": "http.response.body", "body": response.body, "more_body": False})


def _too_large(limit: int) -> RequestTooLarge:
    return RequestTooLarge(f"Request body is larger than the limit of {limit} bytes")


def create_app() -> GatewayApp:
    """The app for one worker of ``slipstream serve --workers N``: the config from ``$SLIPSTREAM_CONFIG``."""
    from ..config import load_config
    from .gctune import tune_gc

    app = GatewayApp(Pipeline(load_config()))
    tune_gc()  # create_app runs only in a worker process of `slipstream serve`
    return app
