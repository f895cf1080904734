"""Load-tester fixtures: a real `slipstream sim` subprocess, and a tiny HTTP server that can stall on purpose.

The sim comes from the e2e helpers (``Process``, ``free_port``): one per test module, reset by each test, with
per-request ``sim`` options in the bodies for the slow, failing or rate-limited cases. The stall server runs its
own event loop in a thread, so when it blocks (``time.sleep`` inside its loop, as a GC pause or a stuck worker
would) the load tester's loop in the test thread keeps sending — which is what coordinated omission is about.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from slipstream.loadtest import RequestMix, Target, resolve_target
from tests.e2e.conftest import Process, free_port

REPLY = b'{"id":"x","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}'


class Sim:
    """A running `slipstream sim` and the numbers it counted."""

    def __init__(self, process: Process) -> None:
        self.process = process
        self.url = f"{process.url}/v1/chat/completions"

    def stats(self) -> dict[str, object]:
        return dict(httpx.get(f"{self.process.url}/sim/stats", timeout=5).json())

    def chat_requests(self) -> int:
        by_path = self.stats()["by_path"]
        assert isinstance(by_path, dict)
        return int(by_path.get("/v1/chat/completions", 0))

    def reset(self) -> None:
        httpx.post(f"{self.process.url}/sim/reset", timeout=5).raise_for_status()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """One instant sim shared by a module's tests (each resets its counters first)."""
    workdir = tmp_path_factory.mktemp("sim")
    process = Process(
        ["sim", "--port", str(port := free_port())], port=port, log=workdir / "sim.log", cwd=workdir
    )
    process.start()
    yield Sim(process)
    process.stop()


def ask(content: str = "Say something about foxes.", **sim: object) -> dict[str, Any]:
    """A chat request body; ``sim`` options ride in its ``sim`` field (the sim's per-request overrides), so one
    shared sim can be slow, failing or rate-limited for just the requests of one test."""
    body: dict[str, Any] = {"messages": [{"role": "user", "content": content}]}
    if sim:
        body["sim"] = sim
    return body


def write_jsonl(path: Path, *bodies: dict[str, Any]) -> Path:
    path.write_text("".join(json.dumps(body) + "\n" for body in bodies))
    return path


def mix_for(
    url: str, bodies: list[dict[str, Any]] | None = None, *, stream_share: float = 0.0
) -> tuple[Target, RequestMix]:
    target = resolve_target(url)
    return target, RequestMix(target, bodies, stream_share=stream_share)


# -------------------------------------------------------------------------------------------- stall server
class _Answer(asyncio.Protocol):
    """Reads HTTP/1.1 requests with a content-length body and answers each with ``REPLY``."""

    def __init__(self, server: StallServer) -> None:
        self.server = server
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            head = self.buffer[:end].lower()
            i = head.find(b"content-length:")
            length = int(head[i + 15 :].split(b"\r\n", 1)[0]) if i >= 0 else 0
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            self.server.answer(self)

    def reply(self, status: int = 200) -> None:
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 %d X\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
            % (status, len(REPLY), REPLY)
        )


class StallServer:
    """Answers every request at once, except that the ``stall_at``-th request blocks the whole server for
    ``stall`` seconds first (its loop sleeps: nothing is read or answered meanwhile)."""

    def __init__(self, *, stall_at: int = 0, stall: float = 0.0) -> None:
        self.stall_at = stall_at
        self.stall = stall
        self.requests = 0
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1/chat/completions"
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._conns: list[_Answer] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def answer(self, conn: _Answer) -> None:
        self.requests += 1
        if self.requests == self.stall_at:
            time.sleep(self.stall)  # blocks this server's loop, as a stuck process would
        conn.reply()

    def _serve(self) -> None:
        self._loop.run_until_complete(self._main())
        self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        server = await self._loop.create_server(lambda: self._track(_Answer(self)), "127.0.0.1", self.port)
        self._ready.set()
        await self._stop.wait()
        server.close()
        for conn in self._conns:
            if conn.transport is not None:
                conn.transport.close()
        await asyncio.sleep(0)
        await server.wait_closed()

    def _track(self, conn: _Answer) -> _Answer:
        self._conns.append(conn)
        return conn

    def __enter__(self) -> StallServer:
        self._thread.start()
        assert self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)
