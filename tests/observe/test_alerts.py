"""Alerts: the rule state machine (stepped clock), metric values from a real request log and a real pipeline,
the evaluator against a real webhook receiver and SMTP server, the SDK wiring, and a gateway process."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from slipstream import Slipstream, SlipstreamError
from slipstream.config import (
    ALERT_METRICS,
    ALERT_OPS,
    AlertRule,
    AlertsConfig,
    LogChannelConfig,
    WebhookChannelConfig,
    parse_config,
)
from slipstream.gateway.edge import Edge
from slipstream.limits.layer import KeyLimitLayer
from slipstream.observe.alerts import (
    COMPARISONS,
    LIVE_METRICS,
    LOG_METRICS,
    AlertEvaluator,
    MetricSource,
    RuleState,
    SenderLock,
    Transition,
    value_from_summary,
)
from slipstream.observe.notify import Notifier, build_channel, format_value
from slipstream.observe.record import RequestRecord
from slipstream.observe.requestlog import RequestLog
from slipstream.pipeline import Pipeline
from tests.e2e.conftest import Process, free_port
from tests.observe.receivers import SmtpSink, WebhookReceiver

T0 = 1_800_000_000.0
BOUND = 20.0  # seconds: a bound on waiting for background work, never a speed assertion


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookReceiver]:
    receiver = await WebhookReceiver().start()
    yield receiver
    await receiver.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


@pytest.fixture
def request_log(tmp_path: Path) -> Iterator[RequestLog]:
    log = RequestLog(tmp_path / "requests.db", batch_interval=0.01)
    yield log
    log.close(timeout=10)


def record(**kw: Any) -> RequestRecord:
    fields: dict[str, Any] = {"ts": time.time() - 1, "group": "chat", "status": 200, "latency_ms": 100.0}
    fields.update(kw)
    return RequestRecord(**fields)


def rule(**kw: Any) -> AlertRule:
    fields: dict[str, Any] = {
        "name": "r",
        "metric": "error_rate",
        "op": ">",
        "threshold": 0.5,
        "cooldown": 600.0,
    }
    fields.update(kw)
    return AlertRule(**fields)


async def until(predicate: Callable[[], bool]) -> None:
    """Wait (bounded) for background work to reach a state."""
    async with asyncio.timeout(BOUND):
        for _ in range(100_000):
            if predicate():
                return
            await asyncio.sleep(0.01)


def test_alerts_and_config_share_one_vocabulary():
    assert set(ALERT_METRICS) == LOG_METRICS | LIVE_METRICS
    assert not LOG_METRICS & LIVE_METRICS
    assert set(COMPARISONS) == set(ALERT_OPS)


# ------------------------------------------------------------------------------------------ state machine
def test_fires_once_reminds_after_cooldown_and_resolves_once():
    state = RuleState(rule(cooldown=600.0))
    assert state.update(0.1, T0) is None and not state.firing
    assert state.update(0.9, T0 + 15) is Transition.FIRED
    assert state.firing and state.since == T0 + 15
    assert state.update(0.9, T0 + 30) is None  # inside the cooldown: no repeat
    assert state.update(0.95, T0 + 614) is None
    assert state.update(0.95, T0 + 615) is Transition.REMINDED  # cooldown over, still firing
    assert state.update(0.2, T0 + 630) is Transition.RESOLVED
    assert not state.firing
    assert state.update(0.2, T0 + 645) is None  # resolved is said once


def test_flapping_inside_the_cooldown_stays_quiet_and_keeps_pairs():
    state = RuleState(rule(cooldown=600.0))
    assert state.update(0.9, T0) is Transition.FIRED
    assert state.update(0.1, T0 + 15) is Transition.RESOLVED
    # Breaches again within the cooldown: firing, but not announced...
    assert state.update(0.9, T0 + 30) is None
    assert state.firing and not state.announced
    # ...and it recovers before the cooldown ends: no RESOLVED for a FIRING nobody saw.
    assert state.update(0.1, T0 + 45) is None
    # Breaching again later than the cooldown announces it normally.
    assert state.update(0.9, T0 + 100) is None
    assert state.update(0.9, T0 + 600) is Transition.FIRED
    assert state.update(0.1, T0 + 615) is Transition.RESOLVED


def test_no_data_holds_the_state():
    state = RuleState(rule())
    assert state.update(None, T0) is None and not state.firing
    assert state.update(0.9, T0 + 15) is Transition.FIRED
    assert state.update(None, T0 + 30) is None and state.firing  # no traffic is not a recovery
    assert state.update(0.0, T0 + 45) is Transition.RESOLVED


@pytest.mark.parametrize(
    ("op", "value", "breached"),
    [(">", 0.5, False), (">=", 0.5, True), ("<", 0.2, True), ("<=", 0.3, True), ("<", 0.3, False)],
)
def test_comparisons(op: str, value: float, breached: bool):
    threshold = 0.5 if op.startswith(">") else 0.3
    assert RuleState(rule(op=op, threshold=threshold)).breached(value) is breached


def test_notification_carries_the_rule_and_the_episode():
    state = RuleState(
        rule(name="slow", metric="p95_latency_ms", threshold=2000.0, model="gpt-4o", window=300.0)
    )
    state.update(2300.0, T0)
    notice = state.notification(Transition.FIRED, T0)
    assert notice.subject == "[slipstream] FIRING warning: slow (p95_latency_ms 2300 > 2000)"
    assert (notice.filters, notice.since, notice.repeat, notice.window) == (
        {"model": "gpt-4o"},
        T0,
        False,
        300.0,
    )


# ------------------------------------------------------------------------------------------ values
async def test_values_from_a_real_request_log(request_log: RequestLog):
    for i in range(1, 21):  # latencies 100..2000 ms; 5 errors; 8 hits of 16 lookups; $0.05 each
        request_log.record(
            record(
                latency_ms=100.0 * i,
                status=500 if i <= 5 else 200,
                error="UpstreamStatusError" if i <= 5 else None,
                cache_status="hit" if i <= 8 else "miss" if i <= 16 else "bypass",
                cost_usd=0.05,
            )
        )
    request_log.record(record(group="other", status=500, error="UpstreamTimeout"))
    await request_log.aflush()
    summary = request_log.summary(5.0, model="chat")
    assert value_from_summary(rule(metric="error_rate"), summary) == 0.25
    assert value_from_summary(rule(metric="p95_latency_ms"), summary) == 1900.0
    assert value_from_summary(rule(metric="p99_latency_ms"), summary) == 2000.0
    assert value_from_summary(rule(metric="hit_rate"), summary) == 0.5  # 8 hits / 16 lookups (bypass is none)
    assert value_from_summary(rule(metric="cost_per_hour", window=1800.0), summary) == pytest.approx(2.0)
    assert value_from_summary(rule(metric="error_rate", min_requests=21), summary) is None
    assert value_from_summary(rule(metric="hit_rate", min_requests=17), summary) is None
    assert value_from_summary(rule(metric="p95_latency_ms"), request_log.summary(5.0, model="nobody")) is None

    source = MetricSource(request_log)
    values = await source.read(
        [
            rule(name="all-errors", window=300.0),
            rule(name="chat-errors", window=300.0, model="chat"),
            rule(name="p95", metric="p95_latency_ms", window=300.0, model="chat"),
        ]
    )
    assert values == {"all-errors": pytest.approx(6 / 21), "chat-errors": 0.25, "p95": 1900.0}


async def test_unreadable_log_gives_no_value_and_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    log = RequestLog(tmp_path / "gone" / "requests.db")
    log.close(timeout=10)
    remove_database(log.path)
    source = MetricSource(log)
    for _ in range(3):
        assert await source.read([rule()]) == {"r": None}
    assert len([r for r in caplog.records if "reading the request log failed" in r.getMessage()]) == 1


def remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def pipeline_config(tmp_path: Path, alerts: str) -> str:
    return f"""
