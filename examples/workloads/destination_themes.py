"""(b) Destination-themes content pipeline: destinations x themes LLM calls per run, results into SQLite.

The original: a content pipeline asks an LLM to describe each destination for each travel theme, hundreds of
calls per run, and stores the results in SQLite. Runs repeat (a new theme, a fixed typo), so it grew a persistent
Redis cache, a worker pool with retries, and streaming of partial results with progress.

- naive: one call after another with a new OpenAI client each; every result is written as it arrives. It has no
  cache, so a second run costs what the first did (not run again here).
- slipstream: ``Slipstream.map`` runs the calls 16 at a time and yields results as they complete (written at
  once, with a progress line); the cache lives in SQLite, so a second run — a new process, here a new client
  whose memory tier starts empty — is answered from disk. Config: ``destination_themes.yaml``.

Replies are short (30-90 tokens: a two-sentence blurb), so one call takes ~1.5 s rather than ~2.5 s.

    python examples/workloads/destination_themes.py [--quick] [--json out.json]
"""

from __future__ import annotations

import asyncio
import sqlite3
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

from slipstream import Slipstream
from slipstream.batch import BatchStats

DESTINATIONS = [
    "Lisbon", "Kyoto", "Cape Town", "Reykjavik", "Oaxaca",
    "Tbilisi", "Hoi An", "Valparaíso", "Ljubljana", "Zanzibar",
]  # fmt: skip
THEMES = [
    "food", "nightlife", "hiking", "history", "architecture", "beaches",
    "family", "budget", "art", "festivals",
]  # fmt: skip
MODEL = "gpt-4o-mini"  # what the naive app asks the provider for; slipstream's model group is "themes"
CONCURRENCY = 16
SHORT_REPLIES = {"reply_tokens_min": 30, "reply_tokens_max": 90}


def request(destination: str, theme: str, model: str = MODEL) -> dict[str, Any]:
    prompt = (
        f"In two sentences, describe {destination} for a traveller whose main interest is {theme}. "
        "Name one specific place."
    )
    return {"model": model, "messages": [{"role": "user", "content": prompt}]}


class ResultsDb:
    """The pipeline's own output: one row per (destination, theme), written as each result arrives."""

    def __init__(self, path: Path) -> None:
        self.db = sqlite3.connect(path)
        self.db.execute("DROP TABLE IF EXISTS themes")
        self.db.execute(
            "CREATE TABLE themes (destination TEXT, theme TEXT, text TEXT, PRIMARY KEY (destination, theme))"
        )

    def save(self, destination: str, theme: str, text: str) -> None:
        with self.db:
            self.db.execute("INSERT OR REPLACE INTO themes VALUES (?, ?, ?)", (destination, theme, text))

    def count(self) -> int:
        return int(self.db.execute("SELECT count(*) FROM themes").fetchone()[0])

    def close(self) -> None:
        self.db.close()


@dataclass(slots=True)
class Progress:
    """Prints a line at each quarter of the run, and notes when the first and the middle results arrived."""

    total: int
    clock: Stopwatch
    first_s: float | None = None
    half_s: float | None = None
    marks: list[int] = field(default_factory=list)

    def update(self, done: int, hits: int, failed: int) -> None:
        elapsed = self.clock.elapsed()
        if self.first_s is None:
            self.first_s = elapsed
        if self.half_s is None and done * 2 >= self.total:
            self.half_s = elapsed
        quarter = done * 4 // self.total
        if quarter > len(self.marks):
            self.marks.append(done)
            console.print(
                f"  {done:>4}/{self.total} done in {elapsed:6.1f} s ({done / elapsed:5.1f}/s), "
                f"{hits} cache hits, {failed} failed"
            )


# ---------------------------------------------------------------------------------------------- naive
async def naive(pairs: list[tuple[str, str]], sim: Sim, db: ResultsDb) -> tuple[float, int, Progress]:
    errors = 0
    with Stopwatch() as total:
        progress = Progress(len(pairs), total)
        for done, (destination, theme) in enumerate(pairs, 1):
            try:
                async with openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-sim") as client:
                    reply = await client.chat.completions.create(**request(destination, theme))
                db.save(destination, theme, reply.choices[0].message.content or "")
            except openai.OpenAIError:
                errors += 1
            progress.update(done, 0, errors)
    return total.seconds, errors, progress


