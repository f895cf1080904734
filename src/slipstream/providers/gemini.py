"""Google Gemini adapter: ``generateContent`` / ``streamGenerateContent`` / ``batchEmbedContents``.

The translation both ways is pure functions (``to_gemini_request``, ``from_gemini_response``,
``GeminiStream``, ``to_embed_request``, ``from_embed_response``); ``GeminiProvider`` only sends and receives.

Choices worth knowing, because Gemini cannot say everything OpenAI can:
- Gemini has one ``systemInstruction``: every system/developer message, wherever it stands, goes there in
  order.
- Consecutive turns of one role are merged (Gemini wants user and model to alternate); tool results become
  ``functionResponse`` parts of a user turn, named after the tool call they answer.
- Tool-call ids do not exist upstream: they are made up as ``call_<choice>_<n>``. A tool message is matched to
  the most recent call with its id, so ids repeating across turns are harmless.
- JSON schemas (tool parameters, ``json_schema`` response formats) are cut down to the OpenAPI subset Gemini
  accepts (``_SCHEMA_KEYS``): keywords it rejects such as ``additionalProperties``, ``$schema`` or ``strict``
  are dropped, local ``$ref`` are inlined, ``type: [T, "null"]`` becomes ``nullable``, ``oneOf`` becomes
  ``anyOf``.
- ``logit_bias``, ``parallel_tool_calls`` and ``user`` have no Gemini counterpart and are ignored.
- A prompt blocked before generation (``promptFeedback.blockReason``, no candidates) is not an error: it is an
  answer with empty content and ``finish_reason: "content_filter"``, as OpenAI reports its own filtering.
"""

from __future__ import annotations

import base64
import mimetypes
import struct
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AbstractAsyncContextManager
from typing import Any
from urllib.parse import quote, urlsplit

import orjson
from aiohttp import ClientResponse

from ..errors import InvalidRequest, UpstreamProtocolError, UpstreamStatusError
from ..types import ChatRequest, Chunk, EmbeddingsRequest, Reply, dumps
from .base import Provider, register_provider
from .http import iter_sse, read_json
from .http import request as upstream_request

__all__ = [
    "GeminiProvider",
    "GeminiStream",
    "clean_schema",
    "from_embed_response",
    "from_gemini_response",
    "to_embed_request",
    "to_gemini_request",
    "usage_from_metadata",
]

DEFAULT_API_VERSION = "v1beta"
_PROVIDER = "gemini"

_ROLES = {"user": "user", "assistant": "model", "tool": "user", "function": "user"}

_FINISH_REASONS = {
    "STOP": "stop",
    "MAX_TOKENS": "length",
    "SAFETY": "content_filter",
    "RECITATION": "content_filter",
    "BLOCKLIST": "content_filter",
    "PROHIBITED_CONTENT": "content_filter",
    "SPII": "content_filter",
    "IMAGE_SAFETY": "content_filter",
}

# The OpenAPI 3.0 subset Gemini's ``Schema`` accepts; any other keyword makes the whole request a 400.
# fmt: off
_SCHEMA_KEYS = frozenset(
    {
        "type", "format", "title", "description", "nullable", "enum", "maxItems", "minItems", "properties",
        "required", "minProperties", "maxProperties", "minLength", "maxLength", "pattern", "example", "anyOf",
        "propertyOrdering", "default", "items", "minimum", "maximum",
    }
)
# fmt: on
_MAX_REF_DEPTH = 8  # recursive schemas cannot be inlined; past this depth a reference becomes a bare object


# --------------------------------------------------------------------------------------------------- request
def to_gemini_request(body: Mapping[str, Any]) -> dict[str, Any]:
    """The ``generateContent`` body for an OpenAI Chat Completions request body."""
    system, contents = _contents(body.get("messages") or [])
    out: dict[str, Any] = {"contents": contents}
    if system:
        out["systemInstruction"] = {"parts": system}
    if body.get("tools"):
        out["tools"] = [{"functionDeclarations": _function_declarations(body["tools"])}]
    if body.get("tools") and body.get("tool_choice") is not None:
        out["toolConfig"] = {"functionCallingConfig": _function_calling_config(body["tool_choice"])}
    config = _generation_config(body)
    if config:
        out["generationConfig"] = config
    return out


