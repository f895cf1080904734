"""(d) Agentic code optimizer: cycles of "the LLM proposes a change" and validators that check it in parallel.

The original: an agent loop over a small code base. Each cycle it summarises every module for context, asks the
LLM for one optimisation of the target module, runs the validators (tests, lint, a benchmark) and keeps the
change if they pass. It grew an LLM cache on disk (unchanged modules were summarised again every cycle),
parallel validation, and per-cycle metrics dashboards.

Each cycle here: summarise the 4 modules (4 calls), propose a change to one of them (1 call), run 3 validators
(real subprocesses: ``py_compile`` on the file, then a sleep standing for the tool's run time), apply the change.
Cycles are sequential — each works on the code the previous one left — so only the work inside a cycle can
overlap.

- naive: the 5 calls one after another (a new OpenAI client each), then the validators one after another.
- slipstream: the summaries concurrently, and those of unchanged modules from the cache; validators in
  parallel (``asyncio.gather`` over subprocesses); ``slipstream.track("cycle")`` with nested ``track("context")``,
  ``track("propose")`` and ``track("validate")`` gives the per-cycle table. Config: ``code_optimizer.yaml``.

    python examples/workloads/code_optimizer.py [--quick] [--json out.json]
"""

from __future__ import annotations

import asyncio
import hashlib
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import openai
from common import (
    Options,
    RunResult,
    Sim,
    Stopwatch,
    UpstreamCounts,
    WorkloadReport,
    command_line,
    console,
    finish,
    latency_model,
    running,
    workload_config,
    workload_options,
)

import slipstream
from slipstream import Slipstream

MODULES = {
    "parser.py": "def parse(lines):\n    return [line.split(',') for line in lines if line.strip()]\n",
    "scoring.py": "def score(rows):\n    return sum(len(r) for r in rows) / max(len(rows), 1)\n",
    "report.py": "def render(score):\n    return 'score: ' + str(round(score, 2))\n",
    "cache.py": (
        "_memo = {}\n\ndef memo(key, fn):\n    if key not in _memo:\n        _memo[key] = fn()\n    return _memo[key]\n"
    ),
}
# name -> seconds the tool runs (the sleep stands for a test suite, a linter, a benchmark)
VALIDATORS = {"tests": 1.2, "lint": 0.4, "benchmark": 0.8}
VALIDATOR_SCRIPT = (
    "import py_compile, sys, time; "
    "py_compile.compile(sys.argv[1], doraise=True); time.sleep(float(sys.argv[2]))"
)
MODEL = "gpt-4o-mini"  # the naive app's model; slipstream's model group is "optimizer"


@dataclass(slots=True)
class Codebase:
    """The modules on disk (validators read them), changed by each accepted proposal."""

    root: Path
    files: dict[str, str] = field(default_factory=lambda: dict(MODULES))

    def write(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for name, text in self.files.items():
            (self.root / name).write_text(text)

    def apply(self, name: str, proposal: str) -> None:
        tag = hashlib.sha256(proposal.encode()).hexdigest()[:12]
        self.files[name] += f"# optimisation {tag} applied\n"
        (self.root / name).write_text(self.files[name])


def summary_request(name: str, text: str, model: str) -> dict[str, Any]:
    prompt = f"Summarise what the module {name} does and where it spends time.\n```python\n{text}```"
    return {"model": model, "messages": [{"role": "user", "content": prompt}]}


def proposal_request(target: str, summaries: list[str], text: str, model: str) -> dict[str, Any]:
    context = "\n".join(f"- {s[:200]}" for s in summaries)
    prompt = (
        f"Modules of the code base:\n{context}\n\nPropose one change to {target} that makes it faster without "
        f"changing its behaviour. Reply with a unified diff.\n```python\n{text}```"
    )
    return {"model": model, "messages": [{"role": "user", "content": prompt}]}


async def validate(name: str, path: Path, seconds: float) -> bool:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", VALIDATOR_SCRIPT, str(path), str(seconds)
    )
    return await proc.wait() == 0


