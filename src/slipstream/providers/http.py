"""Pooled upstream HTTP (aiohttp) shared by every provider, with timeouts and error mapping.

One ``aiohttp.ClientSession`` per upstream origin keeps connections alive across requests and deployments.
aiohttp rather than httpx: httpx's pool degrades under high concurrency (see PERF.md).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Mapping
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson

from ..errors import (
    UpstreamConnectionError,
    UpstreamError,
    UpstreamProtocolError,
    UpstreamStatusError,
    UpstreamTimeout,
)
from .base import Timeouts

__all__ = ["HttpPool", "SSEEvent", "iter_sse", "raise_for_status", "request"]

_POOL_LIMIT_PER_HOST = 1000
_KEEPALIVE_SECONDS = 60.0
_MAX_ERROR_BODY = 64 * 1024


class HttpPool:
    """Lazily created sessions, one per origin (scheme, host, port), closed together."""

    def __init__(self, *, limit_per_host: int = _POOL_LIMIT_PER_HOST) -> None:
        self._sessions: dict[str, aiohttp.ClientSession] = {}
        self._limit_per_host = limit_per_host

    def session(self, url: str) -> aiohttp.ClientSession:
        parts = urlsplit(url)
        origin = f"{parts.scheme}://{parts.netloc}"
        session = self._sessions.get(origin)
        if session is None or session.closed:
            connector = aiohttp.TCPConnector(
                limit=0,
                limit_per_host=self._limit_per_host,
                keepalive_timeout=_KEEPALIVE_SECONDS,
                ttl_dns_cache=300,
            )
            session = aiohttp.ClientSession(
                connector=connector,
                json_serialize=lambda o: orjson.dumps(o).decode(),
                auto_decompress=True,
                skip_auto_headers=("User-Agent",),
            )
            self._sessions[origin] = session
        return session

    async def aclose(self) -> None:
        sessions, self._sessions = list(self._sessions.values()), {}
        for session in sessions:
            await session.close()


def client_timeout(t: Timeouts) -> aiohttp.ClientTimeout:
    return aiohttp.ClientTimeout(total=t.total, sock_connect=t.connect, sock_read=t.first_byte)


@contextlib.asynccontextmanager
async def request(
    pool: HttpPool,
    method: str,
    url: str,
    *,
    provider: str,
    timeouts: Timeouts,
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
) -> AsyncIterator[aiohttp.ClientResponse]:
    """Send one request; yield the response once its status is known (an error status is raised).

    aiohttp's exceptions become slipstream's upstream errors here, inside the ``async with`` as well, so a
    stream that breaks or stalls while being read raises ``UpstreamProtocolError`` / ``UpstreamTimeout``.
    """
    session = pool.session(url)
    try:
        async with session.request(
            method, url, data=body, headers=headers, timeout=client_timeout(timeouts)
        ) as response:
            if response.status >= 400:
                await raise_for_status(response, provider)
            yield response
    except UpstreamError:
        raise
    except (TimeoutError, aiohttp.ServerTimeoutError) as exc:
        raise UpstreamTimeout(f"{provider} timed out ({_timeout_kind(exc)})", provider=provider) from None
    except aiohttp.ClientConnectorError as exc:
        raise UpstreamConnectionError(
            f"cannot connect to {provider} upstream: {exc.os_error or exc}", provider=provider
        ) from None
    except (aiohttp.ClientPayloadError, aiohttp.ServerDisconnectedError) as exc:
        raise UpstreamProtocolError(f"{provider} upstream broke off: {exc}", provider=provider) from None
    except aiohttp.ClientError as exc:
        raise UpstreamConnectionError(f"{provider} upstream error: {exc}", provider=provider) from None


def _timeout_kind(exc: BaseException) -> str:
    text = str(exc).lower()
    if "connect" in text:
        return "connect"
    if "read" in text:
        return "first byte"
    return "total"


async def read_json(response: aiohttp.ClientResponse, provider: str) -> dict[str, Any]:
    return parse_json_object(await response.read(), provider)


def parse_json_object(raw: bytes, provider: str) -> dict[str, Any]:
    """An upstream body as a JSON object, or ``UpstreamProtocolError`` (a 502 to the client)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(
            f"{provider} answered with a body that is not JSON", provider=provider
        ) from None
    if not isinstance(data, dict):
        raise UpstreamProtocolError(f"{provider} answered with JSON that is not an object", provider=provider)
    return data


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None  # an HTTP date: rare from LLM providers; the retry layer falls back to its backoff