def _contents(messages: list[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    system: list[dict[str, Any]] = []
    contents: list[dict[str, Any]] = []
    call_names: dict[str, str] = {}  # tool_call id -> function name, the latest call with that id wins
    for i, message in enumerate(messages):
        where = f"messages[{i}]"
        role = message.get("role")
        if role in ("system", "developer"):
            system.extend({"text": text} for text in _texts(message.get("content"), where))
            continue
        if role not in _ROLES:
            raise InvalidRequest(f"unsupported role {role!r}", param=f"{where}.role")
        if role == "user":
            parts = _user_parts(message.get("content"), where)
        elif role == "assistant":
            parts = [{"text": text} for text in _texts(message.get("content"), where) if text]
            for k, call in enumerate(message.get("tool_calls") or []):
                parts.append(_function_call_part(call, f"{where}.tool_calls[{k}]"))
                call_names[call.get("id", "")] = call["function"]["name"]
        else:
            parts = [_function_response_part(message, call_names, where)]
        if not parts:
            continue  # an empty turn is a 400 upstream and says nothing
        gemini_role = _ROLES[role]
        if contents and contents[-1]["role"] == gemini_role:
            contents[-1]["parts"].extend(parts)
        else:
            contents.append({"role": gemini_role, "parts": parts})
    return system, contents


def _texts(content: Any, where: str) -> list[str]:
    """The text of a message that may only hold text (system, assistant, tool)."""
    if content is None:
        return []
    if isinstance(content, str):
        return [content]
    texts = []
    for j, part in enumerate(content):
        if part.get("type") not in ("text", "refusal"):
            raise InvalidRequest("only text parts are allowed here", param=f"{where}.content[{j}].type")
        texts.append(part.get("text") or part.get("refusal") or "")
    return texts


def _user_parts(content: Any, where: str) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"text": content}]
    parts: list[dict[str, Any]] = []
    for j, part in enumerate(content):
        kind = part.get("type")
        at = f"{where}.content[{j}]"
        if kind == "text":
            parts.append({"text": part["text"]})
        elif kind == "image_url":
            image = part["image_url"]
            parts.append(
                _media_part(image["url"] if isinstance(image, dict) else image, f"{at}.image_url.url")
            )
        elif kind == "input_audio":
            audio = part["input_audio"]
            parts.append(
                {"inlineData": {"mimeType": f"audio/{audio.get('format', 'wav')}", "data": audio["data"]}}
            )
        elif kind == "file" and isinstance(part.get("file"), dict) and "file_data" in part["file"]:
            parts.append(_media_part(part["file"]["file_data"], f"{at}.file.file_data"))
        else:
            raise InvalidRequest(f"content part type {kind!r} is not supported by Gemini", param=f"{at}.type")
    return parts


def _media_part(url: str, where: str) -> dict[str, Any]:
    """A data: URL becomes inline bytes; an http(s) or gs:// URL becomes a file reference Gemini fetches."""
    if url.startswith("data:"):
        header, sep, data = url[5:].partition(",")
        mime, _, encoding = header.partition(";")
        if not sep or encoding != "base64":
            raise InvalidRequest("a data: URL must be base64 encoded", param=where)
        return {"inlineData": {"mimeType": mime or "application/octet-stream", "data": data}}
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https", "gs"):
        raise InvalidRequest("the URL must be a data:, http(s) or gs:// URL", param=where)
    guessed, _ = mimetypes.guess_type(parts.path)
    return {"fileData": {"mimeType": guessed or "image/jpeg", "fileUri": url}}


def _function_call_part(call: Mapping[str, Any], where: str) -> dict[str, Any]:
    fn = call["function"]
    raw = fn.get("arguments") or "{}"
    try:
        args = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest(
            "tool call arguments are not valid JSON", param=f"{where}.function.arguments"
        ) from None
    if not isinstance(args, dict):
        raise InvalidRequest("tool call arguments must be a JSON object", param=f"{where}.function.arguments")
    return {"functionCall": {"name": fn["name"], "args": args}}


