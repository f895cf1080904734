"""The HTTP edge shared by the gateway (ASGI) and the in-process ``httpx`` transport.

It turns (method, path, headers, body) into a response: status, headers, and a body that is either bytes or an
async iterator of SSE bytes. Auth, validation, error mapping and SSE framing live here once, so the gateway and
the openai-SDK transport answer the same request the same way.
"""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import AsyncIterator, Mapping

import orjson

from ..cache.directives import CacheDirectives
from ..call import Call
from ..errors import AuthenticationError, InvalidRequest, SlipstreamError
from ..observe.alerts import AlertEvaluator
from ..observe.track import operation_path
from ..pipeline import Pipeline
from ..schema import parse_chat_request, parse_embeddings_request
from ..types import ChatRequest, Chunk, Reply

__all__ = ["Edge", "EdgeResponse", "error_response", "sse_bytes"]

log = logging.getLogger("slipstream.gateway")

JSON_HEADERS: tuple[tuple[bytes, bytes], ...] = ((b"content-type", b"application/json"),)
SSE_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
)
_DONE_EVENT = b"data: [DONE]\n\n"
_CACHE_STATUS = {s: s.encode() for s in ("hit", "semantic-hit", "miss", "refresh", "bypass", "off")}


class EdgeResponse:
    __slots__ = ("body", "headers", "status", "stream")

    def __init__(
        self,
        status: int,
        headers: list[tuple[bytes, bytes]],
        body: bytes = b"",
        stream: AsyncIterator[bytes] | None = None,
    ) -> None:
        self.status = status
        self.headers = headers
        self.body = body
        self.stream = stream


def error_response(exc: SlipstreamError) -> EdgeResponse:
    headers = list(JSON_HEADERS)
    retry_after = getattr(exc, "retry_after", None)
    if retry_after is not None:
        headers.append((b"retry-after", str(max(1, round(retry_after))).encode()))
    return EdgeResponse(exc.status, headers, orjson.dumps(exc.to_dict()))


def internal_error() -> EdgeResponse:
    body = {"error": {"message": "internal error", "type": "api_error", "param": None, "code": None}}
    return EdgeResponse(500, list(JSON_HEADERS), orjson.dumps(body))


