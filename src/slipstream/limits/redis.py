"""Rate and concurrency limits shared by every instance through Redis: one Lua script per check.

The arithmetic mirrors ``window.SlidingWindow`` (read its docstring for why a sliding log and not GCRA): a limit
is a log of buckets ``granularity`` wide; a bucket counts until its end plus ``window``, so every unit counts for
at least a full window. In Redis a log is two keys: a sorted set of bucket numbers (oldest first, for pruning and
for computing the wait) and a hash of bucket → cost plus a ``total`` field (so a check is O(expired buckets),
not O(log)). Times come from ``TIME`` inside the scripts: the instances' clocks never meet.

Key layout, for a scope ``S`` (a deployment, an API key)::

    slipstream:limit:{S}:rpm:z   sorted set  bucket number (member and score)
    slipstream:limit:{S}:rpm:h   hash        bucket number → requests, "total" → their sum
    slipstream:limit:{S}:tpm:z / :tpm:h      the same for tokens
    slipstream:limit:{S}:slots   sorted set  lease id → lease expiry (µs of server time)

``{S}`` is a hash tag: every key of a scope lives in one Redis Cluster slot, so a script may touch them all.
Each key expires a window after its last commit (the slots key after its longest lease), so idle scopes vanish.
Memory (measured, Redis 7.0): ~200 bytes per live bucket per limit (zset ~120 + hash ~75), at most
``window / granularity`` buckets (6,000 for a minute at the default 10 ms): ~2.4 MB for a scope busy enough to
commit in every bucket under both limits; a scope seeing 10 requests a second needs ~240 KB.

- ``try_acquire`` checks RPM and TPM and commits to both or to neither (two-phase, as ``window.acquire_all``), in
  one round trip; it answers a ``Grant``: ``wait`` 0.0 when admitted, else the seconds until it would fit.
- ``settle``/``refund`` correct the bucket the grant was committed to (not the newest one: see
  ``SlidingWindow.settle``); a bucket that has expired needs no correction and is left alone.
- Concurrency slots are leases with an expiry: an instance that dies stops holding its slots after
  ``lease_ttl``; a long call renews its lease (``renew_slot``) before it runs out.

Failures: every call is bounded by ``timeout``; a timeout or an unreachable Redis raises
``LimitBackendUnavailable`` (the caller decides whether to fail open or closed). After ``failure_threshold``
failures in a row the backend stops asking Redis, except one probe per ``retry_interval``. A call that times out
or is cancelled after Redis ran it is undone when its answer arrives: a grant is refunded, a lease released.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from redis.commands.core import AsyncScript
from redis.exceptions import RedisError

from ..stores.redis import (
    DEFAULT_FAILURE_THRESHOLD,
    DEFAULT_RETRY_INTERVAL,
    Health,
    RedisCalls,
)
from ..stores.redis_connect import DEFAULT_MAX_CONNECTIONS, RedisClient, connect
from ..stores.redis_pipelined import PipelinedConnection, for_url, run_script
from .limiter import LimitBackendUnavailable
from .window import DEFAULT_WINDOW

__all__ = [
    "DEFAULT_LEASE_TTL",
    "DEFAULT_REDIS_GRANULARITY",
    "DEFAULT_TIMEOUT",
    "Grant",
    "LimitBackendUnavailable",
    "RedisLimitBackend",
    "limit_keys",
]

DEFAULT_REDIS_GRANULARITY = 0.01  # coarser than in-process (1 ms): each bucket costs Redis memory
DEFAULT_TIMEOUT = 0.1
DEFAULT_LEASE_TTL = 60.0
KEY_PREFIX = "slipstream:limit:"


@dataclass(slots=True)
class Grant:
    """The answer of ``try_acquire``: admitted (``wait == 0.0``, committed to ``bucket``) or not (the wait).

    ``settle`` and ``refund`` update it (like ``Permit``), so settling twice corrects from the last charge.
    """

    wait: float
    bucket: int  # the log bucket the costs went to (server time // granularity): what settle corrects
    tokens: int  # what the TPM window holds for this request now
    refunded: bool = False

    @property
    def admitted(self) -> bool:
        return self.wait == 0.0


def limit_keys(scope: str) -> dict[str, str]:
    """The keys of one scope, all in one Cluster hash slot."""
    base = f"{KEY_PREFIX}{{{scope}}}:"
    return {
        "rpm_z": base + "rpm:z",
        "rpm_h": base + "rpm:h",
        "tpm_z": base + "tpm:z",
        "tpm_h": base + "tpm:h",
        "slots": base + "slots",
    }


# Shared by the scripts: server time in µs, and a log's pruning. KEYS/ARGV conventions are per script.
_PRELUDE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
"""

