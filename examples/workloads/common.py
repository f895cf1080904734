"""What the five workload reproductions share: simulated providers, the command line, timing and the tables.

Each workload script runs the same job twice, back to back, against ``slipstream sim`` subprocesses on free
loopback ports:

- ``naive()``: how the original application started — sequential calls, a new ``openai.AsyncOpenAI`` client per
  call, no cache, no limits, no failover;
- ``with_slipstream()``: the same job through the in-process SDK (one ``Slipstream`` client, config in a YAML
  file next to the script).

The sims carry the latency model: the ``realistic`` preset answers in about 2-3 s (TTFT ~0.5 s lognormal, ~60
tokens/s, 40-200 completion tokens). ``--quick`` shrinks latency (~20-50 ms a reply) and sizes so a workload
runs in a few seconds: that is the CI smoke test, and its numbers mean nothing. Upstream calls are read from
each sim's ``GET /sim/stats`` (zeroed with ``POST /sim/reset`` before each run), never counted by the client.

A script prints a before/after table and, with ``--json PATH``, writes a ``WorkloadReport`` that
``run_all.py`` turns into ``bench/WORKLOADS.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from slipstream import Config, load_config

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]

# The latency model of a real provider (see the sim's ``realistic`` preset) and its --quick stand-in.
REALISTIC: dict[str, Any] = {"preset": "realistic"}
QUICK: dict[str, Any] = {"preset": "realistic", "ttft": 0.01, "tokens_per_s": 5000.0, "tps_sigma": 50.0}
STARTUP_SECONDS = 20.0
# Paths of /sim/stats that are LLM calls (health checks are counted there too, and are not).
LLM_PATHS = ("/v1/chat/completions", "/v1/embeddings")

console = Console(highlight=False, width=None if sys.stdout.isatty() else 140)


def latency_model(quick: bool, **overrides: Any) -> dict[str, Any]:
    """The sim options of a workload: the shared latency model plus the workload's own (rate limits...)."""
    return {**(QUICK if quick else REALISTIC), **overrides}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------- the providers
class Sim:
    """One ``slipstream sim`` subprocess: a simulated provider with its own counters."""

    def __init__(self, name: str, options: Mapping[str, Any], workdir: Path) -> None:
        self.name = name
        self.options = dict(options)
        self.workdir = workdir
        self.port = 0
        self.proc: subprocess.Popen[bytes] | None = None
        self.final_stats: dict[str, Any] | None = None  # what it had counted when it was crashed
        self.log = workdir / f"sim-{name}.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def crashed(self) -> bool:
        return self.final_stats is not None

    @property
    def base_url(self) -> str:
        """The OpenAI base URL."""
        return f"{self.url}/v1"

    @property
    def command(self) -> list[str]:
        args = ["slipstream", "sim", "--port", str(self.port)]
        for key, value in self.options.items():
            args += ["--preset", str(value)] if key == "preset" else ["-o", f"{key}={value}"]
        return args

    def start(self) -> Sim:
        self.launch()
        return self.wait_healthy()

    def launch(self) -> None:
        """Start the process; ``wait_healthy`` waits for it to answer."""
        self.port = free_port()
        self.final_stats = None
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", *self.command],
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def wait_healthy(self) -> Sim:
        assert self.proc is not None, "launch() first"
        deadline = time.monotonic() + STARTUP_SECONDS
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"sim {self.name} exited with {self.proc.returncode}; see {self.log}")
            try:
                self._get("/healthz")
            except OSError:
                time.sleep(0.05)
                continue
            self.reset()  # the health checks are counted too
            return self
        self.stop()
        raise RuntimeError(f"sim {self.name} did not become healthy in {STARTUP_SECONDS:.0f} s")

    def _get(self, path: str, method: str = "GET") -> dict[str, Any]:
        request = urllib.request.Request(
            self.url + path, method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(request, timeout=5) as response:
            result: dict[str, Any] = json.loads(response.read())
            return result

    def reset(self) -> None:
        """Zero the counters and the rate windows (a fresh provider for the next run)."""
        self._get("/sim/reset", "POST")

    def stats(self) -> dict[str, Any]:
        if self.final_stats is not None:
            return self.final_stats
        return self._get("/sim/stats")

    def crash(self) -> None:
        """A provider outage: the process dies at once (SIGKILL); its counters are read just before."""
        self.final_stats = self._get("/sim/stats")
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=5)

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=5)


@dataclass(frozen=True, slots=True)
class UpstreamCounts:
    """What reached the providers during one run, summed over its sims."""

    calls: int = 0  # LLM calls (chat + embeddings), refused ones included
    rate_limited: int = 0  # answered 429

    @classmethod
    def of(cls, sims: list[Sim]) -> UpstreamCounts:
        calls = rate_limited = 0
        for sim in sims:
            stats = sim.stats()
            calls += sum(stats["by_path"].get(path, 0) for path in LLM_PATHS)
            # "rate_limit": refused by the sim's own RPM/TPM window; "429": an injected fault.
            rate_limited += stats["faults"].get("rate_limit", 0) + stats["faults"].get("429", 0)
        return cls(calls, rate_limited)


