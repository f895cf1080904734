"""The operator API (/api/metrics/*, /api/cache/clear, /dashboard) through the real ASGI app and pipeline.

Upstream is the in-process ``sim`` provider; the cache and the request log are real SQLite files in tmp_path.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from slipstream.config import parse_config
from slipstream.gateway.app import GatewayApp
from slipstream.pipeline import Pipeline

ADMIN = "admin-secret"
TEAM_A = "sk-team-a"
TEAM_B = "sk-team-b"
ADMIN_HEADERS = {"authorization": f"Bearer {ADMIN}"}


def config_text(tmp_path: Path, *, request_log: bool = True, admin: bool = True) -> str:
    return f"""
server:
  admin_key: {ADMIN if admin else "''"}
keys:
  - {{key: {TEAM_A}, name: team-a}}
  - {{key: {TEAM_B}, name: team-b}}
cache:
  sqlite: {{path: {tmp_path / "cache.db"}}}
observe:
  request_log: {{enabled: {str(request_log).lower()}, path: {tmp_path / "requests.db"}}}
model_groups:
  sim:
    deployments:
      - {{provider: sim, model: s, name: sim-east, price: {{input: 1.0, output: 4.0}}}}
  broken:
    retries: {{max_attempts: 1}}
    deployments:
      - {{provider: sim, model: s, name: broken-1, options: {{error_rate: 1.0}}}}