def _function_response_part(
    message: Mapping[str, Any], call_names: Mapping[str, str], where: str
) -> dict[str, Any]:
    if message["role"] == "function":  # the legacy single-function form names itself
        name = message.get("name", "")
    else:
        call_id = message.get("tool_call_id", "")
        if call_id not in call_names:
            raise InvalidRequest(f"no earlier tool call has id {call_id!r}", param=f"{where}.tool_call_id")
        name = call_names[call_id]
    text = "".join(_texts(message.get("content"), where))
    try:
        parsed = orjson.loads(text)
    except orjson.JSONDecodeError:
        parsed = None
    # Gemini's ``response`` is a Struct: a JSON object goes as it is, anything else is wrapped.
    response = parsed if isinstance(parsed, dict) else {"content": text}
    return {"functionResponse": {"name": name, "response": response}}


def _function_declarations(tools: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
    declarations = []
    for i, tool in enumerate(tools):
        if tool.get("type") != "function":
            raise InvalidRequest(
                f"tool type {tool.get('type')!r} is not supported by Gemini", param=f"tools[{i}].type"
            )
        fn = tool["function"]
        declaration: dict[str, Any] = {"name": fn["name"]}
        if fn.get("description"):
            declaration["description"] = fn["description"]
        parameters = clean_schema(fn.get("parameters") or {})
        # Gemini rejects an OBJECT schema without properties: a function without arguments declares none.
        if parameters.get("properties"):
            declaration["parameters"] = parameters
        declarations.append(declaration)
    return declarations


def _function_calling_config(choice: Any) -> dict[str, Any]:
    modes = {"auto": "AUTO", "none": "NONE", "required": "ANY"}
    if isinstance(choice, str) and choice in modes:
        return {"mode": modes[choice]}
    if (
        isinstance(choice, dict)
        and choice.get("type") == "function"
        and "name" in (choice.get("function") or {})
    ):
        return {"mode": "ANY", "allowedFunctionNames": [choice["function"]["name"]]}
    raise InvalidRequest("tool_choice must be auto, none, required or a named function", param="tool_choice")


def _generation_config(body: Mapping[str, Any]) -> dict[str, Any]:
    config: dict[str, Any] = {}
    renames = {
        "temperature": "temperature",
        "top_p": "topP",
        "seed": "seed",
        "n": "candidateCount",
        "presence_penalty": "presencePenalty",
        "frequency_penalty": "frequencyPenalty",
        "logprobs": "responseLogprobs",
        "top_logprobs": "logprobs",
    }
    for key, name in renames.items():
        if body.get(key) is not None:
            config[name] = body[key]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        config["maxOutputTokens"] = max_tokens
    stop = body.get("stop")
    if stop:
        config["stopSequences"] = [stop] if isinstance(stop, str) else list(stop)
    config.update(_response_format(body.get("response_format")))
    return config


def _response_format(fmt: Any) -> dict[str, Any]:
    if not fmt or fmt.get("type") == "text":
        return {}
    if fmt.get("type") == "json_object":
        return {"responseMimeType": "application/json"}
    if fmt.get("type") == "json_schema":
        out: dict[str, Any] = {"responseMimeType": "application/json"}
        schema = (fmt.get("json_schema") or {}).get("schema")
        if schema:
            out["responseSchema"] = clean_schema(schema)
        return out
    raise InvalidRequest(
        f"response_format type {fmt.get('type')!r} is not supported", param="response_format.type"
    )


def clean_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """A JSON schema cut down to what Gemini's ``Schema`` accepts (best effort; see the module docstring)."""
    defs = {**(schema.get("definitions") or {}), **(schema.get("$defs") or {})}
    return _clean(schema, defs, 0)


def _clean(schema: Mapping[str, Any], defs: Mapping[str, Any], depth: int) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        target = defs.get(ref.rsplit("/", 1)[-1]) if ref.startswith("#/") else None
        if target is None or depth >= _MAX_REF_DEPTH:
            return {"type": "object"}
        return _clean({**target, **{k: v for k, v in schema.items() if k != "$ref"}}, defs, depth + 1)
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key == "properties" and isinstance(value, dict):
            out["properties"] = {name: _clean(sub, defs, depth) for name, sub in value.items()}
        elif key == "items" and isinstance(value, dict):
            out["items"] = _clean(value, defs, depth)
        elif key in ("anyOf", "oneOf") and isinstance(value, list):
            variants = [_clean(sub, defs, depth) for sub in value if sub.get("type") != "null"]
            if len(variants) < len(value):
                out["nullable"] = True
            if len(variants) == 1:
                out.update(variants[0])
            elif variants:
                out["anyOf"] = variants
        elif key == "type" and isinstance(value, list):
            types = [t for t in value if t != "null"]
            if len(types) < len(value):
                out["nullable"] = True
            if len(types) == 1:
                out["type"] = types[0]
            elif types:
                out["anyOf"] = [{"type": t} for t in types]
        elif key == "const" and "enum" not in schema:
            out["enum"] = [value]
        elif key in _SCHEMA_KEYS:
            out[key] = value
    return out


# -------------------------------------------------------------------------------------------------- response
def from_gemini_response(
    data: Mapping[str, Any], *, model: str, created: int, fallback_id: str
) -> dict[str, Any]:
    """The OpenAI ``chat.completion`` for a ``GenerateContentResponse``.

    ``model`` and ``fallback_id`` stand in when the response carries no ``modelVersion`` / ``responseId``.
    """
    candidates = data.get("candidates") or []
    choices = []
    for position, candidate in enumerate(candidates):
        index = candidate.get("index", position)
        text, calls = _candidate_output(candidate, index, 0)
        message: dict[str, Any] = {"role": "assistant", "content": text if text or not calls else None}
        if calls:
            message["tool_calls"] = calls
        choices.append(
            {
                "index": index,
                "message": message,
                "logprobs": _logprobs(candidate),
                "finish_reason": _finish_reason(candidate.get("finishReason"), bool(calls)),
            }
        )
    if not candidates:
        if not (data.get("promptFeedback") or {}).get("blockReason"):
            raise UpstreamProtocolError("gemini answered without candidates", provider=_PROVIDER)
        message = {"role": "assistant", "content": ""}
        choices.append({"index": 0, "message": message, "logprobs": None, "finish_reason": "content_filter"})
    return {
        "id": data.get("responseId") or fallback_id,
        "object": "chat.completion",
        "created": created,
        "model": data.get("modelVersion") or model,
        "choices": choices,
        "usage": usage_from_metadata(data.get("usageMetadata") or {}),
    }


def _candidate_output(
    candidate: Mapping[str, Any], index: int, first_call: int
) -> tuple[str, list[dict[str, Any]]]:
    """The visible text (no thoughts) and tool calls of a candidate; call ids count from ``first_call``."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    for part in (candidate.get("content") or {}).get("parts") or []:
        if "text" in part and not part.get("thought"):
            texts.append(part["text"])
        elif "functionCall" in part:
            fn = part["functionCall"]
            calls.append(
                {
                    "id": f"call_{index}_{first_call + len(calls)}",
                    "type": "function",
                    "function": {
                        "name": fn.get("name", ""),
                        "arguments": dumps(fn.get("args") or {}).decode(),
                    },
                }
            )
    return "".join(texts), calls


def _finish_reason(reason: str | None, has_calls: bool) -> str:
    mapped = _FINISH_REASONS.get(reason or "", "stop")
    # Gemini ends a function-calling turn with STOP; OpenAI clients look for "tool_calls" to run the tools.
    return "tool_calls" if has_calls and mapped == "stop" else mapped


def _logprobs(candidate: Mapping[str, Any]) -> dict[str, Any] | None:
    result = candidate.get("logprobsResult")
    if not isinstance(result, dict):
        return None
    tops = result.get("topCandidates") or []

    def entry(c: Mapping[str, Any]) -> dict[str, Any]:
        token = c.get("token", "")
        return {"token": token, "logprob": c.get("logProbability", 0.0), "bytes": list(token.encode())}

    content = []
    for i, chosen in enumerate(result.get("chosenCandidates") or []):
        top = (tops[i].get("candidates") or []) if i < len(tops) else []
        content.append({**entry(chosen), "top_logprobs": [entry(c) for c in top]})
    return {"content": content}


def usage_from_metadata(meta: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAI usage from ``usageMetadata``; thinking tokens are billed as output: they count as completion."""
    prompt = meta.get("promptTokenCount") or 0
    thoughts = meta.get("thoughtsTokenCount") or 0
    completion = (meta.get("candidatesTokenCount") or 0) + thoughts
    usage: dict[str, Any] = {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": meta.get("totalTokenCount") or prompt + completion,
    }
    if meta.get("cachedContentTokenCount") is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": meta["cachedContentTokenCount"]}
    if thoughts:
        usage["completion_tokens_details"] = {"reasoning_tokens": thoughts}
    return usage


# ------------------------------------------------------------------------------------------------- streaming
class _CandidateState:
    __slots__ = ("blocked", "calls", "has_calls", "reason")

    def __init__(self) -> None:
        self.calls = 0
        self.has_calls = False
        self.blocked = False  # the prompt was blocked: no candidate will ever come
        self.reason: str | None = None


class GeminiStream:
    """Turns the ``GenerateContentResponse`` events of a stream into OpenAI chunks (no I/O).

    ``feed`` each parsed event, then ``finish`` once the upstream stream has ended. Finish chunks are held
    until then, because older models repeat ``finishReason`` on every event (Google's own streaming samples
    show it); ``finish`` raises ``UpstreamProtocolError`` when a choice never got a finish reason: the
    stream was cut.
    """

    def __init__(self, *, model: str, created: int, fallback_id: str) -> None:
        self._base: dict[str, Any] | None = None
        self._model = model
        self._created = created
        self._fallback_id = fallback_id
        self._candidates: dict[int, _CandidateState] = {}
        self._usage: Mapping[str, Any] | None = None

    def _chunk(self, choices: list[dict[str, Any]]) -> dict[str, Any]:
        assert self._base is not None
        return {**self._base, "choices": choices}

    def feed(self, event: Mapping[str, Any]) -> list[dict[str, Any]]:
        if "error" in event:
            error = event["error"] if isinstance(event["error"], dict) else {"message": str(event["error"])}
            code = error.get("code")
            raise UpstreamStatusError(
                f"{_PROVIDER}: {error.get('message') or 'error in stream'}",
                upstream_status=code if isinstance(code, int) else 500,
                provider=_PROVIDER,
            )
        if self._base is None:  # every chunk carries what the first event said
            self._base = {
                "id": event.get("responseId") or self._fallback_id,
                "object": "chat.completion.chunk",
                "created": self._created,
                "model": event.get("modelVersion") or self._model,
            }
        if event.get("usageMetadata"):
            self._usage = event["usageMetadata"]
        chunks = []
        candidates = event.get("candidates") or []
        if not candidates and (event.get("promptFeedback") or {}).get("blockReason"):
            chunks.extend(self._start(0))
            self._candidates[0].blocked = True
        for position, candidate in enumerate(candidates):
            index = candidate.get("index", position)
            chunks.extend(self._start(index))
            state = self._candidates[index]
            text, calls = _candidate_output(candidate, index, state.calls)
            delta: dict[str, Any] = {}
            if text:
                delta["content"] = text
            if calls:
                delta["tool_calls"] = [{"index": state.calls + n, **call} for n, call in enumerate(calls)]
                state.calls += len(calls)
                state.has_calls = True
            logprobs = _logprobs(candidate)
            if delta or logprobs:
                chunks.append(
                    self._chunk(
                        [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": None}]
                    )
                )
            if candidate.get("finishReason"):
                state.reason = candidate["finishReason"]
        return chunks

    def _start(self, index: int) -> list[dict[str, Any]]:
        if index in self._candidates:
            return []
        self._candidates[index] = _CandidateState()
        delta = {"role": "assistant", "content": ""}
        return [self._chunk([{"index": index, "delta": delta, "logprobs": None, "finish_reason": None}])]

    def finish(self) -> list[dict[str, Any]]:
        if not self._candidates or any(s.reason is None and not s.blocked for s in self._candidates.values()):
            raise UpstreamProtocolError("gemini stream ended before a finish reason", provider=_PROVIDER)
        chunks = []
        for index in sorted(self._candidates):
            state = self._candidates[index]
            reason = "content_filter" if state.blocked else _finish_reason(state.reason, state.has_calls)
            chunks.append(
                self._chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}])
            )
        if self._usage is not None:
            chunks.append({**self._chunk([]), "usage": usage_from_metadata(self._usage)})
        return chunks


