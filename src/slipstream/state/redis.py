"""Session state in Redis: shared by every process and machine that points at the same server or cluster.

Key layout: ``slipstream:state:<namespace>:<key>`` (namespaces hold no ``:``, so the split is unambiguous), one
hash per entry::

    v     the value's JSON (orjson)
    ver   its version (see ``base``), written by the script from Redis's own clock (``TIME``)

Every operation touches one key, so Redis Cluster needs no hash tags and entries spread over all slots. A read
is one ``HMGET``; a write and a delete are one Lua script each, so the version check and the change are atomic:
compare-and-set in one round trip. A TTL is ``PEXPIRE`` on the hash (a write without one ``PERSIST``s it), so
Redis drops expired entries by itself and an expired entry is simply absent, to reads and version checks alike.

Failures: every call runs through ``RedisCalls`` (``stores/redis.py``): bounded by ``timeout``, cancellation
safe (a command whose caller gave up still reads its reply before its connection goes back to the pool), and
after ``failure_threshold`` failures in a row Redis is skipped, except one probe per ``retry_interval``, with
one log line per outage. Any of these raises ``StateUnavailable``: the caller (or ``FallbackStateStore``)
decides what to do. A write whose caller timed out or was cancelled may still have been applied: read before
writing again, or write with ``if_version``.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import RedisError

from ..stores.redis import DEFAULT_FAILURE_THRESHOLD, DEFAULT_RETRY_INTERVAL, Health, RedisCalls
from ..stores.redis_connect import DEFAULT_MAX_CONNECTIONS, RedisClient, connect, redact_url
from .base import DEFAULT_NAMESPACE, Conflict, Entry, StateStore, StateUnavailable, check_key, decode, encode

__all__ = ["DEFAULT_KEY_PREFIX", "DEFAULT_TIMEOUT", "RedisStateStore"]

DEFAULT_KEY_PREFIX = "slipstream:state:"
DEFAULT_TIMEOUT = 0.5

T = TypeVar("T")

# KEYS: the entry. ARGV: value, expected version ('' = any), ttl ms ('0' = none).
# Returns {1, new version} or {0, current version} (as strings: versions are µs, beyond Lua's integer reply).
_SET = """
local cur = redis.call('HGET', KEYS[1], 'ver')
local current = tonumber(cur) or 0
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= current then return {0, cur or '0'} end
local t = redis.call('TIME')
local version = math.max(current + 1, tonumber(t[1]) * 1000000 + tonumber(t[2]))
local ver = string.format('%d', version)
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'ver', ver)
if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) else redis.call('PERSIST', KEYS[1]) end
return {1, ver}
"""

# KEYS: the entry. ARGV: expected version ('' = any). Returns {1, version deleted ('0': was absent)} or
# {0, current version}.
_DELETE = """
local cur = redis.call('HGET', KEYS[1], 'ver')
if ARGV[1] ~= '' and tonumber(ARGV[1]) ~= (tonumber(cur) or 0) then return {0, cur or '0'} end
if not cur then return {1, '0'} end
redis.call('UNLINK', KEYS[1])
return {1, cur}
"""


class RedisStateStore(StateStore):
    """Session state in Redis (one server, Sentinel or Cluster: any URL ``connect`` reads)."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        client: RedisClient | None = None,
        namespace: str = DEFAULT_NAMESPACE,
        default_ttl: float | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        timeout: float = DEFAULT_TIMEOUT,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(namespace=namespace, default_ttl=default_ttl)
        if not timeout > 0:
            raise ValueError("timeout must be positive")
        self._own_client = client is None
        self.client = client if client is not None else connect(url, max_connections=max_connections)
        self.url = redact_url(url) if client is None else "(the client given)"
        self.key_prefix = key_prefix
        self.timeout = timeout
        self.calls = RedisCalls(
            f"RedisStateStore({key_prefix})", Health(failure_threshold, retry_interval), monotonic
        )
        self._set_script = self.client.register_script(_SET)
        self._delete_script = self.client.register_script(_DELETE)

    @property
    def healthy(self) -> bool:
        return self.calls.healthy

    @property
    def loop_bound(self) -> bool:
        return True

    def redis_key(self, key: str) -> str:
        return f"{self.key_prefix}{self.namespace}:{key}"

    # The interface.

    async def get(self, key: str) -> Entry | None:
        rkey = self.redis_key(check_key(key))
        stored, version = await self._call(lambda: self.client.hmget(rkey, ["v", "ver"]))
        if stored is None or version is None:
            return None
        return Entry(decode(stored, key), int(version))

    async def set(
        self, key: str, value: Any, ttl: float | None = None, *, if_version: int | None = None
    ) -> int:
        rkey = self.redis_key(check_key(key))
        ttl = self._ttl(ttl)
        args: list[bytes | str] = [
            encode(value),
            "" if if_version is None else str(int(if_version)),
            "0" if ttl is None else str(max(1, round(ttl * 1000))),
        ]
        done, version = await self._call(lambda: self._set_script(keys=[rkey], args=args))
        if not int(done):
            raise Conflict(key, int(if_version or 0), int(version))
        return int(version)

    async def delete(self, key: str, *, if_version: int | None = None) -> bool:
        rkey = self.redis_key(check_key(key))
        args = ["" if if_version is None else str(int(if_version))]
        done, version = await self._call(lambda: self._delete_script(keys=[rkey], args=args))
        if not int(done):
            raise Conflict(key, int(if_version or 0), int(version))
        return int(version) != 0

    async def _close(self) -> None:
        await self.calls.drain(max(1.0, self.timeout))
        if self._own_client:
            await self.client.aclose()

    async def _call(self, factory: Callable[[], Awaitable[T]]) -> T:
        self._check_open()
        if not self.calls.allow():
            raise StateUnavailable(
                f"Redis at {self.url} is unavailable ({self.calls.last_error}); not asking it"
            )
        try:
            return await self.calls.call(factory, self.timeout)
        except (TimeoutError, RedisError, OSError) as exc:
            raise StateUnavailable(f"Redis at {self.url} failed: {type(exc).__name__}: {exc}") from None
