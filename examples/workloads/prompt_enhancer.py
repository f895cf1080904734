"""(a) Prompt-enhancement backend: a stream of "enhance my prompt" requests, some repeated, and a provider outage.

The original: a backend behind a browser extension rewrites the user's prompt with a prompting technique
(chain-of-thought, few-shot, ...) through OpenAI. Users send the same prompt with the same technique again and
again, so it grew an LRU+TTL response cache keyed by the technique; OpenAI had outages, so it grew a Gemini
fallback.

The stream: each (prompt, technique) pair first appears once, and most pairs are asked again a few requests
later. Half-way through the stream the primary provider crashes: its sim process is killed just before a given
request is sent, in both runs.

- naive: requests one after another, a new OpenAI client each, no cache, the primary only. After the outage
  every request fails, after the SDK's own two retries.
- slipstream: four users at a time through one client; repeats are answered by the cache (or share the call
  already in flight), and the ``enhancer`` group fails over to the backup provider, then its breaker skips the
  dead primary. Config: ``prompt_enhancer.yaml``.

    python examples/workloads/prompt_enhancer.py [--quick] [--json out.json]
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
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
    finish,
    latency_model,
    mean_ms,
    median_ms,
    running,
    workload_config,
    workload_options,
)

from slipstream import Completion, Slipstream, SlipstreamError

PROMPTS = [
    "Write a cover letter for a junior data analyst job",
    "Explain quantum entanglement to a ten-year-old",
    "Summarise this quarter's sales figures for the board",
    "Plan a three-day trip to Lisbon on a budget",
    "Draft a polite reminder about an unpaid invoice",
    "Suggest names for a coffee shop that also sells books",
    "Write unit tests for a function that parses dates",
    "Compare PostgreSQL and SQLite for a small web app",
    "Create a weekly workout plan for a beginner",
    "Outline a talk about accessibility in web design",
]
TECHNIQUES = {
    "chain-of-thought": "Ask the model to reason step by step before answering.",
    "few-shot": "Add two short worked examples of the desired output.",
    "role": "Give the model an expert persona suited to the task.",
    "constraints": "State the format, length and tone the answer must have.",
}
MODEL = "gpt-4o-mini"
USERS = 4  # requests the slipstream backend serves at once (the naive one serves one at a time)
REPEAT_DISTANCE = 4  # a pair is asked again this many first-time requests after it first appeared


@dataclass(frozen=True, slots=True)
class Request:
    prompt: str
    technique: str
    repeat: bool  # asked before in this stream


@dataclass(slots=True)
class Answer:
    request: Request
    seconds: float
    ok: bool
    cache: str = "off"
    deployment: str | None = None


def request_stream(unique: int) -> list[Request]:
    """``unique`` (prompt, technique) pairs, most asked twice, a few popular ones three times; the stream ends
    with a pair never asked before, so a request after the outage always needs a provider."""
    pairs = [(PROMPTS[i % len(PROMPTS)], list(TECHNIQUES)[(i * 3) % len(TECHNIQUES)]) for i in range(unique)]
    stream: list[Request] = []
    for k, (prompt, technique) in enumerate(pairs[:-1]):
        stream.append(Request(prompt, technique, repeat=False))
        if k >= REPEAT_DISTANCE:
            stream.append(Request(*pairs[k - REPEAT_DISTANCE], repeat=True))
    stream += [Request(*pairs[k], repeat=True) for k in range(REPEAT_DISTANCE)]  # the popular ones, once more
    return [*stream, Request(*pairs[-1], repeat=False)]


def messages(request: Request) -> list[dict[str, str]]:
    # The technique is in the system prompt, so it is part of the cache key: no hand-made fingerprint.
    system = (
        "You rewrite a user's prompt so that a language model answers it better. "
        f"Technique: {request.technique}. {TECHNIQUES[request.technique]} Reply with the rewritten prompt only."
    )
    return [{"role": "system", "content": system}, {"role": "user", "content": request.prompt}]


# ---------------------------------------------------------------------------------------------- naive
async def enhance_naive(base_url: str, request: Request) -> str:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-sim", timeout=20) as client:
        reply = await client.chat.completions.create(model=MODEL, messages=messages(request))
    return reply.choices[0].message.content or ""


async def naive(stream: list[Request], primary: Sim, outage_at: int) -> tuple[list[Answer], float]:
    answers: list[Answer] = []
    with Stopwatch() as total:
        for n, request in enumerate(stream):
            if n == outage_at:
                await asyncio.to_thread(primary.crash)
            with Stopwatch() as sw:
                try:
                    await enhance_naive(primary.base_url, request)
                    ok = True
                except openai.OpenAIError:
                    ok = False
            answers.append(Answer(request, sw.seconds, ok))
    return answers, total.seconds


# ---------------------------------------------------------------------------------------------- slipstream
async def with_slipstream(
    stream: list[Request], primary: Sim, backup: Sim, outage_at: int, options: Options
) -> tuple[list[Answer], float, dict[str, Any]]:
    config = workload_config(
        "prompt_enhancer", options.workdir, PRIMARY_URL=primary.base_url, BACKUP_URL=backup.base_url
    )
    answers: list[Answer] = []
    queue: asyncio.Queue[tuple[int, Request]] = asyncio.Queue()
    for position, request in enumerate(stream):
        queue.put_nowait((position, request))
    outage = asyncio.Lock()

    async def crash_before(position: int) -> None:
        """The provider goes down before request ``outage_at`` is sent, as in the naive run: no later request
        is sent before it is down (requests already in flight when it dies fail over)."""
        if position < outage_at:
            return
        async with outage:
            if not primary.crashed:
                await asyncio.to_thread(primary.crash)

    async with Slipstream(config) as slip:

        async def user() -> None:
            while not queue.empty():
                position, request = queue.get_nowait()
                await crash_before(position)
                reply: Completion | None = None
                with Stopwatch() as sw:
                    try:
                        reply = await slip.chat(model="enhancer", messages=messages(request))
                    except SlipstreamError:
                        pass  # the user sees an error: counted below
                if reply is None:
                    answers.append(Answer(request, sw.seconds, ok=False))
                else:
                    answers.append(Answer(request, sw.seconds, True, reply.cache, reply.deployment))

        with Stopwatch() as total:
            await asyncio.gather(*(user() for _ in range(USERS)))
        return answers, total.seconds, slip.stats()


# ---------------------------------------------------------------------------------------------- report
def summary(name: str, answers: list[Answer], wall: float, upstream: UpstreamCounts, hits: int) -> RunResult:
    fresh = [a.seconds for a in answers if a.ok and not a.request.repeat]
    repeated = [a.seconds for a in answers if a.ok and a.request.repeat]
    return RunResult(
        name=name,
        wall_s=wall,
        app_calls=len(answers),
        upstream_calls=upstream.calls,
        upstream_429=upstream.rate_limited,
        cache_hits=hits,
        app_errors=sum(not a.ok for a in answers),
        details={
            "fresh_answers": len(fresh),
            "fresh_p50_ms": median_ms(fresh),
            "repeat_answers": len(repeated),
            "repeat_p50_ms": median_ms(repeated),
            "failed_mean_ms": mean_ms([a.seconds for a in answers if not a.ok]),
            "served_by_backup": sum(a.deployment == "backup" for a in answers),
        },
    )


async def main(options: Options) -> WorkloadReport:
    unique = 6 if options.quick else 20
    stream = request_stream(unique)
    # Half-way; in a smoke test near the end, as every naive request after it spends ~1.5 s failing.
    outage_at = len(stream) - 2 if options.quick else len(stream) // 2
    latency = latency_model(options.quick)
    primary = Sim("primary", latency, options.workdir)
    backup = Sim("backup", latency, options.workdir)

    with running(primary, backup):
        answers, wall = await naive(stream, primary, outage_at)
        naive_run = summary("naive", answers, wall, UpstreamCounts.of([primary, backup]), hits=0)

        await asyncio.to_thread(primary.start)  # the provider is back; a fresh pair of counters
        backup.reset()
        answers, wall, stats = await with_slipstream(stream, primary, backup, outage_at, options)
        hits = stats["cache"]["hits"] + (stats["coalescing"] or {}).get("coalesced", 0)
        slip_run = summary("slipstream", answers, wall, UpstreamCounts.of([primary, backup]), hits)
        slip_run.details["failovers"] = stats["routing"]["fallbacks"]

    n, d_naive, d_slip = len(stream), naive_run.details, slip_run.details
    explanation = (
        f"{n} requests, {unique} distinct; the primary crashes before request {outage_at + 1} is sent. "
        f"Naive: one request at a time, each a fresh ~{d_naive['fresh_p50_ms'] or 0:.0f} ms call (median), repeats "
        f"included; after the outage every request fails once the SDK's two retries are spent "
        f"({naive_run.app_errors} errors, ~{d_naive['failed_mean_ms'] or 0:.0f} ms each), so "
        f"{naive_run.wall_s:.0f} s ≈ {outage_at} calls x the call time + {n - outage_at} failures x their "
        f"retry backoff. Slipstream: only the {unique} distinct pairs need an "
        f"upstream call ({slip_run.upstream_calls} made), {USERS} users at a time, so ≈ {unique}/{USERS} x the "
        f"call time ≈ {slip_run.wall_s:.0f} s; a repeat is a cache hit (median {d_slip['repeat_p50_ms']} ms vs "
        f"{d_slip['fresh_p50_ms']} ms fresh; medians are over the answers each run got, so compare fresh with "
        f"repeat within a run), and after the outage {d_slip['served_by_backup']} answer(s) came from "
        f"the backup provider ({slip_run.app_errors} errors; {d_slip['failovers']} failovers mid-call)."
    )
    return WorkloadReport(
        workload="prompt_enhancer",
        title="(a) prompt-enhancement backend",
        quick=options.quick,
        command=command_line(),
        latency_model=latency,
        sizes={"requests": n, "distinct": unique, "outage_before_request": outage_at + 1, "users": USERS},
        runs=[naive_run, slip_run],
        explanation=explanation,
        tables={
            "response time and failover": [
                {
                    "run": r.name,
                    "fresh answers": r.details["fresh_answers"],
                    "fresh p50 ms": r.details["fresh_p50_ms"],
                    "repeats answered": r.details["repeat_answers"],
                    "repeat p50 ms": r.details["repeat_p50_ms"],
                    "failed": r.app_errors,
                    "time to fail, mean ms": r.details["failed_mean_ms"],
                    "served by backup": r.details["served_by_backup"],
                }
                for r in (naive_run, slip_run)
            ]
        },
    )


if __name__ == "__main__":
    with workload_options(__doc__) as opts:
        finish(asyncio.run(main(opts)), opts)
