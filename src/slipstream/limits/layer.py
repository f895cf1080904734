"""Per-API-key limits as a pipeline layer.

It sits after the cache and coalescing, so only calls that go upstream spend a key's budget. A call the
deployments' own limits then refuse gives the key's budget back: one limit's refusal never spends another's.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import TYPE_CHECKING

from ..call import Call, CallResult, Handler
from ..errors import RateLimited
from ..types import Chunk, ChunkStream, Reply
from .limiter import Limiter, LimitSpec, Permit
from .tokens import estimate_tokens

if TYPE_CHECKING:
    from .shared import SharedLimits

__all__ = ["KeyLimitLayer"]


class KeyLimitLayer:
    def __init__(self, specs: Mapping[str, LimitSpec], *, shared: SharedLimits | None = None) -> None:
        self.limiters = {
            name: Limiter(
                spec, name=f"key:{name}", shared=None if shared is None else shared.scope(f"key:{name}")
            )
            for name, spec in specs.items()
        }

    async def __call__(self, call: Call, next: Handler) -> CallResult:
        limiter = self.limiters.get(call.key_name) if call.key_name is not None else None
        if limiter is None:
            return await next(call)
        permit = await limiter.take(estimate_tokens(call.request.body))
        try:
            result = await next(call)
        except RateLimited:
            permit.refund()  # refused further down: this key spent nothing
            permit.release()
            raise
        except BaseException as exc:
            permit.finish(exc)
            raise
        if isinstance(result, Reply):
            usage = result.usage
            if usage and usage.get("total_tokens") is not None:
                permit.settle(int(usage["total_tokens"]))
            permit.release()
            return result
        return _released_at_end(result, permit)


async def _released_at_end(stream: ChunkStream, permit: Permit) -> AsyncIterator[Chunk]:
    try:
        async for chunk in stream:
            usage = chunk.data.get("usage")
            if usage and usage.get("total_tokens") is not None:
                permit.settle(int(usage["total_tokens"]))
            yield chunk
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
        permit.release()