def retry_after_of(headers: Mapping[str, str], raw: bytes) -> float | None:
    """How long the provider asks us to wait: ``retry-after-ms`` (OpenAI, Azure), ``retry-after`` (seconds),
    or Gemini's ``RetryInfo.retryDelay`` in the error body (``"17s"``), in that order."""
    ms = headers.get("retry-after-ms")
    if ms:
        try:
            return max(0.0, float(ms) / 1000.0)
        except ValueError:
            pass
    seconds = parse_retry_after(headers.get("retry-after"))
    return seconds if seconds is not None else _retry_delay(raw)


def _retry_delay(raw: bytes) -> float | None:
    if b"retryDelay" not in raw:
        return None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if isinstance(data, list) and data:
        data = data[0]
    error = data.get("error") if isinstance(data, dict) else None
    details = error.get("details") if isinstance(error, dict) else None
    for detail in details if isinstance(details, list) else ():
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and delay.endswith("s"):
            try:
                return max(0.0, float(delay[:-1]))
            except ValueError:
                return None
    return None


async def raise_for_status(response: aiohttp.ClientResponse, provider: str) -> None:
    raw = await response.content.read(_MAX_ERROR_BODY)
    message = error_message(raw) or f"HTTP {response.status}"
    headers = {k.lower(): v for k, v in response.headers.items() if _keep_header(k)}
    raise UpstreamStatusError(
        f"{provider}: {message}",
        upstream_status=response.status,
        provider=provider,
        retry_after=retry_after_of(headers, raw),
        headers=headers,
    )


def _keep_header(name: str) -> bool:
    name = name.lower()
    return name in ("retry-after", "retry-after-ms") or name.startswith(
        ("x-ratelimit-", "anthropic-ratelimit-")
    )


def error_message(raw: bytes) -> str:
    """The provider's own error message from an OpenAI, Anthropic or Gemini error body."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return raw[:500].decode("utf-8", "replace").strip()
    if isinstance(data, list) and data:  # Gemini sometimes wraps the error in a list
        data = data[0]
    if isinstance(data, dict):
        err = data.get("error", data)
        if isinstance(err, dict) and isinstance(err.get("message"), str):
            return str(err["message"])
        if isinstance(err, str):
            return err
    return raw[:500].decode("utf-8", "replace").strip()


class SSEEvent:
    __slots__ = ("data", "event")

    def __init__(self, event: str | None, data: bytes) -> None:
        self.event = event
        self.data = data


async def iter_sse(response: aiohttp.ClientResponse) -> AsyncIterator[SSEEvent]:
    """Server-sent events from a response, split on blank lines; multi-line ``data`` joined with newlines."""
    event: str | None = None
    data: list[bytes] = []
    buffer = b""
    async for piece in response.content.iter_any():
        buffer += piece
        while True:
            nl = buffer.find(b"\n")
            if nl < 0:
                break
            line = buffer[:nl]
            buffer = buffer[nl + 1 :]
            if line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if data:
                    yield SSEEvent(event, b"\n".join(data))
                event, data = None, []
                continue
            if line.startswith(b":"):
                continue  # comment / keep-alive
            field, _, value = line.partition(b":")
            if value.startswith(b" "):
                value = value[1:]
            if field == b"data":
                data.append(value)
            elif field == b"event":
                event = value.decode()
    if data:
        yield SSEEvent(event, b"\n".join(data))
