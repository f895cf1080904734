"""Gateway processes sharing one real redis-server behave as one: global limits, one upstream call for identical
requests, and no failed request while Redis goes away and comes back."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import httpx

from tests.redis_server import RedisServer, redis_server, redis_url  # noqa: F401 - pytest fixtures

from .conftest import GatewayFactory, Process, free_port, sim_stats


def _config(gateways: GatewayFactory, redis_url: str, name: str) -> str:  # noqa: F811
    limited = f"""
  limited:
    retries: {{max_attempts: 1}}
    deployments:
      - provider: openai
        model: sim-1
        base_url: {gateways.sim.url}/v1
        limits: {{rpm: 120, max_wait: 0}}
"""
    text = gateways.config_text(extra_groups=limited)
    # Each instance its own SQLite file and request log: only Redis joins them.
    text = text.replace(str(gateways.workdir / "cache.db"), str(gateways.workdir / f"{name}.db"))
    return f"redis: {{url: '{redis_url}', timeout: 0.2}}\n" + text


def _start(gateways: GatewayFactory, redis_url: str, n: int) -> list[Process]:  # noqa: F811
    return [gateways.start(_config(gateways, redis_url, f"g{i}"), name=f"g{i}") for i in range(n)]


def _body(content: str, model: str = "sim", **extra: object) -> dict[str, object]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def _post_all(urls: list[str], bodies: list[dict[str, object]]) -> list[httpx.Response]:
    async with httpx.AsyncClient(timeout=30) as client:
        return await asyncio.gather(
            *(
                client.post(f"{urls[i % len(urls)]}/v1/chat/completions", json=body)
                for i, body in enumerate(bodies)
            )
        )


def test_three_instances_hold_one_global_rpm_limit(gateways: GatewayFactory, redis_url: str) -> None:  # noqa: F811
    procs = _start(gateways, redis_url, 3)
    bodies = [_body(f"distinct question {i}", model="limited") for i in range(200)]
    replies = asyncio.run(_post_all([p.url for p in procs], bodies))
    statuses = [r.status_code for r in replies]
    # 120 requests per minute for the three together (each alone would have let 120 through: 200 in all).
    assert statuses.count(200) == 120
    assert statuses.count(429) == 80
    refused = next(r for r in replies if r.status_code == 429).json()
    assert refused["error"]["type"] == "rate_limit_error"


def test_fifty_identical_requests_across_three_instances_make_one_upstream_call(
    gateways: GatewayFactory,
    redis_url: str,  # noqa: F811
) -> None:
    procs = _start(gateways, redis_url, 3)
    before = sim_stats(gateways.sim)["requests"]
    body = _body("the same question, fifty times", sim={"ttft": 0.5})
    replies = asyncio.run(_post_all([p.url for p in procs], [body] * 50))
    assert [r.status_code for r in replies] == [200] * 50
    assert len({r.json()["choices"][0]["message"]["content"] for r in replies}) == 1
    assert sim_stats(gateways.sim)["requests"] - before == 1
    # One leader; the other 49 (on every instance) were answered by its call.
    coalesced = [r.headers.get("x-slipstream-coalesced") for r in replies]
    assert coalesced.count("1") == 49


async def _load(urls: list[str], seconds: float, results: list[int], errors: list[str]) -> None:
    """Eight workers, back to back, for ``seconds``: half repeated prompts (cache), half new ones (upstream)."""
    deadline = time.monotonic() + seconds
    async with httpx.AsyncClient(timeout=15) as client:

        async def worker(w: int) -> None:
            i = 0
            while time.monotonic() < deadline and i < 2000:
                content = f"repeat {i % 5}" if i % 2 else f"worker {w} new {i}"
                try:
                    r = await client.post(
                        f"{urls[(w + i) % len(urls)]}/v1/chat/completions", json=_body(content)
                    )
                    results.append(r.status_code)
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))
                i += 1

        await asyncio.gather(*(worker(w) for w in range(8)))


def test_killing_redis_during_load_fails_no_request(
    gateways: GatewayFactory,
    redis_server: RedisServer,  # noqa: F811
    redis_url: str,  # noqa: F811
) -> None:
    procs = _start(gateways, redis_url, 2)
    urls = [p.url for p in procs]
    results: list[int] = []
    errors: list[str] = []

    async def scenario() -> None:
        load = asyncio.ensure_future(_load(urls, 4.0, results, errors))
        await asyncio.sleep(1.0)
        redis_server.stop()
        await asyncio.sleep(1.5)
        async with httpx.AsyncClient(timeout=5) as client:
            down = (await client.get(f"{urls[0]}/readyz")).json()
        redis_server.start()
        await load
        assert down["redis"]["healthy"] is False

    asyncio.run(scenario())
    assert not errors
    assert len(results) > 200 and all(status == 200 for status in results), (
        len(results),
        sorted(set(results)),
    )
    # Back on Redis by themselves: both report it healthy, and an answer cached through one hits on the other.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        httpx.post(f"{urls[0]}/v1/chat/completions", json=_body(f"probe {time.monotonic()}"), timeout=10)
        if all(httpx.get(f"{u}/readyz", timeout=5).json()["redis"]["healthy"] for u in urls):
            break
        time.sleep(0.3)
    else:
        raise AssertionError("the gateways did not go back to Redis")
    miss = httpx.post(f"{urls[0]}/v1/chat/completions", json=_body("after the outage"), timeout=10)
    hit = httpx.post(f"{urls[1]}/v1/chat/completions", json=_body("after the outage"), timeout=10)
    assert miss.headers["x-slipstream-cache"] == "miss"
    assert hit.headers["x-slipstream-cache"] == "hit"


def test_serve_workers_runs_several_processes_on_one_port(
    gateways: GatewayFactory,
    redis_url: str,  # noqa: F811
) -> None:
    path = gateways.workdir / "workers.yaml"
    # Generous Redis timeouts: two workers starting at once on a busy 2-core machine open their first
    # connections slowly, and this test is about sharing, not about timeouts (the outage test covers those).
    text = _config(gateways, redis_url, "workers").replace("timeout: 0.2}", "timeout: 2}")
    path.write_text(text.replace("cache:\n", "cache:\n  redis: {timeout: 2}\n", 1))
    port = free_port()
    proc = Process(
        ["serve", "--config", str(path), "--port", str(port), "--workers", "2"],
        port=port,
        log=gateways.workdir / "workers.log",
        cwd=gateways.workdir,
    )
    gateways.started.append(proc)
    proc.start()
    assert proc.proc is not None
    deadline = time.monotonic() + 20
    workers: list[str] = []
    while time.monotonic() < deadline:
        workers = [p.name for p in Path("/proc").iterdir() if p.name.isdigit() and _ppid(p) == proc.proc.pid]
        if len(workers) >= 2:
            break
        time.sleep(0.2)
    assert len(workers) >= 2, workers
    replies = asyncio.run(_post_all([proc.url], [_body(f"worker question {i % 4}") for i in range(40)]))
    assert [r.status_code for r in replies] == [200] * 40
    # Whatever worker answered, a repeated question is a hit: the workers share the cache (SQLite and Redis).
    again = httpx.post(f"{proc.url}/v1/chat/completions", json=_body("worker question 1"), timeout=10)
    assert again.headers["x-slipstream-cache"] == "hit"
    # Each worker reports its own Redis connection; a worker that timed out on a cold connection under load
    # goes back to Redis by itself (one probe a second), so poll, sending a request each time to probe.
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        httpx.post(f"{proc.url}/v1/chat/completions", json=_body(f"probe {time.monotonic()}"), timeout=10)
        metrics = httpx.get(f"{proc.url}/metrics", timeout=5).text
        if 'slipstream_redis_up{part="coordination"} 1.0' in metrics:
            break
        time.sleep(0.2)
    else:
        raise AssertionError("a worker does not report Redis up")


def _ppid(proc_dir: Path) -> int | None:
    try:
        return int((proc_dir / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None
