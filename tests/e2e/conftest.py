"""End-to-end fixtures: real `slipstream sim` and `slipstream serve` processes on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

STARTUP_SECONDS = 20.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Process:
    """A slipstream subprocess; its output goes to a log file shown when a test fails to start it."""

    def __init__(
        self, args: list[str], *, port: int, log: Path, env: dict[str, str] | None = None, cwd: Path
    ) -> None:
        self.args = args
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        self._env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
        for name in (
            "OPENAI_API_KEY",
            "ANTHROPIC_API_KEY",
            "GEMINI_API_KEY",
            "GOOGLE_API_KEY",
            "SLIPSTREAM_CONFIG",
        ):
            if env is None or name not in env:
                self._env.pop(name, None)
        self._cwd = cwd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Process:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "slipstream", *self.args],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=self._env,
                cwd=self._cwd,
            )
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"{self.args[0]} exited with {self.proc.returncode}:\n{self.log.read_text()}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=0.5).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"{self.args[0]} did not become healthy:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@pytest.fixture(scope="session")
def sim_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """One `slipstream sim` for the session, with no latency (tests force faults per request)."""
    workdir = tmp_path_factory.mktemp("sim")
    proc = Process(
        ["sim", "--port", str(port := free_port())], port=port, log=workdir / "sim.log", cwd=workdir
    )
    proc.start()
    yield proc
    proc.stop()


def sim_stats(sim: Process) -> dict:
    return httpx.get(f"{sim.url}/sim/stats", timeout=5).json()


class GatewayFactory:
    """Starts gateways against the session's sim; each test gets its own data directory."""

    def __init__(self, workdir: Path, sim: Process) -> None:
        self.workdir = workdir
        self.sim = sim
        self.started: list[Process] = []

    def config_text(self, *, keys: str = "", extra_groups: str = "", server: str = "") -> str:
        return f"""
server:
  port: 0
  max_body_bytes: 65536
{server}
{keys}
cache:
  sqlite:
    path: {self.workdir / "cache.db"}
model_groups:
  sim:
    deployments:
      - provider: openai
        model: sim-1
        base_url: {self.sim.url}/v1
        timeouts: {{connect: 2, first_byte: 3, total: 30}}
        price: {{input: 1.0, output: 4.0}}
  dead:
    deployments:
      - provider: openai
        model: nothing
        base_url: http://127.0.0.1:{free_port()}/v1
        timeouts: {{connect: 1, first_byte: 2, total: 5}}
{extra_groups}
"""

    def start(self, config: str | None = None, name: str = "gateway") -> Process:
        path = self.workdir / f"{name}.yaml"
        path.write_text(config or self.config_text())
        port = free_port()
        proc = Process(
            ["serve", "--config", str(path), "--port", str(port)],
            port=port,
            log=self.workdir / f"{name}.log",
            cwd=self.workdir,
        )
        self.started.append(proc)
        return proc.start()

    def stop_all(self) -> None:
        for proc in self.started:
            proc.stop()


@pytest.fixture
def gateways(tmp_path: Path, sim_server: Process) -> Iterator[GatewayFactory]:
    factory = GatewayFactory(tmp_path, sim_server)
    yield factory
    factory.stop_all()


@pytest.fixture
def gateway(gateways: GatewayFactory) -> Process:
    return gateways.start()
