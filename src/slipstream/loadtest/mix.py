"""The request mix: every request the load test sends, built to bytes once, before the clock starts.

Bodies come from a JSONL file (one chat request body per line, blank lines and ``#`` comments skipped) or are a
single default prompt. Each body is serialized twice — ``"stream": false`` and ``"stream": true`` — into a complete
HTTP/1.1 request (request line, headers, body), so the hot path only picks a prebuilt ``bytes`` and writes it.

Choices are deterministic, not random, so two runs send the same traffic and small runs hit their shares
exactly: bodies are taken round-robin in file order, and the streamed share uses an error accumulator
(Bresenham): after ``n`` requests exactly ``floor(n * share)`` were streamed.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from .target import Target

__all__ = ["DEFAULT_MODEL", "DEFAULT_PROMPT", "MixError", "RequestMix", "read_bodies"]

DEFAULT_MODEL = "sim"
DEFAULT_PROMPT = "Say something about foxes."
USER_AGENT = "slipstream-loadtest"


class MixError(ValueError):
    """A request file that cannot be used; the message names the file and line."""


def read_bodies(path: Path) -> list[dict[str, Any]]:
    """Chat request bodies from a JSONL file. An OpenAI batch line (``{"body": {...}}``) gives its body."""
    bodies: list[dict[str, Any]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise MixError(f"{path}: {exc.strerror or exc}") from None
    for number, line in enumerate(lines, 1):
        text = line.strip()
        if not text or text.startswith("#"):
            continue
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise MixError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if isinstance(value, dict) and isinstance(value.get("body"), dict):
            value = value["body"]
        if not isinstance(value, dict) or not isinstance(value.get("messages"), list):
            raise MixError(f"{path}:{number}: expected a chat request body with a 'messages' list")
        bodies.append(value)
    if not bodies:
        raise MixError(f"{path}: no request bodies")
    return bodies


class RequestMix:
    """Prebuilt requests; ``next()`` returns ``(request bytes, streamed?)`` in a fixed, repeatable order."""

    __slots__ = ("_count", "_index", "_plain", "_share", "_streamed", "size")

    def __init__(
        self,
        target: Target,
        bodies: Sequence[Mapping[str, Any]] | None = None,
        *,
        model: str | None = None,
        stream_share: float = 0.0,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        if not 0.0 <= stream_share <= 1.0:
            raise MixError(f"stream share must be between 0 and 1, not {stream_share}")
        if not bodies:
            bodies = [
                {"model": model or DEFAULT_MODEL, "messages": [{"role": "user", "content": DEFAULT_PROMPT}]}
            ]
        head = _head_prefix(target, headers or {})
        # ``(request, streamed?)`` pairs, built once, so ``next`` allocates nothing.
        self._plain = [(_request(head, body, model, stream=False), False) for body in bodies]
        self._streamed = [(_request(head, body, model, stream=True), True) for body in bodies]
        self._share = stream_share
        self._index = 0
        self._count = 0
        self.size = len(self._plain)

    def next(self) -> tuple[bytes, bool]:
        index = self._index
        self._index = index + 1 if index + 1 < self.size else 0
        share = self._share
        if share == 0.0:
            return self._plain[index]
        n = self._count
        self._count = n + 1
        # Bresenham: stream this one when it carries floor(n * share) over an integer boundary.
        return self._streamed[index] if int((n + 1) * share) > int(n * share) else self._plain[index]


def _head_prefix(target: Target, headers: Mapping[str, str]) -> bytes:
    lines = [f"POST {target.path} HTTP/1.1", f"Host: {target.host_header}", f"User-Agent: {USER_AGENT}"]
    lines.append("Content-Type: application/json")
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def _request(head: bytes, body: Mapping[str, Any], model: str | None, *, stream: bool) -> bytes:
    payload = dict(body)
    if model:
        payload["model"] = model
    payload.setdefault("model", DEFAULT_MODEL)
    payload["stream"] = stream
    if not stream:
        payload.pop("stream_options", None)
    data = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return head + b"Content-Length: %d\r\n\r\n" % len(data) + data
