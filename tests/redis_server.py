"""A real ``redis-server`` for tests: started on a free loopback port in a temp dir, killed at the end.

Use it from a test module with ``pytest_plugins = ["tests.redis_server"]`` in a conftest, or by importing the
fixtures (``from tests.redis_server import redis_server, redis_url``). ``redis_server`` is session-scoped (one
server for the run); ``redis_url`` flushes it before each test, so tests start from an empty database.
``RedisServer.stop()`` / ``start()`` take it down and bring it back on the same port, for outage tests;
``RedisServer(..., args=[...], password=...)`` starts one with extra options (TLS, ``--requirepass``).

``redis_cluster`` (session-scoped) is a real 3-master Redis Cluster: three ``redis-server --cluster-enabled yes``
on free ports (and free cluster-bus ports) joined by ``redis-cli --cluster create``; ``ClusterServers.url`` is a
``redis+cluster://`` URL listing all three.

No mocks: tests that need Redis are skipped (with the reason) only when the ``redis-server`` binary is absent.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path

import pytest
import redis.asyncio as aioredis

__all__ = [
    "REDIS_CLI",
    "REDIS_SERVER",
    "ClusterServers",
    "RedisServer",
    "free_port",
    "redis_cluster",
    "redis_server",
    "redis_url",
    "send_command",
]

REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
REDIS_CLI = shutil.which("redis-cli") or "/usr/bin/redis-cli"
STARTUP_SECONDS = 10.0
CLUSTER_SIZE = 3


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _resp(*words: str) -> bytes:
    out = [f"*{len(words)}\r\n".encode()]
    for word in words:
        data = word.encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def send_command(port: int, *words: str, password: str | None = None, timeout: float = 2.0) -> bytes:
    """One command over a raw socket (no client library: fixtures must not depend on the code under test);
    answers the first reply's raw bytes (enough for status lines and short bulk strings)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        if password is not None:
            s.sendall(_resp("AUTH", password))
            if not s.recv(64).startswith(b"+OK"):
                raise RuntimeError("AUTH failed")
        s.sendall(_resp(*words))
        return s.recv(65536)


def _ping(port: int, password: str | None = None) -> bool:
    try:
        return send_command(port, "PING", password=password, timeout=0.2).startswith(b"+PONG")
    except (OSError, RuntimeError):
        return False


class RedisServer:
    """One redis-server process; ``stop``/``start`` keep the port and the directory."""

    def __init__(
        self,
        directory: Path,
        port: int | None = None,
        *,
        args: Sequence[str] = (),
        password: str | None = None,
    ) -> None:
        self.directory = directory
        self.port = port or free_port()
        self.password = password
        auth = f":{password}@" if password is not None else ""
        self.url = f"redis://{auth}127.0.0.1:{self.port}/0"
        self.log = directory / f"redis-{self.port}.log"
        self.extra_args = list(args)
        if password is not None:
            self.extra_args += ["--requirepass", password]
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
            *self.extra_args,
        ]  # fmt: skip
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
        deadline = time.monotonic() + STARTUP_SECONDS
        while not _ping(self.port, self.password):
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
        if not send_command(self.port, "FLUSHALL", password=self.password).startswith(b"+OK"):
            raise RuntimeError("FLUSHALL failed")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _require(binary: str) -> None:
    if not Path(binary).exists():
        pytest.skip(f"{binary} not found; install the Debian package redis-server (it brings redis-tools)")


class ClusterServers:
    """A Redis Cluster of ``CLUSTER_SIZE`` masters (no replicas) on loopback, each in its own folder."""

    def __init__(self, directory: Path, size: int = CLUSTER_SIZE) -> None:
        self.nodes: list[RedisServer] = []
        for i in range(size):
            folder = directory / f"node{i}"
            folder.mkdir()
            bus = free_port()  # the cluster bus needs a port of its own (default: port + 10000, maybe taken)
            args = ["--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                    "--cluster-port", str(bus), "--cluster-node-timeout", "5000"]  # fmt: skip
            self.nodes.append(RedisServer(folder, args=args))
        self.url = "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> ClusterServers:
        try:
            for node in self.nodes:
                node.start()
            addresses = [f"127.0.0.1:{n.port}" for n in self.nodes]
            create = [
                REDIS_CLI,
                "--cluster",
                "create",
                *addresses,
                "--cluster-replicas",
                "0",
                "--cluster-yes",
            ]
            done = subprocess.run(create, capture_output=True, timeout=60, stdin=subprocess.DEVNULL)
            if done.returncode != 0:
                raise RuntimeError(f"redis-cli --cluster create failed:\n{done.stdout.decode()[-2000:]}")
            deadline = time.monotonic() + STARTUP_SECONDS * 3
            while not all(b"cluster_state:ok" in send_command(n.port, "CLUSTER", "INFO") for n in self.nodes):
                if time.monotonic() > deadline:
                    raise RuntimeError("the cluster did not reach cluster_state:ok")
                time.sleep(0.05)
        except BaseException:
            self.stop()
            raise
        return self

    def flush(self) -> None:
        for node in self.nodes:
            node.flush()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


class _SharedCluster:
    """One cluster for the whole run. Each test module that imports ``redis_cluster`` gets a fixture definition
    of its own (and so a session-scoped instance of its own): they share this one and the last stops it."""

    cluster: ClusterServers | None = None
    folder: tempfile.TemporaryDirectory[str] | None = None
    users = 0


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[ClusterServers]:
    """A 3-master Redis Cluster for the whole session (skips when the binaries are missing)."""
    _require(REDIS_SERVER)
    _require(REDIS_CLI)
    shared = _SharedCluster
    if shared.cluster is None:
        shared.folder = tempfile.TemporaryDirectory(prefix="slipstream-redis-cluster-")
        try:
            shared.cluster = ClusterServers(Path(shared.folder.name)).start()
        except BaseException:
            shared.folder.cleanup()
            raise
    shared.users += 1
    try:
        yield shared.cluster
    finally:
        shared.users -= 1
        if shared.users == 0:
            shared.cluster.stop()
            if shared.folder is not None:
                shared.folder.cleanup()
            shared.cluster = shared.folder = None


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