cache: {{enabled: false}}
coalescing: {{enabled: false}}
observe: {{request_log: {{path: {tmp_path / "requests.db"}}}}}
model_groups:
  chat:
    retries: {{max_attempts: 1}}
    breaker: {{failures: 2, min_requests: 100, cooldown: 600}}
    deployments:
      - {{provider: sim, model: sim-1, name: sim-a, limits: {{max_concurrent: 1, max_wait: 60}}}}
alerts:
{alerts}
"""


async def test_sdk_runs_alerts_on_a_real_pipeline(tmp_path: Path, webhook: WebhookReceiver):
    """Errors forced through the sim provider raise the error rate and open the breaker; the SDK's evaluator
    (started by ``async with``) announces both to the webhook, and the gauge shows them."""
    config = parse_config(
        pipeline_config(
            tmp_path,
            f"""
  interval: 1h
  channels: {{hook: {{type: webhook, url: "{webhook.url()}"}}}}
  rules:
    - {{name: errors, metric: error_rate, op: ">", threshold: 0.5, window: 5m, min_requests: 3, severity: critical}}
    - {{name: breaker, metric: breaker_open, op: ">=", threshold: 1, model: chat}}
    - {{name: queue, metric: queue_depth, op: ">", threshold: 2}}
""",
        ),
        environ={},
    )
    slip = Slipstream(config)
    assert slip.alerts is not None and not slip.alerts.running
    async with slip:
        assert slip.alerts.running
        for i in range(3):
            with pytest.raises(SlipstreamError):
                await slip.chat(
                    model="chat", messages=[{"role": "user", "content": f"q{i}"}], sim={"fault": "500"}
                )
        assert slip.pipeline.observer is not None and slip.pipeline.observer.request_log is not None
        await slip.pipeline.observer.request_log.aflush()
        notices = await slip.alerts.evaluate()
        assert {(n.rule, n.state) for n in notices} == {("errors", "FIRING"), ("breaker", "FIRING")}
        await webhook.wait_for(2)
        assert {p["rule"]: p["value"] for p in webhook.received} == {"errors": 1.0, "breaker": 1.0}
        exposition, _ = slip.pipeline.observer.metrics.render()
        assert b'slipstream_alert_firing{rule="errors",severity="critical"} 1.0' in exposition
        assert b'slipstream_alert_firing{rule="queue",severity="warning"} 0.0' in exposition
        snapshot = {a["rule"]: a for a in slip.alerts.snapshot()["alerts"]}
        assert snapshot["queue"]["state"] == "ok" and snapshot["queue"]["value"] == 0.0
        assert snapshot["errors"]["state"] == "firing" and snapshot["errors"]["channels"] == ["hook"]
    assert not slip.alerts.running
    slip.alerts.start()  # a closed client's evaluator stays stopped
    assert not slip.alerts.running


async def test_queue_depth_counts_requests_waiting_for_a_deployment(tmp_path: Path):
    config = parse_config(
        pipeline_config(
            tmp_path,
            """
  interval: 1h
  rules:
    - {name: queue, metric: queue_depth, op: ">", threshold: 2, model: chat}
    - {name: other-group, metric: queue_depth, op: ">", threshold: 0, model: nothing}
