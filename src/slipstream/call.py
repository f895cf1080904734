"""The call: one request travelling through the pipeline, with its context and what layers learn about it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Literal, Protocol

from .cache.directives import DEFAULT_DIRECTIVES, CacheDirectives
from .types import ChatRequest, ChunkStream, EmbeddingsRequest, Reply

if TYPE_CHECKING:
    from .observe.track import Span

__all__ = ["Call", "CallResult", "Handler", "Layer"]

CallResult = Reply | ChunkStream
Handler = Callable[["Call"], Awaitable[CallResult]]


class Call:
    """A request plus its context. Layers read the context and write what they found out (cache status...)."""

    __slots__ = (
        "attempts",
        "cache",
        "cache_age",
        "cache_key",
        "cache_status",
        "coalesced",
        "deadline",
        "deployment",
        "fallback",
        "feedback",
        "group",
        "hedged",
        "key_name",
        "kind",
        "namespace",
        "operation",
        "request",
        "semantic_entry",
        "similarity",
        "span",
        "upstream_ms",
    )

    def __init__(
        self,
        request: ChatRequest | EmbeddingsRequest,
        *,
        namespace: str = "default",
        key_name: str | None = None,
        cache: CacheDirectives = DEFAULT_DIRECTIVES,
        deadline: float | None = None,
        operation: str | None = None,
    ) -> None:
        self.request = request
        self.kind: Literal["chat", "embed"] = "chat" if isinstance(request, ChatRequest) else "embed"
        self.namespace = namespace
        self.key_name = key_name
        self.cache = cache
        self.deadline = deadline  # loop.time() by which the call must be answered, if any
        # The tracked application operation ("cycle/propose"): given by the gateway's client, or taken from the
        # tracked block (``span``) the call was made in when it enters the pipeline.
        self.operation = operation
        self.span: Span | None = None
        self.group = request.model
        self.cache_key: str | None = None
        self.cache_status = "off"  # hit | semantic-hit | miss | refresh | bypass | off
        self.cache_age: float | None = None
        self.deployment: str | None = None
        self.coalesced = False  # answered by an identical request's upstream call
        self.attempts = 0  # upstream attempts made (retries and failovers included)
        self.hedged = False  # a second, hedging attempt was started
        # "static" when every deployment failed and the group's fixed reply answered
        self.fallback: str | None = None
        self.similarity: float | None = None  # the semantic cache's best candidate (served or not)
        self.semantic_entry: str | None = None  # the entry a semantic hit came from (for feedback)
        self.feedback: str | None = None  # "bad": the client reports the semantic hit this request would get
        self.upstream_ms: float | None = (
            None  # time spent in upstream attempts (to the last chunk for streams)
        )

    @property
    def stream(self) -> bool:
        return self.kind == "chat" and self.request.stream  # type: ignore[union-attr]


class Layer(Protocol):
    """A pipeline layer: one async method taking the call and the next handler."""

    async def __call__(self, call: Call, next: Handler) -> CallResult: ...
