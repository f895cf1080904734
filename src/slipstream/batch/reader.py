"""Reading a batch input file: OpenAI batch lines or bare request bodies, checked line by line.

Each non-blank line of the input is one of

- an OpenAI batch line, ``{"custom_id": "...", "method": "POST", "url": "/v1/chat/completions", "body": {...}}``
  (``url`` may also be ``/v1/embeddings``), or
- a bare chat request body, ``{"model": ..., "messages": [...]}``, whose custom_id is ``line-<n>``: its 1-based
  line number, stable as long as the file is not edited between a run and its resume.

A line that is not JSON, breaks the request schema (``slipstream.schema``: the gateway's own checks, so a line
that passes here is one the pipeline accepts), asks for a stream, or repeats a custom_id an earlier line claimed
becomes a ``Reject`` naming the line and the reason; every other line still runs. A custom_id is claimed by the
first line that names it, even when that line is rejected for another reason, so which line "owns" an id never
depends on what the lines after it hold.

The file is read lazily, a line at a time: a million-line batch is never held in memory, only the custom_ids seen
(for the duplicate check). ``parse_request`` is the same check for one object, used by ``Slipstream.map``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import orjson

from ..errors import InvalidRequest
from ..schema import validate_chat_request, validate_embeddings_request
from ..types import ChatRequest, EmbeddingsRequest

__all__ = ["CHAT_URL", "EMBEDDINGS_URL", "BatchRequest", "Reject", "parse_request", "read_batch"]

CHAT_URL = "/v1/chat/completions"
EMBEDDINGS_URL = "/v1/embeddings"
_URLS = (CHAT_URL, EMBEDDINGS_URL)
# Keys that mark an object as an OpenAI batch line rather than a bare request body.
_BATCH_KEYS = ("custom_id", "body", "url", "method")
REJECT_TEXT_CHARS = 1000  # a rejected line's text is kept up to this length in the rejects file


@dataclass(frozen=True, slots=True)
class BatchRequest:
    """One validated request: ``index`` is its 1-based line in a file, or its 0-based position in ``map``."""

    index: int
    custom_id: str
    request: ChatRequest | EmbeddingsRequest

    @property
    def kind(self) -> Literal["chat", "embed"]:
        return "chat" if isinstance(self.request, ChatRequest) else "embed"


@dataclass(frozen=True, slots=True)
class Reject:
    """A line that will not run, with why; ``custom_id`` is None when the line did not name a readable one."""

    line: int
    custom_id: str | None
    reason: str
    text: str

    def to_json(self) -> dict[str, Any]:
        text = self.text if len(self.text) <= REJECT_TEXT_CHARS else self.text[:REJECT_TEXT_CHARS] + "…"
        return {
            "line": self.line,
            "custom_id": self.custom_id,
            "error": {"code": "invalid_request", "message": self.reason},
            "text": text,
        }


def read_batch(path: Path) -> Iterator[BatchRequest | Reject]:
    """Every non-blank line of ``path`` in order, as a request or a reject."""
    claimed: dict[str, int] = {}  # custom_id -> the line that claimed it
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, 1):
            raw = raw.strip()
            if raw:
                yield _read_line(raw, number, claimed)


def parse_request(obj: Any, index: int, default_id: str) -> BatchRequest:
    """One batch line or bare body as a ``BatchRequest``; an ``InvalidRequest`` says what is wrong with it."""
    custom_id = _custom_id(obj, default_id)
    return _validate(obj, index, custom_id)


# ---------------------------------------------------------------------------------------------- internals
def _read_line(raw: bytes, number: int, claimed: dict[str, int]) -> BatchRequest | Reject:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        reason = str(exc)
        what = "not valid UTF-8" if "UTF-8" in reason else "not valid JSON"
        return Reject(number, None, f"{what}: {reason}", raw.decode("utf-8", "replace"))
    default_id = f"line-{number}"
    try:
        custom_id = _custom_id(obj, default_id)
    except InvalidRequest as exc:
        return Reject(number, None, exc.message, raw.decode())
    first = claimed.setdefault(custom_id, number)
    if first != number:
        return Reject(
            number, custom_id, f"duplicate custom_id {custom_id!r} (first on line {first})", raw.decode()
        )
    try:
        return _validate(obj, number, custom_id)
    except InvalidRequest as exc:
        return Reject(number, custom_id, exc.message, raw.decode())


def _is_batch_line(obj: dict[str, Any]) -> bool:
    return any(key in obj for key in _BATCH_KEYS)


def _custom_id(obj: Any, default_id: str) -> str:
    if not isinstance(obj, dict):
        raise InvalidRequest("a line must be a JSON object (an OpenAI batch line or a request body)")
    if not _is_batch_line(obj):
        return default_id
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise InvalidRequest("custom_id: a batch line needs a non-empty string custom_id", param="custom_id")
    return custom_id


def _validate(obj: dict[str, Any], index: int, custom_id: str) -> BatchRequest:
    if not _is_batch_line(obj):
        return BatchRequest(index, custom_id, _chat(obj, prefix=""))
    method = obj.get("method", "POST")
    if method != "POST":
        raise InvalidRequest(f"method: expected 'POST', got {method!r}", param="method")
    url = obj.get("url", CHAT_URL)
    if url not in _URLS:
        raise InvalidRequest(f"url: expected one of {', '.join(_URLS)}, got {url!r}", param="url")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise InvalidRequest("body: a batch line needs the request body as a JSON object", param="body")
    if url == CHAT_URL:
        return BatchRequest(index, custom_id, _chat(body, prefix="body."))
    try:
        return BatchRequest(index, custom_id, validate_embeddings_request(body))
    except InvalidRequest as exc:
        raise _prefixed(exc, "body.") from None


def _chat(body: dict[str, Any], *, prefix: str) -> ChatRequest:
    try:
        request = validate_chat_request(body)
    except InvalidRequest as exc:
        raise _prefixed(exc, prefix) from None
    if request.stream:
        # Each result is written as one line when it completes; a stream has nothing to add to that.
        raise InvalidRequest(f"{prefix}stream: a batch request cannot stream", param=f"{prefix}stream")
    return request


def _prefixed(exc: InvalidRequest, prefix: str) -> InvalidRequest:
    """The schema names fields from the body's root; a batch line's body sits under ``body``."""
    if not prefix:
        return exc
    param = f"{prefix}{exc.param}" if exc.param else prefix.rstrip(".")
    message = f"{prefix}{exc.message}" if exc.param else f"{prefix.rstrip('.')}: {exc.message}"
    return InvalidRequest(message, param=param)
