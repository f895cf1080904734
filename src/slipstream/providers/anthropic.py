"""Anthropic Messages API: OpenAI chat requests translated to ``POST /v1/messages`` and the answers back.

The translation is pure (``to_messages_request``, ``from_messages_response`` and the ``StreamTranslator``
state machine over stream events), so it is tested without HTTP; ``AnthropicProvider`` is the thin driver.

Request, OpenAI to Anthropic:
- ``system``/``developer`` messages, wherever they appear, become the top-level ``system`` (text parts, joined
  by a blank line): the Messages API has no system role.
- ``tool`` messages become ``tool_result`` blocks in a user turn; consecutive same-role turns are merged, as
  Anthropic requires user/assistant alternation, and in a merged user turn the tool results go first (the API
  rejects text before them). Empty text is skipped: the API rejects empty text blocks.
- ``image_url`` parts: ``data:`` URLs become base64 image sources, http(s) URLs ``{"type": "url"}`` sources.
- ``tool_calls`` become ``tool_use`` blocks (arguments JSON-decoded into ``input``); ``tools``,
  ``tool_choice`` (``required`` is ``any``) and ``parallel_tool_calls: false`` (``disable_parallel_tool_use``)
  follow.
- ``max_completion_tokens`` (else ``max_tokens``, else the deployment's ``default_max_tokens``, as Anthropic
  requires one) is ``max_tokens``; ``stop`` is ``stop_sequences``; ``user`` is ``metadata.user_id``; ``top_p``
  and ``top_k`` pass as they are.
- ``temperature`` is clamped to 1: OpenAI allows 0 to 2, Anthropic 0 to 1, and a request valid for one
  deployment of a model group should not fail on another.
- ``response_format``: ``json_schema`` becomes ``output_config.format`` (Anthropic's structured outputs; the
  schema as given, ``name`` and ``strict`` have no counterpart). ``json_object`` and ``text`` have none either
  and are dropped rather than emulated with an extra prompt, which would change the conversation unasked.

Fields Anthropic lacks: ``n`` > 1 is an ``InvalidRequest(param="n")`` (one answer per request; fanning out
would multiply the cost silently). ``seed``, ``presence_penalty``, ``frequency_penalty``, ``logit_bias``,
``logprobs``, ``top_logprobs``, ``metadata`` (Anthropic's takes only ``user_id``), ``stream_options`` and any
other field not named above are dropped: the API rejects unknown fields, and these tune sampling or
reporting, not the question asked.

Reply, Anthropic to OpenAI: text blocks joined into ``content``, ``tool_use`` blocks into ``tool_calls``;
thinking and server-tool blocks are left out. ``usage.prompt_tokens`` counts cache writes and reads as well as
``input_tokens``. Streams always end with a usage-only chunk.

Options (``deployment.options``): ``anthropic_version`` (default ``2023-06-01``), ``default_max_tokens``
(default 4096).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from typing import Any, cast

import orjson

from ..errors import InvalidRequest, UpstreamError, UpstreamProtocolError, UpstreamStatusError
from ..types import ChatRequest, Chunk, Reply, UsageDict
from .base import Deployment, Provider, register_provider
from .http import HttpPool, SSEEvent, iter_sse, read_json, request

__all__ = [
    "DEFAULT_ANTHROPIC_VERSION",
    "DEFAULT_MAX_TOKENS",
    "AnthropicProvider",
    "StreamTranslator",
    "finish_reason",
    "from_messages_response",
    "stream_error",
    "to_messages_request",
    "usage_from_anthropic",
]

DEFAULT_ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096

_PROVIDER = "anthropic"
_SYSTEM_ROLES = frozenset({"system", "developer"})
_MAX_TEMPERATURE = 1.0

_FINISH_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "pause_turn": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
}

# Anthropic's error types and the HTTP statuses they come with (API reference, "Errors").
_ERROR_STATUS = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "request_too_large": 413,
    "rate_limit_error": 429,
    "api_error": 500,
    "timeout_error": 504,
    "overloaded_error": 529,
}


# ---------------------------------------------------------------------------------------------------- request
def to_messages_request(
    body: Mapping[str, Any], *, default_max_tokens: int = DEFAULT_MAX_TOKENS
) -> dict[str, Any]:
    """The Messages API request for an OpenAI chat request body (without ``stream``)."""
    n = body.get("n")
    if n is not None and n != 1:
        raise InvalidRequest("Anthropic returns one choice per request; n must be 1", param="n")
    system, messages = _translate_messages(body.get("messages") or [])
    max_tokens = _first_set(body, "max_completion_tokens", "max_tokens")
    out: dict[str, Any] = {
        "model": body["model"],
        "max_tokens": default_max_tokens if max_tokens is None else max_tokens,
        "messages": messages,
    }
    if system:
        out["system"] = system
    tools = body.get("tools")
    if tools:
        out["tools"] = [_tool(tool, f"tools[{i}]") for i, tool in enumerate(tools)]
        choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
        if choice is not None:
            out["tool_choice"] = choice
    temperature = body.get("temperature")
    if temperature is not None:
        out["temperature"] = min(float(temperature), _MAX_TEMPERATURE)
    for name in ("top_p", "top_k"):
        if body.get(name) is not None:
            out[name] = body[name]
    stop = body.get("stop")
    if stop:
        out["stop_sequences"] = [stop] if isinstance(stop, str) else list(stop)
    if body.get("user"):
        out["metadata"] = {"user_id": body["user"]}
    output_config = _output_config(body.get("response_format"))
    if output_config is not None:
        out["output_config"] = output_config
    return out


def _first_set(body: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if body.get(name) is not None:
            return body[name]
    return None


def _translate_messages(messages: list[Mapping[str, Any]]) -> tuple[str, list[dict[str, Any]]]:
    system: list[str] = []
    turns: list[dict[str, Any]] = []
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role")
        if role in _SYSTEM_ROLES:
            text = _system_text(message.get("content"), where)
            if text:
                system.append(text)
            continue
        if role == "user":
            turn_role, blocks = "user", _user_blocks(message.get("content"), where)
        elif role == "assistant":
            turn_role, blocks = "assistant", _assistant_blocks(message, where)
        elif role == "tool":
            turn_role, blocks = "user", [_tool_result(message, where)]
        else:
            raise InvalidRequest(f"role {role!r} is not supported by Anthropic", param=f"{where}.role")
        if not blocks:
            continue
        if turns and turns[-1]["role"] == turn_role:
            turns[-1]["content"].extend(blocks)
        else:
            turns.append({"role": turn_role, "content": blocks})
    return "\n\n".join(system), [_finish_turn(turn) for turn in turns]


def _finish_turn(turn: dict[str, Any]) -> dict[str, Any]:
    blocks: list[dict[str, Any]] = turn["content"]
    # Tool results must open a user turn; sorted() is stable, so the rest keeps its order.
    blocks = sorted(blocks, key=lambda block: block["type"] != "tool_result")
    if len(blocks) == 1 and blocks[0].keys() == {"type", "text"}:
        return {"role": turn["role"], "content": blocks[0]["text"]}  # the API's shorthand for one text block
    return {"role": turn["role"], "content": blocks}


def _text_parts(content: Any, where: str) -> list[str]:
    """The texts of a content that may hold only text (a string, or ``text``/``refusal`` parts)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content] if content else []
    texts = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind not in ("text", "refusal"):
            raise InvalidRequest(
                f"only text parts are allowed here, not {kind!r}", param=f"{where}.content[{j}]"
            )
        text = part.get(kind)
        if text:
            texts.append(text)
    return texts


