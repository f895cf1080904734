"""Batch fixtures: a config serving the in-process sim (a working group and one that always fails), input files,
and the `slipstream batch` command run in-process (click's runner) or as a real subprocess."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from slipstream.cli import main
from tests.redis_server import redis_server, redis_url  # noqa: F401 - pytest fixtures for the shard test

from ..e2e.conftest import Process, free_port, sim_stats

CHAT_URL = "/v1/chat/completions"
SIM_TTFT = 0.05  # seconds the `slipstream sim` fixture takes per answer


def sim_config_text(tmp_path: Path, *, upstream: str | None = None, extra: str = "") -> str:
    """`sim` answers (in-process sim, or an OpenAI-compatible `upstream` such as `slipstream sim`); `broken`
    answers every request with a 500 and does not retry."""
    if upstream is None:
        deployment = "{provider: sim, model: sim-1, price: {input: 1.0, output: 2.0}}"
        broken = "{provider: sim, model: sim-1, options: {fault: '500'}}"
    else:
        deployment = f"{{provider: openai, model: sim-1, base_url: '{upstream}/v1', api_key: unused}}"
        broken = f"{{provider: openai, model: sim-1, base_url: '{upstream}/v1', api_key: unused}}"
    return f"""
cache:
  sqlite: {{path: {tmp_path / "cache.db"}}}
observe:
  request_log: {{path: {tmp_path / "requests.db"}}}
model_groups:
  sim:
    deployments: [{deployment}]
  broken:
    retries: {{max_attempts: 1}}
    deployments: [{broken}]
{extra}
"""


@pytest.fixture
def config_path(tmp_path: Path) -> Path:
    path = tmp_path / "slipstream.yaml"
    path.write_text(sim_config_text(tmp_path))
    return path


def chat_body(text: str, model: str = "sim", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 20, **extra}


def batch_line(custom_id: str, body: dict[str, Any], url: str = CHAT_URL) -> dict[str, Any]:
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def write_jsonl(path: Path, lines: Iterable[dict[str, Any] | str]) -> Path:
    with path.open("w") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def custom_ids(*paths: Path) -> list[str]:
    return [line["custom_id"] for path in paths for line in read_jsonl(path)]


def run_batch(*args: str | Path) -> Result:
    """`slipstream batch ARGS` in this process (stderr kept apart from stdout)."""
    return CliRunner().invoke(main, ["batch", *map(str, args)], catch_exceptions=False)


@pytest.fixture(scope="session")
def slow_sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Process]:
    """One real `slipstream sim` for the batch tests, answering each request after 50 ms."""
    workdir = tmp_path_factory.mktemp("batch-sim")
    port = free_port()
    proc = Process(
        ["sim", "--port", str(port), "-o", f"ttft={SIM_TTFT}"],
        port=port,
        log=workdir / "sim.log",
        cwd=workdir,
    )
    proc.start()
    yield proc
    proc.stop()


def sim_requests(sim: Process) -> int:
    return int(sim_stats(sim)["by_path"].get("/v1/chat/completions", 0))
