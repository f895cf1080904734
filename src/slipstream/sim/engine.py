"""The simulated model's chat answers: deterministic text, token counts, tool calls, JSON replies, streams.

Everything here is a pure function of the request (and the length options): the same request always gets the
same answer, a different one almost surely another. The answer is "planned" once — choices, tokens, finish
reasons, usage — and then rendered as a ``chat.completion`` or as the chunks of a stream.

Text is cut from a corpus of readable-ish sentences built once from a fixed vocabulary: a request's hash picks
where its reply starts and how long it is, so a reply costs a list slice and a join, not a word-by-word draw.
In the sim one token is one word (with its leading space); a stream chunk carries ``chunk_tokens`` of them.
"""

from __future__ import annotations

import functools
import random
from dataclasses import dataclass
from hashlib import blake2b
from itertools import cycle, islice
from typing import Any, TypeVar

import orjson

from ..errors import InvalidRequest
from .options import SimOptions

__all__ = [
    "VOCABULARY",
    "ChatPlan",
    "ChoicePlan",
    "completion_body",
    "estimate_prompt_tokens",
    "estimate_text_tokens",
    "plan_chat",
    "request_digest",
    "stream_chunks",
    "stream_events",
    "usage_chunk",
    "validate_chat",
]

SYSTEM_FINGERPRINT = "fp_slipstream_sim"
_T = TypeVar("_T")

# Fields of a chat request that change the answer (everything else — stream, user, metadata, the ``sim``
# overrides and max_tokens — does not, so a capped reply is a prefix of the uncapped one).
_ANSWER_FIELDS = (
    "model",
    "messages",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "response_format",
    "seed",
    "temperature",
    "top_p",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
)
_CHARS_PER_TOKEN = 4
_TOKENS_PER_MESSAGE = 4
_PRIMING_TOKENS = 3
_IMAGE_TOKENS = 85
_MAX_CHOICES = 128
_CORPUS_WORDS = 20_000
_JSON_TEXT_MIN = 8  # words of text in a json_object reply
_JSON_TEXT_MAX = 40

# One word per token; a fixed list, so the text of a reply never changes between versions of the sim.
_WORDS = (
    "the a an this that every some many few most each other such own same new old good great small "
    "large long short high low early late quick slow clear open simple careful bright quiet steady "
    "model system request answer question cache stream token prompt reply server client network "
    "latency budget limit window queue worker layer pipeline gateway provider router record signal "
    "pattern result river mountain valley harbor garden market village city forest island bridge "
    "tower road field lake morning evening season journey story letter lantern compass map voyage "
    "makes takes finds keeps holds brings shows builds moves turns carries follows reaches answers "
    "returns measures sends waits checks learns sees writes reads knows gives runs grows quickly "
    "slowly often rarely always never together carefully gently simply nearly almost with without "
    "before after under over between across through around beyond near within and but so because "
    "while when where if then also still yet"
)
VOCABULARY: tuple[str, ...] = tuple(_WORDS.split())
_CONNECTORS = ("and", "but", "so", "while", "because", "when")


# ------------------------------------------------------------------------------------------ the corpus
@dataclass(frozen=True, slots=True)
class _Corpus:
    tokens: tuple[str, ...]  # " word" (leading space), sentence ends carry their "."
    starts: tuple[int, ...]  # indices where a sentence begins
    next_end: tuple[int, ...]  # next_end[i]: index of the first sentence end at or after i (may wrap past N)


