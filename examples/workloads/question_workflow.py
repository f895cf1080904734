"""(e) Adaptive question workflow (RAG): async nodes retrieve → generate questions → grade, with session state.

The original: a tutoring workflow. For each student session it retrieves context (several vector searches),
generates a batch of questions at rising difficulty, grades the student's answers, and keeps the session in Redis
with a TTL. It grew parallel vector searches, an LRU embedding cache, prompt-cache-friendly prompts (two
students on the same topic get the same question prompts), and per-node metrics.

Each session here: ``retrieve`` embeds 3 sub-queries and searches a small in-memory index (cosine over the
sim's embeddings), ``generate`` asks for 4 questions (easy → challenge), ``grade`` grades the student's 4
answers. Two students share each topic.

- naive: sessions one after another, every call one after another with a new OpenAI client; the session state
  is a dict (no TTL, gone with the process).
- slipstream: sessions concurrently, one client; the sub-queries in parallel, the questions as one
  ``Slipstream.map`` batch, the grades in parallel; a second student on a topic gets the embeddings and the
  questions from the cache (or from the identical call in flight). Session state lives in ``slipstream.state``
  (SQLite, 30-minute TTL from ``question_workflow.yaml``; versioned ``update``), and
  ``slipstream.track`` per node gives the per-node table.

    python examples/workloads/question_workflow.py [--quick] [--json out.json]
"""

from __future__ import annotations

import asyncio
import math
from collections import defaultdict
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

import slipstream
from slipstream import Slipstream, state
from slipstream.observe.track import Span

CORPUS = [
    "Photosynthesis turns light energy into chemical energy stored in glucose.",
    "Chlorophyll in the chloroplasts absorbs mostly red and blue light.",
    "The light-dependent reactions split water and release oxygen.",
    "The Calvin cycle fixes carbon dioxide into three-carbon sugars.",
    "A common misconception is that plants get their mass from the soil.",
    "Stomata open and close to balance carbon dioxide intake and water loss.",
    "The French Revolution began in 1789 with the meeting of the Estates-General.",
    "The storming of the Bastille became a symbol of the end of absolute monarchy.",
    "The Declaration of the Rights of Man set out liberty and equality before the law.",
    "The Reign of Terror saw thousands executed under the Committee of Public Safety.",
    "A common misconception is that the revolution was led only by the poor.",
    "Napoleon's coup of 1799 ended the revolutionary government of the Directory.",
]
SUBQUERIES = ["key concepts of {topic}", "common misconceptions about {topic}", "exam questions on {topic}"]
LEVELS = ["easy", "medium", "hard", "challenge"]
NODES = ("retrieve", "generate", "grade")
CHAT_MODEL, EMBED_MODEL = (
    "gpt-4o-mini",
    "text-embedding-3-small",
)  # the naive app's; slipstream's groups differ
TOP_K = 2


@dataclass(frozen=True, slots=True)
class Session:
    student: str
    topic: str

    @property
    def key(self) -> str:
        return f"session:{self.student}"


def sessions(quick: bool) -> list[Session]:
    if quick:
        return [Session("ana", "photosynthesis"), Session("ben", "photosynthesis")]
    return [
        Session("ana", "photosynthesis"),
        Session("ben", "the French Revolution"),
        Session("chloe", "photosynthesis"),
        Session("dev", "the French Revolution"),
    ]


class Index:
    """A tiny vector index: the corpus embedded once, searched by cosine similarity."""

    def __init__(self, vectors: list[list[float]]) -> None:
        self.vectors = [_unit(v) for v in vectors]

    def search(self, query: list[float], k: int = TOP_K) -> list[str]:
        q = _unit(query)
        scores = [sum(a * b for a, b in zip(q, v, strict=True)) for v in self.vectors]
        best = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)[:k]
        return [CORPUS[i] for i in best]


def _unit(v: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]


def question_request(topic: str, context: list[str], level: str, model: str) -> dict[str, Any]:
    # The stable part (instructions, context) first and the variable part last: prompt-cache friendly, and the
    # same for every student on the topic, so the exact cache answers the second one.
    facts = "\n".join(f"- {c}" for c in context)
    prompt = (
        f"You write quiz questions for students.\nTopic: {topic}\nFacts:\n{facts}\n\n"
        f"Write one {level} question that checks understanding, not recall."
    )
    return {"model": model, "messages": [{"role": "user", "content": prompt}]}


def grade_request(question: str, answer: str, model: str) -> dict[str, Any]:
    prompt = f"Question: {question[:300]}\nStudent answer: {answer}\nGrade the answer from 0 to 5 and explain briefly."
    return {"model": model, "messages": [{"role": "user", "content": prompt}]}


def student_answer(session: Session, level: str) -> str:
    return f"{session.student.title()}'s {level} answer: it has to do with {session.topic}, I think."


