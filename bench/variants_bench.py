"""What each optional layer costs: the gateway's miss and hit paths with observability off, on, and on Redis.

    python bench/variants_bench.py [--duration 10] [--out bench/results/variants.md]

Same setup as `gateway_bench.py` (nginx fixed-reply upstream, wrk -t1, everything on 127.0.0.1; its helpers are
reused), with one gateway process per variant, all measured in one run so the rows compare:

- observability off: cache (memory + SQLite) and coalescing, no metrics, no request log;
- everything on (local): the same plus Prometheus metrics and the SQLite request log (the default config);
- Redis: everything on, with Redis (a `redis-server` this script starts on a free port) as the shared cache tier
  behind the memory tier, plus cross-instance coalescing and shared breaker state;
- Redis + global limit: the same plus a shared RPM/TPM limit (set far above the load, so it only costs its
  round trip) checked in Redis on every miss.

Needs `wrk`, `nginx-light` and `redis-server` (Debian packages).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from gateway_bench import (  # the sibling script's helpers
    LUA_FIXED,
    LUA_UNIQUE,
    cpu_seconds,
    free_port,
    start_nginx,
    wait_port,
    wrk,
)

OBSERVE_OFF = "observe: {metrics: false, request_log: {enabled: false}}\n"


def variants(workdir: Path, redis_url: str) -> dict[str, str]:
    """Variant name → the config lines it adds (the deployment's limits line is `{limits}`)."""
    redis = f"redis: {{url: '{redis_url}', timeout: 0.1}}\n"
    return {
        "observability off": OBSERVE_OFF,
        "everything on (local)": "",
        "everything on + Redis": redis,
        "everything on + Redis + global limit": redis + "#limits\n",
    }


def start_gateway(
    workdir: Path, name: str, port: int, upstream_port: int, extra: str
) -> subprocess.Popen[bytes]:
    limits = "        limits: {rpm: 100000000, tpm: 1000000000, max_wait: 1}\n" if "#limits" in extra else ""
    observe = (
        "" if "observe:" in extra else f"observe:\n  request_log: {{path: {workdir}/{name}-requests.db}}\n"
    )
    config = workdir / f"{name}.yaml"
    config.write_text(
        extra.replace("#limits\n", "")
        + observe
        + f"""cache:
  sqlite: {{path: {workdir}/{name}-cache.db}}
model_groups:
  bench:
    deployments:
      - provider: openai
        model: bench-1
        base_url: http://127.0.0.1:{upstream_port}/v1
{limits}"""
    )
    log = (workdir / f"{name}.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "slipstream", "serve", "--config", str(config), "--port", str(port)],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=workdir,
    )
    wait_port(port)
    return proc


def start_redis(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_port(port)
    return proc


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "variants.md")
    args = parser.parse_args()
    for tool in ("wrk", "nginx", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is required: apt-get install wrk nginx-light redis-server")
    rows: dict[str, dict[str, dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="slipstream-variants-") as tmp:
        workdir = Path(tmp)
        fixed, unique = workdir / "fixed.lua", workdir / "unique.lua"
        fixed.write_text(LUA_FIXED)
        unique.write_text(LUA_UNIQUE)
        upstream_port, redis_port = free_port(), free_port()
        nginx = start_nginx(workdir, upstream_port)
        redis = start_redis(workdir, redis_port)
        try:
            for i, (name, extra) in enumerate(variants(workdir, f"redis://127.0.0.1:{redis_port}/0").items()):
                port = free_port()
                gateway = start_gateway(workdir, f"v{i}", port, upstream_port, extra)
                url = f"http://127.0.0.1:{port}/v1/chat/completions"
                try:
                    wrk(url, fixed, 1, 1)  # warm: connections, the hit path's cache entry
                    rows[name] = {}
                    for label, script, conns in (
                        ("miss", unique, 16),
                        ("hit", fixed, 16),
                        ("miss", unique, 1),
                    ):
                        cpu0 = cpu_seconds(gateway.pid)
                        result = wrk(url, script, conns, args.duration)
                        result["cpu_ms_per_req"] = (
                            (cpu_seconds(gateway.pid) - cpu0) * 1000 / max(1, result["requests"])
                        )
                        rows[name][f"{label} {conns}"] = result
                finally:
                    gateway.send_signal(signal.SIGTERM)
                    gateway.wait(timeout=15)
                time.sleep(1)
        finally:
            redis.terminate()
            redis.wait(timeout=10)
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(timeout=10)
    write_report(args.out, rows, args.duration)


def write_report(out: Path, rows: dict[str, dict[str, dict[str, float]]], duration: int) -> None:
    cpu_model = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.split()[2]
    base = rows["observability off"]
    lines = [
        "# What each layer costs (one run)",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} cores, {cpu_model}, Linux {platform.release()}, "
        f"Python {platform.python_version()}",
        f"- command: `python bench/variants_bench.py --duration {duration}` (wrk -t1, {duration}s per cell, "
        f"nginx fixed-reply upstream, Redis {redis_version.removeprefix('v=')}, all on loopback)",
        "",
        "| variant | miss req/s (16 conn) | vs obs. off | miss p50 ms (1 conn) | miss CPU ms/req | "
        "hit req/s (16 conn) | hit CPU ms/req | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        miss16, hit16, miss1 = r["miss 16"], r["hit 16"], r["miss 1"]
        ratio = miss16["rps"] / base["miss 16"]["rps"]
        errors = int(miss16["non_2xx"] + hit16["non_2xx"] + miss1["non_2xx"])
        lines.append(
            f"| {name} | {miss16['rps']:,.0f} | {ratio:.1%} | {miss1['p50_ms']:.3f} | "
            f"{miss16['cpu_ms_per_req']:.3f} | {hit16['rps']:,.0f} | {hit16['cpu_ms_per_req']:.3f} | {errors} |"
        )
    on = rows["everything on (local)"]["miss 16"]["rps"] / base["miss 16"]["rps"]
    lines += [
        "",
        f"Observability on (metrics + request log) keeps {on:.1%} of the miss-path throughput with it off "
        "(target: within 10%).",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps({"duration": duration, "rows": rows}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
