"""One request, as observed once at its end: the value every sink (request log, metrics, alerts) reads.

A ``RequestRecord`` is built once per request, after the reply (or the last chunk) went out, from the ``Call``
and what the edge measured. It is a flat slotted object of plain values so that handing it to a queue or
another thread costs nothing and no sink can reach back into live request state. ``OperationRecord`` is the
same kind of value for one run of a tracked application block (``observe/track.py``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..types import usage_tokens

if TYPE_CHECKING:
    from ..call import Call
    from ..providers.base import Price

__all__ = ["OperationRecord", "RequestRecord", "record_from_call", "usage_tokens"]

# Cache statuses under which the upstream was not called for this request: its cost was avoided.
_SERVED_WITHOUT_UPSTREAM = frozenset({"hit", "semantic-hit"})


@dataclass(slots=True)
class RequestRecord:
    """What one request did and cost. Times in milliseconds, ``ts`` in epoch seconds (request start).

    Build it with keywords. ``record_from_call`` alone passes every field by position, in this order: on the
    request path that is ~1 µs cheaper than 26 keywords (``tests/observe`` checks it field by field)."""

    ts: float
    group: str  # the model group (alias) the client asked for
    status: int  # HTTP-like: 200, 429, 502...
    latency_ms: float  # end to end, as the client saw it (to the last byte for streams)
    key_name: str | None = None
    namespace: str = "default"
    deployment: str | None = None  # Deployment.label of the one that answered; None for hits
    error: str | None = None  # exception class name when the request failed
    ttft_ms: float | None = None  # time to first token (streams)
    upstream_ms: float | None = None  # time spent waiting on upstream calls
    overhead_ms: float | None = None  # latency_ms - upstream_ms: what slipstream itself added
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # provider-side prompt cache (prompt_tokens_details.cached_tokens)
    cost_usd: float = 0.0  # what this request cost upstream
    saved_usd: float = 0.0  # what it would have cost, when a cache hit or coalescing answered it
    cache_status: str = "off"  # hit | semantic-hit | miss | refresh | bypass | off
    similarity: float | None = None  # the semantic cache's best candidate, when it looked
    coalesced: bool = False
    attempts: int = 0
    hedged: bool = False
    fallback: str | None = None
    stream: bool = False
    operation: str | None = None  # the tracked application operation, if any
    prompt_text: str | None = None  # only filled when text logging is enabled
    reply_text: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.status < 400


@dataclass(slots=True, kw_only=True)
class OperationRecord:
    """One run of a tracked block (``slipstream.track``), recorded when it ends. The totals include the calls
    of nested blocks; ``operation`` is the path of names from the outermost block ("cycle/propose")."""

    ts: float  # epoch seconds, block start
    operation: str
    parent: str | None  # the enclosing block's path
    duration_ms: float  # the block's own wall time
    calls: int = 0
    hits: int = 0
    errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    saved_usd: float = 0.0
    error: str | None = None  # exception class name when the block raised


def record_from_call(
    call: Call,
    *,
    ts: float,
    status: int,
    latency_ms: float,
    usage: Mapping[str, Any] | None = None,
    price: Price | None = None,
    error: BaseException | str | None = None,
    ttft_ms: float | None = None,
    upstream_ms: float | None = None,
    operation: str | None = None,
    prompt_text: str | None = None,
    reply_text: str | None = None,
) -> RequestRecord:
    """Build the record of a finished call. A cache hit or a coalesced follower made no upstream call of its
    own: its cost is zero and what the reply's usage would have cost is counted as saved."""
    prompt, completion, cached = usage_tokens(usage)
    value = price.tokens_cost(prompt, completion, cached) if price is not None else 0.0
    avoided = call.cache_status in _SERVED_WITHOUT_UPSTREAM or call.coalesced
    error_name = error if isinstance(error, str) or error is None else type(error).__name__
    return RequestRecord(  # by position, in field order (see RequestRecord)
        ts,
        call.group,
        status,
        latency_ms,
        call.key_name,
        call.namespace,
        call.deployment,
        error_name,
        ttft_ms,
        upstream_ms,
        None if upstream_ms is None else max(0.0, latency_ms - upstream_ms),
        prompt,
        completion,
        cached,
        0.0 if avoided else value,
        value if avoided else 0.0,
        call.cache_status,
        call.similarity,
        call.coalesced,
        call.attempts,
        call.hedged,
        call.fallback,
        call.stream,
        operation,
        prompt_text,
        reply_text,
    )
