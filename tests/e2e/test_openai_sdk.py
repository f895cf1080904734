"""The gateway as a real process, driven by the official openai SDK, in front of a real `slipstream sim`."""

from __future__ import annotations

import httpx
import openai
import pytest

from .conftest import GatewayFactory, Process

MESSAGES = [{"role": "user", "content": "Name three rivers in Europe."}]


_open: list[openai.OpenAI] = []


@pytest.fixture(autouse=True)
def _close_clients():
    yield
    while _open:
        _open.pop().close()


def _client(gateway: Process, key: str = "unused") -> openai.OpenAI:
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)
    _open.append(client)
    return client


def _aclient(gateway: Process, key: str = "unused") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=key, max_retries=0, timeout=20)


def test_sync_non_stream_miss_then_hit(gateway: Process):
    client = _client(gateway)
    first = client.chat.completions.with_raw_response.create(model="sim", messages=MESSAGES)
    second = client.chat.completions.with_raw_response.create(model="sim", messages=MESSAGES)
    assert first.headers["x-slipstream-cache"] == "miss"
    assert second.headers["x-slipstream-cache"] == "hit"
    assert "x-slipstream-cache-age" in second.headers
    a, b = first.parse(), second.parse()
    assert a.choices[0].message.content and a.choices[0].message.content == b.choices[0].message.content
    assert a.usage is not None and a.usage.total_tokens == a.usage.prompt_tokens + a.usage.completion_tokens


async def test_async_non_stream_and_stream(gateway: Process):
    client = _aclient(gateway)
    reply = await client.chat.completions.create(model="sim", messages=MESSAGES, temperature=0.1)
    stream = await client.chat.completions.create(
        model="sim", messages=MESSAGES, temperature=0.2, stream=True, stream_options={"include_usage": True}
    )
    parts, usage, finish = [], None, None
    async for chunk in stream:
        if chunk.usage:
            usage = chunk.usage
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finish = choice.finish_reason or finish
    assert reply.choices[0].message.content
    assert "".join(parts) and finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0
    await client.close()


def test_streamed_hit_replays_a_valid_stream(gateway: Process):
    client = _client(gateway)

    def run() -> tuple[str, str | None, str]:
        raw = client.chat.completions.with_raw_response.create(model="sim", messages=MESSAGES, stream=True)
        text, finish = [], None
        for chunk in raw.parse():
            for choice in chunk.choices:
                text.append(choice.delta.content or "")
                finish = choice.finish_reason or finish
        return "".join(text), finish, raw.headers["x-slipstream-cache"]

    first_text, first_finish, first_status = run()
    second_text, second_finish, second_status = run()
    assert (first_status, second_status) == ("miss", "hit")
    assert second_text == first_text and second_finish == first_finish
    # and a non-streamed request with the same content is served from what the stream stored
    plain = client.chat.completions.with_raw_response.create(model="sim", messages=MESSAGES)
    assert plain.headers["x-slipstream-cache"] == "hit"
    assert plain.parse().choices[0].message.content == first_text


def test_stream_without_usage_request_has_no_usage_chunk(gateway: Process):
    chunks = list(
        _client(gateway).chat.completions.create(model="sim", messages=MESSAGES, stream=True, seed=3)
    )
    assert chunks and all(not c.usage for c in chunks)


def test_embeddings(gateway: Process):
    client = _client(gateway)
    result = client.embeddings.create(model="sim", input=["alpha", "beta"], encoding_format="float")
    assert len(result.data) == 2 and len(result.data[0].embedding) > 0
    assert result.data[0].embedding != result.data[1].embedding
    again = client.embeddings.with_raw_response.create(
        model="sim", input=["alpha", "beta"], encoding_format="float"
    )
    assert again.headers["x-slipstream-cache"] == "hit"


def test_cache_stats_report_hits_tokens_and_money_saved(gateway: Process):
    client = _client(gateway)
    msgs = [{"role": "user", "content": "what does a hit save?"}]
    reply = client.chat.completions.create(model="sim", messages=msgs)
    client.chat.completions.create(model="sim", messages=msgs)
    stats = httpx.get(f"{gateway.url}/api/cache/stats", timeout=5).json()["cache"]
    assert stats["hits"] == 1 and stats["misses"] == 1 and stats["hit_rate"] == 0.5
    assert stats["entries"] >= 1 and stats["bytes"] > 0
    usage = reply.usage
    assert stats["saved_completion_tokens"] == usage.completion_tokens
    expected_usd = (usage.prompt_tokens * 1.0 + usage.completion_tokens * 4.0) / 1_000_000
    assert stats["saved_usd"] == pytest.approx(expected_usd, rel=1e-3)


def test_models_list(gateway: Process):
    ids = {m.id for m in _client(gateway).models.list()}
    assert {"sim", "dead"} <= ids


