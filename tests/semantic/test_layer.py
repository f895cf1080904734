"""The semantic layer in a real pipeline with the sim provider and the bundled model, through the SDK and the
gateway's edge (the same code that answers HTTP)."""

from __future__ import annotations

import orjson
import pytest

from slipstream import Slipstream
from slipstream.config import parse_config
from slipstream.gateway.edge import Edge

from .conftest import semantic_config

FIRST = "What are some good tips for self study?"
SIMILAR = "What are the smart tips for self studying?"
UNRELATED = "How do I bake sourdough bread at home?"


def user(text: str, system: str | None = None) -> list[dict[str, str]]:
    head = [{"role": "system", "content": system}] if system else []
    return [*head, {"role": "user", "content": text}]


@pytest.fixture
async def slip(tmp_path, embedder):
    async with Slipstream(semantic_config(tmp_path)) as client:
        yield client


async def test_a_near_duplicate_prompt_is_a_semantic_hit_with_the_first_answer(slip):
    first = await slip.chat(model="sim", messages=user(FIRST))
    assert first.cache == "miss"
    second = await slip.chat(model="sim", messages=user(SIMILAR))
    assert second.cache == "semantic-hit"
    assert second.text == first.text
    assert 0.9 <= second.similarity < 1.0
    assert second.semantic_entry is not None and second.semantic_entry.startswith("default:chat:")
    unrelated = await slip.chat(model="sim", messages=user(UNRELATED))
    assert unrelated.cache == "miss"
    stats = slip.stats()["semantic"]
    assert stats["hits"] == 1 and stats["stores"] == 2


async def test_the_exact_tier_answers_first(slip):
    await slip.chat(model="sim", messages=user(FIRST))
    again = await slip.chat(model="sim", messages=user(FIRST))
    assert again.cache == "hit"
    assert slip.stats()["semantic"]["lookups"] == 1  # only the first request reached the semantic layer


async def test_a_semantic_hit_is_not_stored_under_the_new_prompt(slip):
    await slip.chat(model="sim", messages=user(FIRST))
    assert (await slip.chat(model="sim", messages=user(SIMILAR))).cache == "semantic-hit"
    assert (await slip.chat(model="sim", messages=user(SIMILAR))).cache == "semantic-hit"  # not an exact hit


async def test_a_streamed_request_replays_the_hit_as_a_stream(slip):
    first = await slip.chat(model="sim", messages=user(FIRST))
    chunks = [c async for c in slip.stream(model="sim", messages=user(SIMILAR))]
    assert len(chunks) > 1
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == first.text
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


async def test_a_streamed_miss_is_stored_once_it_finished(slip):
    streamed = [c async for c in slip.stream(model="sim", messages=user(FIRST))]
    assert streamed
    second = await slip.chat(model="sim", messages=user(SIMILAR))
    assert second.cache == "semantic-hit"


@pytest.mark.parametrize(
    ("first_kwargs", "second_kwargs"),
    [
        (
            {"model": "sim", "messages": user(FIRST, "You are terse.")},
            {"model": "sim", "messages": user(SIMILAR, "You are verbose.")},
        ),
        ({"model": "sim", "messages": user(FIRST)}, {"model": "sim-b", "messages": user(SIMILAR)}),
        (
            {"model": "sim", "messages": user(FIRST)},
            {"model": "sim", "messages": user(SIMILAR), "temperature": 0.1},
        ),
        (
            {
                "model": "sim",
                "messages": [
                    {"role": "user", "content": "hi"},
                    {"role": "assistant", "content": "hello"},
                    *user(FIRST),
                ],
            },
            {
                "model": "sim",
                "messages": [
                    {"role": "user", "content": "hey"},
                    {"role": "assistant", "content": "hello"},
                    *user(SIMILAR),
                ],
            },
        ),
        (
            {"model": "sim", "messages": user(FIRST), "namespace": "tenant-a"},
            {"model": "sim", "messages": user(SIMILAR), "namespace": "tenant-b"},
        ),
    ],
    ids=["system-prompt", "model", "sampling", "earlier-turns", "namespace"],
)
async def test_a_different_context_never_hits(slip, first_kwargs, second_kwargs):
    await slip.chat(**first_kwargs)
    second = await slip.chat(**second_kwargs)
    assert second.cache == "miss"


async def test_groups_without_semantic_are_untouched(slip):
    await slip.chat(model="plain", messages=user(FIRST))
    assert (await slip.chat(model="plain", messages=user(SIMILAR))).cache == "miss"


async def test_a_guard_vetoes_a_close_prompt_with_another_number(slip):
    await slip.chat(model="sim", messages=user("How do I get a visa in 2 weeks?"))
    other = await slip.chat(model="sim", messages=user("How do I get a visa in 3 weeks?"))
    assert other.cache == "miss"
    assert other.similarity is not None and other.similarity > 0.9  # close enough: the guard said no
    assert slip.stats()["semantic"]["rejected"].get("numbers") == 1


async def test_no_store_and_bypass_are_respected(slip):
    await slip.chat(model="sim", messages=user(FIRST), cache="no-store")
    assert (await slip.chat(model="sim", messages=user(SIMILAR))).cache == "miss"
    bypassed = await slip.chat(
        model="sim", messages=user("What are good tips for studying alone?"), cache="bypass"
    )
    assert bypassed.cache == "bypass"


