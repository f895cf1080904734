"""Traffic control through a real `slipstream serve` in front of a real `slipstream sim`: what a client sees."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

from .conftest import GatewayFactory, Process, free_port, sim_stats

URL = "/v1/chat/completions"


def body(content: str, **extra: object) -> dict[str, object]:
    return {"model": "sim", "messages": [{"role": "user", "content": content}], **extra}


def test_a_stream_broken_upstream_ends_with_an_error_event_and_no_done(gateway: Process):
    request = body("break me", stream=True, max_tokens=200, sim={"fault": "broken_stream"})
    with httpx.stream("POST", gateway.url + URL, json=request, timeout=20) as response:
        assert response.status_code == 200  # the stream had started: the status was already sent
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert "[DONE]" not in events
    payloads = [json.loads(e) for e in events]
    *content, last = payloads
    assert content and all(p["object"] == "chat.completion.chunk" for p in content)
    assert any(c["delta"].get("content") for p in content for c in p["choices"])
    assert set(last) == {"error"} and last["error"]["message"] and last["error"]["type"]


def test_the_openai_sdk_raises_while_iterating_a_broken_stream(gateway: Process):
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="unused", max_retries=0, timeout=20)
    try:
        stream = client.chat.completions.create(
            model="sim",
            messages=[{"role": "user", "content": "break the sdk"}],
            stream=True,
            max_tokens=200,
            extra_body={"sim": {"fault": "broken_stream"}},
        )
        received = []
        with pytest.raises(openai.APIError):
            for chunk in stream:
                received.append(chunk)
        assert received  # content arrived before the error
    finally:
        client.close()


def test_failover_headers_name_the_deployment_and_the_attempts(gateways: GatewayFactory):
    groups = f"""
  failover:
    deployments:
      - {{provider: openai, model: x, name: dead, base_url: "http://127.0.0.1:{free_port()}/v1"}}
      - {{provider: openai, model: sim-1, name: alive, base_url: "{gateways.sim.url}/v1"}}
"""
    gateway = gateways.start(gateways.config_text(extra_groups=groups))
    request = {"model": "failover", "messages": [{"role": "user", "content": "fail over"}]}
    response = httpx.post(gateway.url + URL, json=request, timeout=20)
    assert response.status_code == 200
    assert response.headers["x-slipstream-deployment"] == "alive"
    assert response.headers["x-slipstream-attempts"] == "2"
    assert response.json()["choices"][0]["message"]["content"]


def test_readyz_turns_degraded_when_the_only_deployment_keeps_failing(gateways: GatewayFactory):
    groups = f"""
  down:
    retries: {{max_attempts: 1}}
    breaker: {{failures: 2, cooldown: 600}}
    deployments:
      - {{provider: openai, model: x, name: nowhere, base_url: "http://127.0.0.1:{free_port()}/v1"}}
"""
    gateway = gateways.start(gateways.config_text(extra_groups=groups))
    ready = httpx.get(gateway.url + "/readyz", timeout=5)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    request = {"model": "down", "messages": [{"role": "user", "content": "anyone?"}]}
    for _ in range(2):
        assert httpx.post(gateway.url + URL, json=request, timeout=20).status_code == 502
    ready = httpx.get(gateway.url + "/readyz", timeout=5)
    assert ready.status_code == 503
    data = ready.json()
    assert data["status"] == "degraded" and data["unavailable"] == ["down"]
    assert data["deployments"]["down"][0]["breaker"]["state"] == "open"
    skipped = httpx.post(gateway.url + URL, json=request, timeout=20)  # not even tried now
    assert skipped.status_code == 503
    assert skipped.json()["error"]["code"] == "no_healthy_deployment"


def test_static_fallback_is_marked_and_never_cached(gateways: GatewayFactory, sim_server: Process):
    groups = f"""
  busy:
    retries: {{max_attempts: 1}}
    fallback_reply: "Busy right now, please retry."
    deployments:
      - {{provider: openai, model: sim-1, base_url: "{gateways.sim.url}/v1"}}
"""
    gateway = gateways.start(gateways.config_text(extra_groups=groups))
    request = {
        "model": "busy",
        "messages": [{"role": "user", "content": "fallback"}],
        "sim": {"fault": "500"},
    }
    before = sim_stats(sim_server)["requests"]
    for n in (1, 2):
        response = httpx.post(gateway.url + URL, json=request, timeout=20)
        assert response.status_code == 200
        assert response.headers["x-slipstream-fallback"] == "static"
        assert response.headers["x-slipstream-cache"] != "hit"
        assert response.json()["choices"][0]["message"]["content"] == "Busy right now, please retry."
        assert sim_stats(sim_server)["requests"] == before + n  # each one went upstream


def test_a_key_over_its_limit_gets_a_429_with_retry_after(gateways: GatewayFactory):
    keys = """
keys:
  - {key: sk-limited, name: limited, limits: {rpm: 2, max_wait: 0}}
"""
    gateway = gateways.start(gateways.config_text(keys=keys))
    headers = {"authorization": "Bearer sk-limited"}
    statuses = []
    for i in range(3):
        response = httpx.post(gateway.url + URL, json=body(f"key {i}"), headers=headers, timeout=20)
        statuses.append(response.status_code)
    assert statuses == [200, 200, 429]
    assert 1 <= int(response.headers["retry-after"]) <= 60
    assert response.json()["error"]["type"] == "rate_limit_error"
    client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key="sk-limited", max_retries=0, timeout=20)
    try:
        with pytest.raises(openai.RateLimitError):
            client.chat.completions.create(model="sim", messages=[{"role": "user", "content": "more"}])
    finally:
        client.close()


def test_the_timeout_header_caps_the_whole_request(gateway: Process):
    # The upstream never answers; without the header the group's first-byte timeout (3 s) and retries apply.
    request = body("wait forever", sim={"fault": "hang"})
    started = time.monotonic()
    response = httpx.post(
        gateway.url + URL, json=request, headers={"x-slipstream-timeout": "0.5"}, timeout=20
    )
    elapsed = time.monotonic() - started
    assert response.status_code == 504
    assert response.json()["error"]["type"]
    assert elapsed < 2.0


def test_a_bad_timeout_header_is_a_400_naming_it(gateway: Process):
    response = httpx.post(
        gateway.url + URL, json=body("t"), headers={"x-slipstream-timeout": "soon"}, timeout=20
    )
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "x-slipstream-timeout"
