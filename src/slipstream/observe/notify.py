"""Alert channels: where a FIRING or RESOLVED notification goes — the log, a webhook, or email over SMTP.

A channel is a small object with ``send(notification)`` and ``aclose()``; ``Notifier`` owns the configured
channels and delivers each notification to the channels its rule names, all sends at once, each bounded by
its channel's timeout. A channel that fails is logged once when it starts failing (and once when it recovers),
never once per alert, and never stops the others or the evaluator.

- ``log``: one line on the ``slipstream.alerts`` logger, at the level of the rule's severity (info, warning,
  error for critical). A RESOLVED line uses the same level as its FIRING line, so both show or neither does.
- ``webhook``: a POST of Slack-compatible JSON (``text`` plus a coloured ``attachments`` entry, which Slack
  and Mattermost render) with the alert's structured fields beside it, for receivers that are not chat rooms.
  Any 2xx is success. The URL is never logged: a Slack webhook URL is itself the credential.
- ``email``: a plain-text message through ``smtplib`` in a worker thread. Why not ``aiosmtplib``: alerts are
  rare (at most one per rule per cooldown), so a thread per message costs nothing that matters, and the
  standard library's client adds no runtime dependency; the socket timeout bounds the thread even when the
  awaiting side has already given up.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.policy
import logging
import smtplib
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Literal, Protocol

import aiohttp
import orjson

from ..config import ChannelConfig, EmailChannelConfig, LogChannelConfig, WebhookChannelConfig

__all__ = [
    "Channel",
    "Delivery",
    "EmailChannel",
    "LogChannel",
    "Notification",
    "Notifier",
    "WebhookChannel",
    "build_channel",
]

log = logging.getLogger("slipstream.alerts")

SUBJECT_PREFIX = "[slipstream]"
# The condition that holds when a rule's comparison does not: what a RESOLVED line states.
NEGATED_OP = {">": "<=", ">=": "<", "<": ">=", "<=": ">"}
SEVERITY_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}
# Slack attachment colours: red for critical, amber for warning, blue for info, green when resolved.
SEVERITY_COLOR = {"critical": "#d40e0d", "warning": "#e8a317", "info": "#439fe0"}
RESOLVED_COLOR = "#2eb67d"
_MAX_ERROR_TEXT = 200
# Subjects stay on one line: the default 78-column folding breaks them oddly (a fold right after "Subject:").
_MAIL_POLICY = email.policy.SMTP.clone(max_line_length=998)


@dataclass(frozen=True, slots=True)
class Notification:
    """One announcement about one rule. Times are epoch seconds; ``window`` is in seconds."""

    rule: str
    metric: str
    state: Literal["FIRING", "RESOLVED"]
    severity: str
    value: float
    op: str
    threshold: float
    window: float
    at: float
    since: float | None = None  # when the rule started firing
    repeat: bool = False  # a reminder: still firing after the cooldown
    filters: Mapping[str, str] = field(default_factory=dict)  # model / key / deployment the rule watches

    @property
    def condition(self) -> str:
        """``2300 > 2000`` while firing, ``1200 <= 2000`` once resolved."""
        op = self.op if self.state == "FIRING" else NEGATED_OP.get(self.op, self.op)
        return f"{format_value(self.value)} {op} {format_value(self.threshold)}"

    @property
    def subject(self) -> str:
        """``[slipstream] FIRING warning: slow (p95_latency_ms 2300 > 2000)``."""
        return f"{SUBJECT_PREFIX} {self.state} {self.severity}: {self.rule} ({self.metric} {self.condition})"

    def body(self) -> str:
        """The plain-text explanation used by email and the webhook attachment."""
        lines = [
            f"{self.state} {self.severity}: {self.rule}",
            f"{self.metric} over the last {format_duration(self.window)} is {format_value(self.value)}"
            f" (alert when {self.op} {format_value(self.threshold)}).",
        ]
        if self.filters:
            lines.append("Watching: " + ", ".join(f"{k}={v}" for k, v in sorted(self.filters.items())))
        if self.repeat and self.since is not None:
            lines.append(f"Still firing since {format_time(self.since)}.")
        elif self.state == "RESOLVED" and self.since is not None:
            lines.append(f"Was firing since {format_time(self.since)}.")
        lines.append(f"Evaluated at {format_time(self.at)}.")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "metric": self.metric,
            "state": self.state,
            "severity": self.severity,
            "value": self.value,
            "op": self.op,
            "threshold": self.threshold,
            "window": self.window,
            "at": self.at,
            "since": self.since,
            "repeat": self.repeat,
            "filters": dict(self.filters),
        }


class Channel(Protocol):
    name: str
    timeout: float

    async def send(self, notification: Notification) -> None: ...

    async def aclose(self) -> None: ...


class NotifyError(Exception):
    """A channel could not deliver; the message is safe to log (no URLs, no passwords)."""


# ------------------------------------------------------------------------------------------------ channels
class LogChannel:
    def __init__(self, name: str = "log", *, logger: logging.Logger = log) -> None:
        self.name = name
        self.timeout = 1.0
        self.logger = logger

    async def send(self, notification: Notification) -> None:
        level = SEVERITY_LEVEL.get(notification.severity, logging.WARNING)
        suffix = " (still firing)" if notification.repeat else ""
        self.logger.log(level, "%s%s", notification.subject, suffix)

    async def aclose(self) -> None:
        pass


class WebhookChannel:
    """POSTs Slack-compatible JSON; the session is created on first use, inside the running loop."""

    def __init__(self, name: str, url: str, *, timeout: float = 5.0) -> None:
        self.name = name
        self.url = url
        self.timeout = timeout
        self._session: aiohttp.ClientSession | None = None

    async def send(self, notification: Notification) -> None:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        body = orjson.dumps(webhook_payload(notification))
        try:
            async with self._session.post(
                self.url, data=body, headers={"content-type": "application/json"}
            ) as response:
                if not 200 <= response.status < 300:
                    text = (await response.text(errors="replace"))[:_MAX_ERROR_TEXT]
                    raise NotifyError(f"webhook answered HTTP {response.status}: {text}")
        except aiohttp.ClientError as exc:
            # Some aiohttp errors quote the URL, and a webhook URL is a secret.
            raise NotifyError(f"{type(exc).__name__}: {str(exc).replace(self.url, '<url>')}") from None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def webhook_payload(n: Notification) -> dict[str, Any]:
    """Slack's ``text`` and ``attachments``, plus the alert's fields at the top level for other receivers."""
    color = RESOLVED_COLOR if n.state == "RESOLVED" else SEVERITY_COLOR.get(n.severity, "#888888")
    fields = [
        {"title": "Value", "value": format_value(n.value), "short": True},
        {"title": "Threshold", "value": f"{n.op} {format_value(n.threshold)}", "short": True},
        {"title": "Window", "value": format_duration(n.window), "short": True},
        {"title": "Severity", "value": n.severity, "short": True},
    ]
    fields.extend({"title": k, "value": v, "short": True} for k, v in sorted(n.filters.items()))
    attachment = {
        "color": color,
        "title": f"{n.state}: {n.rule}",
        "text": n.body(),
        "fields": fields,
        "footer": "slipstream",
        "ts": int(n.at),
    }
    text = n.subject + (" (still firing)" if n.repeat else "")
    return {"text": text, "attachments": [attachment], **n.as_dict()}


class EmailChannel:
    """Plain-text mail through ``smtplib`` in a thread (optionally STARTTLS and login)."""

    def __init__(
        self,
        name: str,
        *,
        host: str,
        port: int,
        sender: str,
        to: Sequence[str],
        username: str | None = None,
        password: str | None = None,
        starttls: bool = False,
        timeout: float = 10.0,
    ) -> None:
        self.name = name
        self.host = host
        self.port = port
        self.sender = sender
        self.to = tuple(to)
        self.username = username
        self._password = password
        self.starttls = starttls
        self.timeout = timeout

    def message(self, notification: Notification) -> EmailMessage:
        msg = EmailMessage(policy=_MAIL_POLICY)
        msg["Subject"] = notification.subject + (" (still firing)" if notification.repeat else "")
        msg["From"] = self.sender
        msg["To"] = ", ".join(self.to)
        msg["Date"] = formatdate(notification.at, usegmt=True)
        msg["Message-ID"] = make_msgid(domain="slipstream")
        msg.set_content(notification.body() + "\n")
        return msg

    async def send(self, notification: Notification) -> None:
        message = self.message(notification)
        try:
            await asyncio.to_thread(self._send_blocking, message)
        except (OSError, smtplib.SMTPException) as exc:
            raise NotifyError(f"SMTP {self.host}:{self.port}: {type(exc).__name__}: {exc}") from None

    def _send_blocking(self, message: EmailMessage) -> None:
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls(context=ssl.create_default_context())
            if self.username:
                smtp.login(self.username, self._password or "")
            smtp.send_message(message)

    async def aclose(self) -> None:
        pass


def build_channel(config: ChannelConfig) -> Channel:
    if isinstance(config, WebhookChannelConfig):
        return WebhookChannel(config.name, config.url, timeout=config.timeout)
    if isinstance(config, EmailChannelConfig):
        return EmailChannel(
            config.name,
            host=config.host,
            port=config.port,
            sender=config.sender,
            to=config.to,
            username=config.username,
            password=config.password,
            starttls=config.starttls,
            timeout=config.timeout,
        )
    assert isinstance(config, LogChannelConfig)
    return LogChannel(config.name)


# ------------------------------------------------------------------------------------------------ delivery
@dataclass(frozen=True, slots=True)
class Delivery:
    """The outcome of sending one notification to one channel."""

    channel: str
    rule: str
    state: str
    ok: bool
    error: str | None = None


class Notifier:
    """Sends notifications to their channels concurrently, each under its channel's timeout."""

    def __init__(self, channels: Mapping[str, Channel]) -> None:
        self.channels = dict(channels)
        self.sent = 0
        self.failed = 0
        self._failing: set[str] = set()  # channels in a failure streak (logged once at its start)

    async def deliver(self, batch: Sequence[tuple[Notification, Sequence[str]]]) -> list[Delivery]:
        """Send each notification to the named channels (unknown names are skipped); never raises."""
        jobs = [
            self._send(channel, notification)
            for notification, names in batch
            for name in names
            if (channel := self.channels.get(name)) is not None
        ]
        return list(await asyncio.gather(*jobs)) if jobs else []

    async def _send(self, channel: Channel, notification: Notification) -> Delivery:
        try:
            async with asyncio.timeout(channel.timeout):
                await channel.send(notification)
        except Exception as exc:  # a channel must never take the evaluator down
            reason = "timed out" if isinstance(exc, TimeoutError) else str(exc) or type(exc).__name__
            self.failed += 1
            if channel.name not in self._failing:
                self._failing.add(channel.name)
                log.warning(
                    "alert channel %r failed (further failures are not logged until it recovers): %s",
                    channel.name,
                    reason,
                )
            return Delivery(channel.name, notification.rule, notification.state, ok=False, error=reason)
        self.sent += 1
        if channel.name in self._failing:
            self._failing.discard(channel.name)
            log.warning("alert channel %r recovered", channel.name)
        return Delivery(channel.name, notification.rule, notification.state, ok=True)

    @property
    def failing(self) -> frozenset[str]:
        return frozenset(self._failing)

    async def aclose(self) -> None:
        for channel in self.channels.values():
            with contextlib.suppress(Exception):
                await channel.aclose()


# ------------------------------------------------------------------------------------------------ formatting
def format_value(value: float) -> str:
    """Whole numbers for big values (latency in ms), four significant digits for rates and dollars."""
    if abs(value) >= 100:
        return f"{value:.0f}"
    return f"{value:.4g}"


def format_duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    return f"{seconds:g}s"


def format_time(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))
