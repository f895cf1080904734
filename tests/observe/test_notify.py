"""Alert channels against real local receivers: an aiohttp webhook endpoint and an aiosmtpd SMTP server."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Iterator

import pytest

from slipstream.config import ALERT_SEVERITIES, EmailChannelConfig, LogChannelConfig, WebhookChannelConfig
from slipstream.observe.notify import (
    SEVERITY_LEVEL,
    EmailChannel,
    LogChannel,
    Notification,
    Notifier,
    WebhookChannel,
    build_channel,
    format_duration,
    format_value,
)
from tests.e2e.conftest import free_port
from tests.observe.receivers import SmtpSink, WebhookReceiver

AT = 1_800_000_000.0


@pytest.fixture
async def webhook() -> AsyncIterator[WebhookReceiver]:
    receiver = await WebhookReceiver().start()
    yield receiver
    await receiver.stop()


@pytest.fixture
def smtp() -> Iterator[SmtpSink]:
    with SmtpSink() as sink:
        yield sink


def notice(**kw: object) -> Notification:
    fields: dict[str, object] = {
        "rule": "slow",
        "metric": "p95_latency_ms",
        "state": "FIRING",
        "severity": "warning",
        "value": 2300.0,
        "op": ">",
        "threshold": 2000.0,
        "window": 300.0,
        "at": AT,
        "since": AT,
        "filters": {"model": "gpt-4o"},
    }
    fields.update(kw)
    return Notification(**fields)  # type: ignore[arg-type]


def test_subject_states_the_condition_that_holds():
    assert notice().subject == "[slipstream] FIRING warning: slow (p95_latency_ms 2300 > 2000)"
    resolved = notice(state="RESOLVED", value=1200.0)
    assert resolved.subject == "[slipstream] RESOLVED warning: slow (p95_latency_ms 1200 <= 2000)"
    hit = notice(rule="cold-cache", metric="hit_rate", op="<", threshold=0.3, value=0.125, severity="info")
    assert hit.subject == "[slipstream] FIRING info: cold-cache (hit_rate 0.125 < 0.3)"


def test_body_explains_window_filters_and_reminders():
    body = notice(repeat=True, since=AT - 3600).body()
    assert "p95_latency_ms over the last 5m is 2300 (alert when > 2000)." in body
    assert "Watching: model=gpt-4o" in body
    assert "Still firing since 2027-01-15 07:00:00 UTC." in body


def test_formatting_helpers():
    assert [format_value(v) for v in (2300.4, 0.5, 0.123456, 45.678, 0.0)] == [
        "2300",
        "0.5",
        "0.1235",
        "45.68",
        "0",
    ]
    assert [format_duration(s) for s in (300, 3600, 86400, 90, 15, 0.5)] == [
        "5m",
        "1h",
        "1d",
        "90s",
        "15s",
        "0.5s",
    ]


async def test_webhook_posts_slack_compatible_json(webhook: WebhookReceiver):
    channel = WebhookChannel("slack", webhook.url(), timeout=5)
    try:
        await channel.send(notice())
    finally:
        await channel.aclose()
    (payload,) = webhook.received
    assert payload["text"] == "[slipstream] FIRING warning: slow (p95_latency_ms 2300 > 2000)"
    (attachment,) = payload["attachments"]
    assert attachment["color"] == "#e8a317" and attachment["title"] == "FIRING: slow"
    fields = {f["title"]: f["value"] for f in attachment["fields"]}
    assert fields == {
        "Value": "2300",
        "Threshold": "> 2000",
        "Window": "5m",
        "Severity": "warning",
        "model": "gpt-4o",
    }
    # The structured fields, for receivers that are not chat rooms.
    assert {
        k: payload[k] for k in ("rule", "metric", "value", "threshold", "severity", "state", "window")
    } == {
        "rule": "slow",
        "metric": "p95_latency_ms",
        "value": 2300.0,
        "threshold": 2000.0,
        "severity": "warning",
        "state": "FIRING",
        "window": 300.0,
    }


async def test_failing_webhook_is_logged_once_per_streak_without_its_url(
    webhook: WebhookReceiver, caplog: pytest.LogCaptureFixture
):
    url = webhook.url("xoxb-very-secret")
    notifier = Notifier({"slack": WebhookChannel("slack", url, timeout=5)})
    webhook.status = 500
    caplog.set_level(logging.WARNING, "slipstream.alerts")
    try:
        for _ in range(3):
            (delivery,) = await notifier.deliver([(notice(), ["slack"])])
            assert not delivery.ok and delivery.error == "webhook answered HTTP 500: receiver says no"
        assert notifier.failing == {"slack"}
        webhook.status = 200
        (delivery,) = await notifier.deliver([(notice(), ["slack"])])
        assert delivery.ok
    finally:
        await notifier.aclose()
    messages = [r.getMessage() for r in caplog.records]
    assert len([m for m in messages if "failed" in m]) == 1
    assert messages[-1] == "alert channel 'slack' recovered"
    assert not any("xoxb-very-secret" in m for m in messages)
    assert (notifier.sent, notifier.failed, notifier.failing) == (1, 3, frozenset())


async def test_unreachable_and_stalled_channels_fail_alone(webhook: WebhookReceiver):
    """A refused connection and a receiver that never answers fail within their timeouts; the log still gets
    the alert, and deliver() itself never raises."""
    webhook.hold = True
    notifier = Notifier(
        {
            "refused": WebhookChannel("refused", f"http://127.0.0.1:{free_port()}/hook/x", timeout=5),
            "stalled": WebhookChannel("stalled", webhook.url(), timeout=0.3),
            "ops-log": LogChannel("ops-log"),
        }
    )
    try:
        deliveries = await notifier.deliver([(notice(), ["refused", "stalled", "ops-log", "not-configured"])])
    finally:
        await notifier.aclose()
    outcome = {d.channel: (d.ok, d.error) for d in deliveries}
    assert outcome["ops-log"] == (True, None)
    assert outcome["stalled"] == (False, "timed out")
    assert outcome["refused"][0] is False and "ClientConnectorError" in str(outcome["refused"][1])
    assert set(outcome) == {"refused", "stalled", "ops-log"}


async def test_log_channel_logs_at_the_severity_level(caplog: pytest.LogCaptureFixture):
    assert set(SEVERITY_LEVEL) == set(ALERT_SEVERITIES)
    caplog.set_level(logging.INFO, "slipstream.alerts")
    channel = LogChannel()
    await channel.send(notice(severity="critical"))
    await channel.send(notice(severity="critical", state="RESOLVED", value=10.0))
    await channel.send(notice(severity="info", repeat=True))
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.ERROR, "[slipstream] FIRING critical: slow (p95_latency_ms 2300 > 2000)"),
        (logging.ERROR, "[slipstream] RESOLVED critical: slow (p95_latency_ms 10 <= 2000)"),
        (logging.INFO, "[slipstream] FIRING info: slow (p95_latency_ms 2300 > 2000) (still firing)"),
    ]


async def test_email_reaches_the_smtp_server(smtp: SmtpSink):
    channel = build_channel(
        EmailChannelConfig(
            "mail", host="127.0.0.1", port=smtp.port, sender="alerts@x.test", to=("ops@x.test", "b@x.test")
        )
    )
    assert isinstance(channel, EmailChannel)
    await Notifier({"mail": channel}).deliver(
        [(notice(), ["mail"]), (notice(state="RESOLVED", value=900.0), ["mail"])]
    )
    await asyncio.to_thread(smtp.wait_for, 2)
    sender, recipients, _ = smtp.messages[0]
    assert sender == "alerts@x.test" and recipients == ["ops@x.test", "b@x.test"]
    assert sorted(smtp.subjects()) == [
        "[slipstream] FIRING warning: slow (p95_latency_ms 2300 > 2000)",
        "[slipstream] RESOLVED warning: slow (p95_latency_ms 900 <= 2000)",
    ]
    firing = next(m for _, _, m in smtp.messages if "FIRING" in str(m["Subject"]))
    assert "p95_latency_ms over the last 5m is 2300" in firing.get_content()
    assert firing["To"] == "ops@x.test, b@x.test"


async def test_email_logs_in_when_given_credentials():
    with SmtpSink(login=("alerts", "s3cret")) as sink:
        good = EmailChannel(
            "mail",
            host="127.0.0.1",
            port=sink.port,
            sender="a@x.test",
            to=["b@x.test"],
            username="alerts",
            password="s3cret",
        )
        bad = EmailChannel(
            "bad",
            host="127.0.0.1",
            port=sink.port,
            sender="a@x.test",
            to=["b@x.test"],
            username="alerts",
            password="wrong",
        )
        deliveries = await Notifier({"mail": good, "bad": bad}).deliver([(notice(), ["mail", "bad"])])
    outcome = {d.channel: d for d in deliveries}
    assert outcome["mail"].ok and sink.logins == ["alerts"] and len(sink.messages) == 1
    assert not outcome["bad"].ok and "SMTPAuthenticationError" in str(outcome["bad"].error)
    assert "wrong" not in str(outcome["bad"].error)


async def test_email_to_a_closed_port_fails_cleanly():
    port = free_port()
    channel = EmailChannel("mail", host="127.0.0.1", port=port, sender="a@x.test", to=["b@x.test"], timeout=5)
    (delivery,) = await Notifier({"mail": channel}).deliver([(notice(), ["mail"])])
    assert not delivery.ok and f"SMTP 127.0.0.1:{port}: ConnectionRefusedError" in str(delivery.error)


def test_build_channel_from_config():
    assert isinstance(build_channel(LogChannelConfig("ops")), LogChannel)
    hook = build_channel(WebhookChannelConfig("slack", url="http://127.0.0.1:1/h", timeout=2.5))
    assert isinstance(hook, WebhookChannel) and hook.timeout == 2.5 and hook.name == "slack"
