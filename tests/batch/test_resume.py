"""Exactly once across crashes: the real command, killed with SIGKILL at random moments and interrupted with
SIGINT/SIGTERM, run again until done, against a real `slipstream sim` that takes 50 ms per answer."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ..e2e.conftest import Process
from .conftest import batch_line, chat_body, read_jsonl, sim_config_text, write_jsonl

LINES = 240
CONCURRENCY = 6  # 240 answers of 50 ms, 6 at a time: about 2 s of work in all
KILLS = 5
RUN_TIMEOUT = 30.0


class Batch:
    """One input file and its result files; `start` runs `slipstream batch` on them as a subprocess."""

    def __init__(self, tmp_path: Path, sim: Process) -> None:
        self.dir = tmp_path
        self.config = tmp_path / "slipstream.yaml"
        self.config.write_text(sim_config_text(tmp_path, upstream=sim.url))
        lines: list[dict | str] = []
        for i in range(LINES):
            if i % 40 == 39:  # a failure the sim forces (the `broken` group does not retry)
                lines.append(
                    batch_line(f"id-{i}", chat_body(f"fail {i}", model="broken", sim={"fault": "500"}))
                )
            else:  # a quarter of the questions repeat: cache hits and coalesced requests mixed in
                lines.append(batch_line(f"id-{i}", chat_body(f"question {i % 180}")))
        lines.insert(100, '{"not": "a request"')
        self.input = write_jsonl(tmp_path / "in.jsonl", lines)
        self.output = tmp_path / "out.jsonl"
        self.failures = tmp_path / "out.failures.jsonl"
        self.failing = {f"id-{i}" for i in range(LINES) if i % 40 == 39}
        self.runs = 0

    def start(self) -> subprocess.Popen[bytes]:
        self.runs += 1
        log = (self.dir / f"run-{self.runs}.log").open("wb")
        args = ["batch", str(self.input), "-o", str(self.output), "--config", str(self.config)]
        args += ["--concurrency", str(CONCURRENCY), "--quiet"]
        env = {k: v for k, v in os.environ.items() if k != "SLIPSTREAM_CONFIG"}
        proc = subprocess.Popen(
            [sys.executable, "-m", "slipstream", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
            env=env,
        )
        log.close()
        return proc

    def log(self) -> str:
        return (self.dir / f"run-{self.runs}.log").read_text()

    def finished(self) -> int:
        """Whole lines in the result files (a line being written is not counted)."""
        return sum(p.read_bytes().count(b"\n") for p in (self.output, self.failures) if p.exists())

    def wait_for_progress(self, proc: subprocess.Popen[bytes], beyond: int) -> None:
        deadline = time.monotonic() + RUN_TIMEOUT
        while self.finished() <= beyond and proc.poll() is None:
            assert time.monotonic() < deadline, self.log()
            time.sleep(0.01)

    def run_to_completion(self) -> int:
        for _ in range(3):
            proc = self.start()
            code = proc.wait(timeout=RUN_TIMEOUT)
            if code in (0, 1):
                return code
        pytest.fail(f"the batch did not complete:\n{self.log()}")

    def assert_exactly_once(self) -> None:
        results, failures = read_jsonl(self.output), read_jsonl(self.failures)  # every line parses
        ids = [line["custom_id"] for line in results + failures]
        assert len(ids) == len(set(ids)), "a custom_id was written twice"
        assert set(ids) == {f"id-{i}" for i in range(LINES)}, "a custom_id was lost"
        assert {line["custom_id"] for line in failures} == self.failing
        for line in results:
            assert line["response"]["status_code"] == 200 and line["response"]["body"]["choices"]
        assert self.output.read_bytes().endswith(b"\n") and self.failures.read_bytes().endswith(b"\n")


def test_kill_9_at_random_moments_then_resume(tmp_path: Path, slow_sim: Process):
    batch = Batch(tmp_path, slow_sim)
    rng = random.Random(20240611)
    partial_kills = 0
    for _ in range(KILLS):
        proc = batch.start()
        batch.wait_for_progress(proc, beyond=batch.finished())  # killed while it is doing work
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
        partial_kills += proc.returncode == -signal.SIGKILL and 0 < batch.finished() < LINES
    assert partial_kills >= 3, "most kills must land mid-run, or the test shows nothing"
    assert batch.run_to_completion() == 1  # done, with the forced failures and the rejected line
    batch.assert_exactly_once()
    assert "resuming:" in batch.log()


def test_sigint_and_sigterm_stop_cleanly_then_resume(tmp_path: Path, slow_sim: Process):
    batch = Batch(tmp_path, slow_sim)

    # Ctrl-C: no new requests, the ones in flight finish and are written, exit 130
    proc = batch.start()
    batch.wait_for_progress(proc, beyond=20)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=RUN_TIMEOUT) == 130
    log = batch.log()
    assert "SIGINT: taking no new requests; finishing the" in log
    assert "interrupted by SIGINT:" in log and "run the same command again to resume" in log
    assert "Traceback" not in log
    stopped_at = batch.finished()
    assert 20 < stopped_at < LINES

    # SIGTERM (a process manager), the same way, exit 143
    proc = batch.start()
    batch.wait_for_progress(proc, beyond=stopped_at + 10)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=RUN_TIMEOUT) == 143
    assert "interrupted by SIGTERM:" in batch.log()

    # Ctrl-C twice: the requests in flight are abandoned, not written
    proc = batch.start()
    batch.wait_for_progress(proc, beyond=batch.finished() + 10)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=RUN_TIMEOUT) == 130
    assert "SIGINT again: abandoned" in batch.log()
    for path in (batch.output, batch.failures):
        for line in path.read_text().splitlines():
            json.loads(line)  # a clean stop leaves no torn line

    assert batch.run_to_completion() == 1
    batch.assert_exactly_once()