@dataclass(slots=True)
class NodeStats:
    seconds: float = 0.0
    calls: int = 0
    hits: int = 0
    tokens: int = 0
    cost_usd: float | None = None


# ---------------------------------------------------------------------------------------------- naive
async def naive(work: list[Session], sim: Sim) -> tuple[float, dict[str, NodeStats], int]:
    store: dict[str, dict[str, Any]] = {}  # the session state
    nodes = {name: NodeStats() for name in NODES}

    async def embed(texts: list[str], node: NodeStats) -> list[list[float]]:
        async with openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-sim") as client:
            reply = await client.embeddings.create(model=EMBED_MODEL, input=texts)
        node.calls += 1
        node.tokens += reply.usage.total_tokens
        return [item.embedding for item in reply.data]

    async def chat(body: dict[str, Any], node: NodeStats) -> str:
        async with openai.AsyncOpenAI(base_url=sim.base_url, api_key="sk-sim") as client:
            reply = await client.chat.completions.create(**body)
        node.calls += 1
        node.tokens += reply.usage.total_tokens if reply.usage else 0
        return reply.choices[0].message.content or ""

    with Stopwatch() as total:
        index = Index(await embed(CORPUS, NodeStats()))
        for s in work:
            with Stopwatch() as sw:
                context: list[str] = []
                for q in SUBQUERIES:
                    context += index.search((await embed([q.format(topic=s.topic)], nodes["retrieve"]))[0])
            nodes["retrieve"].seconds += sw.seconds
            store[s.key] = {"topic": s.topic, "context": context}
            with Stopwatch() as sw:
                questions = [
                    await chat(question_request(s.topic, context, level, CHAT_MODEL), nodes["generate"])
                    for level in LEVELS
                ]
            nodes["generate"].seconds += sw.seconds
            store[s.key]["questions"] = questions
            with Stopwatch() as sw:
                grades = [
                    await chat(grade_request(q, student_answer(s, level), CHAT_MODEL), nodes["grade"])
                    for q, level in zip(questions, LEVELS, strict=True)
                ]
            nodes["grade"].seconds += sw.seconds
            store[s.key]["grades"] = grades
    complete = sum(len(v.get("grades", ())) == len(LEVELS) for v in store.values())
    return total.seconds, nodes, complete


# ---------------------------------------------------------------------------------------------- slipstream
async def with_slipstream(
    work: list[Session], sim: Sim, options: Options
) -> tuple[float, dict[str, NodeStats], int, int, int]:
    config = workload_config("question_workflow", options.workdir, LLM_URL=sim.base_url)
    spans: dict[str, list[Span]] = defaultdict(list)
    store = state.configure(config)  # the module-level `state.*` functions now use the SQLite file
    assert store is not None
    try:
        async with Slipstream(config) as slip:

            async def embed(texts: list[str]) -> list[list[float]]:
                reply = await slip.embed(model="embed", input=texts)
                return [item["embedding"] for item in reply["data"]]

            async def session(s: Session, index: Index) -> None:
                async with slipstream.track("session"):
                    async with slipstream.track("retrieve") as span:
                        found = await asyncio.gather(*(embed([q.format(topic=s.topic)]) for q in SUBQUERIES))
                        context = [doc for vectors in found for doc in index.search(vectors[0])]
                    spans["retrieve"].append(span)
                    await state.set(s.key, {"topic": s.topic, "context": context})  # TTL: the config's

                    async with slipstream.track("generate") as span:
                        batch = [question_request(s.topic, context, level, "tutor") for level in LEVELS]
                        results = sorted(
                            [r async for r in slip.map(batch, concurrency=len(batch))], key=lambda r: r.index
                        )
                        questions = [r.completion.text if r.completion else "" for r in results]
                    spans["generate"].append(span)
                    await state.update(s.key, lambda v: {**v, "questions": questions})

                    async with slipstream.track("grade") as span:
                        replies = await asyncio.gather(
                            *(
                                slip.chat(grade_request(q, student_answer(s, level), "tutor"))
                                for q, level in zip(questions, LEVELS, strict=True)
                            )
                        )
                    spans["grade"].append(span)
                    await state.update(s.key, lambda v: {**v, "grades": [r.text for r in replies]})

            with Stopwatch() as total:
                index = Index(await embed(CORPUS))
                await asyncio.gather(*(session(s, index) for s in work))
            stats = slip.stats()
        stored = [await state.get(s.key) for s in work]
        complete = sum(e is not None and len(e.value.get("grades", ())) == len(LEVELS) for e in stored)
        in_state = sum(1 for e in stored if e is not None)
        hits = stats["cache"]["hits"] + (stats["coalescing"] or {}).get("coalesced", 0)
    finally:
        state.configure(None)
        await store.aclose()
    nodes = {
        name: NodeStats(
            seconds=sum((s.duration_ms or 0) / 1000 for s in spans[name]),
            calls=sum(s.calls for s in spans[name]),
            hits=sum(s.hits for s in spans[name]),
            tokens=sum(s.prompt_tokens + s.completion_tokens for s in spans[name]),
            cost_usd=sum(s.cost_usd for s in spans[name]),
        )
        for name in NODES
    }
    return total.seconds, nodes, complete, in_state, hits


