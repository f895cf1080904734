"""Observability wired into the pipeline: every call becomes one record in the metrics and the request log."""

from __future__ import annotations

from pathlib import Path

import pytest

from slipstream import ModelNotFound, Slipstream, UpstreamStatusError
from slipstream.config import parse_config


def _config(tmp_path: Path, extra: str = ""):
    return parse_config(
        f"""
cache: {{sqlite: {{path: {tmp_path / "cache.db"}}}}}
{extra}
model_groups:
  sim:
    retries: {{max_attempts: 1}}
    deployments: [{{provider: sim, model: s, price: {{input: 1.0, output: 2.0}}}}]
""",
        environ={},
    )


def _series(text: str, name: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


async def test_known_sequence_reaches_metrics_and_request_log(tmp_path: Path):
    messages = [{"role": "user", "content": "observe me"}]
    async with Slipstream(_config(tmp_path)) as slip:
        miss = await slip.chat(model="sim", messages=messages)
        await slip.chat(model="sim", messages=messages)  # hit
        chunks = [c async for c in slip.stream(model="sim", messages=[{"role": "user", "content": "stream"}])]
        with pytest.raises(UpstreamStatusError):
            await slip.chat(model="sim", messages=messages, cache="bypass", sim={"fault": "500"})
        with pytest.raises(ModelNotFound):  # never recorded: unknown names must not become label values
            await slip.chat(model="nope", messages=messages)
        observer = slip.pipeline.observer
        text = observer.metrics.render()[0].decode()
        log = observer.request_log
        log.flush()
        summary = log.summary(60)
        rows = log.query(60)
    assert chunks
    assert _series(text, "slipstream_requests_total") == {
        'slipstream_requests_total{model="sim",status="200"}': 3.0,
        'slipstream_requests_total{model="sim",status="502"}': 1.0,
    }
    assert _series(text, "slipstream_cache_total")['slipstream_cache_total{model="sim",result="hit"}'] == 1.0
    usage = miss.usage
    saved = (usage["prompt_tokens"] * 1.0 + usage["completion_tokens"] * 2.0) / 1e6
    assert _series(text, "slipstream_cost_avoided_usd_total")[
        'slipstream_cost_avoided_usd_total{model="sim"}'
    ] == (pytest.approx(saved))
    assert _series(text, "slipstream_in_flight") == {"slipstream_in_flight": 0.0}
    assert summary["count"] == 4 and summary["errors"] == 1
    assert summary["cache_hits"] == 1
    streamed = [r for r in rows if r["stream"]]
    assert len(streamed) == 1 and streamed[0]["ttft_ms"] is not None and streamed[0]["ttft_ms"] > 0
    assert all(r["prompt_text"] is None for r in rows)  # text is kept only when enabled


async def test_cost_uses_the_price_of_the_deployment_that_answered(tmp_path: Path):
    cfg = parse_config(
        f"""
observe: {{request_log: {{path: {tmp_path / "requests.db"}}}}}
model_groups:
  pair:
    deployments:
      - {{provider: sim, model: a, name: cheap, options: {{fault: "500"}}, price: {{input: 1.0, output: 1.0}}}}
      - {{provider: sim, model: b, name: dear, priority: 1, price: {{input: 100.0, output: 300.0}}}}
""",
        environ={},
    )
    async with Slipstream(cfg) as slip:
        reply = await slip.chat(model="pair", messages=[{"role": "user", "content": "fail over"}])
        log = slip.pipeline.observer.request_log
        log.flush()
        (row,) = log.query(60)
    usage = reply.usage
    assert row["deployment"] == "dear" and row["attempts"] == 2
    assert row["cost_usd"] == pytest.approx(
        (usage["prompt_tokens"] * 100.0 + usage["completion_tokens"] * 300.0) / 1e6
    )


async def test_request_log_keeps_text_only_when_enabled_and_can_be_off(tmp_path: Path):
    cfg = _config(tmp_path, "observe: {request_log: {store_text: true}}")
    async with Slipstream(cfg) as slip:
        await slip.chat(model="sim", messages=[{"role": "user", "content": "keep this text"}])
        log = slip.pipeline.observer.request_log
        log.flush()
        assert log.query(60)[0]["prompt_text"] == "keep this text"
    off = _config(tmp_path, "observe: {metrics: false, request_log: {enabled: false}}")
    async with Slipstream(off) as slip:
        assert slip.pipeline.observer is None
        assert (await slip.chat(model="sim", messages=[{"role": "user", "content": "x"}])).text


def test_request_log_defaults_beside_the_cache(tmp_path: Path):
    assert _config(tmp_path).observe.request_log_path == str(tmp_path / "requests.db")


async def test_sdk_users_get_the_registry_the_gateway_serves(tmp_path: Path):
    from prometheus_client import generate_latest

    messages = [{"role": "user", "content": "count me"}]
    async with Slipstream(_config(tmp_path)) as slip:
        await slip.chat(model="sim", messages=messages)
        await slip.chat(model="sim", messages=messages)
        registry = slip.metrics_registry()
        assert registry is not None
        text = generate_latest(registry).decode()
    cache = _series(text, "slipstream_cache_total")
    assert cache == {
        'slipstream_cache_total{model="sim",result="miss"}': 1.0,
        'slipstream_cache_total{model="sim",result="hit"}': 1.0,
    }


async def test_no_registry_when_metrics_are_off(tmp_path: Path):
    async with Slipstream(_config(tmp_path, "observe: {metrics: false}")) as slip:
        assert slip.metrics_registry() is None