def _system_text(content: Any, where: str) -> str:
    return "\n\n".join(_text_parts(content, where))


def _user_blocks(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None or isinstance(content, str):
        return [{"type": "text", "text": text} for text in _text_parts(content, where)]
    blocks: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type") if isinstance(part, Mapping) else None
        if kind == "text":
            if part.get("text"):
                blocks.append({"type": "text", "text": part["text"]})
        elif kind == "image_url":
            blocks.append(_image_block(part.get("image_url"), f"{where}.content[{j}].image_url"))
        else:
            raise InvalidRequest(
                f"content part type {kind!r} is not supported by Anthropic",
                param=f"{where}.content[{j}].type",
            )
    return blocks


def _image_block(image: Any, where: str) -> dict[str, Any]:
    url = image.get("url") if isinstance(image, Mapping) else image
    if not isinstance(url, str):
        raise InvalidRequest("image_url needs a url", param=f"{where}.url")
    if url.startswith(("http://", "https://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    if url.startswith("data:"):
        header, comma, data = url.partition(",")
        media_type, *params = header[len("data:") :].split(";")
        if comma and media_type and "base64" in params:
            return {"type": "image", "source": {"type": "base64", "media_type": media_type, "data": data}}
        raise InvalidRequest("a data: image URL must be base64 with a media type", param=f"{where}.url")
    raise InvalidRequest("image URLs must be http(s) or base64 data: URLs", param=f"{where}.url")


def _assistant_blocks(message: Mapping[str, Any], where: str) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = [
        {"type": "text", "text": text} for text in _text_parts(message.get("content"), where)
    ]
    for j, call in enumerate(message.get("tool_calls") or ()):
        at = f"{where}.tool_calls[{j}]"
        fn = call.get("function") or {}
        arguments = fn.get("arguments") or "{}"
        try:
            tool_input = orjson.loads(arguments)
        except orjson.JSONDecodeError:
            raise InvalidRequest(
                "tool call arguments are not valid JSON", param=f"{at}.function.arguments"
            ) from None
        if not isinstance(tool_input, dict):
            raise InvalidRequest(
                "tool call arguments must be a JSON object", param=f"{at}.function.arguments"
            )
        blocks.append({"type": "tool_use", "id": call.get("id"), "name": fn.get("name"), "input": tool_input})
    return blocks


def _tool_result(message: Mapping[str, Any], where: str) -> dict[str, Any]:
    tool_use_id = message.get("tool_call_id")
    if not tool_use_id:
        raise InvalidRequest("a tool message needs tool_call_id", param=f"{where}.tool_call_id")
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": tool_use_id}
    content = message.get("content")
    if isinstance(content, str):
        if content:
            block["content"] = content
    else:
        texts = _text_parts(content, where)
        if texts:
            block["content"] = [{"type": "text", "text": text} for text in texts]
    return block


def _tool(tool: Mapping[str, Any], where: str) -> dict[str, Any]:
    if tool.get("type") != "function":
        raise InvalidRequest("only function tools are supported by Anthropic", param=f"{where}.type")
    fn = tool.get("function") or {}
    if not fn.get("name"):
        raise InvalidRequest("a function tool needs a name", param=f"{where}.function.name")
    out: dict[str, Any] = {
        "name": fn["name"],
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def _tool_choice(choice: Any, parallel_tool_calls: Any) -> dict[str, Any] | None:
    result: dict[str, Any] | None
    if choice is None:
        result = None
    elif choice in ("auto", "none"):
        result = {"type": choice}
    elif choice == "required":
        result = {"type": "any"}
    elif isinstance(choice, Mapping) and choice.get("type") == "function":
        name = (choice.get("function") or {}).get("name")
        if not name:
            raise InvalidRequest("tool_choice names no function", param="tool_choice.function.name")
        result = {"type": "tool", "name": name}
    else:
        raise InvalidRequest(f"unsupported tool_choice {choice!r}", param="tool_choice")
    if parallel_tool_calls is False:
        result = result or {"type": "auto"}
        if result["type"] != "none":  # "none" takes no options: no tool call at all, parallel or not
            result["disable_parallel_tool_use"] = True
    return result


def _output_config(response_format: Any) -> dict[str, Any] | None:
    if not isinstance(response_format, Mapping) or response_format.get("type") != "json_schema":
        return None
    schema = (response_format.get("json_schema") or {}).get("schema")
    if not isinstance(schema, Mapping):
        raise InvalidRequest(
            "response_format.json_schema.schema must be an object", param="response_format.json_schema.schema"
        )
    return {"format": {"type": "json_schema", "schema": schema}}


# ---------------------------------------------------------------------------------------------------- reply
def finish_reason(stop_reason: str | None) -> str:
    """The OpenAI ``finish_reason`` for an Anthropic ``stop_reason`` (unknown ones read as a normal stop)."""
    return _FINISH_REASONS.get(stop_reason or "", "stop")


def _count(value: Any) -> int:
    return value if isinstance(value, int) else 0


def usage_from_anthropic(usage: Mapping[str, Any]) -> UsageDict:
    """OpenAI usage: Anthropic's ``input_tokens`` leaves cached tokens out, OpenAI's ``prompt_tokens`` not."""
    written = _count(usage.get("cache_creation_input_tokens"))
    read = _count(usage.get("cache_read_input_tokens"))
    prompt = _count(usage.get("input_tokens")) + written + read
    completion = _count(usage.get("output_tokens"))
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": read, "cache_creation_tokens": written},
    }


def _tool_call(block: Mapping[str, Any]) -> dict[str, Any]:
    arguments = orjson.dumps(block.get("input") or {}).decode()
    return {
        "id": block.get("id", ""),
        "type": "function",
        "function": {"name": block.get("name", ""), "arguments": arguments},
    }


def from_messages_response(data: Mapping[str, Any], *, created: int) -> dict[str, Any]:
    """The OpenAI ``chat.completion`` for a Messages API response."""
    content = data.get("content")
    if data.get("type") != "message" or not isinstance(content, list):
        raise UpstreamProtocolError(
            f"{_PROVIDER} answered with JSON that is not a message", provider=_PROVIDER
        )
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for block in content:
        kind = block.get("type")
        if kind == "text":
            texts.append(block.get("text") or "")
        elif kind == "tool_use":
            calls.append(_tool_call(block))
        # thinking, redacted_thinking and server-tool blocks have no place in an OpenAI message
    text = "".join(texts)
    message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
    if calls:
        message["tool_calls"] = calls
    return {
        "id": data.get("id", ""),
        "object": "chat.completion",
        "created": created,
        "model": data.get("model", ""),
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": finish_reason(data.get("stop_reason")),
            }
        ],
        "usage": usage_from_anthropic(data.get("usage") or {}),
    }


# ---------------------------------------------------------------------------------------------------- stream
def stream_error(event: Mapping[str, Any]) -> UpstreamError:
    """The error for an ``error`` stream event: a status error for known types, else a protocol error."""
    error = event.get("error")
    error = error if isinstance(error, Mapping) else {}
    message = f"{_PROVIDER}: {error.get('message') or 'error in stream'}"
    status = _ERROR_STATUS.get(str(error.get("type")))
    if status is None:
        return UpstreamProtocolError(message, provider=_PROVIDER)
    return UpstreamStatusError(message, upstream_status=status, provider=_PROVIDER)


class StreamTranslator:
    """Anthropic stream events in, OpenAI ``chat.completion.chunk`` objects out; one instance per stream.

    ``feed`` takes each event's JSON and returns the chunks it amounts to (often none). Once ``message_stop``
    has been fed, ``done`` is true; ``close`` raises if the stream ended before that, so a cut stream never
    passes for a finished one. Event types this adapter does not know are skipped, as Anthropic asks.
    """

    __slots__ = ("_base", "_created", "_finished", "_tools", "_usage", "done")

    def __init__(self, *, created: int) -> None:
        self._created = created
        self._base: dict[str, Any] | None = None
        self._tools: dict[int, int] = {}  # content block index -> OpenAI tool call index
        self._usage: dict[str, Any] = {}
        self._finished = False
        self.done = False

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        kind = event.get("type")
        if kind == "ping" or self.done:
            return []
        if kind == "error":
            raise stream_error(event)
        if kind == "message_start":
            return self._message_start(event)
        if self._base is None:
            raise UpstreamProtocolError(
                f"{_PROVIDER} stream sent {kind!r} before message_start", provider=_PROVIDER
            )
        if kind == "content_block_start":
            return self._block_start(event)
        if kind == "content_block_delta":
            return self._block_delta(event)
        if kind == "message_delta":
            return self._message_delta(event)
        if kind == "message_stop":
            self.done = True
            chunks = [] if self._finished else [self._chunk({}, "stop")]
            return [*chunks, {**self._base, "choices": [], "usage": usage_from_anthropic(self._usage)}]
        return []  # content_block_stop, and event types newer than this adapter

    def close(self) -> None:
        if not self.done:
            raise UpstreamProtocolError(f"{_PROVIDER} stream ended before message_stop", provider=_PROVIDER)

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        assert self._base is not None
        return {
            **self._base,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }

    def _message_start(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        if self._base is not None:
            raise UpstreamProtocolError(f"{_PROVIDER} stream sent a second message_start", provider=_PROVIDER)
        message = event.get("message") or {}
        self._base = {
            "id": message.get("id", ""),
            "object": "chat.completion.chunk",
            "created": self._created,
            "model": message.get("model", ""),
        }
        self._usage = dict(message.get("usage") or {})
        return [self._chunk({"role": "assistant", "content": ""})]

    def _block_start(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        block = event.get("content_block") or {}
        kind = block.get("type")
        if kind == "text":
            return [self._chunk({"content": block["text"]})] if block.get("text") else []
        if kind == "tool_use":
            position = self._tools[event.get("index", 0)] = len(self._tools)
            call = {
                "index": position,
                "id": block.get("id", ""),
                "type": "function",
                "function": {"name": block.get("name", ""), "arguments": ""},
            }
            return [self._chunk({"tool_calls": [call]})]
        return []  # thinking, redacted_thinking, server tools: not part of an OpenAI message

    def _block_delta(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        delta = event.get("delta") or {}
        kind = delta.get("type")
        if kind == "text_delta":
            return [self._chunk({"content": delta["text"]})] if delta.get("text") else []
        if kind == "input_json_delta":
            position = self._tools.get(event.get("index", 0))
            if position is None or not delta.get("partial_json"):
                return []  # input of a server tool, or the empty first piece
            call = {"index": position, "function": {"arguments": delta["partial_json"]}}
            return [self._chunk({"tool_calls": [call]})]
        return []  # thinking_delta, signature_delta, citations_delta

    def _message_delta(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        # Counts here are cumulative: they replace message_start's, field by field.
        usage = event.get("usage") or {}
        self._usage.update({k: v for k, v in usage.items() if v is not None})
        stop_reason = (event.get("delta") or {}).get("stop_reason")
        if stop_reason is None or self._finished:
            return []
        self._finished = True
        return [self._chunk({}, finish_reason(stop_reason))]


def parse_event(event: SSEEvent) -> dict[str, Any]:
    """One SSE event's JSON; its ``type`` falls back to the SSE event name."""
    try:
        data = orjson.loads(event.data)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(
            f"{_PROVIDER} sent a stream event that is not JSON", provider=_PROVIDER
        ) from None
    if not isinstance(data, dict):
        raise UpstreamProtocolError(
            f"{_PROVIDER} sent a stream event that is not an object", provider=_PROVIDER
        )
    if "type" not in data and event.event:
        data["type"] = event.event
    return data


# ------------------------------------------------------------------------------------------------ provider
@register_provider
class AnthropicProvider(Provider):
    name = "anthropic"
    default_base_url = "https://api.anthropic.com"

    def __init__(
        self, deployment: Deployment, http: HttpPool, *, clock: Callable[[], float] = time.time
    ) -> None:
        super().__init__(deployment, http)
        options = deployment.options
        self._clock = clock
        self._max_tokens = int(options.get("default_max_tokens", DEFAULT_MAX_TOKENS))
        self._url = f"{self.base_url}/v1/messages"
        headers = {
            "anthropic-version": str(options.get("anthropic_version", DEFAULT_ANTHROPIC_VERSION)),
            "content-type": "application/json",
        }
        if deployment.api_key:
            headers["x-api-key"] = deployment.api_key
        headers.update(deployment.headers)
        self._headers = headers
        self._stream_headers = {**headers, "accept": "text/event-stream"}

    def _payload(self, chat: ChatRequest, *, stream: bool) -> bytes:
        body = to_messages_request(
            chat.with_model(self.deployment.model), default_max_tokens=self._max_tokens
        )
        if stream:
            body["stream"] = True
        return orjson.dumps(body)

    def _post(self, payload: bytes, headers: Mapping[str, str]) -> Any:
        return request(
            self.http,
            "POST",
            self._url,
            provider=self.name,
            timeouts=self.deployment.timeouts,
            body=payload,
            headers=headers,
        )

    async def complete(self, request: ChatRequest) -> Reply:
        async with self._post(self._payload(request, stream=False), self._headers) as response:
            data = await read_json(response, self.name)
            headers = _rate_headers(response.headers)
        return Reply(data=from_messages_response(data, created=int(self._clock())), headers=headers)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        translator = StreamTranslator(created=int(self._clock()))
        # aclosing: leaving the loop at message_stop must still close the event generator.
        async with (
            self._post(self._payload(request, stream=True), self._stream_headers) as response,
            contextlib.aclosing(cast("AsyncGenerator[SSEEvent, None]", iter_sse(response))) as events,
        ):
            async for event in events:
                for chunk in translator.feed(parse_event(event)):
                    yield Chunk(chunk)
                if translator.done:
                    break
        translator.close()


def _rate_headers(headers: Mapping[str, str]) -> dict[str, str] | None:
    kept = {k.lower(): v for k, v in headers.items() if k.lower().startswith("anthropic-ratelimit-")}
    return kept or None
