"""Canonical request, reply and chunk types.

The OpenAI Chat Completions schema is the lingua franca. Requests stay the plain JSON objects clients send —
validated once (``slipstream.schema``), never copied into another shape — so fields slipstream does not know
pass through to OpenAI-compatible upstreams untouched. The ``TypedDict`` classes below document that shape for
type checkers and cost nothing at run time.

Replies and stream chunks are OpenAI JSON objects too, carried with the bytes they came in as, so that the
gateway forwards what the upstream sent without serialising it again.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any, Literal, NotRequired, TypedDict

import orjson

__all__ = [
    "ChatCompletionChunkDict",
    "ChatCompletionDict",
    "ChatRequest",
    "ChatRequestDict",
    "Chunk",
    "ChunkStream",
    "EmbeddingsRequest",
    "MessageDict",
    "Reply",
    "ToolCallDict",
    "ToolDict",
    "UsageDict",
    "dumps",
    "usage_tokens",
]


def dumps(obj: Any) -> bytes:
    return orjson.dumps(obj)


# ---------------------------------------------------------------------------------------------------- schema
class FunctionCallDict(TypedDict):
    name: str
    arguments: str


class ToolCallDict(TypedDict):
    id: str
    type: Literal["function"]
    function: FunctionCallDict


class TextPartDict(TypedDict):
    type: Literal["text"]
    text: str


class ImageURLDict(TypedDict):
    url: str
    detail: NotRequired[Literal["auto", "low", "high"]]


class ImagePartDict(TypedDict):
    type: Literal["image_url"]
    image_url: ImageURLDict


ContentPart = TextPartDict | ImagePartDict | dict[str, Any]


class MessageDict(TypedDict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: NotRequired[str | list[ContentPart] | None]
    name: NotRequired[str]
    tool_calls: NotRequired[list[ToolCallDict]]
    tool_call_id: NotRequired[str]
    refusal: NotRequired[str | None]


class FunctionDefDict(TypedDict):
    name: str
    description: NotRequired[str]
    parameters: NotRequired[dict[str, Any]]
    strict: NotRequired[bool]


class ToolDict(TypedDict):
    type: Literal["function"]
    function: FunctionDefDict


class StreamOptionsDict(TypedDict, total=False):
    include_usage: bool


class ChatRequestDict(TypedDict, total=False):
    model: str
    messages: list[MessageDict]
    tools: list[ToolDict]
    tool_choice: str | dict[str, Any]
    parallel_tool_calls: bool
    response_format: dict[str, Any]
    temperature: float
    top_p: float
    max_tokens: int
    max_completion_tokens: int
    stop: str | list[str]
    seed: int
    n: int
    presence_penalty: float
    frequency_penalty: float
    logit_bias: dict[str, float]
    logprobs: bool
    top_logprobs: int
    stream: bool
    stream_options: StreamOptionsDict
    user: str
    metadata: dict[str, str]


class PromptTokensDetailsDict(TypedDict, total=False):
    cached_tokens: int
    cache_creation_tokens: int


class UsageDict(TypedDict):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: NotRequired[PromptTokensDetailsDict]


def usage_tokens(usage: Mapping[str, Any] | None) -> tuple[int, int, int]:
    """(prompt, completion, cached prompt) tokens from an OpenAI ``usage`` object; zeros when absent. Pricing
    (``providers.base.Price``) and the request record (``observe.record``) both read usage through this."""
    if not usage:
        return 0, 0, 0
    details = usage.get("prompt_tokens_details")
    cached = 0
    # Absent on most replies; a dict when present (the ABC check only for other mappings).
    if details and (type(details) is dict or isinstance(details, Mapping)):
        cached = int(details.get("cached_tokens") or 0)
    return int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), cached


class ChoiceDict(TypedDict):
    index: int
    message: MessageDict
    finish_reason: str | None
    logprobs: NotRequired[Any]


class ChatCompletionDict(TypedDict):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[ChoiceDict]
    usage: NotRequired[UsageDict]


class ChunkChoiceDict(TypedDict):
    index: int
    delta: dict[str, Any]
    finish_reason: str | None


class ChatCompletionChunkDict(TypedDict):
    id: str
    object: Literal["chat.completion.chunk"]
    created: int
    model: str
    choices: list[ChunkChoiceDict]
    usage: NotRequired[UsageDict | None]


# ---------------------------------------------------------------------------------------------------- requests
class ChatRequest:
    """A validated chat request: the client's JSON object plus the few facts every layer asks for."""

    __slots__ = ("body", "include_usage", "model", "stream")

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.model: str = body["model"]
        self.stream: bool = bool(body.get("stream", False))
        opts = body.get("stream_options")
        self.include_usage: bool = bool(opts.get("include_usage")) if isinstance(opts, dict) else False

    @property
    def messages(self) -> list[MessageDict]:
        messages: list[MessageDict] = self.body["messages"]
        return messages

    def with_model(self, model: str) -> dict[str, Any]:
        """The body as sent upstream: the deployment's model name instead of the client's alias."""
        if model == self.model:
            return self.body
        body = dict(self.body)
        body["model"] = model
        return body