@dataclass(slots=True)
class Cycle:
    """One cycle's measurements (what track() gives for the slipstream run; counted by hand for the naive)."""

    seconds: float = 0.0
    context_s: float = 0.0
    propose_s: float = 0.0
    validate_s: float = 0.0
    calls: int = 0
    hits: int = 0
    tokens: int = 0
    cost_usd: float | None = None
    accepted: bool = False


# ---------------------------------------------------------------------------------------------- naive
async def naive(code: Codebase, cycles: int, sim: Sim, scale: float) -> tuple[list[Cycle], float]:
    tokens = 0

    async def ask(body: dict[str, Any]) -> str:
        nonlocal tokens
        async with openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-sim") as client:
            reply = await client.chat.completions.create(**body)
        tokens += reply.usage.total_tokens if reply.usage else 0
        return reply.choices[0].message.content or ""

    results: list[Cycle] = []
    with Stopwatch() as total:
        for i in range(cycles):
            cycle, tokens = Cycle(), 0
            with Stopwatch() as cycle_sw:
                target = list(code.files)[i % len(code.files)]
                with Stopwatch() as sw:
                    summaries = [await ask(summary_request(n, t, MODEL)) for n, t in code.files.items()]
                cycle.context_s = sw.seconds
                with Stopwatch() as sw:
                    proposal = await ask(proposal_request(target, summaries, code.files[target], MODEL))
                cycle.propose_s = sw.seconds
                with Stopwatch() as sw:
                    path = code.root / target
                    passed = [await validate(v, path, s * scale) for v, s in VALIDATORS.items()]
                cycle.validate_s = sw.seconds
                if all(passed):
                    code.apply(target, proposal)
                    cycle.accepted = True
            cycle.seconds, cycle.calls, cycle.tokens = cycle_sw.seconds, len(code.files) + 1, tokens
            results.append(cycle)
    return results, total.seconds


# ---------------------------------------------------------------------------------------------- slipstream
async def with_slipstream(
    code: Codebase, cycles: int, sim: Sim, scale: float, options: Options
) -> tuple[list[Cycle], float]:
    config = workload_config("code_optimizer", options.workdir, LLM_URL=sim.base_url)
    results: list[Cycle] = []
    async with Slipstream(config) as slip:  # opened outside the tracked blocks (see slipstream.track)

        async def ask(body: dict[str, Any]) -> str:
            return (await slip.chat(body)).text

        with Stopwatch() as total:
            for i in range(cycles):
                target = list(code.files)[i % len(code.files)]
                async with slipstream.track("cycle") as cycle_span:
                    async with slipstream.track("context") as context:
                        summaries = await asyncio.gather(
                            *(ask(summary_request(n, t, "optimizer")) for n, t in code.files.items())
                        )
                    async with slipstream.track("propose") as propose:
                        proposal = await ask(
                            proposal_request(target, summaries, code.files[target], "optimizer")
                        )
                    async with slipstream.track("validate") as validation:
                        path = code.root / target
                        passed = await asyncio.gather(
                            *(validate(v, path, s * scale) for v, s in VALIDATORS.items())
                        )
                    if all(passed):
                        code.apply(target, proposal)
                results.append(
                    Cycle(
                        seconds=(cycle_span.duration_ms or 0) / 1000,
                        context_s=(context.duration_ms or 0) / 1000,
                        propose_s=(propose.duration_ms or 0) / 1000,
                        validate_s=(validation.duration_ms or 0) / 1000,
                        calls=cycle_span.calls,
                        hits=cycle_span.hits,
                        tokens=cycle_span.prompt_tokens + cycle_span.completion_tokens,
                        cost_usd=cycle_span.cost_usd,
                        accepted=all(passed),
                    )
                )
    return results, total.seconds


