"""slipstream.track: calls made inside a block are attributed to its operation, in the span's totals, in the
request log's rows, in the ``operations`` table, and in OpenTelemetry spans."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path
from typing import Any

import openai
import orjson
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

import slipstream
from slipstream import Slipstream, SlipstreamSync, UpstreamStatusError, track
from slipstream.config import parse_config
from slipstream.gateway.edge import Edge
from slipstream.observe.record import OperationRecord, RequestRecord
from slipstream.observe.requestlog import RequestLog
from slipstream.observe.track import Span, current_span, operation_path
from slipstream.pipeline import Pipeline

PRICE_IN, PRICE_OUT = 1.0, 2.0  # USD per 1M tokens


def _config(tmp_path: Path, extra: str = ""):
    return parse_config(
        f"""
cache: {{sqlite: {{path: {tmp_path / "cache.db"}}}}}
{extra}
model_groups:
  sim:
    retries: {{max_attempts: 1}}
    deployments: [{{provider: sim, model: s, price: {{input: {PRICE_IN}, output: {PRICE_OUT}}}}}]
""",
        environ={},
    )


def _ask(text: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


def _rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


@pytest.fixture
async def slip(tmp_path: Path):
    async with Slipstream(_config(tmp_path)) as client:
        yield client


def _flush(slip: Slipstream) -> Path:
    log = slip.pipeline.observer.request_log
    log.flush(timeout=10)
    return log.path


# ---------------------------------------------------------------------------------------------- the forms
async def test_nested_blocks_count_their_calls_and_parents_include_children(slip: Slipstream, tmp_path: Path):
    with track("cycle") as cycle:
        async with track("propose") as propose:
            await slip.chat(model="sim", messages=_ask("one"))
            await slip.chat(model="sim", messages=_ask("one"))  # a hit
        await slip.chat(model="sim", messages=_ask("two"))
        assert current_span() is cycle
    assert current_span() is None
    assert (propose.path, propose.parent) == ("cycle/propose", cycle)
    assert (propose.calls, propose.hits) == (2, 1)
    assert (cycle.calls, cycle.hits) == (3, 1)
    assert cycle.duration_ms is not None and propose.duration_ms is not None
    assert cycle.duration_ms >= propose.duration_ms  # the child ran inside the parent

    db = _flush(slip)
    requests = _rows(
        db, "SELECT operation, cache_status, cost_usd, saved_usd, prompt_tokens FROM requests ORDER BY id"
    )
    assert [(r[0], r[1]) for r in requests] == [
        ("cycle/propose", "miss"),
        ("cycle/propose", "hit"),
        ("cycle", "miss"),
    ]
    # Costs in the span are the request log's: the hit cost nothing and saved what the miss cost.
    assert cycle.cost_usd == pytest.approx(sum(r[2] for r in requests)) and cycle.cost_usd > 0
    assert propose.saved_usd == pytest.approx(requests[0][2])
    assert cycle.prompt_tokens == sum(r[4] for r in requests)

    operations = _rows(
        db,
        "SELECT operation, parent, calls, hits, errors, duration_ms, cost_usd, error FROM operations ORDER BY id",
    )
    assert [o[:5] for o in operations] == [("cycle/propose", "cycle", 2, 1, 0), ("cycle", None, 3, 1, 0)]
    assert operations[1][5] == pytest.approx(cycle.duration_ms)
    assert operations[1][6] == pytest.approx(cycle.cost_usd)
    assert operations[1][7] is None


async def test_decorators_on_async_and_sync_functions(slip: Slipstream):
    @track("generate")
    async def generate(n: int) -> list[str]:
        """Make n questions."""
        return [(await slip.chat(model="sim", messages=_ask(f"q{i}"))).text for i in range(n)]

    @track("label")
    def label() -> str | None:
        span = current_span()
        return None if span is None else span.path

    assert generate.__name__ == "generate" and generate.__doc__ == "Make n questions."
    with track("batch") as batch:
        assert len(await generate(3)) == 3
        assert label() == "batch/label"
    assert batch.calls == 3
    assert label() == "label"
    rows = _rows(_flush(slip), "SELECT operation, calls FROM operations ORDER BY id")
    assert rows == [("batch/generate", 3), ("batch", 3)]  # blocks without calls are written nowhere


async def test_calls_in_tasks_started_inside_the_block_belong_to_it(slip: Slipstream):
    go = asyncio.Event()

    async def started_before() -> None:
        await go.wait()
        await slip.chat(model="sim", messages=_ask("outside"))

    early = asyncio.create_task(started_before())  # its context was copied before the block: not attributed
    async with track("fanout") as span:
        await asyncio.gather(*(slip.chat(model="sim", messages=_ask(f"g{i}")) for i in range(4)))
        async with asyncio.TaskGroup() as group:
            for i in range(3):
                group.create_task(slip.chat(model="sim", messages=_ask(f"t{i}")))
        go.set()
        await early
    assert span.calls == 7
    rows = _rows(_flush(slip), "SELECT operation, count(*) FROM requests GROUP BY 1 ORDER BY 1")
    assert rows == [(None, 1), ("fanout", 7)]


async def test_one_track_object_entered_by_many_tasks_keeps_their_runs_apart(slip: Slipstream):
    step = track("step")

    async def job(i: int) -> Span:
        async with step as span:
            await asyncio.sleep(0)  # let the other jobs enter before this one calls
            await slip.chat(model="sim", messages=_ask(f"job {i}"))
            await asyncio.sleep(0)
            return span

    with track("run") as run:
        spans = await asyncio.gather(*(job(i) for i in range(5)))
    assert len({id(s) for s in spans}) == 5
    assert all(s.path == "run/step" and s.calls == 1 and s.parent is run for s in spans)
    assert run.calls == 5
    assert _rows(
        _flush(slip), "SELECT count(*), sum(calls) FROM operations WHERE operation = 'run/step'"
    ) == [(5, 5)]


async def test_a_failing_block_is_recorded_with_its_error_and_restores_the_context(slip: Slipstream):
    with pytest.raises(UpstreamStatusError):
        async with track("flaky") as span:
            await slip.chat(model="sim", messages=_ask("ok"))
            await slip.chat(model="sim", messages=_ask("boom"), cache="bypass", sim={"fault": "500"})
    assert current_span() is None
    assert (span.calls, span.errors) == (2, 1)
    rows = _rows(_flush(slip), "SELECT operation, calls, errors, error FROM operations")
    assert rows == [("flaky", 2, 1, "UpstreamStatusError")]


async def test_streams_and_the_openai_sdk_in_process_are_attributed(slip: Slipstream):
    client = openai.AsyncOpenAI(api_key="unused", http_client=slip.http_client(), max_retries=0)
    async with track("chatbot") as span:
        chunks = [c async for c in slip.stream(model="sim", messages=_ask("stream me"))]
        await client.chat.completions.create(model="sim", messages=_ask("via openai"))
    await client.close()
    assert chunks and span.calls == 2 and span.completion_tokens > 0
    rows = _rows(_flush(slip), "SELECT operation, stream FROM requests ORDER BY id")
    assert rows == [("chatbot", 1), ("chatbot", 0)]


def test_the_sync_facade_carries_the_block_to_its_loop_thread(tmp_path: Path):
    with SlipstreamSync(_config(tmp_path)) as slip:
        with track("script") as span:
            slip.chat(model="sim", messages=_ask("sync"))
            slip.chat(model="sim", messages=_ask("sync"))
        log = slip.aio.pipeline.observer.request_log
        log.flush(timeout=10)
        rows = _rows(log.path, "SELECT operation, calls, hits FROM operations")
    assert (span.calls, span.hits) == (2, 1)
    assert rows == [("script", 2, 1)]


async def test_without_a_request_log_blocks_count_but_write_nothing(tmp_path: Path):
    config = _config(tmp_path, "observe: {request_log: {enabled: false}}")
    async with Slipstream(config) as slip:
        with track("quiet") as span:
            await slip.chat(model="sim", messages=_ask("x"))
    assert span.calls == 1
    assert not (tmp_path / "requests.db").exists()
    off = _config(tmp_path, "observe: {metrics: false, request_log: {enabled: false}}")
    async with Slipstream(off) as slip:
        with track("dark") as span:
            reply = await slip.chat(model="sim", messages=_ask("x"))
    assert reply.text and span.calls == 0  # nothing observes calls, so there is nothing to count


# ---------------------------------------------------------------------------------------------- gateway header
async def test_gateway_clients_name_the_operation_in_a_header(tmp_path: Path):
    pipeline = Pipeline(_config(tmp_path))
    edge = Edge(pipeline)
    body = orjson.dumps({"model": "sim", "messages": _ask("from a client")})
    try:
        ok = await edge.handle(
            "POST", "/v1/chat/completions", {"x-slipstream-operation": " nightly / q1 "}, body
        )
        bad = await edge.handle("POST", "/v1/chat/completions", {"x-slipstream-operation": "a//b"}, body)
        plain = await edge.handle("POST", "/v1/chat/completions", {}, body)
        log = pipeline.observer.request_log
        log.flush(timeout=10)
        rows = _rows(log.path, "SELECT operation FROM requests ORDER BY id")
    finally:
        await pipeline.aclose()
    assert ok.status == 200 and plain.status == 200
    assert bad.status == 400
    error = orjson.loads(bad.body)["error"]
    assert error["param"] == "x-slipstream-operation" and error["type"] == "invalid_request_error"
    assert rows == [("nightly/q1",), (None,)]


def test_operation_paths_from_clients_are_normalised_or_refused():
    assert operation_path("cycle") == "cycle"
    assert operation_path(" cycle / propose ") == "cycle/propose"
    for bad in ("", " ", "a//b", "/a", "a/", "x" * 201, "tab\there"):
        with pytest.raises(ValueError):
            operation_path(bad)


def test_semantic_hits_count_as_hits_in_every_enclosing_span():
    parent = Span("outer", None)
    child = Span("inner", parent)
    for status in ("semantic-hit", "hit", "miss"):
        child.add(RequestRecord(ts=0.0, group="sim", status=200, latency_ms=1.0, cache_status=status))
    child.add(RequestRecord(ts=0.0, group="sim", status=502, latency_ms=1.0, error="UpstreamStatusError"))
    assert child.path == "outer/inner"
    assert [(s.calls, s.hits, s.errors) for s in (child, parent)] == [(4, 2, 1), (4, 2, 1)]


def test_names_are_checked_and_generators_refused():
    assert slipstream.track is track and "track" in slipstream.__all__
    for bad in ("", "  ", "a/b"):
        with pytest.raises(ValueError):
            track(bad)

    def numbers():
        yield 1

    async def more():
        yield 1

    for func in (numbers, more):
        with pytest.raises(TypeError):
            track("gen")(func)


# ---------------------------------------------------------------------------------------------- the table
def _op(ts: float, name: str = "op") -> OperationRecord:
    return OperationRecord(ts=ts, operation=name, parent=None, duration_ms=1.0, calls=1)


def test_operations_are_purged_by_age_with_the_requests(tmp_path: Path):
    now = 1_800_000_000.0
    log = RequestLog(tmp_path / "requests.db", retention_days=1, clock=lambda: now)
    try:
        log.record_operation(_op(now - 2 * 86400, "old"))
        log.record_operation(_op(now - 60, "new"))
        log.record(RequestRecord(ts=now - 60, group="sim", status=200, latency_ms=1.0, operation="new"))
        log.flush(timeout=10)
        assert len(_rows(log.path, "SELECT * FROM operations")) == 2
        log.maintain(timeout=10)
        assert _rows(log.path, "SELECT operation FROM operations") == [("new",)]
    finally:
        log.close(timeout=10)


def test_eviction_by_size_drops_operations_older_than_the_requests_kept(tmp_path: Path):
    now = 1_800_000_000.0
    log = RequestLog(tmp_path / "requests.db", max_bytes=256 * 1024, store_text=True, clock=lambda: now)
    try:
        log.record_operation(_op(now - 4000, "before everything"))
        for i in range(3000):
            log.record(
                RequestRecord(
                    ts=now - 3000 + i,
                    group="sim",
                    status=200,
                    latency_ms=1.0,
                    prompt_text="x" * 300,
                    reply_text="y",
                )
            )
        log.record_operation(_op(now, "recent"))
        log.flush(timeout=30)
        assert log.evicted > 0
        assert _rows(log.path, "SELECT operation FROM operations") == [("recent",)]
    finally:
        log.close(timeout=10)


def test_a_request_log_from_before_operations_gains_the_table_in_place(tmp_path: Path):
    db = tmp_path / "requests.db"
    log = RequestLog(db)
    log.record(RequestRecord(ts=1.0, group="sim", status=200, latency_ms=1.0))
    log.close(timeout=10)
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE operations")
    conn.commit()
    conn.close()
    log = RequestLog(db)
    try:
        log.record_operation(_op(2.0))
        log.flush(timeout=10)
        assert _rows(db, "SELECT count(*) FROM requests") == [(1,)]  # kept, not moved aside
        assert _rows(db, "SELECT operation FROM operations") == [("op",)]
    finally:
        log.close(timeout=10)


# ---------------------------------------------------------------------------------------------- OpenTelemetry
@pytest.fixture(scope="module")
def otel_spans() -> InMemorySpanExporter:
    """The process's tracer provider can be set once; the exporter is shared by this module's tests."""
    exporter = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter


def test_blocks_open_opentelemetry_spans_with_their_totals(tmp_path: Path, otel_spans: InMemorySpanExporter):
    otel_spans.clear()
    app = trace.get_tracer("app")
    with SlipstreamSync(_config(tmp_path)) as slip, app.start_as_current_span("request") as outer:
        with track("cycle") as cycle, track("propose"):
            slip.chat(model="sim", messages=_ask("otel"))
            slip.chat(model="sim", messages=_ask("otel"))
        with pytest.raises(UpstreamStatusError), track("fail"):
            slip.chat(model="sim", messages=_ask("no"), cache="bypass", sim={"fault": "500"})
    spans = {s.name: s for s in otel_spans.get_finished_spans()}
    assert set(spans) == {"request", "cycle", "cycle/propose", "fail"}
    propose, parent = spans["cycle/propose"], spans["cycle"]
    assert propose.parent is not None and propose.parent.span_id == parent.context.span_id
    assert parent.parent is not None and parent.parent.span_id == outer.get_span_context().span_id
    assert propose.attributes is not None and parent.attributes is not None
    assert propose.attributes["slipstream.calls"] == 2 and propose.attributes["slipstream.hits"] == 1
    assert parent.attributes["slipstream.cost_usd"] == pytest.approx(cycle.cost_usd) and cycle.cost_usd > 0
    assert parent.attributes["slipstream.tokens.completion"] == cycle.completion_tokens
    failed = spans["fail"]
    assert failed.status.status_code is trace.StatusCode.ERROR
    assert failed.attributes is not None and failed.attributes["slipstream.errors"] == 1
