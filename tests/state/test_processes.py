"""Two processes update the same key at the same time, on SQLite and on Redis: no increment is lost."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import orjson

from slipstream.state import StateStore

from .conftest import OpenStore

ROOT = Path(__file__).resolve().parents[2]
PROCESSES = 2
INCREMENTS = 150  # per process
TASKS = 4  # per process: in-process updates queue on a per-key lock; processes race for real


def _start(backend: str, target: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.state.counter_worker", backend, target, str(INCREMENTS), str(TASKS)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


async def test_two_processes_lose_no_update(backend: str, target: str, open_store: OpenStore) -> None:
    workers = [_start(backend, target) for _ in range(PROCESSES)]
    try:
        for proc in workers:
            assert proc.stdout is not None
            line = proc.stdout.readline()
            assert line.strip() == "ready", proc.stderr.read() if proc.stderr else line
        for proc in workers:  # both start together
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        reports = []
        for proc in workers:
            out, err = proc.communicate(timeout=90)
            assert proc.returncode == 0, err
            reports.append(orjson.loads(out.strip().splitlines()[-1]))
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            for pipe in (
                proc.stdin,
                proc.stdout,
                proc.stderr,
            ):  # a failed test must not leak them into the next
                if pipe is not None:
                    pipe.close()
    store: StateStore = open_store()
    entry = await store.get("counter")
    assert entry is not None and entry.value == PROCESSES * INCREMENTS
    assert all(r["increments"] == INCREMENTS and r["calls"] >= INCREMENTS for r in reports)
