"""Run the five workload reproductions and write their before/after table: ``bench/WORKLOADS.md`` and
``bench/results/workloads.json``.

    python examples/workloads/run_all.py                 # the real run: ~2-3 s per reply, ~13 minutes
    python examples/workloads/run_all.py --quick --markdown /tmp/w.md --json /tmp/w.json   # smoke test

Each workload runs as its own subprocess (``<name>.py --json ...``), one after another, so they never share a
core with each other's sims. ``--parallel`` runs them at once (smoke tests only: timings then mean nothing).
Every number in the output comes from the workloads' JSON reports: measured, never computed here.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORKLOADS = ("prompt_enhancer", "destination_themes", "npc_generator", "code_optimizer", "question_workflow")
TIMEOUT_SECONDS = 600  # per workload; the real runs take 1-5 minutes each
COLUMNS = ("wall s", "speed-up", "app calls", "upstream calls", "upstream 429s", "cache hits", "app errors")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="tiny sizes and latency (a smoke test)")
    parser.add_argument("--only", nargs="+", choices=WORKLOADS, help="run only these workloads")
    parser.add_argument("--parallel", action="store_true", help="run the workloads at once (smoke tests)")
    parser.add_argument("--markdown", type=Path, help="default: bench/WORKLOADS.md (not with --quick)")
    parser.add_argument("--json", type=Path, help="default: bench/results/workloads.json (not with --quick)")
    args = parser.parse_args()
    if args.quick and (args.markdown is None or args.json is None):
        parser.error("--quick numbers mean nothing: give --markdown and --json outside bench/")
    markdown = args.markdown or ROOT / "bench" / "WORKLOADS.md"
    results = args.json or ROOT / "bench" / "results" / "workloads.json"
    names = args.only or list(WORKLOADS)

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="slipstream-workloads-") as tmp:
        reports, failed = run_workloads(names, Path(tmp), quick=args.quick, parallel=args.parallel)
    total = time.perf_counter() - started
    run = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}",
        "load_before": round(load_before, 2),
        "load_after": round(os.getloadavg()[0], 2),
        "total_s": round(total, 1),
        "command": command(args),
        "quick": args.quick,
        "failed": failed,
        "workloads": reports,
    }
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(run, indent=2) + "\n")
    markdown.parent.mkdir(parents=True, exist_ok=True)
    markdown.write_text(render(run))
    print(
        f"wrote {markdown} and {results} in {total:.0f} s"
        + (f"; FAILED: {', '.join(failed)}" if failed else "")
    )
    return 1 if failed else 0


def run_workloads(
    names: list[str], tmp: Path, *, quick: bool, parallel: bool
) -> tuple[list[dict[str, Any]], list[str]]:
    """Each workload as a subprocess writing its JSON report; the reports in order, and the names that failed."""

    def launch(name: str) -> subprocess.Popen[bytes]:
        cmd = [sys.executable, str(HERE / f"{name}.py"), "--json", str(tmp / f"{name}.json")]
        # Unbuffered, so the progress of a long naive run shows as it happens.
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        out = (tmp / f"{name}.log").open("wb") if parallel else None
        return subprocess.Popen(
            [*cmd, *(["--quick"] if quick else [])], cwd=ROOT, env=env, stdout=out, stderr=out
        )

    failed: list[str] = []
    procs: dict[str, subprocess.Popen[bytes]] = {}
    for name in names:
        if not parallel:
            print(f"\n=== {name} ===", flush=True)
        procs[name] = launch(name)
        if not parallel:
            wait(name, procs[name], failed)
    if parallel:
        for name, proc in procs.items():
            wait(name, proc, failed)
            if name in failed:
                sys.stdout.write((tmp / f"{name}.log").read_text(errors="replace"))
    reports = []
    for name in names:
        path = tmp / f"{name}.json"
        if name not in failed and path.exists():
            reports.append(json.loads(path.read_text()))
        elif name not in failed:
            failed.append(name)
    return reports, failed


def wait(name: str, proc: subprocess.Popen[bytes], failed: list[str]) -> None:
    try:
        code = proc.wait(timeout=TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        proc.terminate()
        proc.wait(timeout=30)
        code = -1
    if code != 0:
        failed.append(name)


def command(args: argparse.Namespace) -> str:
    parts = ["python", "examples/workloads/run_all.py"]
    if args.quick:
        parts.append("--quick")
    if args.only:
        parts += ["--only", *args.only]
    return " ".join(parts)


# ---------------------------------------------------------------------------------------------- markdown
def render(run: dict[str, Any]) -> str:
    lines = [
        "# The five workloads, before and after",
        "",
        "Small reproductions of the five kinds of application slipstream is for (the table in the design notes), "
        "each run "
        "twice against `slipstream sim` with a real provider's latency: **naive** (how the application started: "
        "sequential calls, a new `openai.AsyncOpenAI` client per call, no cache, no limits, no failover) and "
        "**slipstream** (the in-process SDK, one client, config in the YAML next to the script). The code is in "
        "[`examples/workloads/`](../examples/workloads/).",
        "",
        f"- date: {run['date']}",
        f"- machine: {run['machine']}",
        f"- 1-minute load average: {run['load_before']} before, {run['load_after']} after (other work shares the "
        "cores; the workloads wait on the simulated provider, so their times hardly depend on CPU)",
        f"- command: `{run['command']}` ({run['total_s'] / 60:.1f} minutes); each workload also runs alone, "
        "as shown under it",
        "- latency model: `slipstream sim --preset realistic`: time to first token 0.5 s (lognormal, sigma 0.4), "
        "60 tokens/s (normal, sigma 10), 40-200 completion tokens: ~2-3 s per reply",
    ]
    if run["quick"]:
        lines += ["", "**`--quick` run: tiny sizes and latency, a smoke test. These numbers mean nothing.**"]
    if run["failed"]:
        lines += ["", f"**Failed: {', '.join(run['failed'])}** (no numbers for them below)."]
    lines += [
        "",
        "Columns: *wall s* is the whole job, measured; *app calls* the LLM calls the application asked for; "
        "*upstream calls* those that reached a provider (the sims' own `/sim/stats` counters, refused ones "
        "included); *cache hits* calls answered without an upstream call (a cache hit, or joining an identical "
        "call in flight); *app errors* failures the application saw.",
        "",
        "| workload | run | " + " | ".join(COLUMNS) + " |",
        "|---|---|" + "---:|" * len(COLUMNS),
    ]
    for report in run["workloads"]:
        base = report["runs"][0]["wall_s"]
        for r in report["runs"]:
            speed = f"{base / r['wall_s']:.1f}x" if r["wall_s"] > 0 else "—"
            cells = [
                f"{r['wall_s']:.1f}" if r["wall_s"] >= 10 else f"{r['wall_s']:.2f}",
                speed,
                str(r["app_calls"]),
                str(r["upstream_calls"]),
                str(r["upstream_429"]),
                str(r["cache_hits"]),
                str(r["app_errors"]),
            ]
            lines.append(f"| {report['title']} | {r['name']} | " + " | ".join(cells) + " |")
    for report in run["workloads"]:
        lines += ["", f"## {report['title']}", "", f"`{report['command']}`", ""]
        lines += [f"Upstream: `{sim_command(report['latency_model'])}`. Sizes: {sizes(report['sizes'])}.", ""]
        lines += [report["explanation"]]
        for title, rows in report["tables"].items():
            lines += ["", f"*{title}*", "", *markdown_table(rows)]
    return "\n".join(lines) + "\n"


def sim_command(options: dict[str, Any]) -> str:
    parts = ["slipstream sim"]
    for key, value in options.items():
        parts.append(f"--preset {value}" if key == "preset" else f"-o {key}={value}")
    return " ".join(parts)


def sizes(values: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v}" for k, v in values.items())


def markdown_table(rows: list[dict[str, Any]]) -> list[str]:
    if not rows:
        return []
    keys = list(rows[0])
    out = [
        "| " + " | ".join(keys) + " |",
        "|" + "|".join("---" if isinstance(rows[0][k], str) else "---:" for k in keys) + "|",
    ]
    for row in rows:
        out.append("| " + " | ".join(cell(row[k]) for k in keys) + " |")
    return out


def cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.2f}"
    return str(value)


if __name__ == "__main__":
    sys.exit(main())