@contextmanager
def running(*sims: Sim) -> Iterator[None]:
    """Start the sims (in parallel: each is a Python process to boot) and stop them at the end."""
    try:
        for sim in sims:
            sim.launch()
        for sim in sims:
            sim.wait_healthy()
        yield
    finally:
        for sim in sims:
            sim.stop()


# ---------------------------------------------------------------------------------------------- the runs
@dataclass(slots=True)
class RunResult:
    """One run of a workload, as the before/after table shows it."""

    name: str  # "naive", "slipstream", ...
    wall_s: float
    app_calls: int  # LLM calls the application asked for
    upstream_calls: int  # ... and those that reached a provider (from /sim/stats)
    upstream_429: int = 0
    cache_hits: int = 0  # answered by slipstream's cache (or an identical call in flight)
    app_errors: int = 0  # failures the application saw
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class WorkloadReport:
    workload: str
    title: str
    quick: bool
    command: str
    latency_model: dict[str, Any]
    sizes: dict[str, Any]
    runs: list[RunResult]
    explanation: str  # why the margin follows from the latency model, with this run's measured numbers
    tables: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # extra per-workload tables

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class Stopwatch:
    """``with Stopwatch() as sw: ...`` then ``sw.seconds``."""

    def __init__(self) -> None:
        self.started = 0.0
        self.seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self.started = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.started

    def elapsed(self) -> float:
        return time.perf_counter() - self.started


def median_ms(seconds: list[float]) -> float | None:
    return round(statistics.median(seconds) * 1000, 1) if seconds else None


def mean_ms(seconds: list[float]) -> float | None:
    return round(statistics.fmean(seconds) * 1000, 1) if seconds else None


# ---------------------------------------------------------------------------------------------- command line
@dataclass(frozen=True, slots=True)
class Options:
    quick: bool
    json: Path | None
    workdir: Path


@contextmanager
def workload_options(doc: str | None) -> Iterator[Options]:
    """Parse the common flags; the work directory (sim logs, slipstream's data) is temporary unless given."""
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="tiny sizes and latency: a smoke test in seconds"
    )
    parser.add_argument("--json", type=Path, help="write the report here as JSON")
    parser.add_argument("--workdir", type=Path, help="keep sim logs and slipstream's data here")
    args = parser.parse_args()
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        yield Options(args.quick, args.json, args.workdir.resolve())
        return
    with tempfile.TemporaryDirectory(prefix="slipstream-workload-") as tmp:
        yield Options(args.quick, args.json, Path(tmp))


def command_line() -> str:
    """How this script was run, relative to the repository root."""
    script = Path(sys.argv[0]).resolve()
    shown = script.relative_to(ROOT) if script.is_relative_to(ROOT) else script
    args: list[str] = []
    skip = False
    for arg in sys.argv[1:]:  # where the output goes is not part of the workload
        if skip or arg.startswith(("--json=", "--workdir=")):
            skip = False
            continue
        if arg in ("--json", "--workdir"):
            skip = True
            continue
        args.append(arg)
    return shlex.join(["python", str(shown), *args])


def workload_config(name: str, workdir: Path, **variables: str) -> Config:
    """The YAML next to the script, with ``${VAR}`` filled in (sim URLs, the data folder)."""
    environ = {**os.environ, "DATA_DIR": str(workdir / ".slipstream"), **variables}
    return load_config(HERE / f"{name}.yaml", environ=environ)


# ---------------------------------------------------------------------------------------------- output
def show_table(title: str, rows: list[dict[str, Any]]) -> None:
    """Rows of dicts sharing keys, as a rich table."""
    if not rows:
        return
    table = Table(title=title, title_justify="left")
    for key in rows[0]:
        table.add_column(key, justify="left" if isinstance(rows[0][key], str) else "right")
    for row in rows:
        table.add_row(*(_cell(value) for value in row.values()))
    console.print(table)


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def before_after_rows(runs: list[RunResult]) -> list[dict[str, Any]]:
    base = runs[0].wall_s
    return [
        {
            "run": r.name,
            "wall s": round(r.wall_s, 2),
            "speed-up": f"{base / r.wall_s:.1f}x" if r.wall_s > 0 else "—",
            "app calls": r.app_calls,
            "upstream calls": r.upstream_calls,
            "upstream 429s": r.upstream_429,
            "cache hits": r.cache_hits,
            "app errors": r.app_errors,
        }
        for r in runs
    ]


def finish(report: WorkloadReport, options: Options) -> None:
    """Print the before/after table (and the workload's own tables); write the JSON report if asked."""
    for name, rows in report.tables.items():
        show_table(name, rows)
    show_table(f"{report.title}: before / after", before_after_rows(report.runs))
    console.print(report.explanation, soft_wrap=True)
    if options.json is not None:
        options.json.parent.mkdir(parents=True, exist_ok=True)
        options.json.write_text(json.dumps(report.to_dict(), indent=2) + "\n")