""",
        ),
        environ={},
    )
    async with Slipstream(config) as slip:
        assert slip.alerts is not None
        hold = asyncio.create_task(
            slip.chat(model="chat", messages=[{"role": "user", "content": "h"}], sim={"fault": "hang"})
        )
        await until(lambda: slip.health()["chat"][0]["limits"]["in_flight"] == 1)
        queued = [
            asyncio.create_task(slip.chat(model="chat", messages=[{"role": "user", "content": f"w{i}"}]))
            for i in range(3)
        ]
        try:
            await until(lambda: slip.health()["chat"][0]["limits"]["waiting"] == 3)
            notices = await slip.alerts.evaluate()
            assert [(n.rule, n.state, n.value) for n in notices] == [("queue", "FIRING", 3.0)]
            assert notices[0].subject == "[slipstream] FIRING warning: queue (queue_depth 3 > 2)"
        finally:
            for task in (hold, *queued):
                task.cancel()
            await asyncio.gather(hold, *queued, return_exceptions=True)


async def test_queue_depth_counts_requests_waiting_for_their_key(tmp_path: Path):
    """Key limits queue calls at the edge (the gateway's path): a ``key`` rule reads that key's queue, and a
    rule without filters counts it too."""
    config = parse_config(
        f"""
keys: [{{key: sk-a, name: team-a, limits: {{max_concurrent: 1, max_wait: 60}}}}, {{key: sk-b, name: team-b}}]
cache: {{enabled: false}}
coalescing: {{enabled: false}}
observe: {{request_log: {{path: {tmp_path / "requests.db"}}}}}
model_groups: {{chat: {{deployments: [{{provider: sim, model: sim-1}}]}}}}
""",
        environ={},
    )
    pipeline = Pipeline(config)
    edge = Edge(pipeline)
    (layer,) = [layer for layer in pipeline.layers if isinstance(layer, KeyLimitLayer)]

    def post(content: str, key: str = "sk-a", **extra: Any) -> Any:
        body = {"model": "chat", "messages": [{"role": "user", "content": content}], **extra}
        return edge.handle(
            "POST", "/v1/chat/completions", {"authorization": f"Bearer {key}"}, orjson.dumps(body)
        )

    hold = asyncio.create_task(post("h", sim={"fault": "hang"}))
    await until(lambda: layer.limiters["team-a"].in_flight == 1)
    queued = [asyncio.create_task(post(f"w{i}")) for i in range(2)]
    try:
        await until(lambda: layer.limiters["team-a"].waiting == 2)
        source = MetricSource.for_pipeline(pipeline)
        values = await source.read(
            [
                rule(name="a", metric="queue_depth", key="team-a"),
                rule(name="b", metric="queue_depth", key="team-b"),
                rule(name="all", metric="queue_depth"),
                rule(name="chat", metric="queue_depth", model="chat"),  # deployments only: no limits there
            ]
        )
        assert values == {"a": 2.0, "b": 0.0, "all": 2.0, "chat": 0.0}
    finally:
        for task in (hold, *queued):
            task.cancel()
        await asyncio.gather(hold, *queued, return_exceptions=True)
        await pipeline.aclose()


# ------------------------------------------------------------------------------------------ evaluator
async def test_evaluator_cooldown_and_resolution_reach_webhook_and_email(
    request_log: RequestLog, webhook: WebhookReceiver, smtp: SmtpSink
):
    clock = Clock()
    channels = {
        "slack": build_channel(WebhookChannelConfig("slack", url=webhook.url(), timeout=5)),
        "mail": build_channel(
            parse_config(
                f"""
model_groups: {{s: {{deployments: [{{provider: sim, model: s}}]}}}}
alerts:
  channels: {{mail: {{type: email, host: 127.0.0.1, port: {smtp.port}, from: alerts@x.test, to: ops@x.test}}}}
""",
                environ={},
            ).alerts.channels["mail"]
        ),
    }
    config = AlertsConfig(
        interval=15.0,
        channels={"slack": channels["slack"], "mail": channels["mail"]},  # type: ignore[dict-item]
        rules=(
            rule(name="errors", window=300.0, cooldown=600.0, min_requests=5, channels=("slack", "mail")),
            rule(name="slow", metric="p95_latency_ms", threshold=2000.0, window=300.0, channels=("slack",)),
        ),
    )
    evaluator = AlertEvaluator(config, MetricSource(request_log), Notifier(channels), clock=clock)
    try:
        for _ in range(6):
            request_log.record(record(status=502, error="UpstreamStatusError", latency_ms=50.0))
        await request_log.aflush()
        fired = await evaluator.evaluate()
        assert [(n.rule, n.state, n.value) for n in fired] == [("errors", "FIRING", 1.0)]
        assert all(d.ok for d in evaluator.deliveries) and len(evaluator.deliveries) == 2

        clock.now += 60  # still failing, inside the cooldown: nothing new
        assert await evaluator.evaluate() == []
        clock.now += 600  # cooldown over: one reminder
        (reminder,) = await evaluator.evaluate()
        assert reminder.state == "FIRING" and reminder.repeat

        for _ in range(30):
            request_log.record(record(latency_ms=80.0))
        await request_log.aflush()
        clock.now += 15
        (resolved,) = await evaluator.evaluate()
        assert (resolved.rule, resolved.state, resolved.value) == ("errors", "RESOLVED", 6 / 36)
        clock.now += 15
        assert await evaluator.evaluate() == []  # resolved is said once
    finally:
        await evaluator.aclose()

    states = [(p["state"], p["repeat"]) for p in await webhook.wait_for(3)]
    assert states == [("FIRING", False), ("FIRING", True), ("RESOLVED", False)]
    await asyncio.to_thread(smtp.wait_for, 3)
    assert smtp.subjects() == [
        "[slipstream] FIRING warning: errors (error_rate 1 > 0.5)",
        "[slipstream] FIRING warning: errors (error_rate 1 > 0.5) (still firing)",
        "[slipstream] RESOLVED warning: errors (error_rate 0.1667 <= 0.5)",
    ]
    assert evaluator.snapshot()["evaluations"] == 5


async def test_background_loop_evaluates_each_interval_and_survives_failing_channels(
    request_log: RequestLog, caplog: pytest.LogCaptureFixture
):
    """The loop's sleep is a gate the test opens, so each tick is one evaluation and nothing waits for real."""
    ticks: asyncio.Queue[None] = asyncio.Queue()
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        await ticks.get()

    dead = f"http://127.0.0.1:{free_port()}/hook"
    config = AlertsConfig(
        interval=15.0,
        channels={"dead": WebhookChannelConfig("dead", url=dead, timeout=5), "log": LogChannelConfig("log")},
        rules=(rule(name="errors", min_requests=1, cooldown=0.0, channels=("dead", "log")),),
    )
    channels = {name: build_channel(c) for name, c in config.channels.items()}
    evaluator = AlertEvaluator(config, MetricSource(request_log), Notifier(channels), sleep=sleep)
    request_log.record(record(status=500, error="UpstreamStatusError"))
    await request_log.aflush()
    evaluator.start()
    evaluator.start()  # idempotent
    try:
        for n in (1, 2, 3):
            ticks.put_nowait(None)
            await until(lambda n=n: evaluator.evaluations == n)
        assert evaluator.running and slept[:3] == [15.0, 15.0, 15.0]
        assert evaluator.notifier.failing == {"dead"}
        assert evaluator.snapshot()["failing_channels"] == ["dead"]
    finally:
        await evaluator.aclose()
    assert not evaluator.running
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "alert channel 'dead' failed" in m]) == 1
    # cooldown 0: the log channel announced the rule on every tick while the webhook kept failing.
    assert len([m for m in messages if m.startswith("[slipstream] FIRING warning: errors")]) == 3
    assert not any(dead in m for m in messages)


