"""A blocking facade over the async client, for scripts and notebooks.

The pipeline's connections belong to one event loop, so the facade runs a private loop on a daemon thread and
hands every call to it.
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterable, Iterator, Mapping
from types import TracebackType
from typing import Any

from .batch.engine import MapResult, collect_in_order
from .client import Completion, Slipstream
from .config import Config

__all__ = ["SlipstreamSync"]


class SlipstreamSync:
    def __init__(
        self, config: Config | str | os.PathLike[str] | None = None, *, namespace: str = "default"
    ) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="slipstream-loop", daemon=True)
        self._thread.start()
        self.aio: Slipstream = self._run(_make(config, namespace))
        self._closed = False

    def _run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def chat(self, request: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Completion:
        completion: Completion = self._run(self.aio.chat(request, **kwargs))
        return completion

    def stream(self, request: Mapping[str, Any] | None = None, /, **kwargs: Any) -> Iterator[dict[str, Any]]:
        chunks = self.aio.stream(request, **kwargs)
        try:
            while True:
                try:
                    yield self._run(anext(chunks))
                except StopAsyncIteration:
                    return
        finally:
            self._run(chunks.aclose())

    def embed(self, request: Mapping[str, Any] | None = None, /, **kwargs: Any) -> dict[str, Any]:
        data: dict[str, Any] = self._run(self.aio.embed(request, **kwargs))
        return data

    def map(self, requests: Iterable[Mapping[str, Any]], /, **kwargs: Any) -> list[MapResult]:
        """Every result of ``Slipstream.map`` (same arguments), in input order, once all are done.
        ``on_progress`` is called on the client's loop thread."""
        results: list[MapResult] = self._run(collect_in_order(self.aio.map(requests, **kwargs)))
        return results

    def http_client(self, **kwargs: Any) -> Any:
        """A blocking HTTP client for ``OpenAI(api_key="unused", http_client=slip.http_client())``."""
        from .transport import sync_http_client

        return sync_http_client(self, **kwargs)

    def stats(self) -> dict[str, Any]:
        return self.aio.stats()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._run(self.aio.aclose())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)
        self.loop.close()

    def __enter__(self) -> SlipstreamSync:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


async def _make(config: Config | str | os.PathLike[str] | None, namespace: str) -> Slipstream:
    return Slipstream(config, namespace=namespace)
