"""The exact-cache key: a stable hash of everything in a request that can change the answer.

Fields that cannot change the answer are left out (``stream``, ``stream_options``, ``user``, ``metadata`` and
slipstream's own hints); every other field — including ones slipstream does not know, which may be
provider-specific sampling controls — is in. JSON object key order never matters (keys are sorted before
hashing). The key is scoped to a namespace so tenants never share entries.
"""

from __future__ import annotations

import re
from hashlib import blake2b
from typing import Any

import orjson

__all__ = ["IGNORED_FIELDS", "cache_key", "normalize_whitespace"]

# Fields that do not change the content of the answer. Everything else is part of the key.
IGNORED_FIELDS = frozenset(
    {"stream", "stream_options", "user", "metadata", "store", "service_tier", "prompt_cache_key"}
)

_DIGEST_BYTES = 16
_WS = re.compile(r"\s+")


def cache_key(namespace: str, kind: str, body: dict[str, Any], *, normalize: bool = False) -> str:
    """``"{namespace}:{kind}:{32 hex}"`` for a request body.

    ``kind`` separates operations ("chat", "embed") whose bodies could otherwise coincide.
    """
    keyed = {k: v for k, v in body.items() if k not in IGNORED_FIELDS}
    if normalize and "messages" in keyed:
        keyed["messages"] = [_normalized_message(m) for m in keyed["messages"]]
    blob = orjson.dumps(keyed, option=orjson.OPT_SORT_KEYS)
    return f"{namespace}:{kind}:{blake2b(blob, digest_size=_DIGEST_BYTES).hexdigest()}"


def normalize_whitespace(text: str) -> str:
    """Trim and collapse runs of whitespace to one space (opt-in: it changes what counts as the same prompt)."""
    return _WS.sub(" ", text).strip()


def _normalized_message(message: Any) -> Any:
    if not isinstance(message, dict):
        return message
    content = message.get("content")
    if isinstance(content, str):
        return {**message, "content": normalize_whitespace(content)}
    if isinstance(content, list):
        parts = [
            {**p, "text": normalize_whitespace(p["text"])}
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
            else p
            for p in content
        ]
        return {**message, "content": parts}
    return message
