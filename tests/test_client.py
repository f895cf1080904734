"""The in-process SDK: async client, the openai SDK through the in-process transport, and the sync facade."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

import slipstream
from slipstream import InvalidRequest, ModelNotFound, Slipstream, SlipstreamSync
from slipstream.config import parse_config

MESSAGES = [{"role": "user", "content": "Give me a haiku about caches."}]


def _config(tmp_path: Path, sqlite: bool = True):
    return parse_config(
        f"""
cache:
  sqlite: {{enabled: {str(sqlite).lower()}, path: {tmp_path / "cache.db"}}}
model_groups:
  sim:
    deployments: [{{provider: sim, model: sim-1}}]
""",
        environ={},
    )


@pytest.fixture
async def slip(tmp_path: Path):
    async with Slipstream(_config(tmp_path)) as client:
        yield client


def test_public_api_is_sorted_and_importable():
    assert slipstream.__all__ == sorted(slipstream.__all__)
    for name in slipstream.__all__:
        assert getattr(slipstream, name) is not None


async def test_chat_miss_then_hit(slip: Slipstream):
    first = await slip.chat(model="sim", messages=MESSAGES)
    second = await slip.chat({"model": "sim", "messages": MESSAGES})
    assert (first.cache, second.cache) == ("miss", "hit")
    assert first.text and second.text == first.text
    assert first.usage and first.usage["total_tokens"] > 0
    assert second["choices"][0]["finish_reason"] in ("stop", "length")
    assert slip.stats()["cache"]["hits"] == 1


async def test_cache_arguments(slip: Slipstream):
    await slip.chat(model="sim", messages=MESSAGES)
    assert (await slip.chat(model="sim", messages=MESSAGES, cache="refresh")).cache == "refresh"
    assert (await slip.chat(model="sim", messages=MESSAGES, cache="bypass")).cache == "bypass"
    assert (await slip.chat(model="sim", messages=MESSAGES, namespace="other")).cache == "miss"
    with pytest.raises(InvalidRequest):
        await slip.chat(model="sim", messages=MESSAGES, cache="sometimes")


async def test_stream_then_streamed_hit(slip: Slipstream):
    async def collect(**kw):
        text, usage = [], None
        async for chunk in slip.stream(model="sim", messages=MESSAGES, **kw):
            usage = chunk.get("usage") or usage
            text.extend(c["delta"].get("content") or "" for c in chunk["choices"])
        return "".join(text), usage

    first, no_usage = await collect()
    second, usage = await collect(stream_options={"include_usage": True})
    assert first and second == first
    assert no_usage is None and usage["completion_tokens"] > 0


async def test_errors(slip: Slipstream):
    with pytest.raises(ModelNotFound):
        await slip.chat(model="nope", messages=MESSAGES)
    with pytest.raises(InvalidRequest) as info:
        await slip.chat(model="sim", messages=[{"role": "user", "content": 3}])
    assert info.value.param == "messages[0].content"


async def test_embed(slip: Slipstream):
    data = await slip.embed(model="sim", input=["a", "b"])
    assert [d["index"] for d in data["data"]] == [0, 1]


async def test_official_async_openai_sdk_in_process(slip: Slipstream):
    client = openai.AsyncOpenAI(api_key="unused", http_client=slip.http_client(), max_retries=0)
    raw = await client.chat.completions.with_raw_response.create(model="sim", messages=MESSAGES)
    again = await client.chat.completions.with_raw_response.create(model="sim", messages=MESSAGES)
    assert (raw.headers["x-slipstream-cache"], again.headers["x-slipstream-cache"]) == ("miss", "hit")
    stream = await client.chat.completions.create(model="sim", messages=MESSAGES, stream=True)
    text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
    assert text == raw.parse().choices[0].message.content
    with pytest.raises(openai.NotFoundError):
        await client.chat.completions.create(model="nope", messages=MESSAGES)
    emb = await client.embeddings.create(model="sim", input="x", encoding_format="float")
    assert emb.data[0].embedding
    await client.close()


def test_sync_facade_and_sync_openai_sdk(tmp_path: Path):
    with SlipstreamSync(_config(tmp_path)) as slip:
        first = slip.chat(model="sim", messages=MESSAGES)
        assert first.cache == "miss" and slip.chat(model="sim", messages=MESSAGES).cache == "hit"
        streamed = "".join(
            c["choices"][0]["delta"].get("content") or ""
            for c in slip.stream(model="sim", messages=MESSAGES)
            if c["choices"]
        )
        assert streamed == first.text
        client = openai.OpenAI(api_key="unused", http_client=slip.http_client(), max_retries=0)
        reply = client.chat.completions.create(model="sim", messages=MESSAGES)
        assert reply.choices[0].message.content == first.text
        chunks = list(client.chat.completions.create(model="sim", messages=MESSAGES, stream=True))
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == first.text
        assert slip.embed(model="sim", input="x")["data"]


async def test_sqlite_tier_survives_a_new_client(tmp_path: Path):
    async with Slipstream(_config(tmp_path)) as one:
        await one.chat(model="sim", messages=MESSAGES)
    async with Slipstream(_config(tmp_path)) as two:
        assert (await two.chat(model="sim", messages=MESSAGES)).cache == "hit"