class Edge:
    def __init__(
        self,
        pipeline: Pipeline,
        *,
        trusted_namespace: str | None = None,
        alerts: AlertEvaluator | None = None,
    ) -> None:
        """``trusted_namespace``: in-process callers (the SDK transport) skip key checks and use this namespace."""
        self.pipeline = pipeline
        self.trusted_namespace = trusted_namespace
        self.alerts = alerts
        config = pipeline.config
        self.keys = {k.key: k for k in config.keys}
        self.max_body_bytes = config.server.max_body_bytes
        # Imported here: the operator API builds on this module's responses, so it can load only after it.
        from .api import MetricsApi

        self.metrics_api = MetricsApi(pipeline)
        self._models_body = orjson.dumps(
            {
                "object": "list",
                "data": [
                    {"id": name, "object": "model", "created": 0, "owned_by": "slipstream"}
                    for name in pipeline.models()
                ],
            }
        )

    def authenticate(self, headers: Mapping[str, str]) -> tuple[str, str | None]:
        """The caller's (namespace, key name). With no keys configured everyone shares ``default``."""
        if self.trusted_namespace is not None:
            return self.trusted_namespace, None
        if not self.keys:
            return "default", None
        token = headers.get("authorization", "")
        if token[:7].lower() == "bearer ":
            token = token[7:].strip()
        else:
            token = headers.get("x-api-key", "") or headers.get("api-key", "")
        if not token:
            raise AuthenticationError("Missing API key: send it as 'Authorization: Bearer <key>'")
        key = self.keys.get(token)
        if key is None:
            raise AuthenticationError("Incorrect API key provided")
        return key.namespace, key.name

    def authenticate_admin(self, headers: Mapping[str, str]) -> None:
        """Operator endpoints: the admin key. With virtual keys but no admin key they are closed, not opened to
        every tenant (they show every tenant's traffic and spend, and clear any cache); with no keys at all the
        gateway listens on loopback only and they are open."""
        admin = self.pipeline.config.server.admin_key
        if admin is None:
            if self.keys:
                raise AuthenticationError(
                    "This endpoint needs the admin key, and none is configured (server.admin_key)"
                )
            return
        token = headers.get("authorization", "")
        token = token[7:].strip() if token[:7].lower() == "bearer " else headers.get("x-api-key", "")
        if not hmac.compare_digest(token.encode(), admin.encode()):
            raise AuthenticationError("This endpoint needs the admin key")

    async def handle(
        self, method: str, path: str, headers: Mapping[str, str], body: bytes, *, query: bytes = b""
    ) -> EdgeResponse:
        """Answer one request; ``query`` is the raw query string (read only by the operator API)."""
        try:
            if path.startswith("/v1/"):
                path = path[3:]
            if path == "/chat/completions":
                return await self._chat(method, headers, body)
            if path == "/embeddings":
                return await self._embeddings(method, headers, body)
            if path == "/models":
                self.authenticate(headers)
                return EdgeResponse(200, list(JSON_HEADERS), self._models_body)
            if path.startswith("/models/"):
                self.authenticate(headers)
                return self._model(path[8:])
            if path == "/api/cache/feedback":
                return self._feedback(method, headers, body)
            if path == "/api/cache/stats":
                self.authenticate_admin(headers)
                stats = await self.pipeline.cache_stats()
                return EdgeResponse(200, list(JSON_HEADERS), orjson.dumps({"cache": stats}))
            if path == "/api/alerts":
                self.authenticate_admin(headers)
                return self._alerts()
            if path.startswith("/api/metrics/") or path == "/api/cache/clear":
                self.authenticate_admin(headers)
                return await self.metrics_api.handle(method, path, query, body)
            if path == "/dashboard" or path.startswith("/dashboard/"):
                return self.metrics_api.dashboard(method, path)  # the page needs no key; its API calls do
            return error_response(not_found(path))
        except SlipstreamError as exc:
            return error_response(exc)
        except Exception:
            log.exception("unexpected error handling %s %s", method, path)
            return internal_error()

    def _alerts(self) -> EdgeResponse:
        """Every alert rule with its state and last value (``enabled: false`` when none are configured)."""
        alerts = self.alerts
        body = {"enabled": False, "alerts": []} if alerts is None else {"enabled": True, **alerts.snapshot()}
        return EdgeResponse(200, list(JSON_HEADERS), orjson.dumps(body))

    def _feedback(self, method: str, headers: Mapping[str, str], body: bytes) -> EdgeResponse:
        """``POST {"entry": <x-slipstream-semantic-entry>, "verdict": "bad"}``: take back a semantic hit."""
        if method != "POST":
            raise _method_not_allowed()
        namespace, _ = self.authenticate(headers)
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise InvalidRequest("request body must be JSON") from None
        entry = data.get("entry") if isinstance(data, dict) else None
        if not isinstance(entry, str) or not entry:
            raise InvalidRequest("'entry' must be the x-slipstream-semantic-entry of the hit", param="entry")
        if data.get("verdict", "bad") != "bad":
            raise InvalidRequest("'verdict' must be 'bad'", param="verdict")
        semantic = self.pipeline.semantic
        if semantic is None:
            raise InvalidRequest("the semantic cache is not enabled for any model group")
        removed = semantic.report_bad(entry, namespace=namespace)
        return EdgeResponse(200, list(JSON_HEADERS), orjson.dumps({"removed": removed}))

    def _model(self, name: str) -> EdgeResponse:
        self.pipeline.resolve(name)
        body = {"id": name, "object": "model", "created": 0, "owned_by": "slipstream"}
        return EdgeResponse(200, list(JSON_HEADERS), orjson.dumps(body))

    async def _chat(self, method: str, headers: Mapping[str, str], body: bytes) -> EdgeResponse:
        if method != "POST":
            raise _method_not_allowed()
        namespace, key_name = self.authenticate(headers)
        request = parse_chat_request(body)
        call = Call(
            request,
            namespace=namespace,
            key_name=key_name,
            cache=CacheDirectives.from_headers(headers),
            deadline=_deadline(headers),
            operation=_operation(headers),
        )
        call.feedback = headers.get("x-slipstream-feedback", "").strip().lower() or None
        result = await self.pipeline.run(call)
        response_headers = _call_headers(call)
        if isinstance(result, Reply):
            response_headers.extend(JSON_HEADERS)
            return EdgeResponse(200, response_headers, result.body)
        response_headers.extend(SSE_HEADERS)
        return EdgeResponse(200, response_headers, stream=sse_bytes(result, request))

    async def _embeddings(self, method: str, headers: Mapping[str, str], body: bytes) -> EdgeResponse:
        if method != "POST":
            raise _method_not_allowed()
        namespace, key_name = self.authenticate(headers)
        call = Call(
            parse_embeddings_request(body),
            namespace=namespace,
            key_name=key_name,
            cache=CacheDirectives.from_headers(headers),
            deadline=_deadline(headers),
            operation=_operation(headers),
        )
        result = await self.pipeline.run(call)
        assert isinstance(result, Reply)
        response_headers = _call_headers(call)
        response_headers.extend(JSON_HEADERS)
        return EdgeResponse(200, response_headers, result.body)


