"""(c) Game NPC generator: N characters, each a profile then its dialogue, under a provider's rate limit.

The original (a Gradio app) generates a village of non-player characters: for each, a profile (backstory,
personality, goal), then lines of dialogue written from that profile. It grew one shared, lazily built client and
concurrent generation under a semaphore — and then met the provider's requests-per-minute limit.

The provider (``slipstream sim -o rpm_limit=30``) allows 30 requests in any 60 s and answers 429 beyond that,
with a ``Retry-After`` of when a slot frees up.

- naive: one call after another, a new OpenAI client each. At ~2.5 s a call it stays under the limit, slowly.
- naive, concurrent: every character at once (``asyncio.gather``), a new client per call: the burst goes past the
  limit; the OpenAI SDK's two retries wait out the ``Retry-After`` if they can, or the 429 reaches the game.
- slipstream: every character at once through one client; the deployment's limits (``npc_generator.yaml``:
  28 requests a minute, 8 in flight) hold the burst back before it reaches the provider, so calls wait their
  turn instead of failing.

    python examples/workloads/npc_generator.py [--quick] [--json out.json]
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
    console,
    finish,
    latency_model,
    running,
    workload_config,
    workload_options,
)

from slipstream import Slipstream, SlipstreamError

NAMES = [
    "Aldric",
    "Brina",
    "Cedric",
    "Dagna",
    "Elowen",
    "Fenn",
    "Greta",
    "Hale",
    "Isolde",
    "Joren",
    "Kira",
    "Lorcan",
]
ROLES = ["blacksmith", "innkeeper", "herbalist", "guard captain", "bard", "smuggler"]
VILLAGE = "a fishing village on a cold northern coast, where the lighthouse has gone dark"
MODEL = "gpt-4o-mini"  # the naive app's model; slipstream's model group is "npc"
PROVIDER_RPM = 30
CLIENT_RPM = 28  # a little under the provider's limit (see npc_generator.yaml)


@dataclass(frozen=True, slots=True)
class Character:
    name: str
    role: str


@dataclass(slots=True)
class Outcome:
    done: bool = False
    rate_limited: bool = False  # the 429 reached the application


def village(n: int) -> list[Character]:
    return [
        Character(f"{NAMES[i % len(NAMES)]} {i // len(NAMES) + 1}", ROLES[i % len(ROLES)]) for i in range(n)
    ]


def profile_request(c: Character, model: str) -> dict[str, Any]:
    prompt = (
        f"Create a non-player character for a role-playing game set in {VILLAGE}. Name: {c.name}. "
        f"Role: {c.role}. Give a short backstory, three personality traits and one secret goal."
    )
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.9}


def dialogue_request(c: Character, profile: str, model: str) -> dict[str, Any]:
    prompt = (
        f"Here is a character:\n{profile}\n\nWrite three lines {c.name} says when the player first walks in."
    )
    return {"model": model, "messages": [{"role": "user", "content": prompt}], "temperature": 0.9}


# ---------------------------------------------------------------------------------------------- naive
async def naive_call(base_url: str, body: dict[str, Any]) -> str:
    async with openai.AsyncOpenAI(base_url=base_url, api_key="sk-sim") as client:
        reply = await client.chat.completions.create(**body)
    return reply.choices[0].message.content or ""


async def naive_character(c: Character, base_url: str) -> Outcome:
    try:
        profile = await naive_call(base_url, profile_request(c, MODEL))
        await naive_call(base_url, dialogue_request(c, profile, MODEL))
    except openai.RateLimitError:
        return Outcome(rate_limited=True)
    except openai.OpenAIError:
        return Outcome()
    return Outcome(done=True)


async def naive(characters: list[Character], sim: Sim) -> tuple[list[Outcome], float]:
    with Stopwatch() as sw:
        outcomes = [await naive_character(c, sim.base_url) for c in characters]
    return outcomes, sw.seconds


async def naive_concurrent(characters: list[Character], sim: Sim) -> tuple[list[Outcome], float]:
    with Stopwatch() as sw:
        outcomes = await asyncio.gather(*(naive_character(c, sim.base_url) for c in characters))
    return list(outcomes), sw.seconds


# ---------------------------------------------------------------------------------------------- slipstream
async def with_slipstream(
    characters: list[Character], sim: Sim, options: Options
) -> tuple[list[Outcome], float]:
    config = workload_config(
        "npc_generator", options.workdir, LLM_URL=sim.base_url, CLIENT_RPM=str(options_rpm(options)[1])
    )
    async with Slipstream(config) as slip:

        async def generate(c: Character) -> Outcome:
            try:
                profile = await slip.chat(profile_request(c, "npc"))
                await slip.chat(dialogue_request(c, profile.text, "npc"))
            except SlipstreamError as exc:
                return Outcome(rate_limited=exc.status == 429)
            return Outcome(done=True)

        with Stopwatch() as sw:
            outcomes = await asyncio.gather(*(generate(c) for c in characters))
    return list(outcomes), sw.seconds


# ---------------------------------------------------------------------------------------------- report
def options_rpm(options: Options) -> tuple[int, int]:
    """(the provider's limit, slipstream's): in a smoke test, high enough never to be reached."""
    return (600, 560) if options.quick else (PROVIDER_RPM, CLIENT_RPM)


def run_result(name: str, outcomes: list[Outcome], wall: float, sim: Sim) -> RunResult:
    upstream = UpstreamCounts.of([sim])
    return RunResult(
        name=name,
        wall_s=wall,
        app_calls=2 * len(outcomes),
        upstream_calls=upstream.calls,
        upstream_429=upstream.rate_limited,
        app_errors=sum(not o.done for o in outcomes),
        details={
            "characters_done": sum(o.done for o in outcomes),
            "app_429s": sum(o.rate_limited for o in outcomes),
        },
    )


async def main(options: Options) -> WorkloadReport:
    n = 4 if options.quick else 20
    provider_rpm, client_rpm = options_rpm(options)
    characters = village(n)
    latency = latency_model(options.quick, rpm_limit=provider_rpm)
    sim = Sim("llm", latency, options.workdir)
    runs: list[RunResult] = []
    with running(sim):
        console.print(f"naive: {n} characters, {2 * n} calls one after another")
        outcomes, wall = await naive(characters, sim)
        runs.append(run_result("naive", outcomes, wall, sim))

        sim.reset()  # a fresh rate window
        console.print(f"naive, concurrent: {n} characters at once")
        outcomes, wall = await naive_concurrent(characters, sim)
        runs.append(run_result("naive, concurrent", outcomes, wall, sim))

        sim.reset()
        console.print(f"slipstream: {n} characters at once, {client_rpm} requests/min, 8 in flight")
        outcomes, wall = await with_slipstream(characters, sim, options)
        runs.append(run_result("slipstream", outcomes, wall, sim))

    naive_run, burst, slip = runs
    calls = 2 * n
    per_call = naive_run.wall_s / calls
    if calls > provider_rpm:
        floor = (
            f"Any client that goes faster is bounded by the limit: {provider_rpm} calls fit in the first minute "
            f"and the other {calls - provider_rpm} only as that minute's calls age out, so ≈ 60 s + one call "
            f"(~{per_call:.1f} s) is the floor whatever the concurrency."
        )
    else:
        floor = f"All {calls} calls fit in one minute's limit, so concurrency alone sets the pace."
    explanation = (
        f"{n} characters x 2 calls = {calls} calls against a provider allowing {provider_rpm} a minute. Naive: "
        f"sequential, {per_call:.2f} s a call ≈ {60 / per_call:.0f} requests/min, under the limit: "
        f"{calls} x {per_call:.2f} s = {naive_run.wall_s:.0f} s. {floor} "
        f"Naive, concurrent: the burst drew {burst.upstream_429} upstream 429s; "
        f"{burst.details['app_429s']} reached the app (the OpenAI SDK's retries waited out the Retry-After), "
        f"{burst.details['characters_done']}/{n} characters done in {burst.wall_s:.0f} s. Slipstream: the "
        f"deployment's limiter ({client_rpm}/min) held the excess back before it left the process: "
        f"{slip.upstream_429} upstream 429s, {slip.details['app_429s']} seen by the app, "
        f"{slip.details['characters_done']}/{n} characters in {slip.wall_s:.0f} s."
    )
    return WorkloadReport(
        workload="npc_generator",
        title="(c) NPC generator",
        quick=options.quick,
        command=command_line(),
        latency_model=latency,
        sizes={"characters": n, "calls": calls, "provider_rpm": provider_rpm, "client_rpm": client_rpm},
        runs=runs,
        explanation=explanation,
        tables={
            "characters and rate limits": [
                {
                    "run": r.name,
                    "characters done": r.details["characters_done"],
                    "upstream 429s": r.upstream_429,
                    "429s seen by the app": r.details["app_429s"],
                    "wall s": round(r.wall_s, 2),
                }
                for r in runs
            ]
        },
    )


if __name__ == "__main__":
    with workload_options(__doc__) as opts:
        finish(asyncio.run(main(opts)), opts)
