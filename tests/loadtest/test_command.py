"""`slipstream loadtest` as a user runs it: a subprocess against a real sim, its files and its exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from PIL import Image

from slipstream.cli import main
from tests.e2e.conftest import free_port

from .conftest import Sim, ask, write_jsonl


def loadtest(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "slipstream", "loadtest", *args],
        capture_output=True,
        text=True,
        timeout=90,
        cwd=cwd,
    )


def assert_png(path: Path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with Image.open(path) as image:
        image.verify()
    with Image.open(path) as image:
        assert image.format == "PNG"
        width, height = image.size
        assert width >= 600 and height >= 300


def test_a_run_writes_json_markdown_and_a_png(sim: Sim, tmp_path: Path) -> None:
    sim.reset()
    done = loadtest(
        sim.url,
        "--rate", "100", "--duration", "1", "--stream-share", "0.5",
        "--json", "out/run.json", "--markdown", "out/run.md", "--chart", "out/run.png",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "requests/s" in done.stdout and "TTFT ms" in done.stdout
    report = json.loads((tmp_path / "out/run.json").read_text())
    assert report["mode"] == "open" and report["level"] == 100
    summary = report["summary"]
    assert summary["requests"] == summary["ok"] == 100 == sim.chat_requests()
    assert summary["streamed"] == 50
    assert summary["latency_ms"]["p50"] > 0
    assert summary["errors_by_class"] == {}
    assert sum(second["requests"] for second in report["timeline"]) == 100
    markdown = (tmp_path / "out/run.md").read_text()
    assert markdown.startswith(f"# Load test: {sim.url}")
    assert "| requests/s |" in markdown and "p99" in markdown
    assert_png(tmp_path / "out/run.png")


def test_a_scenario_in_closed_loop_with_a_request_file(sim: Sim, tmp_path: Path) -> None:
    sim.reset()
    write_jsonl(tmp_path / "mix.jsonl", ask("a"), ask("b", fault="503"))
    done = loadtest(
        sim.url, "--scenario", "peak", "--users", "3", "--duration", "20", "--max-requests", "60",
        "--requests", "mix.jsonl", "--json", "peak.json", "-q",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout == ""  # --quiet
    report = json.loads((tmp_path / "peak.json").read_text())
    assert report["scenario"] == "peak" and report["mode"] == "closed"
    assert report["settings"]["request_bodies"] == 2
    assert report["summary"]["errors_by_class"] == {"http_503": 30}
    assert report["summary"]["ok"] == 30


def test_a_missed_slo_exits_1(sim: Sim, tmp_path: Path) -> None:
    write_jsonl(tmp_path / "slow.jsonl", ask(ttft=0.05))  # every reply takes at least 50 ms
    done = loadtest(
        sim.url, "-u", "2", "-n", "20", "--requests", "slow.jsonl", "--slo-p95-ms", "10", "--json", "slo.json",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 1
    assert "SLO: missed" in done.stdout
    slo = json.loads((tmp_path / "slo.json").read_text())["slo"]
    assert slo["met"] is False and "p95" in slo["violations"][0]


def test_breaking_point_from_the_command_line(sim: Sim, tmp_path: Path) -> None:
    sim.reset()
    write_jsonl(tmp_path / "limited.jsonl", ask(rpm_limit=50))  # as in test_breaking: 20, 40 pass, 80 fails
    done = loadtest(
        sim.url, "--breaking-point", "--rate", "20", "--requests", "limited.jsonl",
        "--step-duration", "0.5", "--refine", "0", "--slo-error-rate", "0.01",
        "--json", "bp.json", "--markdown", "bp.md", "--chart", "bp.png",
        cwd=tmp_path,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "last good rate: 40.0 req/s" in done.stdout
    found = json.loads((tmp_path / "bp.json").read_text())["breaking_point"]
    assert found["last_good_rate"] == 40 and found["first_bad_rate"] == 80
    assert [step["ok"] for step in found["steps"]] == [True, True, False]
    assert "## Breaking-point search" in (tmp_path / "bp.md").read_text()
    assert_png(tmp_path / "bp.png")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-u", "2", "-r", "10"], "not both"),
        (["-u", "1", "-H", "no colon"], "Name: value"),
        (["-u", "1", "--requests", "bad.jsonl"], "bad.jsonl:1: not JSON"),
        (["--scenario", "stress", "--ramp", "3"], "--ramp applies to the peak, soak, custom"),
        (["--breaking-point", "-u", "3"], "its own open-loop scenario"),
        (["--scenario", "peak", "-d", "5", "--ramp", "6"], "between 0 and the duration"),
    ],
)
def test_usage_errors_are_clear_and_send_nothing(args: list[str], message: str, tmp_path: Path) -> None:
    # In-process (no server is needed: nothing may be sent); each is refused before any run starts.
    (tmp_path / "bad.jsonl").write_text("{oops\n")
    result = CliRunner().invoke(main, ["loadtest", f"http://127.0.0.1:{free_port()}/v1", *args])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