class EmbeddingsRequest:
    """A validated embeddings request (``input`` is a string, a list of strings, or token arrays)."""

    __slots__ = ("body", "model")

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self.model: str = body["model"]

    def with_model(self, model: str) -> dict[str, Any]:
        if model == self.model:
            return self.body
        body = dict(self.body)
        body["model"] = model
        return body


# ---------------------------------------------------------------------------------------------------- replies
class Reply:
    """A complete reply (chat completion or embeddings list) as JSON, with the bytes it arrived as.

    ``data`` is parsed lazily: the gateway's hit path forwards ``body`` and never needs it.
    """

    __slots__ = ("_body", "_data", "headers")

    def __init__(
        self,
        data: dict[str, Any] | None = None,
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        if data is None and body is None:
            raise ValueError("Reply needs data or body")
        self._data = data
        self._body = body
        self.headers = headers  # upstream response headers worth keeping (rate-limit state), if any

    @property
    def data(self) -> dict[str, Any]:
        if self._data is None:
            assert self._body is not None
            self._data = orjson.loads(self._body)
        return self._data

    @property
    def body(self) -> bytes:
        if self._body is None:
            self._body = orjson.dumps(self._data)
        return self._body

    @property
    def usage(self) -> UsageDict | None:
        usage: UsageDict | None = self.data.get("usage")
        return usage

    @property
    def text(self) -> str:
        """The first choice's text (empty when the model answered only with tool calls)."""
        try:
            content = self.data["choices"][0]["message"].get("content")
        except (KeyError, IndexError, TypeError):
            return ""
        return content if isinstance(content, str) else ""


class Chunk:
    """One streamed ``chat.completion.chunk`` (or an error event), with its JSON bytes when it came as bytes."""

    __slots__ = ("_raw", "data")

    def __init__(self, data: dict[str, Any], raw: bytes | None = None) -> None:
        self.data = data
        self._raw = raw

    @classmethod
    def from_raw(cls, raw: bytes) -> Chunk:
        return cls(orjson.loads(raw), raw)

    @property
    def raw(self) -> bytes:
        if self._raw is None:
            self._raw = orjson.dumps(self.data)
        return self._raw

    @property
    def usage(self) -> UsageDict | None:
        usage: UsageDict | None = self.data.get("usage")
        return usage

    @property
    def is_usage_only(self) -> bool:
        """The final chunk of ``include_usage`` streams: usage and no choices."""
        return not self.data.get("choices") and self.data.get("usage") is not None


# A stream of chunks: an async iterator that the consumer must ``aclose()`` if it stops early.
ChunkStream = AsyncIterator[Chunk]
