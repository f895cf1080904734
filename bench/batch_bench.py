"""Batch runner throughput: a 10,000-line file through the real `slipstream batch` command, in lines per second.

    python bench/batch_bench.py [--lines 10000] [--repeats 3] [--out bench/results/batch.md]

Rows (each a fresh subprocess; "cold" rows get an empty data directory, so every line is a cache miss):
- in-process `sim` provider with zero latency, concurrency 16 and 64: the runner plus the full pipeline
  (SQLite cache, coalescing, routing, metrics, request log) with an upstream that costs almost nothing;
- the same file into a new output with the cache warm: every line a hit, read from the SQLite tier (a new process
  starts with an empty memory tier);
- in-process sim with the cache, metrics and request log switched off: what the runner, coalescing and routing
  cost on their own;
- `slipstream sim` (instant preset) over HTTP on loopback, concurrency 16 and 64: adds the HTTP client and a
  second process competing for the 2 cores.

"runner lines/s" is the command's own figure (results / time from the first request to the last result written);
"wall lines/s" divides by the whole command, Python's start-up and the planning pass over the file included.
CPU is the command's user+sys time per line, its fixed start-up cost left out (the sim server's own CPU is not
in it). Everything listens on 127.0.0.1; every run is bounded by a timeout.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from gateway_bench import free_port, wait_port

HERE = Path(__file__).parent
RUN_TIMEOUT = 300.0
_RATE = re.compile(r"this run: ([\d,]+) in [\d.]+ s \(([\d,]+)/s\)")


def write_input(path: Path, lines: int) -> None:
    with path.open("w") as f:
        for i in range(lines):
            body = {
                "model": "sim",
                "messages": [{"role": "user", "content": f"Write a short note about item number {i}."}],
                "max_tokens": 64,
            }
            line = {"custom_id": f"item-{i}", "method": "POST", "url": "/v1/chat/completions", "body": body}
            f.write(json.dumps(line) + "\n")


def config_text(data: Path, upstream: str | None, *, bare: bool = False) -> str:
    if upstream is None:
        deployment = "{provider: sim, model: sim-1}"
    else:
        deployment = f"{{provider: openai, model: sim-1, base_url: '{upstream}/v1', api_key: unused}}"
    if bare:  # no cache, no metrics, no request log: the runner, coalescing and routing alone
        layers = "cache: {enabled: false}\nobserve: {metrics: false, request_log: {enabled: false}}"
    else:
        layers = (
            f"cache:\n  sqlite: {{path: {data / 'cache.db'}}}\n"
            f"observe:\n  request_log: {{path: {data / 'requests.db'}}}"
        )
    return f"""
{layers}
model_groups:
  sim:
    deployments: [{deployment}]
"""


def run_batch(
    workdir: Path, source: Path, data: Path, concurrency: int, upstream: str | None, *, bare: bool = False
) -> dict[str, float]:
    data.mkdir(exist_ok=True)
    config = data / "c.yaml"
    config.write_text(config_text(data, upstream, bare=bare))
    out = workdir / f"out-{time.monotonic_ns()}.jsonl"
    args = [sys.executable, "-m", "slipstream", "batch", str(source), "-o", str(out)]
    args += ["--config", str(config), "--concurrency", str(concurrency), "--quiet"]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True, timeout=RUN_TIMEOUT, cwd=workdir)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    match = _RATE.search(proc.stderr)
    if proc.returncode != 0 or match is None:
        raise RuntimeError(f"batch failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    lines = int(match.group(1).replace(",", ""))
    written = out.read_bytes().count(b"\n")
    if written != lines:
        raise RuntimeError(f"{written} lines written, {lines} reported")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    for path in workdir.glob("out-*"):
        path.unlink()
    return {
        "lines": lines,
        "runner_rate": float(match.group(2).replace(",", "")),
        "wall_rate": lines / wall,
        "wall_s": wall,
        "cpu_s": cpu,
    }


def start_sim(workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (workdir / "sim.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "slipstream", "sim", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT
    )
    wait_port(port)
    return proc, f"http://127.0.0.1:{port}"


def median_row(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=HERE / "results" / "batch.md")
    args = parser.parse_args()
    rows: dict[str, list[dict[str, float]]] = {}
    load_before = os.getloadavg()[0]
    workdir = Path(tempfile.mkdtemp(prefix="slipstream-batch-bench-"))
    sim, upstream = start_sim(workdir)
    try:
        source = workdir / "in.jsonl"
        write_input(source, args.lines)
        one = workdir / "one.jsonl"
        write_input(one, 1)
        # The command's fixed cost (imports, config, opening stores): subtracted from the CPU per line.
        startup = [run_batch(workdir, one, workdir / f"startup-{i}", 16, None)["cpu_s"] for i in range(3)]
        startup_cpu = statistics.median(startup)
        for repeat in range(args.repeats):  # rows interleaved, so a noisy moment hits every row alike
            for concurrency in (16, 64):
                data = workdir / f"inproc-{concurrency}-{repeat}"
                name = f"in-process sim, cold cache, concurrency {concurrency}"
                rows.setdefault(name, []).append(run_batch(workdir, source, data, concurrency, None))
                if concurrency == 16:
                    name = "in-process sim, warm cache (all hits), concurrency 16"
                    rows.setdefault(name, []).append(run_batch(workdir, source, data, concurrency, None))
                    name = "in-process sim, no cache/metrics/request log, concurrency 16"
                    bare = workdir / f"bare-{repeat}"
                    rows.setdefault(name, []).append(
                        run_batch(workdir, source, bare, concurrency, None, bare=True)
                    )
                data = workdir / f"http-{concurrency}-{repeat}"
                name = f"`slipstream sim` over HTTP, cold cache, concurrency {concurrency}"
                rows.setdefault(name, []).append(run_batch(workdir, source, data, concurrency, upstream))
            print(f"repeat {repeat + 1}/{args.repeats} done", file=sys.stderr)
    finally:
        sim.terminate()
        sim.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    medians = {name: median_row(runs) for name, runs in rows.items()}
    write_report(args.out, medians, args, load=(load_before, os.getloadavg()[0]), startup_cpu=startup_cpu)
    print(args.out.read_text())


def write_report(
    out: Path,
    rows: dict[str, dict[str, float]],
    args: argparse.Namespace,
    *,
    load: tuple[float, float],
    startup_cpu: float,
) -> None:
    cores = os.cpu_count()
    lines = [
        "# Batch runner throughput",
        "",
        f"- date: {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        f"- machine: {cores} cores, {platform.system()} {platform.release()}, Python {platform.python_version()}",
        f"- command: `python bench/batch_bench.py --lines {args.lines} --repeats {args.repeats}`"
        f" (median of {args.repeats} runs per row)",
        f"- 1-minute load average: {load[0]:.1f} before, {load[1]:.1f} after (other work shares the 2 cores: "
        "absolute figures drift; compare rows)",
        f"- CPU per line leaves out the command's fixed start-up cost: {startup_cpu * 1000:,.0f} ms of CPU"
        " (median of three one-line runs)",
        "",
        "| row | runner lines/s | wall lines/s | wall s | CPU µs/line |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, row in rows.items():
        lines.append(
            f"| {name} | {row['runner_rate']:,.0f} | {row['wall_rate']:,.0f} | {row['wall_s']:.2f} "
            f"| {(row['cpu_s'] - startup_cpu) / row['lines'] * 1e6:,.0f} |"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps(rows, indent=2) + "\n")


if __name__ == "__main__":
    main()