# ---------------------------------------------------------------------------------------------- slipstream
async def with_slipstream(
    pairs: list[tuple[str, str]], sim: Sim, db: ResultsDb, options: Options
) -> tuple[float, BatchStats, Progress]:
    """One run of the pipeline: a new client, so the only cache that survives from a previous run is on disk."""
    config = workload_config("destination_themes", options.workdir, LLM_URL=sim.base_url)
    requests = [{"custom_id": f"{d}|{t}", "body": request(d, t, "themes")} for d, t in pairs]
    last: list[BatchStats] = []
    async with Slipstream(config) as slip:
        with Stopwatch() as total:
            progress = Progress(len(pairs), total)

            def on_progress(stats: BatchStats) -> None:
                last[:] = [stats]
                progress.update(stats.done, stats.cache_hits + stats.coalesced, stats.failed)

            async for result in slip.map(requests, concurrency=CONCURRENCY, on_progress=on_progress):
                if result.completion is None:
                    console.print(f"  {result.custom_id}: {result.error}")
                    continue
                destination, theme = result.custom_id.split("|")
                db.save(destination, theme, result.completion.text)  # a partial result, kept at once
    return total.seconds, last[0], progress


# ---------------------------------------------------------------------------------------------- report
def run_result(name: str, wall: float, progress: Progress, upstream: UpstreamCounts, **kw: Any) -> RunResult:
    return RunResult(
        name=name,
        wall_s=wall,
        app_calls=progress.total,
        upstream_calls=upstream.calls,
        upstream_429=upstream.rate_limited,
        details={"first_result_s": progress.first_s, "half_results_s": progress.half_s},
        **kw,
    )


async def main(options: Options) -> WorkloadReport:
    destinations = DESTINATIONS[:3] if options.quick else DESTINATIONS
    themes = THEMES[:4] if options.quick else THEMES
    pairs = [(d, t) for d in destinations for t in themes]
    latency = latency_model(options.quick, **SHORT_REPLIES)
    sim = Sim("llm", latency, options.workdir)
    db = ResultsDb(options.workdir / "themes.db")
    runs: list[RunResult] = []
    with running(sim):
        console.print(f"naive: {len(pairs)} calls, one at a time")
        wall, errors, progress = await naive(pairs, sim, db)
        runs.append(run_result("naive", wall, progress, UpstreamCounts.of([sim]), app_errors=errors))
        rows_naive = db.count()

        for name in ("slipstream, 1st run", "slipstream, 2nd run"):
            sim.reset()
            console.print(f"{name}: {len(pairs)} calls, {CONCURRENCY} at a time")
            wall, stats, progress = await with_slipstream(pairs, sim, db, options)
            hits = stats.cache_hits + stats.coalesced
            upstream = UpstreamCounts.of([sim])
            runs.append(run_result(name, wall, progress, upstream, cache_hits=hits, app_errors=stats.failed))
            runs[-1].details["cost_usd"] = round(stats.cost, 6)
    rows = db.count()
    db.close()

    n = len(pairs)
    naive_run, cold, warm = runs
    per_call = naive_run.wall_s / n
    explanation = (
        f"{len(destinations)} destinations x {len(themes)} themes = {n} calls. Naive: sequential, "
        f"{naive_run.wall_s:.0f} s measured = {per_call:.2f} s per call; a second naive run would make the same "
        f"{n} calls again. Slipstream, 1st run: {CONCURRENCY} calls in flight, so ≈ "
        f"{max(n / CONCURRENCY, 1):.1f} x {per_call:.2f} s ≈ {max(n / CONCURRENCY, 1) * per_call:.1f} s "
        f"predicted, {cold.wall_s:.1f} s measured. 2nd run: a new client, {warm.cache_hits} of {n} answered "
        f"from the SQLite cache, {warm.upstream_calls} upstream calls, {warm.wall_s:.2f} s: what is left is the "
        f"SDK's own per-call cost. Partial results: the first arrived after "
        f"{cold.details['first_result_s']:.1f} s, half of them after {cold.details['half_results_s']:.1f} s "
        f"(naive: {naive_run.details['half_results_s']:.0f} s). Result rows written: {rows_naive} naive, {rows} "
        f"after the slipstream runs."
    )
    return WorkloadReport(
        workload="destination_themes",
        title="(b) destination-themes pipeline",
        quick=options.quick,
        command=command_line(),
        latency_model=latency,
        sizes={
            "destinations": len(destinations),
            "themes": len(themes),
            "calls": n,
            "concurrency": CONCURRENCY,
        },
        runs=runs,
        explanation=explanation,
        tables={
            "partial results": [
                {
                    "run": r.name,
                    "first result s": r.details["first_result_s"],
                    "half of results s": r.details["half_results_s"],
                    "all results s": round(r.wall_s, 2),
                }
                for r in runs
            ]
        },
    )


if __name__ == "__main__":
    with workload_options(__doc__) as opts:
        finish(asyncio.run(main(opts)), opts)
