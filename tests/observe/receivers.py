"""Real local receivers for alert channels: an aiohttp webhook endpoint and an aiosmtpd SMTP server.

Both listen on 127.0.0.1 only and record what arrives; test modules wrap them in their own small fixtures.
"""

from __future__ import annotations

import asyncio
import email
import email.policy
import threading
from email.message import EmailMessage
from typing import Any

from aiohttp import web
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.e2e.conftest import free_port

WAIT_SECONDS = 20.0  # a bound on waiting for something to arrive, not a speed assertion


class WebhookReceiver:
    """Records each JSON body POSTed to ``/hook/<token>``; ``status`` sets the answer, ``hold`` stalls it."""

    def __init__(self) -> None:
        self.received: list[dict[str, Any]] = []
        self.status = 200
        self.hold = False
        self._release = asyncio.Event()
        self._arrived = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self.port = 0

    async def start(self) -> WebhookReceiver:
        app = web.Application()
        app.router.add_post("/hook/{token}", self._handle)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    def url(self, token: str = "T0KEN-secret") -> str:
        return f"http://127.0.0.1:{self.port}/hook/{token}"

    async def _handle(self, request: web.Request) -> web.Response:
        if self.hold:
            await self._release.wait()
        self.received.append(await request.json())
        self._arrived.set()
        return web.Response(status=self.status, text="ok" if self.status < 300 else "receiver says no")

    async def wait_for(self, count: int) -> list[dict[str, Any]]:
        async with asyncio.timeout(WAIT_SECONDS):
            while len(self.received) < count:
                self._arrived.clear()
                await self._arrived.wait()
        return self.received

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()


class SmtpSink:
    """An aiosmtpd server that keeps every message; with ``login`` it offers AUTH over plain text."""

    def __init__(self, login: tuple[str, str] | None = None) -> None:
        self.messages: list[tuple[str, list[str], EmailMessage]] = []
        self.logins: list[str] = []
        self._arrived = threading.Condition()  # messages arrive on the server's own thread
        self.port = free_port()
        self._login = login
        extra: dict[str, Any] = {}
        if login is not None:
            extra = {"authenticator": self._authenticate, "auth_require_tls": False}
        self.controller = Controller(self, hostname="127.0.0.1", port=self.port, **extra)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        message = email.message_from_bytes(envelope.content, policy=email.policy.default)
        assert isinstance(message, EmailMessage)
        with self._arrived:
            self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message))
            self._arrived.notify_all()
        return "250 Message accepted for delivery"

    def _authenticate(
        self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any
    ) -> AuthResult:
        ok = (
            isinstance(auth_data, LoginPassword)
            and self._login is not None
            and (auth_data.login.decode(), auth_data.password.decode()) == self._login
        )
        if ok:
            self.logins.append(auth_data.login.decode())
        return AuthResult(success=ok, handled=False)  # handled=False: the server answers 535 itself

    def subjects(self) -> list[str]:
        return [str(message["Subject"]) for _, _, message in self.messages]

    def wait_for(self, count: int) -> list[tuple[str, list[str], EmailMessage]]:
        """Block until ``count`` messages arrived (async tests: ``await asyncio.to_thread(sink.wait_for, n)``)."""
        with self._arrived:
            if not self._arrived.wait_for(lambda: len(self.messages) >= count, timeout=WAIT_SECONDS):
                raise TimeoutError(f"{len(self.messages)} of {count} messages arrived")
        return self.messages

    def __enter__(self) -> SmtpSink:
        self.controller.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.controller.stop()
