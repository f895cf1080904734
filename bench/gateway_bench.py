"""Foundation benchmark: the gateway's miss and hit paths against a fixed-reply upstream, beside the upstream direct.

    python bench/gateway_bench.py [--duration 10] [--out bench/results/gateway.md]

Needs Debian's `wrk` and `nginx-light` (`apt-get install wrk nginx-light`). Everything listens on 127.0.0.1.
nginx answers a fixed ~400-byte chat completion (the cheapest possible upstream); the gateway proxies to it with
the exact cache on. All figures come from one run, so ratios between rows hold even when absolute numbers drift.

- miss path: every request body is unique (a counter in the prompt), so each one is a cache miss that goes
  upstream and is then stored (memory + SQLite).
- hit path: one body repeated; the first request warms the cache.
- CPU per request: utime+stime of the gateway process over the run, divided by requests completed.
- SDK exact hit: the in-process `Slipstream.chat()` on a cached request, timed per call.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

REPLY = (
    '{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-1",'
    '"choices":[{"index":0,"message":{"role":"assistant","content":"The quick brown fox jumps over the lazy dog. '
    'This is a fixed reply used to measure gateway overhead."},"finish_reason":"stop"}],'
    '"usage":{"prompt_tokens":12,"completion_tokens":24,"total_tokens":36}}'
)
FIXED_BODY = '{"model":"bench","messages":[{"role":"user","content":"Say something about foxes."}]}'

LUA_FIXED = f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{FIXED_BODY}'
"""

# Every request a miss, in every run: the salt must differ between wrk runs against the same gateway. wrk's
# LuaJIT starts math.random from the same seed in every run, so a salt drawn from it repeated, and a later run
# replayed the earlier runs' prompts as cache hits. The kernel hands out a fresh UUID on every read.
LUA_UNIQUE = """
local counter = 0
local uuid = assert(io.open("/proc/sys/kernel/random/uuid"))
local salt = uuid:read("*l")
uuid:close()
request = function()
  counter = counter + 1
  local prompt = 'Say something about foxes ' .. salt .. ' ' .. counter
  local body = '{"model":"bench","messages":[{"role":"user","content":"' .. prompt .. '"}]}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on {port}")


def start_nginx(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    conf = workdir / "nginx.conf"
    reply = REPLY.replace("'", "\\'")
    conf.write_text(
        f"""
worker_processes 1;
daemon off;
pid {workdir}/nginx.pid;
error_log {workdir}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {workdir}/body;
  keepalive_requests 1000000;
  server {{
    listen 127.0.0.1:{port};
    location / {{
      default_type application/json;
      return 200 '{reply}';
    }}
  }}
}}
"""
    )
    proc = subprocess.Popen(["nginx", "-c", str(conf), "-p", str(workdir)], stderr=subprocess.DEVNULL)
    wait_port(port)
    return proc


def start_gateway(workdir: Path, port: int, upstream_port: int) -> subprocess.Popen[bytes]:
    config = workdir / "gateway.yaml"
    config.write_text(
        f"""
cache:
  sqlite: {{path: {workdir}/cache.db}}
model_groups:
  bench:
    deployments:
      - provider: openai
        model: bench-1
        base_url: http://127.0.0.1:{upstream_port}/v1
"""
    )
    return start_serve(workdir, config, port, "gateway")


def start_process(args: list[str], port: int, workdir: Path, name: str) -> subprocess.Popen[bytes]:
    """Run ``args`` in ``workdir`` with its output in ``<name>.log``; return once ``port`` accepts."""
    log = (workdir / f"{name}.log").open("wb")
    proc = subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
    wait_port(port)
    return proc


def start_serve(workdir: Path, config: Path, port: int, name: str) -> subprocess.Popen[bytes]:
    """``slipstream serve`` with ``config`` on 127.0.0.1:``port``."""
    serve = [sys.executable, "-m", "slipstream", "serve", "--config", str(config), "--port", str(port)]
    return start_process(serve, port, workdir, name)


def start_redis(workdir: Path, port: int) -> subprocess.Popen[bytes]:
    """A throwaway ``redis-server`` on 127.0.0.1:``port``: no persistence, files in ``workdir``."""
    args = ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    return start_process([*args, "--dir", str(workdir)], port, workdir, "redis")


def cpu_model() -> str:
    """The processor's name, for the machine line of a result file."""
    return next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if "model name" in line
        ),
        platform.processor(),
    )


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, script: Path, connections: int, duration: int) -> dict[str, float]:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{duration}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
        timeout=duration + 30,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    latency = {}
    for pct in ("50", "99"):
        m = re.search(rf"\s{pct}%\s+([\d.]+)(us|ms|s)", out)
        if m:
            value, unit = float(m.group(1)), m.group(2)
            latency[pct] = value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    return {
        "rps": rps,
        "requests": total,
        "non_2xx": int(errors.group(1)) if errors else 0,
        "p50_ms": latency.get("50", float("nan")),
        "p99_ms": latency.get("99", float("nan")),
    }