async def test_processes_sharing_a_log_evaluate_alike_but_one_sends(
    tmp_path: Path, request_log: RequestLog, webhook: WebhookReceiver
):
    """Gateway workers share the request log: each keeps the states (for /api/alerts), one sends."""
    config = AlertsConfig(
        channels={"hook": WebhookChannelConfig("hook", url=webhook.url())},
        rules=(rule(name="errors", channels=("hook",)),),
    )

    def evaluator() -> AlertEvaluator:
        notifier = Notifier({"hook": build_channel(config.channels["hook"])})
        return AlertEvaluator(
            config, MetricSource(request_log), notifier, lock=SenderLock(tmp_path / "alerts.lock")
        )

    first, second = evaluator(), evaluator()
    try:
        request_log.record(record(status=500, error="UpstreamStatusError"))
        await request_log.aflush()
        assert len(await first.evaluate()) == 1 and len(await second.evaluate()) == 1
        assert (len(first.deliveries), len(second.deliveries), second.withheld) == (1, 0, 1)
        assert first.snapshot()["sender"] and not second.snapshot()["sender"]
        assert all(e.snapshot()["alerts"][0]["state"] == "firing" for e in (first, second))
        await first.aclose()  # the sender goes away: the other one takes over
        for _ in range(3):
            request_log.record(record())
        await request_log.aflush()
        (resolved,) = await second.evaluate()
        assert resolved.state == "RESOLVED" and len(second.deliveries) == 1 and second.snapshot()["sender"]
    finally:
        await first.aclose()
        await second.aclose()
    assert [p["state"] for p in await webhook.wait_for(2)] == ["FIRING", "RESOLVED"]


