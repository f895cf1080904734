"""What each optional layer costs: the gateway's miss and hit paths with observability off, on, and on Redis.

    python bench/variants_bench.py [--duration 6] [--rounds 3] [--out bench/results/variants.md]

Same setup as `gateway_bench.py` (nginx fixed-reply upstream, wrk -t1, everything on 127.0.0.1; its helpers are
reused), with one gateway process per variant, all measured in one run so the rows compare:

- observability off: cache (memory + SQLite) and coalescing, no metrics, no request log;
- everything on (local): the same plus Prometheus metrics and the SQLite request log (the default config);
- Redis: everything on, with Redis (a `redis-server` this script starts on a free port) as the shared cache tier
  behind the memory tier, plus cross-instance coalescing and shared breaker state;
- Redis + global limit: the same plus a shared RPM/TPM limit (set far above the load, so it only costs its
  round trip) checked in Redis on every miss;
- hits from SQLite / from Redis: a one-entry memory tier and 1,000 warmed bodies, so every hit is read from the
  tier behind memory: the local and the shared tier's hit paths side by side.

"Everything on" includes three alert rules evaluated every 5 s.

Needs `wrk`, `nginx-light` and `redis-server` (Debian packages).
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
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from gateway_bench import (  # the sibling script's helpers
    LUA_FIXED,
    LUA_UNIQUE,
    cpu_model,
    cpu_seconds,
    free_port,
    start_nginx,
    start_redis,
    start_serve,
    wrk,
)

OBSERVE_OFF = "observe: {metrics: false, request_log: {enabled: false}}\n"
# "All of this on": alert rules evaluated in the background too (read from the request log every 5 s).
ALERTS = """alerts:
  interval: 5s
  rules:
    - {name: slow, metric: p95_latency_ms, op: ">", threshold: 5000, window: 5m}
    - {name: failing, metric: error_rate, op: ">", threshold: 0.5, window: 5m}
    - {name: breaker, metric: breaker_open, op: ">=", threshold: 1, window: 1m}
"""
# One entry in the memory tier: a hit has to come from the tier behind it (SQLite or Redis).
TINY_MEMORY = "#tiny-memory\n"
LIMITS = "#limits\n"
# Hits spread over 1,000 bodies, warmed first: with a one-entry memory tier each is read from the tier behind.
LUA_CYCLE = """
local counter = 0
request = function()
  counter = counter + 1
  local prompt = 'Say something about herons ' .. (counter % 1000)
  local body = '{"model":"bench","messages":[{"role":"user","content":"' .. prompt .. '"}]}'
  return wrk.format("POST", nil, {["Content-Type"] = "application/json"}, body)
