"""What observability costs the miss path: the foundation miss-path benchmark with it off and with everything on.

    python bench/overhead_bench.py [--duration 3] [--rounds 21] [--out bench/results/overhead.md]

Issue #4's target: with metrics, the request log and alert rules on, the saturated miss path keeps at least 90%
of its throughput with observability off. Setup as `gateway_bench.py` (nginx fixed-reply upstream, wrk -t1 at
16 connections, unique prompts so every request is a miss, everything on 127.0.0.1) with one gateway process
per variant, all started before the first round:

- observability off: cache (memory + SQLite) and coalescing, no metrics, no request log;
- everything on: the same plus Prometheus metrics, the SQLite request log (the default config: rows inserted
  by a writer process) and three alert rules read from the request log every 5 s;
- everything on, `writer: thread`: the same with the request log's inserts in a thread of the gateway.

Why short cells and many rounds: on this shared 2-core machine the speed of a fixed CPU loop moves by ±40%
from second to second, so a long cell per variant measures the machine as much as the gateway. Each round
runs every variant once, back to back, in rotating order; the figure is the median over rounds of each round's
ratio (everything on / off), next to its quartiles.

Why several processes per variant (`--processes`, default 3): two gateway processes started from the same
config differ in speed by several percent for their whole life (hash seeds, address layout, where their files
landed), as much as observability costs. With one process per variant that luck went into the ratio. Each
variant now runs as several processes, each measured once a round; a round's figure for a variant is their
requests over their time, and the per-process medians are reported so the spread between them is visible.

Needs `wrk` and `nginx-light` (Debian packages).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from gateway_bench import (  # the sibling's helpers
    LUA_UNIQUE,
    cpu_model,
    cpu_seconds,
    free_port,
    start_nginx,
    wrk,
)
from variants_bench import ALERTS, OBSERVE_OFF, start_gateway

OFF = "observability off"
ON = "everything on"
THREAD = "everything on, writer: thread"
CONNECTIONS = 16


def variants(workdir: Path, process: int) -> dict[str, str]:
    """Variant name → the config lines it adds (start_gateway adds the request log's path when none is given)."""
    thread_log = f"{workdir}/thread{process}-requests.db"
    return {
        OFF: OBSERVE_OFF,
        ON: ALERTS,
        THREAD: ALERTS + f"observe:\n  request_log: {{path: {thread_log}, writer: thread}}\n",
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=3, help="seconds per wrk run (default 3)")
    parser.add_argument("--rounds", type=int, default=21, help="rounds; every process runs once a round")
    parser.add_argument("--processes", type=int, default=3, help="gateway processes per variant (default 3)")
    parser.add_argument(
        "--warmup", type=int, default=10, help="seconds of load per gateway first (default 10)"
    )
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "overhead.md")
    parser.add_argument("--render", type=Path, help="rewrite the .md from a run's .json (no measuring)")
    args = parser.parse_args()
    if args.render is not None:
        args.out.write_text(render(json.loads(args.render.read_text())))
        return
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is required: apt-get install wrk nginx-light")
    samples: dict[str, list[dict[str, float]]] = {}  # per variant, one aggregate per round
    cells: dict[str, list[list[dict[str, float]]]] = {}  # per variant, per process, one cell per round
    logs: dict[str, list[dict[str, int] | None]] = {}
    hits: dict[str, list[int | None]] = {}  # cache hits counted by the variants with metrics: must stay 0
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="slipstream-overhead-") as tmp:
        workdir = Path(tmp)
        script = workdir / "unique.lua"
        script.write_text(LUA_UNIQUE)
        upstream_port = free_port()
        nginx = start_nginx(workdir, upstream_port)
        gateways: dict[str, list[tuple[subprocess.Popen[bytes], str]]] = {}
        try:
            for process in range(args.processes):
                for i, (name, extra) in enumerate(variants(workdir, process).items()):
                    port = free_port()
                    gateways.setdefault(name, []).append(
                        (
                            start_gateway(workdir, f"o{i}p{process}", port, upstream_port, extra),
                            f"http://127.0.0.1:{port}/v1/chat/completions",
                        )
                    )
            # Every process is loaded briefly first: connections to the upstream, the first SQLite pages. (Earlier
            # runs saw a fresh gateway's CPU per request halve over minutes of load: the cells were replaying the
            # warm-up's prompts as cache hits. With a fresh salt per wrk run every request misses, and a
            # gateway's speed is flat from its first seconds.)
            for processes in gateways.values():
                for _, url in processes:
                    wrk(url, script, CONNECTIONS, args.warmup)
            names = list(gateways)
            for round_ in range(args.rounds):
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
                    round_cells = []
                    for gateway, url in gateways[name]:
                        cpu0 = cpu_seconds(gateway.pid)
                        result = wrk(url, script, CONNECTIONS, args.duration)
                        result["cpu_ms_per_req"] = (
                            (cpu_seconds(gateway.pid) - cpu0) * 1000 / max(1, result["requests"])
                        )
                        round_cells.append(result)
                    per_process = cells.setdefault(name, [[] for _ in gateways[name]])
                    for process, result in enumerate(round_cells):
                        per_process[process].append(result)
                    samples.setdefault(name, []).append(combine(round_cells, args.duration))
                print(
                    f"round {round_ + 1}: "
                    + ", ".join(f"{n} {samples[n][-1]['rps']:,.0f}" for n in names)
                    + f" req/s; on/off {samples[ON][-1]['rps'] / samples[OFF][-1]['rps']:.1%}",
                    flush=True,
                )
            # A full request-log queue drops records instead of waiting: a variant that dropped did less work
            # than it should have, so the counts go into the results.
            for name, processes in gateways.items():
                logs[name] = [request_log_counters(url) for _, url in processes]
                hits[name] = [cache_hits(url) for _, url in processes]
        finally:
            for processes in gateways.values():
                for gateway, _ in processes:
                    gateway.send_signal(signal.SIGTERM)
            for processes in gateways.values():
                for gateway, _ in processes:
                    gateway.wait(timeout=15)
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(timeout=10)
    data = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()} cores, {cpu_model()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}",
        "load": [load_before[0], os.getloadavg()[0]],
        "duration": args.duration,
        "rounds": args.rounds,
        "warmup": args.warmup,
        "processes": args.processes,
        "samples": samples,
        "cells": cells,
        "request_log": logs,
        "cache_hits": hits,
    }
    args.out.with_suffix(".json").write_text(json.dumps(data, indent=1) + "\n")
    args.out.write_text(render(data))
    print(args.out.read_text())


