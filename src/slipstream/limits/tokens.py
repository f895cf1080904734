"""A fast estimate of the tokens a request will count against a TPM limit, before it is sent.

The estimate is charged when the request is admitted and corrected with the provider's reported usage afterwards
(``Permit.settle``), so it must be cheap and roughly right, not exact: no tokenizer, no vocabulary, no I/O.

How it counts (the shape of OpenAI's own counting recipe, with characters standing in for BPE tokens):

- text: ASCII characters / 4.5, plus half a token per byte UTF-8 spends beyond the first on a character — so a
  Cyrillic, Greek or accented letter counts 1/2 and a CJK character 1 (plain chars/4 undercounts those scripts
  by half to four-fifths);
- each message: ``MESSAGE_OVERHEAD`` tokens for its role and separators, plus its name, tool calls and refusal;
  ``REPLY_PRIMING`` once for the assistant reply header;
- an image part: ``IMAGE_TOKENS`` (a ``"detail": "low"`` image: ``IMAGE_TOKENS_LOW``); audio and file parts:
  ``ATTACHMENT_TOKENS`` — the real cost depends on pixels and seconds the request body does not state cheaply;
- tool and function definitions, tool calls and ``response_format``: their JSON length, as text;
- the completion allowance: ``max_completion_tokens`` (or the older ``max_tokens``) times ``n``; without either,
  ``DEFAULT_COMPLETION_TOKENS`` per choice. Providers count the completion against TPM too, and OpenAI reserves
  ``max_tokens`` up front; a default keeps an uncapped request from looking free until ``settle`` corrects it;
- an embeddings body: its ``input`` text (or the length of its token arrays), with no completion allowance.

Measured error of the prompt part (the completion allowance left out) against exact cl100k_base and o200k_base
counts, using ``bpe-openai`` 0.1.4 — an offline BPE tokenizer that ships both vocabularies (``tiktoken``
downloads its files at run time and cannot run here). Bodies are single user messages, counted exactly as
OpenAI does (text + 3 per message + 3 reply priming); "single" is each of the 40,564 questions of
``shared/data/qqp-dev.jsonl`` (English, median 51 characters), "joined" is 2,000 messages of ten random QQP
questions each (median 594 characters). Error = (estimate - exact) / exact; positive over-counts, the safe side:

    bodies   tokenizer     mean error   median |error|   p90 |error|   p99 |error|   estimate >= exact
    single   cl100k_base     +1.7%          6.7%           17.6%         30.0%            67%
    single   o200k_base      +2.4%          6.7%           18.2%         30.4%            69%
    joined   cl100k_base     +0.2%          3.4%            8.7%         14.5%            55%
    joined   o200k_base      +1.1%          3.6%            9.0%         15.2%            63%

Short messages err more because a whole token of rounding is a large share of 15. Non-English text was checked
only on six hand-written sentences (Chinese, Japanese, Russian, Greek, French, German): -47%..0% against
cl100k_base (Greek is the worst) and +7%..+57% against o200k_base, where plain chars/4 is -80%..-14% and
-67%..+19%. Code, JSON, digit runs and non-OpenAI tokenizers (Anthropic, Gemini) were not measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson

__all__ = [
    "ATTACHMENT_TOKENS",
    "DEFAULT_COMPLETION_TOKENS",
    "IMAGE_TOKENS",
    "IMAGE_TOKENS_LOW",
    "MESSAGE_OVERHEAD",
    "NAME_OVERHEAD",
    "REPLY_PRIMING",
    "estimate_text_tokens",
    "estimate_tokens",
]

MESSAGE_OVERHEAD = 3  # <|start|>role ... <|end|> around every message (OpenAI's counting recipe)
NAME_OVERHEAD = 1  # a message's "name" field costs one extra token besides its text
REPLY_PRIMING = 3  # every reply is primed with <|start|>assistant<|message|>
IMAGE_TOKENS = 765  # a high-detail 1024x1024 image on gpt-4o-class models; "auto" is usually high for photos
IMAGE_TOKENS_LOW = 85  # a "detail": "low" image, whatever its size
ATTACHMENT_TOKENS = 1000  # audio or a file: unknowable without decoding it; a deliberately visible charge
DEFAULT_COMPLETION_TOKENS = 256  # per choice, for a request that caps neither max_tokens nor the newer field


def estimate_text_tokens(text: str) -> int:
    """ASCII characters / 4.5, plus half a token for every byte UTF-8 spends beyond one on a character."""
    n = len(text)
    if text.isascii():
        return (2 * n + 8) // 9
    ascii_chars = len(text.encode("ascii", "ignore"))
    extra_bytes = len(text.encode("utf-8", "surrogatepass")) - n
    # ceil(ascii / 4.5 + extra / 2), in integers: a 2-byte letter (Cyrillic, Greek, accented Latin) counts 1/2,
    # a 3-byte one (CJK, kana, hangul) counts 1, a 4-byte emoji 3/2.
    return (4 * ascii_chars + 9 * extra_bytes + 17) // 18


def estimate_tokens(body: Mapping[str, Any], *, completion_default: int = DEFAULT_COMPLETION_TOKENS) -> int:
    """Prompt plus completion allowance of a chat or embeddings body (the client's dict, validated or not)."""
    messages = body.get("messages")
    if isinstance(messages, list):
        return _prompt_tokens(body, messages) + _completion_allowance(body, completion_default)
    return _input_tokens(body.get("input"))


def _prompt_tokens(body: Mapping[str, Any], messages: list[Any]) -> int:
    total = REPLY_PRIMING
    for m in messages:
        total += MESSAGE_OVERHEAD
        if not isinstance(m, dict):
            continue
        content = m.get("content")
        if type(content) is str:
            total += estimate_text_tokens(content)
        elif isinstance(content, list):
            total += _parts_tokens(content)
        name = m.get("name")
        if isinstance(name, str):
            total += NAME_OVERHEAD + estimate_text_tokens(name)
        for key in ("tool_calls", "function_call"):
            if m.get(key):
                total += _json_tokens(m[key])
        refusal = m.get("refusal")
        if isinstance(refusal, str):
            total += estimate_text_tokens(refusal)
    for key in ("tools", "functions", "response_format"):
        if body.get(key):
            total += _json_tokens(body[key])
    return total


def _parts_tokens(parts: list[Any]) -> int:
    total = 0
    for part in parts:
        if not isinstance(part, dict):
            continue
        kind = part.get("type")
        if kind == "text" and isinstance(part.get("text"), str):
            total += estimate_text_tokens(part["text"])
        elif kind == "image_url":
            image = part.get("image_url")
            low = isinstance(image, dict) and image.get("detail") == "low"
            total += IMAGE_TOKENS_LOW if low else IMAGE_TOKENS
        elif kind == "refusal" and isinstance(part.get("refusal"), str):
            total += estimate_text_tokens(part["refusal"])
        elif kind in ("input_audio", "file"):
            total += ATTACHMENT_TOKENS
    return total


def _completion_allowance(body: Mapping[str, Any], default: int) -> int:
    cap = _count(body.get("max_completion_tokens")) or _count(body.get("max_tokens")) or default
    return cap * (_count(body.get("n")) or 1)


def _input_tokens(data: Any) -> int:
    if isinstance(data, str):
        return estimate_text_tokens(data)
    if not isinstance(data, list) or not data:
        return 0
    total = 0
    for item in data:
        if isinstance(item, str):
            total += estimate_text_tokens(item)
        elif isinstance(item, list):
            total += len(item)  # an array of token ids
        else:
            total += 1  # one token id of a flat token array
    return total


def _json_tokens(value: Any) -> int:
    try:
        return estimate_text_tokens(orjson.dumps(value).decode())
    except TypeError:  # not JSON-serialisable: the request is malformed anyway; charge a token, not an error
        return 1


def _count(value: Any) -> int | None:
    """A positive integer field, or None (absent, null, or a wrong type the schema check reports elsewhere)."""
    return value if type(value) is int and value > 0 else None
