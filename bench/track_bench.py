"""What ``slipstream.track`` costs on the SDK's exact-hit path (the cheapest call, so the overhead shows most).

    python bench/track_bench.py [--calls 250] [--rounds 60] [--no-request-log] [--out bench/results/track.md]

Variants, each a batch of ``--calls`` calls, alternated round by round and in reversed order every other round:

- untracked hit: ``await slip.chat(...)`` on a cached request, no block open.
- hit inside a nested block: the same call inside two long-lived blocks (per call: the context lookup when the
  call enters the pipeline, and adding its record to both spans at its end).
- block per hit: ``with track("op"): await slip.chat(...)`` (the above, plus entering and leaving a block and
  queueing its row for the request log's writer).
- block alone: ``with track("op"): pass`` (no call, so nothing to write: what tracking costs without a sink).

CPU time, not wall time, is the measure: the machine is shared, and CPU clocks do not count the time the
process waits for a core. "request path" is the event-loop thread's CPU (``time.thread_time``): what a caller
waits for. "with writer" is the whole process (``time.process_time``) with the request log flushed at the end
of each batch, so the writer thread's work on that batch's rows (requests, and blocks in the ``operations``
table) is included. Figures are medians over rounds of the per-call mean. OpenTelemetry is installed in the dev
environment but no tracer provider is set: the case the "costs nothing" rule is about.
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from slipstream import Slipstream, track
from slipstream.config import parse_config

MESSAGES = [{"role": "user", "content": "the same question every time"}]
Sample = tuple[float, float]  # (request-path CPU, process CPU) in µs per call


async def main(calls: int, rounds: int, *, request_log: bool = True) -> dict[str, Sample]:
    with tempfile.TemporaryDirectory() as tmp:
        config = parse_config(
            f"""
cache: {{sqlite: {{path: {Path(tmp) / "cache.db"}}}}}
observe: {{request_log: {{enabled: {str(request_log).lower()}, path: {Path(tmp) / "requests.db"}}}}}
model_groups:
  sim:
    deployments: [{{provider: sim, model: s, price: {{input: 1.0, output: 2.0}}}}]
""",
            environ={},
        )
        async with Slipstream(config) as slip:
            log = slip.pipeline.observer.request_log
            await slip.chat(model="sim", messages=MESSAGES)  # the one miss; every timed call is a hit

            async def untracked() -> None:
                for _ in range(calls):
                    await slip.chat(model="sim", messages=MESSAGES)

            async def in_block() -> None:
                with track("bench"), track("inner"):
                    for _ in range(calls):
                        await slip.chat(model="sim", messages=MESSAGES)

            async def block_per_call() -> None:
                for _ in range(calls):
                    with track("op"):
                        await slip.chat(model="sim", messages=MESSAGES)

            async def block_alone() -> None:
                for _ in range(calls):
                    with track("op"):
                        pass

            variants: dict[str, Callable[[], Awaitable[None]]] = {
                "untracked hit": untracked,
                "hit inside a nested block": in_block,
                "block per hit": block_per_call,
                "block alone (no call)": block_alone,
            }
            samples: dict[str, list[Sample]] = {name: [] for name in variants}
            await untracked()  # warm up
            order = list(variants.items())
            for round_ in range(rounds):
                for name, run in order if round_ % 2 == 0 else reversed(order):
                    if log is not None:
                        log.flush(timeout=30)  # start from an empty queue
                    thread, process = time.thread_time(), time.process_time()
                    await run()
                    thread = time.thread_time() - thread
                    if log is not None:
                        log.flush(timeout=30)
                    process = time.process_time() - process
                    samples[name].append((thread / calls * 1e6, process / calls * 1e6))
            assert log is None or log.dropped == 0
    return {
        name: (statistics.median(s[0] for s in values), statistics.median(s[1] for s in values))
        for name, values in samples.items()
    }


def render(results: dict[str, Sample], args: argparse.Namespace) -> str:
    base = results["untracked hit"]
    flags = f"--calls {args.calls} --rounds {args.rounds}" + (
        " --no-request-log" if args.no_request_log else ""
    )
    lines = [
        "# slipstream.track overhead on the SDK exact-hit path",
        "",
        f"`python bench/track_bench.py {flags}` on {platform.machine()}, Python {platform.python_version()}. "
        "CPU µs per call, medians over rounds (see the script's docstring).",
        "",
        "| variant | request path | vs untracked | with writer | vs untracked |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, (thread, process) in results.items():
        compare = name not in ("untracked hit", "block alone (no call)")
        d_thread = f"+{thread - base[0]:.1f}" if compare else ""
        d_process = f"+{process - base[1]:.1f}" if compare else ""
        lines.append(f"| {name} | {thread:.1f} | {d_thread} | {process:.1f} | {d_process} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=250, help="calls per batch")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument(
        "--no-request-log", action="store_true", help="metrics only: blocks are written nowhere"
    )
    args = parser.parse_args()
    text = render(asyncio.run(main(args.calls, args.rounds, request_log=not args.no_request_log)), args)
    print(text, end="")
    if args.out is not None:
        args.out.write_text(text)