def _parse_event(data: bytes) -> dict[str, Any]:
    try:
        event = orjson.loads(data)
    except orjson.JSONDecodeError:
        raise UpstreamProtocolError(
            "gemini sent a stream event that is not JSON", provider=_PROVIDER
        ) from None
    if not isinstance(event, dict):
        raise UpstreamProtocolError(
            "gemini sent a stream event that is not a JSON object", provider=_PROVIDER
        )
    return event


# ------------------------------------------------------------------------------------------------ embeddings
def to_embed_request(body: Mapping[str, Any], model: str) -> dict[str, Any]:
    """The ``batchEmbedContents`` body for an OpenAI embeddings body (text input only)."""
    texts = body.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts or not all(isinstance(t, str) for t in texts):
        raise InvalidRequest("Gemini embeds a string or a list of strings, not token arrays", param="input")
    name = f"models/{_bare_model(model)}"
    extra = {"outputDimensionality": body["dimensions"]} if body.get("dimensions") is not None else {}
    return {"requests": [{"model": name, "content": {"parts": [{"text": t}]}, **extra} for t in texts]}


def from_embed_response(
    data: Mapping[str, Any], *, model: str, count: int, encoding_format: str = "float"
) -> dict[str, Any]:
    """The OpenAI embeddings list; ``base64`` packs little-endian float32 (the openai SDK's default ask)."""
    embeddings = data.get("embeddings")
    if not isinstance(embeddings, list) or len(embeddings) != count:
        raise UpstreamProtocolError(f"gemini returned no embeddings for {count} inputs", provider=_PROVIDER)
    items = []
    for i, embedding in enumerate(embeddings):
        values = embedding.get("values") or []
        vector: Any = values
        if encoding_format == "base64":
            vector = base64.b64encode(struct.pack(f"<{len(values)}f", *values)).decode()
        items.append({"object": "embedding", "index": i, "embedding": vector})
    # batchEmbedContents reports no token counts.
    return {"object": "list", "data": items, "model": model, "usage": {"prompt_tokens": 0, "total_tokens": 0}}


