"""The provider interface, the deployment it serves, and the registry providers plug into.

A provider is one module with one ``Provider`` subclass registered by name — the built-ins register through the
same ``register_provider`` call a third-party plugin would use. A provider instance serves one deployment
(provider + model + base URL + key) and translates the canonical (OpenAI-shaped) types to its API and back.

Conventions every provider keeps:
- ``complete`` returns a ``Reply`` holding an OpenAI ``chat.completion`` object with ``usage``.
- ``stream`` is an async generator of OpenAI ``chat.completion.chunk`` objects. It always ends with a usage-only
  chunk when the provider reports usage (the edge drops it for clients that did not ask for usage), and it raises
  rather than ending quietly when the upstream stream breaks.
- Failures are raised as ``slipstream.errors.Upstream*`` errors carrying the provider's own message.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar

from ..errors import InvalidRequest
from ..types import ChatRequest, ChunkStream, EmbeddingsRequest, Reply, usage_tokens

if TYPE_CHECKING:
    from .http import HttpPool

__all__ = ["Deployment", "Price", "Provider", "Timeouts", "get_provider_class", "register_provider"]

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_FIRST_BYTE_TIMEOUT = 60.0
DEFAULT_TOTAL_TIMEOUT = 600.0


@dataclass(frozen=True, slots=True)
class Timeouts:
    """Per-deployment upstream timeouts, in seconds.

    ``first_byte`` bounds the wait for the response to start and, while streaming, for each next piece of it,
    so a hung upstream never holds a client for longer than that.
    """

    connect: float = DEFAULT_CONNECT_TIMEOUT
    first_byte: float = DEFAULT_FIRST_BYTE_TIMEOUT
    total: float = DEFAULT_TOTAL_TIMEOUT


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens."""

    input: float
    output: float
    cached_input: float | None = None

    def cost(self, usage: Mapping[str, Any] | None) -> float:
        """The cost of one reply's usage; cached prompt tokens at the cached rate when one is set."""
        if not usage:
            return 0.0
        return self.tokens_cost(*usage_tokens(usage))

    def tokens_cost(self, prompt: int, completion: int, cached: int = 0) -> float:
        """The cost of token counts (``cached``: the part of ``prompt`` read from the provider's cache)."""
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return ((prompt - cached) * self.input + cached * cached_rate + completion * self.output) / 1_000_000


@dataclass(frozen=True, slots=True)
class Deployment:
    """One concrete upstream model: what a model group's alias resolves to."""

    provider: str
    model: str
    name: str = ""
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)  # never printed
    timeouts: Timeouts = Timeouts()
    headers: Mapping[str, str] = field(default_factory=dict, repr=False)
    options: Mapping[str, Any] = field(default_factory=dict)
    price: Price | None = None
    weight: float = 1.0
    priority: int = 0  # lower is preferred
    limits: Any = None  # slipstream.limits.LimitSpec | None (typed loosely: providers must not import limits)

    @property
    def label(self) -> str:
        """A name safe for logs and headers (no key, no URL credentials)."""
        return self.name or f"{self.provider}/{self.model}"


class Provider(ABC):
    """Serves one deployment. Subclasses set ``name`` and implement ``complete`` and ``stream``."""

    name: ClassVar[str]
    default_base_url: ClassVar[str | None] = None

    def __init__(self, deployment: Deployment, http: HttpPool) -> None:
        self.deployment = deployment
        self.http = http

    @classmethod  # noqa: B027 - an optional hook: most providers take any options
    def check_options(cls, options: Mapping[str, Any]) -> None:
        """Raise ``ValueError`` naming a bad ``options`` entry; called when a config is loaded."""

    @property
    def base_url(self) -> str:
        url = self.deployment.base_url or self.default_base_url
        if not url:
            raise InvalidRequest(f"deployment {self.deployment.label} has no base_url")
        return url.rstrip("/")

    @abstractmethod
    async def complete(self, request: ChatRequest) -> Reply:
        """One non-streamed chat completion."""

    @abstractmethod
    def stream(self, request: ChatRequest) -> ChunkStream:
        """A streamed chat completion (an async generator of chunks)."""

    async def embed(self, request: EmbeddingsRequest) -> Reply:
        raise InvalidRequest(f"provider {self.name!r} does not offer embeddings", param="model")

    async def aclose(self) -> None:  # noqa: B027 - optional hook, most providers hold nothing of their own
        """Release anything the provider holds beyond the shared HTTP pool."""


_REGISTRY: dict[str, type[Provider]] = {}


def register_provider(cls: type[Provider]) -> type[Provider]:
    """Register a provider class under its ``name`` (usable as a class decorator)."""
    _REGISTRY[cls.name] = cls
    return cls


def get_provider_class(name: str) -> type[Provider]:
    from . import load_builtin_providers

    load_builtin_providers()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise InvalidRequest(
            f"unknown provider {name!r}; known: {', '.join(sorted(_REGISTRY))}", param="provider"
        ) from None