# ------------------------------------------------------------------------------------------ gateway
async def test_gateway_announces_and_resolves_and_serves_states(
    tmp_path: Path, webhook: WebhookReceiver, smtp: SmtpSink
):
    config = tmp_path / "gateway.yaml"
    config.write_text(
        f"""
server: {{admin_key: adm-secret}}
cache: {{sqlite: {{path: {tmp_path / "cache.db"}}}}}
observe: {{request_log: {{path: {tmp_path / "requests.db"}}}}}
model_groups:
  sim:
    retries: {{max_attempts: 1}}
    breaker: {{failures: 1000, min_requests: 1000}}
    deployments: [{{provider: sim, model: sim-1}}]
alerts:
  interval: 100ms
  channels:
    slack: {{type: webhook, url: "{webhook.url()}", timeout: 5}}
    mail: {{type: email, host: 127.0.0.1, port: {smtp.port}, from: alerts@x.test, to: [ops@x.test]}}
    ops-log: {{type: log}}
  rules:
    - name: errors
      metric: error_rate
      op: ">"
      threshold: 0.5
      window: 1m
      min_requests: 3
      cooldown: 1h
      severity: critical
"""
    )
    port = free_port()
    gateway = Process(
        ["serve", "--config", str(config), "--port", str(port)],
        port=port,
        log=tmp_path / "gw.log",
        cwd=tmp_path,
    )
    await asyncio.to_thread(gateway.start)
    admin = {"authorization": "Bearer adm-secret"}
    try:
        async with httpx.AsyncClient(base_url=gateway.url, timeout=30) as client:
            for i in range(4):
                body = {
                    "model": "sim",
                    "messages": [{"role": "user", "content": f"e{i}"}],
                    "sim": {"fault": "500"},
                }
                response = await client.post("/v1/chat/completions", json=body)
                assert response.status_code >= 500
            (firing,) = await webhook.wait_for(1)
            assert (firing["rule"], firing["state"], firing["value"]) == ("errors", "FIRING", 1.0)
            assert firing["text"] == "[slipstream] FIRING critical: errors (error_rate 1 > 0.5)"

            denied = await client.get("/api/alerts")
            assert denied.status_code == 401 and denied.json()["error"]["type"] == "authentication_error"
            states = (await client.get("/api/alerts", headers=admin)).json()
            assert states["enabled"] and states["firing"] == 1
            (errors,) = states["alerts"]
            assert (errors["rule"], errors["state"], errors["value"]) == ("errors", "firing", 1.0)
            metrics = (await client.get("/metrics", headers=admin)).text
            assert 'slipstream_alert_firing{rule="errors",severity="critical"} 1.0' in metrics

            for i in range(8):
                body = {"model": "sim", "messages": [{"role": "user", "content": f"ok{i}"}]}
                assert (await client.post("/v1/chat/completions", json=body)).status_code == 200
            _, resolved = await webhook.wait_for(2)
            # Evaluations run while the good requests arrive: it resolves somewhere between 4/8 and 4/12.
            assert resolved["state"] == "RESOLVED" and 4 / 12 <= resolved["value"] <= 0.5
            await asyncio.to_thread(smtp.wait_for, 2)
            assert smtp.subjects() == [
                "[slipstream] FIRING critical: errors (error_rate 1 > 0.5)",
                f"[slipstream] RESOLVED critical: errors (error_rate {format_value(resolved['value'])} <= 0.5)",
            ]
            states = (await client.get("/api/alerts", headers=admin)).json()
            assert states["firing"] == 0 and states["alerts"][0]["state"] == "ok"
    finally:
        await asyncio.to_thread(gateway.stop)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal.
    assert gateway.proc is not None and gateway.proc.returncode in (0, -signal.SIGTERM)
    output = gateway.log.read_text()
    assert "[slipstream] FIRING critical: errors (error_rate 1 > 0.5)" in output  # the log channel
    assert "Traceback" not in output and "Unclosed" not in output
    assert len(webhook.received) == 2  # cooldown 1h: no reminder, and resolved once