def _bare_model(model: str) -> str:
    return model.removeprefix("models/")


# -------------------------------------------------------------------------------------------------- provider
@register_provider
class GeminiProvider(Provider):
    """The Gemini API (AI Studio keys), authenticated with the ``x-goog-api-key`` header, never the URL."""

    name = "gemini"
    default_base_url = "https://generativelanguage.googleapis.com"

    def _url(self, method: str) -> str:
        version = self.deployment.options.get("api_version", DEFAULT_API_VERSION)
        model = quote(_bare_model(self.deployment.model), safe="")
        return f"{self.base_url}/{version}/models/{model}:{method}"

    def _headers(self) -> dict[str, str]:
        headers = {"content-type": "application/json"}
        if self.deployment.api_key:
            headers["x-goog-api-key"] = self.deployment.api_key
        headers.update(self.deployment.headers)
        return headers

    def _post(self, method: str, body: dict[str, Any]) -> AbstractAsyncContextManager[ClientResponse]:
        return upstream_request(
            self.http,
            "POST",
            self._url(method),
            provider=self.name,
            timeouts=self.deployment.timeouts,
            body=dumps(body),
            headers=self._headers(),
        )

    async def complete(self, request: ChatRequest) -> Reply:
        async with self._post("generateContent", to_gemini_request(request.body)) as response:
            data = await read_json(response, self.name)
        completion = from_gemini_response(
            data, model=self.deployment.model, created=int(time.time()), fallback_id=_new_id()
        )
        return Reply(data=completion)

    async def stream(self, request: ChatRequest) -> AsyncIterator[Chunk]:
        translator = GeminiStream(
            model=self.deployment.model, created=int(time.time()), fallback_id=_new_id()
        )
        async with self._post("streamGenerateContent?alt=sse", to_gemini_request(request.body)) as response:
            async for event in iter_sse(response):
                for chunk in translator.feed(_parse_event(event.data)):
                    yield Chunk(chunk)
        for chunk in translator.finish():
            yield Chunk(chunk)

    async def embed(self, request: EmbeddingsRequest) -> Reply:
        body = to_embed_request(request.body, self.deployment.model)
        async with self._post("batchEmbedContents", body) as response:
            data = await read_json(response, self.name)
        encoding = request.body.get("encoding_format") or "float"
        count = len(body["requests"])
        return Reply(
            data=from_embed_response(data, model=self.deployment.model, count=count, encoding_format=encoding)
        )


def _new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"
