"""A real ``redis-server`` for tests: started on a free loopback port in a temp dir, killed at the end.

Use it from a test module with ``pytest_plugins = ["tests.redis_server"]`` in a conftest, or by importing the
fixtures (``from tests.redis_server import redis_server, redis_url``). ``redis_server`` is session-scoped (one
server for the run); ``redis_url`` flushes it before each test, so tests start from an empty database.
``RedisServer.stop()`` / ``start()`` take it down and bring it back on the same port, for outage tests.

No mocks: tests that need Redis are skipped (with the reason) only when the ``redis-server`` binary is absent.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

__all__ = ["REDIS_SERVER", "RedisServer", "redis_server", "redis_url"]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
STARTUP_SECONDS = 10.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int) -> bool:
    """One RESP PING over a raw socket (no client library: the fixture must not depend on the code under test)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
            s.sendall(b"*1\r\n$4\r\nPING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One redis-server process; ``stop``/``start`` keep the port and the directory."""

    def __init__(self, directory: Path, port: int | None = None) -> None:
        self.directory = directory
        self.port = port or _free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = directory / "redis.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> RedisServer:
        if self.proc is not None:
            raise RuntimeError("redis-server is already running")
        args = [
            REDIS_SERVER,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(self.directory),
            "--logfile", str(self.log),
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _ping(self.port):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                log = self.log.read_text(errors="replace") if self.log.exists() else ""
                raise RuntimeError(f"redis-server did not start on port {self.port}:\n{log[-2000:]}")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        """Kill it (SIGKILL: an outage, not a clean shutdown) and wait until the port is closed."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.kill()
        proc.wait(timeout=10)

    def flush(self) -> None:
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            s.sendall(b"*1\r\n$8\r\nFLUSHALL\r\n")
            if not s.recv(64).startswith(b"+OK"):
                raise RuntimeError("FLUSHALL failed")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    """A redis-server for the whole session (skips when the binary is missing)."""
    if not Path(REDIS_SERVER).exists():
        pytest.skip(
            f"redis-server binary not found ({REDIS_SERVER}); install the Debian package redis-server"
        )
    with tempfile.TemporaryDirectory(prefix="slipstream-redis-") as tmp:
        server = RedisServer(Path(tmp)).start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> Iterator[str]:
    """The server's URL, emptied before the test; a test that stopped the server gets it restarted after."""
    if not redis_server.running:
        redis_server.start()
    redis_server.flush()
    yield redis_server.url
    if not redis_server.running:
        redis_server.start()


@pytest.fixture
async def raw(redis_url: str) -> AsyncIterator[aioredis.Redis]:
    """A plain client, to look at (or damage) what a store or limiter wrote."""
    client = aioredis.Redis.from_url(redis_url)
    yield client
    await client.aclose()