def combine(results: list[dict[str, float]], duration: int) -> dict[str, float]:
    """One variant's figure for a round: its processes' requests over their time, CPU per request over all."""
    requests = sum(r["requests"] for r in results)
    return {
        "rps": requests / (duration * len(results)),
        "requests": requests,
        "non_2xx": sum(r["non_2xx"] for r in results),
        "cpu_ms_per_req": sum(r["cpu_ms_per_req"] * r["requests"] for r in results) / max(1, requests),
    }


def request_log_counters(chat_url: str) -> dict[str, int] | None:
    """The gateway's request-log counters (written, queued, dropped, failed); None when its log is off."""
    health = chat_url.replace("/v1/chat/completions", "/api/metrics/health")
    with urllib.request.urlopen(health, timeout=10) as response:
        counters: dict[str, int] | None = json.loads(response.read()).get("request_log")
    return counters


def cache_hits(chat_url: str) -> int | None:
    """Requests the gateway answered from its cache (from ``/metrics``); None when its metrics are off. The
    miss path must not have any: a run whose prompts repeat measures hits."""
    try:
        with urllib.request.urlopen(
            chat_url.replace("/v1/chat/completions", "/metrics"), timeout=10
        ) as response:
            text = response.read().decode()
    except urllib.error.HTTPError:
        return None
    return sum(
        int(float(line.rsplit(" ", 1)[1]))
        for line in text.splitlines()
        if line.startswith("slipstream_cache_total{") and 'result="hit"' in line
    )


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q1, q2, q3 = statistics.quantiles(values, n=4, method="inclusive")
    return q1, q2, q3


