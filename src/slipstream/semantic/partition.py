"""What a semantic match may differ in, and what it may not.

Only the text of the last user turn is compared by meaning. Everything else that can change the answer — the
model group, the system prompt, every earlier turn, tools, the response format, sampling parameters, and the
namespace — must be identical, so it is hashed into a *partition key* and a request is only ever compared with
entries of its own partition. A different system prompt or model therefore never produces a semantic hit.

The key is the exact-cache key's recipe (``cache.key``: the body without the fields that cannot change the
answer, JSON keys sorted, blake2b) applied to the body with the last user turn's text taken out.

A request is not eligible at all when its last message is not a user turn (a tool result, an assistant
prefill), or when that turn holds anything but text (an image is not compared by its caption).
"""

from __future__ import annotations

from hashlib import blake2b
from typing import Any

import orjson

from ..cache.key import IGNORED_FIELDS

__all__ = ["last_user_text", "partition_key"]

_DIGEST_BYTES = 16
_PLACEHOLDER = "\x00semantic\x00"


def last_user_text(body: dict[str, Any]) -> str | None:
    """The text of the last message when it is a user turn made of text only; ``None`` otherwise."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        return None
    last = messages[-1]
    if not isinstance(last, dict) or last.get("role") != "user":
        return None
    content = last.get("content")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list) and content:
        if not all(isinstance(p, dict) and p.get("type") == "text" for p in content):
            return None
        text = "\n".join(str(p.get("text", "")) for p in content)
    else:
        return None
    text = text.strip()
    return text or None


def partition_key(namespace: str, body: dict[str, Any]) -> str:
    """``"{namespace}:{32 hex}"``: a hash of everything in the request but the last user turn's text."""
    keyed = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    messages = keyed.get("messages")
    if isinstance(messages, list) and messages:
        last = messages[-1]
        if isinstance(last, dict):
            # Keep the turn (its role, name and any other fields), only its text is left out.
            keyed["messages"] = [*messages[:-1], {**last, "content": _PLACEHOLDER}]
    blob = orjson.dumps(keyed, option=orjson.OPT_SORT_KEYS)
    return f"{namespace}:{blake2b(blob, digest_size=_DIGEST_BYTES).hexdigest()}"