@functools.cache
def _corpus() -> _Corpus:
    rng = random.Random(20240601)  # fixed: the corpus is part of the sim's contract (same request, same text)
    tokens: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    while len(tokens) < _CORPUS_WORDS:
        starts.append(len(tokens))
        length = rng.randint(6, 16)
        words = [rng.choice(VOCABULARY) for _ in range(length)]
        if length > 9 and rng.random() < 0.4:
            words[length // 2] = rng.choice(_CONNECTORS)
            words[length // 2 - 1] += ","
        words[0] = words[0].capitalize()
        words[-1] += "?" if rng.random() < 0.08 else "."
        tokens.extend(" " + w for w in words)
        ends.append(len(tokens) - 1)
    n = len(tokens)
    next_end = [0] * n
    j = len(ends) - 1
    following = ends[0] + n  # past the last end, the next one is the first end of the wrapped corpus
    for i in range(n - 1, -1, -1):
        while j >= 0 and ends[j] >= i:
            following = ends[j]
            j -= 1
        next_end[i] = following
    return _Corpus(tuple(tokens), tuple(starts), tuple(next_end))


def _text_tokens(h: int, low: int, high: int, cap: int | None) -> tuple[list[str], bool]:
    """A reply of about ``low``..``high`` tokens ending at a sentence end; cut at ``cap`` (then True)."""
    corpus = _corpus()
    n = len(corpus.tokens)
    start = corpus.starts[h % len(corpus.starts)]
    wanted = low + (h >> 64) % (high - low + 1)
    last = start + wanted - 1
    length = wanted + (corpus.next_end[last % n] - last % n)  # run on to the end of the sentence
    cut = cap is not None and length > cap
    if cut:
        assert cap is not None
        length = cap
    if start + length <= n:
        tokens = list(corpus.tokens[start : start + length])
    else:
        tokens = list(islice(cycle(corpus.tokens), start, start + length))
    tokens[0] = tokens[0][1:]
    return tokens, cut


def _chars_as_tokens(text: str) -> list[str]:
    """JSON text (tool arguments, json replies) as pieces of ~one token each, for counting and streaming."""
    return [text[i : i + _CHARS_PER_TOKEN] for i in range(0, len(text), _CHARS_PER_TOKEN)] or [""]


# ------------------------------------------------------------------------------------------ requests
def validate_chat(body: Any) -> None:
    """The checks OpenAI makes before answering, as ``InvalidRequest`` naming the field."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise InvalidRequest("you must provide a model parameter", param="model")
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise InvalidRequest("'messages' must be a non-empty array", param="messages")
    for i, message in enumerate(messages):
        if not isinstance(message, dict) or not isinstance(message.get("role"), str):
            raise InvalidRequest(f"messages[{i}] must be an object with a 'role'", param=f"messages[{i}]")
    for key in ("max_tokens", "max_completion_tokens"):
        value = body.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise InvalidRequest(f"'{key}' must be a positive integer", param=key)
    n = body.get("n", 1)
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= _MAX_CHOICES):
        raise InvalidRequest(f"'n' must be an integer between 1 and {_MAX_CHOICES}", param="n")
    tools = body.get("tools")
    if tools is not None and not isinstance(tools, list):
        raise InvalidRequest("'tools' must be an array", param="tools")


def request_digest(body: dict[str, Any]) -> bytes:
    """The hash of everything in a chat request that shapes the answer (key order does not matter)."""
    material = [body.get(k) for k in _ANSWER_FIELDS]
    try:
        blob = orjson.dumps(material, option=orjson.OPT_SORT_KEYS)
    except TypeError:  # not JSON-shaped (a test passing odd objects): hash its repr instead
        blob = repr(material).encode()
    return blake2b(blob, digest_size=16).digest()


def estimate_text_tokens(text: str) -> int:
    return (len(text) + _CHARS_PER_TOKEN - 1) // _CHARS_PER_TOKEN


def estimate_prompt_tokens(body: dict[str, Any]) -> int:
    """~4 characters per token, a few per message, a fixed price per image, the tool definitions' JSON."""
    total = _PRIMING_TOKENS
    for message in body.get("messages") or ():
        total += _TOKENS_PER_MESSAGE
        content = message.get("content")
        if isinstance(content, str):
            total += estimate_text_tokens(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, dict):
                    if isinstance(part.get("text"), str):
                        total += estimate_text_tokens(part["text"])
                    elif part.get("type") in ("image_url", "input_image"):
                        total += _IMAGE_TOKENS
        if message.get("name"):
            total += 1
        if message.get("tool_calls"):
            total += estimate_text_tokens(orjson.dumps(message["tool_calls"]).decode())
    tools = body.get("tools")
    if tools:
        total += estimate_text_tokens(orjson.dumps(tools).decode())
    return total


def _message_text(message: Any) -> str:
    content = message.get("content") if isinstance(message, dict) else None
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


# ------------------------------------------------------------------------------------------ the plan
@dataclass(slots=True)
class ChoicePlan:
    index: int
    tokens: list[str]  # the content as token pieces ("".join is the content); empty for tool calls
    tool_calls: list[dict[str, Any]] | None
    finish_reason: str

    @property
    def content(self) -> str | None:
        return None if self.tool_calls else "".join(self.tokens)

    @property
    def completion_tokens(self) -> int:
        if self.tool_calls:
            return sum(len(_chars_as_tokens(c["function"]["arguments"])) + 4 for c in self.tool_calls)
        return len(self.tokens)


@dataclass(slots=True)
class ChatPlan:
    model: str
    choices: list[ChoicePlan]
    prompt_tokens: int
    completion_tokens: int

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def usage(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
        }


def plan_chat(body: dict[str, Any], options: SimOptions) -> ChatPlan:
    """The answer to a (validated) chat request."""
    digest = request_digest(body)
    cap = body.get("max_completion_tokens") or body.get("max_tokens")
    n = body.get("n") or 1
    tools = _tools_to_call(body)
    fmt = body.get("response_format")
    fmt_type = fmt.get("type") if isinstance(fmt, dict) else None
    choices = []
    for index in range(n):
        h = int.from_bytes(
            digest if index == 0 else blake2b(digest + index.to_bytes(2), digest_size=16).digest()
        )
        if tools:
            calls = [_tool_call(tool, h, j) for j, tool in enumerate(tools)]
            choices.append(ChoicePlan(index, [], calls, "tool_calls"))
            continue
        if isinstance(fmt, dict) and fmt_type in ("json_object", "json_schema"):
            low = min(options.reply_tokens_min, _JSON_TEXT_MIN)  # "a small JSON object"
            text, _ = _text_tokens(h, low, max(low, min(options.reply_tokens_max, _JSON_TEXT_MAX)), None)
            tokens = _chars_as_tokens(_json_reply(fmt, "".join(text), h))
            # A capped structured reply is cut mid-JSON, as a real model's is (finish_reason "length").
            cut = cap is not None and len(tokens) > cap
            if cut:
                tokens = tokens[:cap]
        else:
            tokens, cut = _text_tokens(h, options.reply_tokens_min, options.reply_tokens_max, cap)
        choices.append(ChoicePlan(index, tokens, None, "length" if cut else "stop"))
    completion = sum(c.completion_tokens for c in choices)
    return ChatPlan(body["model"], choices, estimate_prompt_tokens(body), completion)


def _tools_to_call(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The function definitions to answer with calls: those the last user message names (or tool_choice forces)."""
    tools = [
        t["function"]
        for t in body.get("tools") or ()
        if isinstance(t, dict) and isinstance(t.get("function"), dict)
    ]
    tools = [f for f in tools if isinstance(f.get("name"), str)]
    choice = body.get("tool_choice")
    if not tools or choice == "none":
        return []
    if isinstance(choice, dict):
        wanted = (choice.get("function") or {}).get("name")
        return [f for f in tools if f["name"] == wanted][:1]
    last = body["messages"][-1]
    mentioned = []
    if last.get("role") == "user":
        text = _message_text(last)
        mentioned = [f for f in tools if f["name"] in text]
    if not mentioned and choice == "required":
        mentioned = tools[:1]
    if body.get("parallel_tool_calls") is False:
        mentioned = mentioned[:1]
    return mentioned


def _tool_call(function: dict[str, Any], h: int, j: int) -> dict[str, Any]:
    rng = random.Random(h + j)
    schema = function.get("parameters") if isinstance(function.get("parameters"), dict) else {}
    args = _value_for(schema or {"type": "object"}, rng, 0)
    if not isinstance(args, dict):
        args = {"value": args}
    return {
        "id": f"call_{(h >> (j % 64)) & (2**96 - 1):024x}",
        "type": "function",
        "function": {"name": function["name"], "arguments": orjson.dumps(args).decode()},
    }


def _json_reply(fmt: dict[str, Any], text: str, h: int) -> str:
    schema = (fmt.get("json_schema") or {}).get("schema") if fmt.get("type") == "json_schema" else None
    if isinstance(schema, dict) and schema.get("properties"):
        value = _value_for(schema, random.Random(h), 0)
    else:
        value = {"answer": text}
    return orjson.dumps(value).decode()


def _value_for(schema: dict[str, Any], rng: random.Random, depth: int) -> Any:
    """A value that fits a (simple) JSON schema: enough for tool arguments and structured replies."""
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return rng.choice(schema["enum"])
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or (kind is None and "properties" in schema):
        props: dict[str, Any] = schema["properties"] if isinstance(schema.get("properties"), dict) else {}
        if depth > 4:
            return {}
        return {k: _value_for(v if isinstance(v, dict) else {}, rng, depth + 1) for k, v in props.items()}
    if kind == "array":
        items: dict[str, Any] = (
            schema["items"] if isinstance(schema.get("items"), dict) else {"type": "string"}
        )
        return [] if depth > 4 else [_value_for(items, rng, depth + 1) for _ in range(rng.randint(1, 3))]
    if kind == "integer":
        return rng.randint(1, 100)
    if kind == "number":
        return round(rng.uniform(0, 100), 2)
    if kind == "boolean":
        return rng.random() < 0.5
    if kind == "null":
        return None
    return " ".join(rng.choice(VOCABULARY) for _ in range(rng.randint(1, 3)))


# ------------------------------------------------------------------------------------------ rendering
def completion_body(plan: ChatPlan, *, id: str, created: int, model: str) -> dict[str, Any]:
    """The ``chat.completion`` object."""
    choices = []
    for c in plan.choices:
        message: dict[str, Any] = {"role": "assistant", "content": c.content, "refusal": None}
        if c.tool_calls:
            message["tool_calls"] = c.tool_calls
        choices.append(
            {"index": c.index, "message": message, "logprobs": None, "finish_reason": c.finish_reason}
        )
    return {
        "id": id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": plan.usage(),
        "system_fingerprint": SYSTEM_FINGERPRINT,
    }


def stream_chunks(
    plan: ChatPlan, *, id: str, created: int, model: str, chunk_tokens: int, usage_field: bool = False
) -> list[tuple[dict[str, Any], int]]:
    """The chunks of a stream (without the usage chunk), each with the number of tokens it carries.

    Per choice: a role chunk, content (or tool-call) chunks of ``chunk_tokens`` tokens, a finish chunk; the
    choices of an ``n > 1`` request take turns, as OpenAI's do. ``usage_field`` adds ``"usage": null`` to each
    chunk, as OpenAI does when ``stream_options.include_usage`` is set.
    """
    per_choice = []
    for c in plan.choices:
        per_choice.append(
            [
                (_chunk(id, created, model, c.index, delta, finish, usage_field), tokens)
                for delta, finish, tokens in _choice_deltas(c, chunk_tokens)
            ]
        )
    return _take_turns(per_choice)


def stream_events(
    plan: ChatPlan, *, id: str, created: int, model: str, chunk_tokens: int, usage_field: bool = False
) -> list[tuple[bytes, int]]:
    """The same chunks as ``stream_chunks``, as SSE ``data:`` events, each with its number of tokens.

    Text chunks are filled into byte templates rather than built as dicts and serialised: that was most of the
    cost of a streamed reply in the HTTP server (a test holds the two renderings equal).
    """
    head = (
        b'data: {"id":%s,"object":"chat.completion.chunk","created":%d,"model":%s,"system_fingerprint":%s,'
        % (
            orjson.dumps(id),
            created,
            orjson.dumps(model),
            orjson.dumps(SYSTEM_FINGERPRINT),
        )
    )
    tail = b'}],"usage":null}\n\n' if usage_field else b"}]}\n\n"
    per_choice: list[list[tuple[bytes, int]]] = []
    for c in plan.choices:
        if c.tool_calls:
            chunks = [
                (_chunk(id, created, model, c.index, delta, finish, usage_field), tokens)
                for delta, finish, tokens in _choice_deltas(c, chunk_tokens)
            ]
            per_choice.append(
                [(b"data: " + orjson.dumps(chunk) + b"\n\n", tokens) for chunk, tokens in chunks]
            )
            continue
        choice = head + b'"choices":[{"index":%d,"delta":' % c.index
        events = [
            (
                choice
                + b'{"role":"assistant","content":"","refusal":null},"logprobs":null,"finish_reason":null'
                + tail,
                0,
            )
        ]
        tokens = c.tokens
        for i in range(0, len(tokens), chunk_tokens):
            piece = tokens[i : i + chunk_tokens]
            text = orjson.dumps("".join(piece))
            events.append(
                (choice + b'{"content":%s},"logprobs":null,"finish_reason":null%s' % (text, tail), len(piece))
            )
        finish = orjson.dumps(c.finish_reason)
        events.append((choice + b'{},"logprobs":null,"finish_reason":%s%s' % (finish, tail), 0))
        per_choice.append(events)
    return _take_turns(per_choice)


def _chunk(
    id: str,
    created: int,
    model: str,
    index: int,
    delta: dict[str, Any],
    finish: str | None,
    usage_field: bool,
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [{"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage_field:
        chunk["usage"] = None
    return chunk


def _take_turns(per_choice: list[list[_T]]) -> list[_T]:
    """Interleave the choices' chunks round-robin (one choice: its list as it is)."""
    if len(per_choice) == 1:
        return per_choice[0]
    out: list[_T] = []
    for step in range(max(len(items) for items in per_choice)):
        out.extend(items[step] for items in per_choice if step < len(items))
    return out


def _choice_deltas(c: ChoicePlan, k: int) -> list[tuple[dict[str, Any], str | None, int]]:
    deltas: list[tuple[dict[str, Any], str | None, int]] = [
        ({"role": "assistant", "content": None if c.tool_calls else "", "refusal": None}, None, 0)
    ]
    if c.tool_calls:
        for j, call in enumerate(c.tool_calls):
            fn = call["function"]
            head = {
                "index": j,
                "id": call["id"],
                "type": "function",
                "function": {"name": fn["name"], "arguments": ""},
            }
            deltas.append(({"tool_calls": [head]}, None, 1))
            pieces = _chars_as_tokens(fn["arguments"])
            for i in range(0, len(pieces), k):
                args = "".join(pieces[i : i + k])
                deltas.append(
                    (
                        {"tool_calls": [{"index": j, "function": {"arguments": args}}]},
                        None,
                        len(pieces[i : i + k]),
                    )
                )
    else:
        tokens = c.tokens
        for i in range(0, len(tokens), k):
            piece = tokens[i : i + k]
            deltas.append(({"content": "".join(piece)}, None, len(piece)))
    deltas.append(({}, c.finish_reason, 0))
    return deltas


def usage_chunk(plan: ChatPlan, *, id: str, created: int, model: str) -> dict[str, Any]:
    """The last chunk of an ``include_usage`` stream: no choices, the usage."""
    return {
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": [],
        "usage": plan.usage(),
    }