def _call_headers(call: Call) -> list[tuple[bytes, bytes]]:
    headers = [(b"x-slipstream-cache", _CACHE_STATUS.get(call.cache_status, b"off"))]
    if call.semantic_entry is not None and call.similarity is not None:
        headers.append((b"x-slipstream-similarity", f"{call.similarity:.4f}".encode()))
        headers.append((b"x-slipstream-semantic-entry", call.semantic_entry.encode()))
    if call.cache_age is not None:
        age = str(int(call.cache_age)).encode()
        headers.append((b"x-slipstream-cache-age", age))
        headers.append((b"age", age))
    if call.deployment is not None:
        headers.append((b"x-slipstream-deployment", call.deployment.encode()))
    if call.attempts > 1:
        headers.append((b"x-slipstream-attempts", str(call.attempts).encode()))
    if call.hedged:
        headers.append((b"x-slipstream-hedged", b"1"))
    if call.fallback is not None:
        headers.append((b"x-slipstream-fallback", call.fallback.encode()))
    if call.coalesced:
        headers.append((b"x-slipstream-coalesced", b"1"))
    return headers


def _operation(headers: Mapping[str, str]) -> str | None:
    """``x-slipstream-operation: cycle/propose``: the application operation the request belongs to (reports)."""
    value = headers.get("x-slipstream-operation")
    if value is None:
        return None
    try:
        return operation_path(value)
    except ValueError as exc:
        raise InvalidRequest(str(exc), param="x-slipstream-operation") from None


def _deadline(headers: Mapping[str, str]) -> float | None:
    """``x-slipstream-timeout: <seconds>``: one deadline for the whole request, retries and fallbacks included."""
    value = headers.get("x-slipstream-timeout")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not 0 < seconds <= 3600:
        raise InvalidRequest(
            "x-slipstream-timeout must be a number of seconds (0-3600]", param="x-slipstream-timeout"
        )
    return time.monotonic() + seconds


async def sse_bytes(stream: AsyncIterator[Chunk], request: ChatRequest) -> AsyncIterator[bytes]:
    """Frame chunks as SSE. Usage-only chunks reach only clients that asked for usage. A failure after the
    stream started ends it with an OpenAI-shaped error event — never a silent truncation, never ``[DONE]``."""
    include_usage = request.include_usage
    try:
        async for chunk in stream:
            if not include_usage and chunk.is_usage_only:
                continue
            yield b"data: " + chunk.raw + b"\n\n"
    except SlipstreamError as exc:
        yield b"data: " + orjson.dumps(exc.to_dict()) + b"\n\n"
        return
    except Exception:
        log.exception("unexpected error while streaming")
        yield b'data: {"error":{"message":"internal error","type":"api_error","param":null,"code":null}}\n\n'
        return
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    yield _DONE_EVENT


def not_found(path: str) -> SlipstreamError:
    exc = SlipstreamError(f"Unknown path: {path}")
    exc.status, exc.type = 404, "invalid_request_error"
    return exc


def _method_not_allowed() -> SlipstreamError:
    exc = InvalidRequest("Method not allowed")
    exc.status = 405
    return exc