async def test_reporting_a_bad_hit_removes_the_entry_and_raises_the_threshold(slip):
    await slip.chat(model="sim", messages=user(FIRST))
    hit = await slip.chat(model="sim", messages=user(SIMILAR))
    assert slip.report_bad_hit(hit) is True
    assert slip.report_bad_hit(hit) is False  # already gone
    assert (await slip.chat(model="sim", messages=user(SIMILAR))).cache == "miss"
    layer = slip.pipeline.semantic
    assert layer.thresholds.threshold("default/sim", 0.9) > hit.similarity


async def test_the_gateway_edge_sends_semantic_headers_and_takes_feedback(slip):
    edge = Edge(slip.pipeline)

    async def ask(text: str, **headers: str):
        body = orjson.dumps({"model": "sim", "messages": user(text)})
        return await edge.handle("POST", "/v1/chat/completions", headers, body)

    await ask(FIRST)
    hit = await ask(SIMILAR)
    headers = dict(hit.headers)
    assert headers[b"x-slipstream-cache"] == b"semantic-hit"
    similarity = float(headers[b"x-slipstream-similarity"])
    assert 0.9 <= similarity < 1.0
    entry = headers[b"x-slipstream-semantic-entry"].decode()

    assert slip.pipeline.semantic.report_bad(entry, namespace="someone-else") is False

    feedback = await edge.handle("POST", "/api/cache/feedback", {}, orjson.dumps({"entry": entry}))
    assert feedback.status == 200 and orjson.loads(feedback.body) == {"removed": True}
    after = await ask(SIMILAR)
    assert dict(after.headers)[b"x-slipstream-cache"] == b"miss"

    bad = await edge.handle("POST", "/api/cache/feedback", {}, b'{"entry": 5}')
    assert bad.status == 400 and orjson.loads(bad.body)["error"]["param"] == "entry"


async def test_a_follow_up_with_the_feedback_header_takes_the_hit_back(slip):
    edge = Edge(slip.pipeline)
    first = orjson.dumps({"model": "sim", "messages": user(FIRST)})
    similar = orjson.dumps({"model": "sim", "messages": user(SIMILAR)})
    await edge.handle("POST", "/v1/chat/completions", {}, first)
    assert (
        dict((await edge.handle("POST", "/v1/chat/completions", {}, similar)).headers)[b"x-slipstream-cache"]
        == b"semantic-hit"
    )
    retry = await edge.handle("POST", "/v1/chat/completions", {"x-slipstream-feedback": "bad"}, similar)
    assert dict(retry.headers)[b"x-slipstream-cache"] == b"miss"
    assert slip.stats()["semantic"]["reported_bad"] == 1
    # The retried request's own answer is now cached under its exact key; the bad entry is gone.
    assert (
        dict((await edge.handle("POST", "/v1/chat/completions", {}, similar)).headers)[b"x-slipstream-cache"]
        == b"hit"
    )


async def test_metrics_count_semantic_hits_and_histogram_similarity(slip):
    await slip.chat(model="sim", messages=user(FIRST))
    await slip.chat(model="sim", messages=user(SIMILAR))
    await slip.chat(model="sim", messages=user(UNRELATED))
    observer = slip.pipeline.observer
    assert observer is not None
    text = observer.metrics.render()[0].decode()
    assert 'slipstream_semantic_hits_total{model="sim"} 1.0' in text
    assert 'slipstream_cache_total{model="sim",result="semantic-hit"} 1.0' in text
    assert 'slipstream_semantic_similarity_count{model="sim",result="hit"} 1.0' in text
    assert 'slipstream_semantic_similarity_count{model="sim",result="miss"}' in text


async def test_the_index_survives_a_restart_beside_the_sqlite_cache(tmp_path, embedder):
    config = semantic_config(tmp_path)
    async with Slipstream(config) as first:
        await first.chat(model="sim", messages=user(FIRST))
        await first.pipeline.semantic.flush()
    async with Slipstream(config) as second:
        again = await second.chat(model="sim", messages=user(SIMILAR))
        assert again.cache == "semantic-hit"
    assert (tmp_path / "semantic.db").exists()


async def test_a_remote_embedder_calls_a_groups_embeddings_through_the_pipeline(tmp_path):
    config = parse_config(
        f"""
cache: {{sqlite: {{path: {tmp_path / "cache.db"}}}}}
observe: {{request_log: {{enabled: false}}}}
model_groups:
  emb:
    deployments: [{{provider: sim, model: sim-embed}}]
  chat:
    semantic: {{enabled: true, threshold: 0.9, embedder: emb}}
    deployments: [{{provider: sim, model: sim-1}}]
""",
        environ={},
    )
    async with Slipstream(config) as slip:
        first = await slip.chat(model="chat", messages=user("How do I cook pasta at home?"))
        again = await slip.chat(model="chat", messages=user("how do I cook pasta at home"))
        assert again.cache == "semantic-hit"
        assert again.text == first.text
        layer = slip.pipeline.semantic
        assert list(layer.indexes) == ["group:emb"]
        assert layer.stats.as_dict()["errors"] == 0