"""


async def make_client(text: str) -> tuple[httpx.AsyncClient, Pipeline]:
    pipeline = Pipeline(parse_config(text, environ={}))
    transport = httpx.ASGITransport(app=GatewayApp(pipeline))
    return httpx.AsyncClient(transport=transport, base_url="http://gateway.test", timeout=30), pipeline


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    http, pipeline = await make_client(config_text(tmp_path))
    yield http
    await http.aclose()
    await pipeline.aclose()


async def chat(
    http: httpx.AsyncClient, content: str, *, key: str = TEAM_A, model: str = "sim", **extra: Any
) -> httpx.Response:
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 20, **extra}
    return await http.post("/v1/chat/completions", json=body, headers={"authorization": f"Bearer {key}"})


async def known_traffic(http: httpx.AsyncClient) -> None:
    """3 misses (one streamed), 2 hits, 1 error, and 1 request from another key."""
    for content in ("one", "two"):
        assert (await chat(http, content)).headers["x-slipstream-cache"] == "miss"
    async with http.stream(
        "POST",
        "/v1/chat/completions",
        json={
            "model": "sim",
            "messages": [{"role": "user", "content": "three"}],
            "stream": True,
            "stream_options": {"include_usage": True},
        },
        headers={"authorization": f"Bearer {TEAM_A}"},
    ) as response:
        assert response.status_code == 200
        await response.aread()
    for content in ("one", "two"):
        assert (await chat(http, content)).headers["x-slipstream-cache"] == "hit"
    assert (await chat(http, "fails", model="broken")).status_code == 502
    assert (await chat(http, "from b", key=TEAM_B)).status_code == 200


async def get(http: httpx.AsyncClient, path: str, **params: str) -> Any:
    response = await http.get(path, params=params, headers=ADMIN_HEADERS)
    assert response.status_code == 200, response.text
    return response.json()


def assert_openai_error(response: httpx.Response, status: int, param: str | None = None) -> dict[str, Any]:
    assert response.status_code == status
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert "Traceback" not in response.text
    if param is not None:
        assert error["param"] == param
    return error


# ---------------------------------------------------------------------------------------------- parameters


# The last one is "10" in Arabic-Indic digits: str.isdigit() accepts it, the API must not.
@pytest.mark.parametrize("window", ["0", "1441", "-5", "1.5", "abc", "60m", "\u0661\u0660"])
async def test_a_bad_window_is_a_400_naming_the_parameter(client: httpx.AsyncClient, window: str):
    response = await client.get("/api/metrics/summary", params={"window": window}, headers=ADMIN_HEADERS)
    error = assert_openai_error(response, 400, "window")
    assert error["type"] == "invalid_request_error" and "1 to 1440" in error["message"]


@pytest.mark.parametrize("window", ["1", "1440"])
async def test_the_window_bounds_are_accepted(client: httpx.AsyncClient, window: str):
    assert (await get(client, "/api/metrics/summary", window=window))["window_minutes"] == int(window)


async def test_unknown_and_repeated_parameters_are_400s(client: httpx.AsyncClient):
    response = await client.get("/api/metrics/costs?modle=sim", headers=ADMIN_HEADERS)
    assert "modle" in assert_openai_error(response, 400, "modle")["message"]
    response = await client.get("/api/metrics/costs?model=a&model=b", headers=ADMIN_HEADERS)
    assert_openai_error(response, 400, "model")
    response = await client.get("/api/metrics/export?format=xml", headers=ADMIN_HEADERS)
    assert_openai_error(response, 400, "format")
    assert_openai_error(await client.get("/api/metrics/nothing", headers=ADMIN_HEADERS), 404)
    assert_openai_error(await client.post("/api/metrics/summary", headers=ADMIN_HEADERS), 405)
    assert_openai_error(await client.get("/api/cache/clear", headers=ADMIN_HEADERS), 405)


async def test_every_endpoint_needs_the_admin_key(client: httpx.AsyncClient):
    paths = [
        f"/api/metrics/{name}" for name in ("summary", "performance", "costs", "cache", "health", "export")
    ]
    for path in paths:
        assert_openai_error(await client.get(path), 401)
        assert_openai_error(await client.get(path, headers={"authorization": f"Bearer {TEAM_A}"}), 401)
        assert_openai_error(await client.get(path, headers={"authorization": "Bearer wrong"}), 401)
        assert (await client.get(path, headers=ADMIN_HEADERS)).status_code == 200
    assert_openai_error(await client.post("/api/cache/clear"), 401)
    assert (await client.get(paths[0], headers={"x-api-key": ADMIN})).status_code == 200


async def test_with_keys_but_no_admin_key_no_tenant_reaches_the_operator_api(tmp_path: Path):
    http, pipeline = await make_client(config_text(tmp_path, admin=False))
    try:
        tenant = {"authorization": f"Bearer {TEAM_B}"}
        for path in (
            "/api/metrics/summary",
            "/api/metrics/costs",
            "/api/cache/stats",
            "/api/alerts",
            "/metrics",
        ):
            assert_openai_error(await http.get(path), 401)
            assert_openai_error(await http.get(path, headers=tenant), 401)
        assert_openai_error(
            await http.post("/api/cache/clear", json={"namespace": "team-a"}, headers=tenant), 401
        )
        assert (await chat(http, "still served", key=TEAM_B)).status_code == 200
    finally:
        await http.aclose()
        await pipeline.aclose()


# ---------------------------------------------------------------------------------------------- figures


async def test_the_summary_counts_a_known_sequence_exactly(client: httpx.AsyncClient):
    await known_traffic(client)
    summary = await get(client, "/api/metrics/summary", window="5")

    assert summary["count"] == 7
    assert summary["errors"] == 1 and summary["errors_by_class"] == {"UpstreamStatusError": 1}
    assert summary["cache_hits"] == 2 and summary["cache_lookups"] == 7
    assert summary["hit_rate"] == pytest.approx(2 / 7)
    assert summary["requests_per_second"] == pytest.approx(7 / 300)
    assert summary["requests_per_second_1m"] == pytest.approx(7 / 60)
    assert summary["ttft_ms"]["p50"] is not None  # the streamed request
    latency = summary["latency_ms"]
    assert 0 < latency["p50"] <= latency["p95"] <= latency["p99"] <= latency["max"]
    assert summary["tokens"]["completion"] > 0 and summary["cost_usd"] > 0 and summary["saved_usd"] > 0
    assert summary["filters"] == {"model": None, "key": None, "deployment": None}


async def test_filters_slice_the_figures_and_unknown_values_give_empty_ones(client: httpx.AsyncClient):
    await known_traffic(client)
    assert (await get(client, "/api/metrics/summary", model="broken"))["count"] == 1
    assert (await get(client, "/api/metrics/summary", key="team-b"))["count"] == 1
    assert (await get(client, "/api/metrics/summary", deployment="sim-east"))["count"] == 4  # hits have none
    assert (await get(client, "/api/metrics/summary", model=""))["count"] == 7  # blank: no filter

    empty = await get(client, "/api/metrics/summary", model="no-such-model")
    assert empty["count"] == 0 and empty["latency_ms"]["p50"] is None
    assert empty["filters"]["model"] == "no-such-model"
    assert (await get(client, "/api/metrics/costs", key="nobody"))["by_model"] == []
    assert (await get(client, "/api/metrics/health", model="no-such-model"))["groups"] == []


async def test_performance_costs_and_cache_agree_with_the_summary(client: httpx.AsyncClient):
    await known_traffic(client)
    summary = await get(client, "/api/metrics/summary")
    performance = await get(client, "/api/metrics/performance")
    costs = await get(client, "/api/metrics/costs")
    cache = await get(client, "/api/metrics/cache")

    assert performance["timings"]["latency_ms"] == summary["latency_ms"]
    assert performance["timings"]["ttft_ms"] == summary["ttft_ms"]
    by_model = {row["name"]: row for row in performance["by_model"]}
    assert by_model["sim"]["count"] == 6 and by_model["broken"]["errors"] == 1
    assert sum(p["count"] for p in performance["timeseries"]["points"]) == summary["count"]
    assert len(performance["timeseries"]["points"]) == 60

    assert costs["cost_usd"] == pytest.approx(summary["cost_usd"])
    assert costs["saved_usd"] == pytest.approx(summary["saved_usd"])
    assert costs["cost_per_hour_usd"] == pytest.approx(summary["cost_usd"])  # the default window is 60 min
    assert {k["name"]: k["count"] for k in costs["by_key"]} == {"team-a": 6, "team-b": 1}

    assert cache["enabled"] is True
    assert cache["window"]["hit_rate"] == pytest.approx(summary["hit_rate"])
    assert cache["window"]["by_status"]["hit"] == 2 and cache["window"]["by_status"]["miss"] == 5
    assert cache["store"]["entries"] == 4  # one, two, three and team-b's request (the error is not cached)


async def test_health_shows_each_deployment_with_its_breaker_and_window(client: httpx.AsyncClient):
    await known_traffic(client)
    health = await get(client, "/api/metrics/health")
    groups = {g["name"]: g for g in health["groups"]}
    assert set(groups) == {"sim", "broken"}
    (east,) = groups["sim"]["deployments"]
    assert east["deployment"] == "sim-east" and east["breaker"]["state"] == "closed"
    assert east["window"]["count"] == 4 and east["window"]["errors"] == 0
    assert health["status"] in {"ok", "degraded", "down"} and health["uptime_seconds"] >= 0
    assert health["request_log"]["written"] == 7 and health["request_log"]["dropped"] == 0
    only = await get(client, "/api/metrics/health", deployment="broken-1")
    assert [d["deployment"] for g in only["groups"] for d in g["deployments"]] == ["broken-1"]


async def test_export_json_holds_every_report_and_csv_the_breakdowns(client: httpx.AsyncClient):
    await known_traffic(client)
    response = await client.get("/api/metrics/export", params={"format": "json"}, headers=ADMIN_HEADERS)
    assert response.headers["content-type"] == "application/json"
    assert re.match(
        r'attachment; filename="slipstream-metrics-\d{8}T\d{6}Z\.json"',
        response.headers["content-disposition"],
    )
    document = response.json()
    assert set(document) >= {"summary", "performance", "costs", "cache", "health", "window_minutes"}
    assert document["summary"]["count"] == 7

    response = await client.get("/api/metrics/export", params={"format": "csv"}, headers=ADMIN_HEADERS)
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    rows = list(csv.DictReader(io.StringIO(response.text)))
    (total,) = [r for r in rows if r["dimension"] == "total"]
    assert total["requests"] == "7" and total["errors"] == "1"
    models = {r["name"]: r for r in rows if r["dimension"] == "model"}
    assert models["sim"]["requests"] == "6" and models["broken"]["errors"] == "1"
    keys = {r["name"]: r["requests"] for r in rows if r["dimension"] == "key"}
    assert keys == {"team-a": "6", "team-b": "1"}
    assert {r["dimension"] for r in rows} == {"total", "model", "deployment", "key"}


# ---------------------------------------------------------------------------------------------- actions


async def test_clear_cache_empties_the_store_and_the_next_request_misses(client: httpx.AsyncClient):
    await known_traffic(client)
    response = await client.post("/api/cache/clear", headers=ADMIN_HEADERS)
    assert response.status_code == 200 and response.json() == {"cleared": 4, "namespace": None}
    assert (await get(client, "/api/metrics/cache"))["store"]["entries"] == 0
    assert (await chat(client, "one")).headers["x-slipstream-cache"] == "miss"


async def test_clear_cache_for_one_namespace_leaves_the_others(client: httpx.AsyncClient):
    assert (await chat(client, "mine", key=TEAM_A)).status_code == 200
    assert (await chat(client, "theirs", key=TEAM_B)).status_code == 200
    response = await client.post("/api/cache/clear", json={"namespace": "team-b"}, headers=ADMIN_HEADERS)
    assert response.json() == {"cleared": 1, "namespace": "team-b"}
    assert (await chat(client, "theirs", key=TEAM_B)).headers["x-slipstream-cache"] == "miss"
    assert (await chat(client, "mine", key=TEAM_A)).headers["x-slipstream-cache"] == "hit"

    for bad in (b"not json", b'{"namespace": 3}', b'{"everything": true}', b'{"namespace": ""}'):
        response = await client.post("/api/cache/clear", content=bad, headers=ADMIN_HEADERS)
        assert_openai_error(response, 400)


async def test_without_a_request_log_the_log_reports_say_so_and_health_still_answers(tmp_path: Path):
    http, pipeline = await make_client(config_text(tmp_path, request_log=False))
    try:
        error = assert_openai_error(await http.get("/api/metrics/summary", headers=ADMIN_HEADERS), 404)
        assert error["code"] == "request_log_disabled"
        health = await get(http, "/api/metrics/health")
        assert health["request_log"] is None and health["groups"]
        cache = await get(http, "/api/metrics/cache")
        assert cache["window"] is None and cache["store"]["entries"] == 0
    finally:
        await http.aclose()
        await pipeline.aclose()


# ---------------------------------------------------------------------------------------------- dashboard


@pytest.mark.parametrize(
    ("path", "content_type"),
    [
        ("/dashboard", "text/html; charset=utf-8"),
        ("/dashboard/", "text/html; charset=utf-8"),
        ("/dashboard/app.js", "text/javascript; charset=utf-8"),
        ("/dashboard/style.css", "text/css; charset=utf-8"),
    ],
)
async def test_the_dashboard_files_load_without_a_key(
    client: httpx.AsyncClient, path: str, content_type: str
):
    response = await client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"] == content_type
    assert response.headers["cache-control"] == "no-cache"
    assert "script-src 'self'" in response.headers["content-security-policy"]
    # Self-contained: no other origin is named (no CDN, no web fonts); the SVG namespace is a name, not a fetch.
    text = response.text.replace("http://www.w3.org/2000/svg", "")
    assert not re.search(r"(?:https?:)?//[a-z0-9.-]+\.[a-z]{2,}/", text)


async def test_the_page_names_the_figures_it_shows(client: httpx.AsyncClient):
    html = (await client.get("/dashboard")).text
    shown = set(re.findall(r'data-metric="([a-z0-9_]+)"', html))
    assert shown >= {"count", "latency_p95", "ttft_p99", "hit_rate", "tokens_prompt", "cost_usd", "saved_usd"}
    assert '<script src="/dashboard/app.js"' in html


async def test_unknown_dashboard_files_and_other_methods_are_refused(client: httpx.AsyncClient):
    assert_openai_error(await client.get("/dashboard/../../pyproject.toml"), 404)
    assert_openai_error(await client.get("/dashboard/secret.py"), 404)
    assert_openai_error(await client.post("/dashboard"), 405)


async def test_clearing_a_shared_cache_that_is_down_is_a_503_not_a_stack_trace(tmp_path: Path):
    from tests.redis_server import free_port

    text = config_text(tmp_path).replace(
        "cache:\n", f"cache:\n  redis: {{url: 'redis://127.0.0.1:{free_port()}/0', timeout: 0.05}}\n", 1
    )
    http, pipeline = await make_client(text)
    try:
        response = await http.post("/api/cache/clear", json={}, headers=ADMIN_HEADERS)
        assert_openai_error(response, 503)
        assert response.json()["error"]["code"] == "cache_unavailable"
        assert "Traceback" not in response.text
    finally:
        await http.aclose()
        await pipeline.aclose()