def test_cache_directives_over_http(gateway: Process):
    client = _client(gateway)
    msgs = [{"role": "user", "content": "directives"}]
    client.chat.completions.create(model="sim", messages=msgs)
    refreshed = client.chat.completions.with_raw_response.create(
        model="sim", messages=msgs, extra_headers={"x-slipstream-cache": "refresh"}
    )
    bypassed = client.chat.completions.with_raw_response.create(
        model="sim", messages=msgs, extra_headers={"x-slipstream-cache": "bypass"}
    )
    assert refreshed.headers["x-slipstream-cache"] == "refresh"
    assert bypassed.headers["x-slipstream-cache"] == "bypass"


# ------------------------------------------------------------------------------------------------ errors
def test_400_names_the_field(gateway: Process):
    with pytest.raises(openai.BadRequestError) as info:
        _client(gateway).chat.completions.create(model="sim", messages=MESSAGES, temperature=7)
    assert info.value.status_code == 400
    assert info.value.param == "temperature"
    assert info.value.type == "invalid_request_error"


def test_404_unknown_model(gateway: Process):
    with pytest.raises(openai.NotFoundError) as info:
        _client(gateway).chat.completions.create(model="no-such-model", messages=MESSAGES)
    assert "no-such-model" in info.value.message


def test_413_body_too_large(gateway: Process):
    big = [{"role": "user", "content": "x" * 100_000}]
    with pytest.raises(openai.APIStatusError) as info:
        _client(gateway).chat.completions.create(model="sim", messages=big)
    assert info.value.status_code == 413


def test_502_upstream_failure_carries_provider_message(gateway: Process):
    with pytest.raises(openai.InternalServerError) as info:
        _client(gateway).chat.completions.create(
            model="sim", messages=MESSAGES, extra_body={"sim": {"fault": "500"}}
        )
    assert info.value.status_code == 502
    assert "sim" in info.value.message.lower() or "openai" in info.value.message.lower()


def test_502_unreachable_upstream(gateway: Process):
    with pytest.raises(openai.InternalServerError) as info:
        _client(gateway).chat.completions.create(model="dead", messages=MESSAGES)
    assert info.value.status_code == 502
    assert "connect" in info.value.message


def test_504_upstream_timeout(gateway: Process):
    with pytest.raises(openai.APIStatusError) as info:
        _client(gateway).chat.completions.create(
            model="sim", messages=MESSAGES, extra_body={"sim": {"fault": "hang"}}
        )
    assert info.value.status_code == 504


def test_429_from_upstream_passes_with_retry_after(gateway: Process):
    with pytest.raises(openai.RateLimitError) as info:
        _client(gateway).chat.completions.create(
            model="sim", messages=MESSAGES, extra_body={"sim": {"fault": "429"}}
        )
    assert info.value.response.headers.get("retry-after")


def test_401_and_namespaces(gateways: GatewayFactory):
    keys = "keys:\n  - {key: sk-team-a, name: team-a}\n  - {key: sk-team-b, name: team-b}\n"
    gateway = gateways.start(gateways.config_text(keys=keys))
    with pytest.raises(openai.AuthenticationError):
        _client(gateway, key="sk-wrong").chat.completions.create(model="sim", messages=MESSAGES)
    a, b = _client(gateway, "sk-team-a"), _client(gateway, "sk-team-b")
    first_a = a.chat.completions.with_raw_response.create(model="sim", messages=MESSAGES)
    again_a = a.chat.completions.with_raw_response.create(model="sim", messages=MESSAGES)
    first_b = b.chat.completions.with_raw_response.create(model="sim", messages=MESSAGES)
    assert first_a.headers["x-slipstream-cache"] == "miss"
    assert again_a.headers["x-slipstream-cache"] == "hit"
    assert first_b.headers["x-slipstream-cache"] == "miss"  # another tenant never gets team-a's entry


def test_restart_keeps_the_sqlite_cache(gateways: GatewayFactory):
    config = gateways.config_text()
    first = gateways.start(config, name="first")
    msgs = [{"role": "user", "content": "survive a restart"}]
    before = _client(first).chat.completions.with_raw_response.create(model="sim", messages=msgs)
    assert before.headers["x-slipstream-cache"] == "miss"
    first.stop()
    second = gateways.start(config, name="second")
    after = _client(second).chat.completions.with_raw_response.create(model="sim", messages=msgs)
    assert after.headers["x-slipstream-cache"] == "hit"
    assert after.parse().choices[0].message.content == before.parse().choices[0].message.content


def test_metrics_endpoint_after_known_requests(gateway: Process):
    client = _client(gateway)
    msgs = [{"role": "user", "content": "count me"}]
    client.chat.completions.create(model="sim", messages=msgs)
    client.chat.completions.create(model="sim", messages=msgs)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="missing", messages=msgs)
    response = httpx.get(f"{gateway.url}/metrics", timeout=5)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'slipstream_requests_total{model="sim",status="200"} 2.0' in text
    assert 'slipstream_cache_total{model="sim",result="hit"} 1.0' in text
    assert "missing" not in text  # unknown model names never become label values