# ---------------------------------------------------------------------------------------------- report
def cycle_rows(naive_cycles: list[Cycle], slip_cycles: list[Cycle]) -> list[dict[str, Any]]:
    return [
        {
            "cycle": str(i + 1),
            "naive s": round(n.seconds, 2),
            "slipstream s": round(s.seconds, 2),
            "context s": round(s.context_s, 2),
            "propose s": round(s.propose_s, 2),
            "validate s": round(s.validate_s, 2),
            "calls": s.calls,
            "hits": s.hits,
            "tokens": s.tokens,
            "cost $": f"{s.cost_usd or 0.0:.6f}",
            "accepted": "yes" if s.accepted else "no",
        }
        for i, (n, s) in enumerate(zip(naive_cycles, slip_cycles, strict=True))
    ]


def run_result(name: str, cycles: list[Cycle], wall: float, sim: Sim) -> RunResult:
    upstream = UpstreamCounts.of([sim])
    return RunResult(
        name=name,
        wall_s=wall,
        app_calls=sum(c.calls for c in cycles),
        upstream_calls=upstream.calls,
        upstream_429=upstream.rate_limited,
        cache_hits=sum(c.hits for c in cycles),
        details={
            "validate_s": round(sum(c.validate_s for c in cycles), 2),
            "context_s": round(sum(c.context_s for c in cycles), 2),
            "propose_s": round(sum(c.propose_s for c in cycles), 2),
        },
    )


async def main(options: Options) -> WorkloadReport:
    cycles = 2 if options.quick else 5
    scale = 0.05 if options.quick else 1.0  # validator run times
    latency = latency_model(options.quick)
    sim = Sim("llm", latency, options.workdir)
    with running(sim):
        console.print(f"naive: {cycles} cycles")
        code = Codebase(options.workdir / "naive-code")
        code.write()
        naive_cycles, naive_wall = await naive(code, cycles, sim, scale)
        naive_run = run_result("naive", naive_cycles, naive_wall, sim)

        sim.reset()
        console.print(f"slipstream: {cycles} cycles")
        code = Codebase(options.workdir / "slipstream-code")
        code.write()
        slip_cycles, slip_wall = await with_slipstream(code, cycles, sim, scale, options)
        slip_run = run_result("slipstream", slip_cycles, slip_wall, sim)

    per_call = naive_run.details["propose_s"] / cycles
    sequential_validators = sum(VALIDATORS.values()) * scale
    explanation = (
        f"{cycles} cycles of {len(MODULES)} summaries + 1 proposal + {len(VALIDATORS)} validators "
        f"({', '.join(f'{k} {v * scale:g} s' for k, v in VALIDATORS.items())}). Cycles are sequential. Naive: "
        f"{len(MODULES) + 1} calls x {per_call:.2f} s (the measured mean proposal) + {sequential_validators:.1f} s "
        f"of validators ≈ {(len(MODULES) + 1) * per_call + sequential_validators:.1f} s a cycle, "
        f"{naive_run.wall_s:.0f} s in all. Slipstream: the summaries overlap (the first cycle waits for the "
        f"slowest of {len(MODULES)}) and later cycles re-summarise only the module the previous cycle changed "
        f"({slip_run.cache_hits} of {slip_run.app_calls} calls were cache hits); the validators overlap, so a "
        f"cycle ≈ 2 calls + the longest validator ({max(VALIDATORS.values()) * scale:g} s): "
        f"{slip_run.wall_s:.0f} s in all, {slip_run.upstream_calls} upstream calls instead of "
        f"{naive_run.upstream_calls}."
    )
    return WorkloadReport(
        workload="code_optimizer",
        title="(d) code-optimizer loop",
        quick=options.quick,
        command=command_line(),
        latency_model=latency,
        sizes={
            "cycles": cycles,
            "modules": len(MODULES),
            "validators": ", ".join(f"{k} {v * scale:g} s" for k, v in VALIDATORS.items()),
        },
        runs=[naive_run, slip_run],
        explanation=explanation,
        tables={"per cycle (slipstream.track)": cycle_rows(naive_cycles, slip_cycles)},
    )


if __name__ == "__main__":
    with workload_options(__doc__) as opts:
        finish(asyncio.run(main(opts)), opts)
