"""Three gateway processes sharing one Redis hold one global RPM limit.

    python bench/scaleout_bench.py [--rpm 1200] [--rate 30] [--duration 90] [--out bench/results/scaleout.md]

Starts `slipstream sim` (the upstream, counting what reaches it), a `redis-server` on a free port and three
`slipstream serve` processes whose one deployment has `limits: {rpm: RPM, max_wait: 0}` and whose `redis.url`
is that server. An open-loop driver sends RATE distinct requests per second (1.5x the limit by default), round
robin over the three gateways, for DURATION seconds, and records when each was answered and with what status.

The limit is a sliding 60-second window, so the figure that matters is the number of requests admitted in any
60 seconds: it must not exceed RPM, and while demand is above the limit it should reach it. Reported: admitted
requests in every 60-second window starting at each second of the run (min, max, and the deviation from RPM),
the upstream's own count, and refusals (429) by gateway. Everything listens on 127.0.0.1; the run is bounded by
DURATION and by RATE x DURATION requests.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).parent))

from gateway_bench import (  # the sibling script's helpers
    cpu_model,
    free_port,
    start_process,
    start_redis,
    start_serve,
)


async def drive(urls: list[str], rate: float, duration: float) -> list[tuple[float, int, int]]:
    """(answered at, gateway index, status) for each request; sent on a fixed schedule (open loop)."""
    results: list[tuple[float, int, int]] = []
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    async with httpx.AsyncClient(timeout=30, limits=limits) as client:
        start = time.monotonic()

        async def one(i: int) -> None:
            g = i % len(urls)
            body = {"model": "limited", "messages": [{"role": "user", "content": f"request {i}"}]}
            try:
                r = await client.post(f"{urls[g]}/v1/chat/completions", json=body)
                status = r.status_code
            except httpx.HTTPError:
                status = -1
            results.append((time.monotonic() - start, g, status))

        tasks = []
        total = int(rate * duration)
        for i in range(total):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*tasks)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rpm", type=int, default=1200)
    parser.add_argument("--rate", type=float, default=30.0, help="requests per second sent (default 30)")
    parser.add_argument("--duration", type=float, default=90.0, help="seconds (default 90; at least 61)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "scaleout.md")
    args = parser.parse_args()
    if args.duration < 61:
        sys.exit("--duration must exceed the 60-second window")
    py = [sys.executable, "-m", "slipstream"]
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="slipstream-scaleout-") as tmp:
        workdir = Path(tmp)
        try:
            sim_port, redis_port = free_port(), free_port()
            procs.append(start_process([*py, "sim", "--port", str(sim_port)], sim_port, workdir, "sim"))
            procs.append(start_redis(workdir, redis_port))
            urls = []
            for i in range(3):
                port = free_port()
                config = workdir / f"g{i}.yaml"
                config.write_text(
                    f"""
redis: {{url: "redis://127.0.0.1:{redis_port}/0"}}
cache: {{sqlite: {{path: {workdir}/g{i}.db}}}}
observe: {{request_log: {{path: {workdir}/g{i}-requests.db}}}}
model_groups:
  limited:
    retries: {{max_attempts: 1}}
    deployments:
      - provider: openai
        model: sim-1
        base_url: http://127.0.0.1:{sim_port}/v1
        limits: {{rpm: {args.rpm}, max_wait: 0}}
"""
                )
                procs.append(start_serve(workdir, config, port, f"g{i}"))
                urls.append(f"http://127.0.0.1:{port}")
            results = asyncio.run(drive(urls, args.rate, args.duration))
            upstream = httpx.get(f"http://127.0.0.1:{sim_port}/sim/stats", timeout=5).json()["requests"]
        finally:
            for proc in reversed(procs):
                proc.send_signal(signal.SIGTERM)
                proc.wait(timeout=15)
    write_report(args, results, upstream)


def write_report(args: argparse.Namespace, results: list[tuple[float, int, int]], upstream: int) -> None:
    admitted = sorted(t for t, _, status in results if status == 200)
    windows = []
    for start in range(int(args.duration) - 60 + 1):
        windows.append(sum(1 for t in admitted if start <= t < start + 60))
    by_gateway = {g: {"200": 0, "429": 0, "other": 0} for g in range(3)}
    for _, g, status in results:
        by_gateway[g][str(status) if status in (200, 429) else "other"] += 1
    low, high = min(windows), max(windows)
    cpu = cpu_model()
    lines = [
        "# Scale-out: one global RPM limit across three gateway processes",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}",
        f"- command: `python bench/scaleout_bench.py --rpm {args.rpm} --rate {args.rate:g} "
        f"--duration {args.duration:g}`",
        f"- load: {len(results):,} distinct requests, {args.rate:g}/s open loop ({args.rate * 60 / args.rpm:.1f}x the "
        "limit), round robin over 3 gateways sharing one redis-server; upstream `slipstream sim`",
        "",
        "| limit (RPM) | admitted in any 60 s: min | max | max deviation | upstream calls | refused (429) "
        "| other errors |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {args.rpm:,} | {low:,} | {high:,} | {max(abs(high - args.rpm), abs(args.rpm - low)) / args.rpm:.2%} | "
        f"{upstream:,} | {sum(v['429'] for v in by_gateway.values()):,} | "
        f"{sum(v['other'] for v in by_gateway.values())} |",
        "",
        "Per gateway: "
        + ", ".join(f"g{g}: {v['200']} admitted, {v['429']} refused" for g, v in by_gateway.items()),
        "",
        "Windows start at every whole second of the run (the first at 0 s, the last at "
        f"{int(args.duration) - 60} s); the target is ±5% of the limit.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    args.out.with_suffix(".json").write_text(
        json.dumps(
            {
                "rpm": args.rpm,
                "rate": args.rate,
                "duration": args.duration,
                "windows": windows,
                "upstream": upstream,
                "by_gateway": by_gateway,
            },
            indent=2,
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