def render(data: dict) -> str:  # type: ignore[type-arg]
    samples: dict[str, list[dict[str, float]]] = data["samples"]
    off = samples[OFF]
    processes = data.get("processes", 1)
    lines = [
        "# What observability costs the miss path (one run)",
        "",
        f"- date: {data['date']}",
        f"- machine: {data['machine']}; load average before {data['load'][0]:.2f}, after {data['load'][1]:.2f}",
        f"- command: `python bench/overhead_bench.py --duration {data['duration']} --rounds {data['rounds']} "
        f"--warmup {data.get('warmup', 3)} --processes {processes}` (wrk -t1 -c{CONNECTIONS}, unique prompts: "
        f"every request a miss; nginx fixed-reply upstream; {data.get('warmup', 3)} s of load on each gateway "
        f"first, then {data['duration']} s per cell, every process once per round, variants in rotating order)",
        f"- every variant runs as {processes} separate `slipstream serve` process(es), all started before the first "
        "round; a round's figure for a variant is its processes' requests over their time",
        "",
        "| variant | req/s, median round | per-round ratio to off: median | quartiles | CPU ms/req | non-2xx |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, runs in samples.items():
        ratios = [run["rps"] / base["rps"] for run, base in zip(runs, off, strict=True)]
        q1, q2, q3 = quartiles(ratios)
        lines.append(
            f"| {name} | {statistics.median(r['rps'] for r in runs):,.0f} | {q2:.1%} | {q1:.1%} to {q3:.1%} | "
            f"{statistics.median(r['cpu_ms_per_req'] for r in runs):.3f} | {sum(int(r['non_2xx']) for r in runs)} |"
        )
    cells: dict[str, list[list[dict[str, float]]]] = data.get("cells", {})
    if cells:
        lines += [
            "",
            "Each process on its own (medians of its cells): the spread within a variant is what one process per "
            "variant would have put into the ratio.",
            "",
            "| variant | process | req/s | CPU ms/req |",
            "|---|---:|---:|---:|",
        ]
        for name, per_process in cells.items():
            for i, runs in enumerate(per_process, 1):
                lines.append(
                    f"| {name} | {i} | {statistics.median(r['rps'] for r in runs):,.0f} | "
                    f"{statistics.median(r['cpu_ms_per_req'] for r in runs):.3f} |"
                )
    logs = data.get("request_log")
    if logs:
        counts = {  # one dict per process (a single one in runs before --processes)
            name: [c for c in (found if isinstance(found, list) else [found]) if c is not None]
            for name, found in logs.items()
        }
        lines += [
            "",
            "Request-log records at the end of the run, all processes (a full queue drops instead of waiting): "
            + "; ".join(
                f"{name}: {sum(c['written'] for c in cs):,} written, {sum(c['dropped'] for c in cs):,} dropped, "
                f"{sum(c['failed'] for c in cs):,} failed"
                for name, cs in counts.items()
                if cs
            )
            + ".",
        ]
    found_hits = {
        name: sum(h for h in per_process if h is not None)
        for name, per_process in data.get("cache_hits", {}).items()
        if any(h is not None for h in per_process)
    }
    if found_hits:
        lines += [
            "",
            "Cache hits counted by the variants with metrics, all processes (every request should miss): "
            + "; ".join(f"{name}: {count:,}" for name, count in found_hits.items())
            + ".",
        ]
    on = [run["rps"] / base["rps"] for run, base in zip(samples[ON], off, strict=True)]
    median_on = statistics.median(on)
    verdict = "met" if median_on >= 0.9 else "NOT met"
    lines += [
        "",
        f"Everything on keeps **{median_on:.1%}** of the miss-path throughput with observability off (median of "
        f"{len(on)} per-round ratios; target ≥ 90%: {verdict}). Per-round ratios: "
        + ", ".join(f"{r:.1%}" for r in on)
        + ".",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