async def sdk_hit_latency(workdir: Path, upstream_port: int, calls: int = 20_000) -> dict[str, float]:
    from slipstream import Slipstream
    from slipstream.config import parse_config

    config = parse_config(
        f"""
cache:
  sqlite: {{path: {workdir}/sdk-cache.db}}
model_groups:
  bench:
    deployments:
      - {{provider: openai, model: bench-1, base_url: "http://127.0.0.1:{upstream_port}/v1"}}
"""
    )
    messages = [{"role": "user", "content": "Say something about foxes."}]
    async with Slipstream(config) as slip:
        first = await slip.chat(model="bench", messages=messages)
        assert first.cache == "miss"
        samples = []
        clock = time.perf_counter_ns
        for _ in range(calls):
            t0 = clock()
            reply = await slip.chat(model="bench", messages=messages)
            samples.append(clock() - t0)
        assert reply.cache == "hit"
    samples.sort()
    return {
        "p50_us": samples[len(samples) // 2] / 1000,
        "p99_us": samples[int(len(samples) * 0.99)] / 1000,
        "mean_us": statistics.fmean(samples) / 1000,
        "calls": calls,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per wrk run (default 10)")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "gateway.md")
    args = parser.parse_args()
    for tool in ("wrk", "nginx"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is required: apt-get install wrk nginx-light")

    with tempfile.TemporaryDirectory(prefix="slipstream-bench-") as tmp:
        workdir = Path(tmp)
        fixed, unique = workdir / "fixed.lua", workdir / "unique.lua"
        fixed.write_text(LUA_FIXED)
        unique.write_text(LUA_UNIQUE)
        upstream_port, gateway_port = free_port(), free_port()
        nginx = start_nginx(workdir, upstream_port)
        gateway = start_gateway(workdir, gateway_port, upstream_port)
        direct_url = f"http://127.0.0.1:{upstream_port}/v1/chat/completions"
        gateway_url = f"http://127.0.0.1:{gateway_port}/v1/chat/completions"
        rows: dict[str, dict[str, float]] = {}
        try:
            d = args.duration
            wrk(gateway_url, fixed, 1, 1)  # warm: connections, cache entry for the hit path
            rows["upstream direct, 16 conn"] = wrk(direct_url, fixed, 16, d)
            rows["upstream direct, 1 conn"] = wrk(direct_url, fixed, 1, d)
            for label, script in (("miss", unique), ("hit", fixed)):
                for conns in (16, 1):
                    cpu0 = cpu_seconds(gateway.pid)
                    result = wrk(gateway_url, script, conns, d)
                    result["cpu_ms_per_req"] = (
                        (cpu_seconds(gateway.pid) - cpu0) * 1000 / max(1, result["requests"])
                    )
                    rows[f"gateway {label} path, {conns} conn"] = result
            sdk = asyncio.run(sdk_hit_latency(workdir, upstream_port))
        finally:
            gateway.send_signal(signal.SIGTERM)
            gateway.wait(timeout=10)
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(timeout=10)

    write_report(args.out, rows, sdk, args.duration)


def write_report(out: Path, rows: dict[str, dict[str, float]], sdk: dict[str, float], duration: int) -> None:
    def version(pkg: str) -> str:
        try:
            return metadata.version(pkg)
        except metadata.PackageNotFoundError:
            return "-"

    wrk_version = subprocess.run(["wrk", "-v"], capture_output=True, text=True).stdout.split(" Copyright")[
        0:1
    ]
    nginx_version = subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip()
    direct16, direct1 = rows["upstream direct, 16 conn"], rows["upstream direct, 1 conn"]
    miss16, hit16 = rows["gateway miss path, 16 conn"], rows["gateway hit path, 16 conn"]
    miss1, hit1 = rows["gateway miss path, 1 conn"], rows["gateway hit path, 1 conn"]
    lines = [
        "# Gateway benchmark (foundation)",
        "",
        f"- date: {datetime.now(UTC).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- machine: {os.cpu_count()} cores, {cpu_model()}, Linux {platform.release()}",
        f"- versions: slipstream {version('slipstream')}, Python {platform.python_version()}, "
        f"uvicorn {version('uvicorn')}, uvloop {version('uvloop')}, aiohttp {version('aiohttp')}, "
        f"orjson {version('orjson')}, {nginx_version}, {' '.join(wrk_version)}",
        f"- command: `python bench/gateway_bench.py --duration {duration}` "
        f"(wrk -t1, {duration}s per row, all on loopback)",
        "",
        "| path | req/s | p50 ms | p99 ms | CPU ms/req (gateway) | non-2xx |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        cpu = f"{r['cpu_ms_per_req']:.3f}" if "cpu_ms_per_req" in r else "-"
        lines.append(
            f"| {name} | {r['rps']:,.0f} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | {cpu} | {int(r['non_2xx'])} |"
        )
    lines += [
        "",
        f"In-process SDK exact hit (`Slipstream.chat`, {sdk['calls']:,} calls): "
        f"p50 {sdk['p50_us']:.1f} µs, p99 {sdk['p99_us']:.1f} µs, mean {sdk['mean_us']:.1f} µs.",
        "",
        "## Against the targets (one run)",
        "",
        f"- miss path at 16 connections: {miss16['rps']:,.0f} req/s (target ≥ 3,000); "
        f"{miss16['rps'] / direct16['rps']:.1%} of the upstream direct",
        f"- miss path p50 at 1 connection: {miss1['p50_ms']:.3f} ms (target ≤ 0.8 ms); "
        f"overhead over direct {miss1['p50_ms'] - direct1['p50_ms']:.3f} ms",
        f"- hit path at 16 connections: {hit16['rps']:,.0f} req/s (target ≥ 6,000); "
        f"p50 at 1 connection {hit1['p50_ms']:.3f} ms",
        f"- SDK exact hit p50: {sdk['p50_us']:.1f} µs (target ≤ 30 µs)",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(json.dumps({"rows": rows, "sdk_hit": sdk}, indent=2))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