# ---------------------------------------------------------------------------------------------- report
def run_result(
    name: str, wall: float, nodes: dict[str, NodeStats], sim: Sim, complete: int, n: int, hits: int = 0
) -> RunResult:
    upstream = UpstreamCounts.of([sim])
    return RunResult(
        name=name,
        wall_s=wall,
        app_calls=1 + sum(node.calls for node in nodes.values()),  # + the index's one embeddings call
        upstream_calls=upstream.calls,
        upstream_429=upstream.rate_limited,
        cache_hits=hits,
        app_errors=n - complete,  # sessions that did not end with every answer graded
        details={"sessions_complete": complete},
    )


def node_rows(runs: dict[str, dict[str, NodeStats]], sessions_n: int) -> list[dict[str, Any]]:
    return [
        {
            "node": node,
            "run": run,
            "calls": stats.calls,
            "cache hits": stats.hits,  # exact hits; a call that joined an identical one in flight is not one
            "tokens": stats.tokens,
            "cost $": "—" if stats.cost_usd is None else f"{stats.cost_usd:.6f}",
            "mean s per session": round(stats.seconds / sessions_n, 2),
        }
        for node in NODES
        for run, nodes in runs.items()
        for stats in [nodes[node]]
    ]


async def main(options: Options) -> WorkloadReport:
    work = sessions(options.quick)
    latency = latency_model(options.quick)
    sim = Sim("llm", latency, options.workdir)
    with running(sim):
        console.print(f"naive: {len(work)} sessions, one after another")
        wall, naive_nodes, complete = await naive(work, sim)
        naive_run = run_result("naive", wall, naive_nodes, sim, complete, len(work))

        sim.reset()
        console.print(f"slipstream: {len(work)} sessions at once")
        wall, slip_nodes, complete, stored, hits = await with_slipstream(work, sim, options)
        slip_run = run_result("slipstream", wall, slip_nodes, sim, complete, len(work), hits)
        slip_run.details["sessions_in_state"] = stored

    n = len(work)
    topics = len({s.topic for s in work})
    per_call = naive_nodes["generate"].seconds / max(naive_nodes["generate"].calls, 1)
    per_embed = naive_nodes["retrieve"].seconds / max(naive_nodes["retrieve"].calls, 1)
    explanation = (
        f"{n} sessions on {topics} topic(s), each {len(SUBQUERIES)} embeddings + {len(LEVELS)} question calls + "
        f"{len(LEVELS)} grading calls. Naive: all sequential; a chat call took {per_call:.2f} s and an embedding "
        f"{per_embed:.2f} s (TTFT only), so ≈ {n} x ({len(SUBQUERIES)} x {per_embed:.2f} + {2 * len(LEVELS)} x "
        f"{per_call:.2f}) ≈ {n * (len(SUBQUERIES) * per_embed + 2 * len(LEVELS) * per_call):.0f} s; measured "
        f"{naive_run.wall_s:.0f} s. Slipstream: sessions run at once and each node's calls overlap, so the "
        f"workflow takes about one embedding + the slowest of {len(LEVELS)} question calls + the slowest of "
        f"{len(LEVELS)} grading calls: {slip_run.wall_s:.1f} s. The second student on a topic needs no upstream "
        f"call for its embeddings and questions: {slip_run.cache_hits} calls were answered without one, "
        f"{slip_run.upstream_calls} upstream calls instead of {naive_run.upstream_calls}. As the sessions run at "
        f"once, those calls joined the first student's identical calls in flight rather than hitting the cache, "
        f"so the per-node table (whose hits are cache hits only) shows none there. "
        f"{slip_run.details['sessions_complete']}/{n} sessions complete in slipstream.state."
    )
    return WorkloadReport(
        workload="question_workflow",
        title="(e) adaptive question workflow",
        quick=options.quick,
        command=command_line(),
        latency_model=latency,
        sizes={"sessions": n, "topics": topics, "subqueries": len(SUBQUERIES), "questions": len(LEVELS)},
        runs=[naive_run, slip_run],
        explanation=explanation,
        tables={
            "per node (slipstream.track)": node_rows({"naive": naive_nodes, "slipstream": slip_nodes}, n)
        },
    )


if __name__ == "__main__":
    with workload_options(__doc__) as opts:
        finish(asyncio.run(main(opts)), opts)