# KEYS: rpm_z, rpm_h, tpm_z, tpm_h. ARGV: rpm limit, tpm limit (0 = none), tokens, window µs, granularity µs.
# Returns {wait µs (0 = admitted and committed), bucket}.
_ACQUIRE = (
    _PRELUDE
    + """
local window = tonumber(ARGV[4])
local gran = tonumber(ARGV[5])
local bucket = math.floor(now / gran)
local BATCH = 500

-- A bucket b counts until (b + 1) * gran + window; the dead ones are b <= floor((now - window) / gran) - 1.
local function prune(z, h)
  local last_dead = string.format('%d', math.floor((now - window) / gran) - 1)
  while true do
    local dead = redis.call('ZRANGEBYSCORE', z, '-inf', last_dead, 'LIMIT', 0, BATCH)
    if #dead == 0 then break end
    local costs = redis.call('HMGET', h, unpack(dead))
    local freed = 0
    for i = 1, #costs do freed = freed + (tonumber(costs[i]) or 0) end
    redis.call('HDEL', h, unpack(dead))
    redis.call('ZREM', z, unpack(dead))
    if freed ~= 0 then redis.call('HINCRBY', h, 'total', -freed) end
    if #dead < BATCH then break end
  end
  return tonumber(redis.call('HGET', h, 'total')) or 0
end

-- Seconds (µs) until `cost` more fit under `limit`; walks only the few oldest buckets that cover the excess.
local function wait_for(z, h, limit, cost)
  local excess = prune(z, h) + math.min(cost, limit) - limit
  if excess <= 0 then return 0 end
  local freed = 0
  local start = 0
  while true do
    local rows = redis.call('ZRANGE', z, start, start + 99)
    if #rows == 0 then return window + gran end  -- a total without buckets: only if damaged; wait a window
    local costs = redis.call('HMGET', h, unpack(rows))
    for i = 1, #rows do
      freed = freed + (tonumber(costs[i]) or 0)
      if freed >= excess then return (tonumber(rows[i]) + 1) * gran + window - now end
    end
    start = start + 100
  end
end

local limits = {
  {KEYS[1], KEYS[2], tonumber(ARGV[1]), 1},
  {KEYS[3], KEYS[4], tonumber(ARGV[2]), tonumber(ARGV[3])},
}
local wait = 0
for _, l in ipairs(limits) do
  if l[3] > 0 and l[4] > 0 then
    local w = wait_for(l[1], l[2], l[3], l[4])
    if w > wait then wait = w end
  end
end
if wait > 0 then return {wait, bucket} end
local member = string.format('%d', bucket)
local ttl_ms = math.ceil((window + 2 * gran) / 1000)
for _, l in ipairs(limits) do
  if l[3] > 0 and l[4] > 0 then
    redis.call('ZADD', l[1], member, member)
    redis.call('HINCRBY', l[2], member, l[4])
    redis.call('HINCRBY', l[2], 'total', l[4])
    redis.call('PEXPIRE', l[1], ttl_ms)
    redis.call('PEXPIRE', l[2], ttl_ms)
  end
end
return {0, bucket}
"""
)

# KEYS: rpm_h, tpm_h. ARGV: bucket, rpm delta, tpm delta. Costs never go below zero; an expired bucket is skipped.
# Returns the number of buckets corrected.
_SETTLE = """
local corrected = 0
for i = 1, 2 do
  local delta = tonumber(ARGV[i + 1])
  if delta ~= 0 then
    local cost = tonumber(redis.call('HGET', KEYS[i], ARGV[1]))
    if cost then
      local after = cost + delta
      if after < 0 then after = 0 end
      redis.call('HSET', KEYS[i], ARGV[1], after)
      redis.call('HINCRBY', KEYS[i], 'total', after - cost)
      corrected = corrected + 1
    end
  end
end
return corrected
"""

