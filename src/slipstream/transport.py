"""``httpx`` transports that answer the official ``openai`` SDK from the in-process pipeline.

``openai`` 3.x talks through ``httpx2``, earlier versions through ``httpx``; both have the same transport API, so
the transport classes are built for whichever module the installed ``openai`` uses.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Any

from .gateway.edge import Edge, EdgeResponse

if TYPE_CHECKING:
    from .client import Slipstream
    from .sync import SlipstreamSync

__all__ = ["async_http_client", "httpx_module", "sync_http_client"]


def httpx_module() -> Any:
    """The httpx flavour the installed ``openai`` package uses (``httpx2`` for openai 3.x, else ``httpx``)."""
    try:
        base = importlib.import_module("openai._base_client")
        return base.httpx
    except (ImportError, AttributeError):
        pass
    for name in ("httpx2", "httpx"):
        try:
            return importlib.import_module(name)
        except ImportError:
            continue
    raise ImportError("the in-process openai transport needs httpx: pip install 'slipstream[openai]'")


def _response(httpx: Any, resp: EdgeResponse, request: Any, stream: Any = None) -> Any:
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in resp.headers]
    if stream is not None:
        return httpx.Response(resp.status, headers=headers, stream=stream, request=request)
    return httpx.Response(resp.status, headers=headers, content=resp.body, request=request)


def async_http_client(client: Slipstream, **kwargs: Any) -> Any:
    httpx = httpx_module()
    edge = Edge(client.pipeline, trusted_namespace=client.namespace)

    class _AsyncStream(httpx.AsyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, pieces: AsyncIterator[bytes]) -> None:
            self._pieces = pieces

        async def __aiter__(self) -> AsyncIterator[bytes]:
            async for piece in self._pieces:
                yield piece

        async def aclose(self) -> None:
            await self._pieces.aclose()  # type: ignore[attr-defined]

    class SlipstreamAsyncTransport(httpx.AsyncBaseTransport):  # type: ignore[misc,name-defined]
        async def handle_async_request(self, request: Any) -> Any:
            body = await request.aread()
            headers = {k.lower(): v for k, v in request.headers.items()}
            resp = await edge.handle(request.method, request.url.path, headers, body)
            stream = _AsyncStream(resp.stream) if resp.stream is not None else None
            return _response(httpx, resp, request, stream)

    kwargs.setdefault("base_url", "http://slipstream.local/v1")
    return httpx.AsyncClient(transport=SlipstreamAsyncTransport(), **kwargs)


def sync_http_client(client: SlipstreamSync, **kwargs: Any) -> Any:
    """A blocking client for ``OpenAI(http_client=...)``: each request runs on the facade's event-loop thread."""
    httpx = httpx_module()
    edge = Edge(client.aio.pipeline, trusted_namespace=client.aio.namespace)
    loop = client.loop

    class _SyncStream(httpx.SyncByteStream):  # type: ignore[misc,name-defined]
        def __init__(self, pieces: AsyncIterator[bytes]) -> None:
            self._pieces = pieces

        def __iter__(self) -> Iterator[bytes]:
            while True:
                future = asyncio.run_coroutine_threadsafe(_next(self._pieces), loop)
                piece = future.result()
                if piece is None:
                    return
                yield piece

        def close(self) -> None:
            asyncio.run_coroutine_threadsafe(self._pieces.aclose(), loop).result()  # type: ignore[attr-defined]

    class SlipstreamSyncTransport(httpx.BaseTransport):  # type: ignore[misc,name-defined]
        def handle_request(self, request: Any) -> Any:
            body = request.read()
            headers = {k.lower(): v for k, v in request.headers.items()}
            coro = edge.handle(request.method, request.url.path, headers, body)
            resp = asyncio.run_coroutine_threadsafe(coro, loop).result()
            stream = _SyncStream(resp.stream) if resp.stream is not None else None
            return _response(httpx, resp, request, stream)

    kwargs.setdefault("base_url", "http://slipstream.local/v1")
    return httpx.Client(transport=SlipstreamSyncTransport(), **kwargs)


async def _next(pieces: AsyncIterator[bytes]) -> bytes | None:
    try:
        return await anext(pieces)
    except StopAsyncIteration:
        return None