end
"""
PATH_CELLS = (("miss", "unique", 16), ("hit", "fixed", 16), ("miss", "unique", 1))
TIER_CELLS = (("tier hit", "cycle", 16), ("tier hit", "cycle", 1))


def variants(redis_url: str) -> dict[str, str]:
    """Variant name → the config lines it adds (markers: `#limits`, `#tiny-memory`)."""
    redis = f"redis: {{url: '{redis_url}', timeout: 0.1}}\n"
    return {
        "observability off": OBSERVE_OFF,
        "everything on (local)": ALERTS,
        "everything on + Redis": ALERTS + redis,
        "everything on + Redis + global limit": ALERTS + redis + LIMITS,
        "hits from SQLite (memory tier: 1 entry)": TINY_MEMORY,
        "hits from Redis (memory tier: 1 entry)": redis + TINY_MEMORY,
    }


def start_gateway(
    workdir: Path, name: str, port: int, upstream_port: int, extra: str
) -> subprocess.Popen[bytes]:
    limits = "        limits: {rpm: 100000000, tpm: 1000000000, max_wait: 1}\n" if LIMITS in extra else ""
    memory = "  memory: {max_entries: 1}\n" if TINY_MEMORY in extra else ""
    observe = (
        "" if "observe:" in extra else f"observe:\n  request_log: {{path: {workdir}/{name}-requests.db}}\n"
    )
    config = workdir / f"{name}.yaml"
    config.write_text(
        extra.replace(LIMITS, "").replace(TINY_MEMORY, "")
        + observe
        + f"""cache:
  sqlite: {{path: {workdir}/{name}-cache.db}}
{memory}model_groups:
  bench:
    deployments:
      - provider: openai
        model: bench-1
        base_url: http://127.0.0.1:{upstream_port}/v1
{limits}"""
    )
    return start_serve(workdir, config, port, name)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=int, default=6, help="seconds per wrk run (default 6)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds; cells report the median")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "variants.md")
    parser.add_argument("--render", type=Path, help="rewrite the .md from a run's .json (no measuring)")
    args = parser.parse_args()
    if args.render is not None:
        data = json.loads(args.render.read_text())
        args.duration, args.rounds = data["duration"], data["rounds"]
        before, after = data["load"]
        write_report(
            args.out, data["rows"], data["samples"], args, (before,) * 3, (after,) * 3, date=data["date"]
        )
        return
    for tool in ("wrk", "nginx", "redis-server"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is required: apt-get install wrk nginx-light redis-server")
    samples: dict[str, dict[str, list[dict[str, float]]]] = {}
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="slipstream-variants-") as tmp:
        workdir = Path(tmp)
        scripts = {
            "fixed": workdir / "fixed.lua",
            "unique": workdir / "unique.lua",
            "cycle": workdir / "cycle.lua",
        }
        scripts["fixed"].write_text(LUA_FIXED)
        scripts["unique"].write_text(LUA_UNIQUE)
        scripts["cycle"].write_text(LUA_CYCLE)
        upstream_port, redis_port = free_port(), free_port()
        nginx = start_nginx(workdir, upstream_port)
        redis = start_redis(workdir, redis_port)
        gateways: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        try:
            for i, (name, extra) in enumerate(variants(f"redis://127.0.0.1:{redis_port}/0").items()):
                port = free_port()
                gateways[name] = (
                    start_gateway(workdir, f"v{i}", port, upstream_port, extra),
                    f"http://127.0.0.1:{port}/v1/chat/completions",
                )
            # Warm: connections, the fixed entry, the 1,000 cycled ones, and a few seconds of the miss path
            # (a fresh process runs its first seconds measurably slower).
            for name, (_, url) in gateways.items():
                wrk(url, scripts["fixed"], 1, 1)
                wrk(url, scripts["cycle"] if "memory tier" in name else scripts["unique"], 16, 3)
                samples[name] = {}
            time.sleep(2)  # the Redis tier writes behind
            names = list(gateways)
            for round_ in range(args.rounds):
                for name in names[round_ % len(names) :] + names[: round_ % len(names)]:  # rotate the order
                    gateway, url = gateways[name]
                    for label, script, conns in TIER_CELLS if "memory tier" in name else PATH_CELLS:
                        cpu0 = cpu_seconds(gateway.pid)
                        result = wrk(url, scripts[script], conns, args.duration)
                        result["cpu_ms_per_req"] = (
                            (cpu_seconds(gateway.pid) - cpu0) * 1000 / max(1, result["requests"])
                        )
                        samples[name].setdefault(f"{label} {conns}", []).append(result)
                        print(
                            f"round {round_ + 1} {name} {label} {conns}: {result['rps']:,.0f} req/s",
                            flush=True,
                        )
        finally:
            for gateway, _ in gateways.values():
                gateway.send_signal(signal.SIGTERM)
            for gateway, _ in gateways.values():
                gateway.wait(timeout=15)
            redis.terminate()
            redis.wait(timeout=10)
            nginx.send_signal(signal.SIGQUIT)
            nginx.wait(timeout=10)
    rows = {
        name: {cell: median_cell(runs) for cell, runs in cells.items()} for name, cells in samples.items()
    }
    write_report(args.out, rows, samples, args, load_before, os.getloadavg())


def median_cell(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(r[key] for r in runs) for key in runs[0]}


def write_report(
    out: Path,
    rows: dict[str, dict[str, dict[str, float]]],
    samples: dict[str, dict[str, list[dict[str, float]]]],
    args: argparse.Namespace,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    *,
    date: str | None = None,
) -> None:
    date = date or datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    redis_version = subprocess.run(
        ["redis-server", "--version"], capture_output=True, text=True
    ).stdout.split()[2]
    base = rows["observability off"]
    lines = [
        "# What each layer costs (one run)",
        "",
        f"- date: {date}",
        f"- machine: {os.cpu_count()} cores, {cpu_model()}, Linux {platform.release()}, "
        f"Python {platform.python_version()}; load average before {load_before[0]:.2f}, after {load_after[0]:.2f}",
        f"- command: `python bench/variants_bench.py --duration {args.duration} --rounds {args.rounds}` "
        f"(wrk -t1, {args.duration} s per cell, {args.rounds} rounds in rotating order, each cell the median; "
        f"nginx fixed-reply upstream, Redis {redis_version.removeprefix('v=')}, all on loopback)",
        "- every gateway is a separate `slipstream serve` process, all started before the first round",
        "",
        "## Miss and hit paths",
        "",
        "| variant | miss req/s (16 conn) | vs obs. off | miss p50 ms (1 conn) | miss CPU ms/req | "
        "hit req/s (16 conn) | hit CPU ms/req | non-2xx |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        if "miss 16" not in r:
            continue
        miss16, hit16, miss1 = r["miss 16"], r["hit 16"], r["miss 1"]
        ratio = miss16["rps"] / base["miss 16"]["rps"]
        errors = sum(int(x["non_2xx"]) for runs in samples[name].values() for x in runs)
        lines.append(
            f"| {name} | {miss16['rps']:,.0f} | {ratio:.1%} | {miss1['p50_ms']:.3f} | "
            f"{miss16['cpu_ms_per_req']:.3f} | {hit16['rps']:,.0f} | {hit16['cpu_ms_per_req']:.3f} | {errors} |"
        )
    lines += [
        "",
        "## Hits from the tier behind memory",
        "",
        "| variant | req/s (16 conn) | p50 ms (1 conn) | p99 ms (1 conn) | CPU ms/req | non-2xx |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows.items():
        if "tier hit 16" not in r:
            continue
        t16, t1 = r["tier hit 16"], r["tier hit 1"]
        errors = sum(int(x["non_2xx"]) for runs in samples[name].values() for x in runs)
        lines.append(
            f"| {name} | {t16['rps']:,.0f} | {t1['p50_ms']:.3f} | {t1['p99_ms']:.3f} | "
            f"{t16['cpu_ms_per_req']:.3f} | {errors} |"
        )
    on = rows["everything on (local)"]["miss 16"]["rps"] / base["miss 16"]["rps"]
    # Throughput drifts over a run on a shared machine; rounds put the two variants minutes apart at most, so
    # the ratio within each round is the steadier figure.
    per_round = [
        o["rps"] / f["rps"]
        for o, f in zip(
            samples["everything on (local)"]["miss 16"], samples["observability off"]["miss 16"], strict=True
        )
    ]
    lines += [
        "",
        f"Observability on (metrics, request log, alert rules) keeps {on:.1%} of the miss-path throughput with it "
        f"off, medians of cells; within each round: {', '.join(f'{r:.1%}' for r in per_round)} "
        f"(median {statistics.median(per_round):.1%}). Target: within 10%. Per-round figures are in the .json "
        "beside this file.",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    out.with_suffix(".json").write_text(
        json.dumps(
            {
                "duration": args.duration,
                "rounds": args.rounds,
                "date": date,
                "load": [load_before[0], load_after[0]],
                "rows": rows,
                "samples": samples,
            },
            indent=2,
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