# KEYS: slots. ARGV: max concurrent, lease µs, lease id. Returns {1, 0} (leased) or {0, µs until the first
# lease runs out}.
_ACQUIRE_SLOT = (
    _PRELUDE
    + """
local lease = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[1]) then
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  return {0, tonumber(first[2]) - now}
end
redis.call('ZADD', KEYS[1], string.format('%d', now + lease), ARGV[3])
local ttl_ms = math.ceil(lease / 1000) + 1000
if redis.call('PTTL', KEYS[1]) < ttl_ms then redis.call('PEXPIRE', KEYS[1], ttl_ms) end
return {1, 0}
"""
)

# KEYS: slots. ARGV: lease µs, lease id. Extends a live lease; returns 1, or 0 when it had already run out.
_RENEW_SLOT = (
    _PRELUDE
    + """
local lease = tonumber(ARGV[1])
local expiry = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[2]))
if not expiry or expiry <= now then
  redis.call('ZREM', KEYS[1], ARGV[2])
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', string.format('%d', now + lease), ARGV[2])
local ttl_ms = math.ceil(lease / 1000) + 1000
if redis.call('PTTL', KEYS[1]) < ttl_ms then redis.call('PEXPIRE', KEYS[1], ttl_ms) end
return 1
"""
)

# KEYS: slots. Returns the live leases.
_COUNT_SLOTS = (
    _PRELUDE
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', string.format('%d', now))
return redis.call('ZCARD', KEYS[1])
"""
)


class RedisLimitBackend:
    """RPM/TPM windows and concurrency leases per scope, shared through one Redis."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        client: RedisClient | None = None,
        window: float = DEFAULT_WINDOW,
        granularity: float = DEFAULT_REDIS_GRANULARITY,
        timeout: float = DEFAULT_TIMEOUT,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        monotonic: Callable[[], float] = time.monotonic,
        fast: PipelinedConnection | None = None,
    ) -> None:
        if not window > 0 or not 0 < granularity <= window:
            raise ValueError("window must be positive and granularity between 0 and the window")
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._own_client = client is None
        self.client = client if client is not None else connect(url, max_connections=max_connections)
        # The per-request scripts (acquire, settle) go over a pipelined connection when there is one (a plain
        # single server, see stores/redis_pipelined.py); the rest through redis-py.
        self._own_fast = fast is None and client is None
        self.fast = for_url(url) if self._own_fast else fast
        self.window = window
        self.granularity = granularity
        self.timeout = timeout
        self._window_us = round(window * 1e6)
        self._gran_us = max(1, round(granularity * 1e6))
        self.calls = RedisCalls("RedisLimitBackend", Health(failure_threshold, retry_interval), monotonic)
        self._acquire = self.client.register_script(_ACQUIRE)
        self._settle = self.client.register_script(_SETTLE)
        self._acquire_slot = self.client.register_script(_ACQUIRE_SLOT)
        self._renew_slot = self.client.register_script(_RENEW_SLOT)
        self._count_slots = self.client.register_script(_COUNT_SLOTS)

    @property
    def healthy(self) -> bool:
        return self.calls.healthy

    # ------------------------------------------------------------------------------------------ windows
    async def try_acquire(self, scope: str, rpm: int | None, tpm: int | None, tokens: int = 0) -> Grant:
        """Check one request and ``tokens`` against ``rpm``/``tpm`` (``None``: no limit); commit to both or neither."""
        tokens = max(0, int(tokens))
        keys = limit_keys(scope)
        script_keys = [keys["rpm_z"], keys["rpm_h"], keys["tpm_z"], keys["tpm_h"]]
        args = [rpm or 0, tpm or 0, tokens, self._window_us, self._gran_us]

        async def undo(reply: Any) -> None:  # admitted, but the caller has gone: give it back
            if int(reply[0]) == 0:
                await self._script(self._settle, [keys["rpm_h"], keys["tpm_h"]], [int(reply[1]), -1, -tokens])

        reply = await self._call(lambda: self._script(self._acquire, script_keys, args), on_abandon=undo)
        return Grant(int(reply[0]) / 1e6, int(reply[1]), tokens)

    async def settle(self, scope: str, grant: Grant, actual_tokens: int) -> bool:
        """Replace the grant's estimated tokens by ``actual_tokens``; False when its bucket has already expired."""
        actual = max(0, int(actual_tokens))
        corrected = await self._correct(scope, grant, 0, actual - grant.tokens)
        grant.tokens = actual
        return corrected

    async def refund(self, scope: str, grant: Grant) -> bool:
        """The request was never sent: give back its request and its tokens."""
        corrected = await self._correct(scope, grant, -1, -grant.tokens)
        grant.tokens = 0
        grant.refunded = True
        return corrected

    async def usage(self, scope: str) -> tuple[int, int]:
        """(requests, tokens) committed in the current window, as of the last check (for stats and tests)."""
        keys = limit_keys(scope)
        pipe = self.client.pipeline(transaction=False)
        pipe.hget(keys["rpm_h"], "total")
        pipe.hget(keys["tpm_h"], "total")
        rpm, tpm = await self._call(pipe.execute)
        return int(rpm or 0), int(tpm or 0)

    # ---------------------------------------------------------------------------------------- slots
    async def acquire_slot(
        self, scope: str, max_concurrent: int, lease_ttl: float = DEFAULT_LEASE_TTL
    ) -> tuple[str | None, float]:
        """(lease id, 0.0) when a slot was free, else (None, seconds until the oldest lease runs out)."""
        if max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")
        lease_id = os.urandom(8).hex()
        key = limit_keys(scope)["slots"]
        args: list[int | str] = [max_concurrent, self._lease_us(lease_ttl), lease_id]

        async def undo(reply: Any) -> None:
            if int(reply[0]) == 1:
                await self.client.zrem(key, lease_id)

        reply = await self._call(lambda: self._acquire_slot(keys=[key], args=args), on_abandon=undo)
        if int(reply[0]) == 1:
            return lease_id, 0.0
        return None, max(0.0, int(reply[1]) / 1e6)

    async def renew_slot(self, scope: str, lease_id: str, lease_ttl: float = DEFAULT_LEASE_TTL) -> bool:
        """Extend a live lease to ``lease_ttl`` from now; False when it had run out (the slot may be gone)."""
        key = limit_keys(scope)["slots"]
        args: list[int | str] = [self._lease_us(lease_ttl), lease_id]
        return bool(await self._call(lambda: self._renew_slot(keys=[key], args=args)))

    async def release_slot(self, scope: str, lease_id: str) -> bool:
        """Give the slot back; False when the lease had already run out."""
        key = limit_keys(scope)["slots"]
        return bool(await self._call(lambda: self.client.zrem(key, lease_id)))

    async def slots_in_use(self, scope: str) -> int:
        key = limit_keys(scope)["slots"]
        return int(await self._call(lambda: self._count_slots(keys=[key])))

    async def aclose(self) -> None:
        await self.calls.drain(max(1.0, self.timeout))
        if self._own_client:
            await self.client.aclose()
        if self._own_fast and self.fast is not None:
            await self.fast.aclose()

    # ------------------------------------------------------------------------------------------ internals
    async def _correct(self, scope: str, grant: Grant, rpm_delta: int, tpm_delta: int) -> bool:
        if not grant.admitted or grant.refunded or (rpm_delta == 0 and tpm_delta == 0):
            return False
        keys = limit_keys(scope)
        args = [grant.bucket, rpm_delta, tpm_delta]
        corrected = await self._call(lambda: self._script(self._settle, [keys["rpm_h"], keys["tpm_h"]], args))
        return int(corrected) > 0

    def _script(self, script: AsyncScript, keys: list[str], args: list[Any]) -> Awaitable[Any]:
        if self.fast is not None:
            return run_script(self.fast, script.sha, script.script, keys, args)
        return script(keys=keys, args=args)

    def _lease_us(self, lease_ttl: float) -> int:
        if not lease_ttl > 0 or math.isinf(lease_ttl):
            raise ValueError("lease_ttl must be a positive number of seconds")
        return max(1000, round(lease_ttl * 1e6))

    async def _call(
        self,
        factory: Callable[[], Awaitable[Any]],
        *,
        on_abandon: Callable[[Any], Awaitable[object]] | None = None,
    ) -> Any:
        if not self.calls.allow():
            raise LimitBackendUnavailable(f"Redis is unavailable ({self.calls.last_error}); not asking it")
        try:
            return await self.calls.call(factory, self.timeout, on_abandon=on_abandon)
        except (TimeoutError, RedisError, OSError) as exc:
            raise LimitBackendUnavailable(f"Redis limit check failed: {exc}") from exc
