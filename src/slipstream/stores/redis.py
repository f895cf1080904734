"""The shared cache store: Redis, so several processes and machines see one cache.

Key layout: ``slipstream:cache:{store key}``, the store key being the cache layer's ``"{namespace}:…:{32 hex}"``.
Each entry is ONE string key (get and set are one single-key command each, so Redis Cluster needs no hash tags
here), written with ``SET … PX ttl`` so Redis expires it by itself. Its value is a 17-byte header — a version byte,
``created_at`` and ``expires_at`` as big-endian doubles (the writer's wall clock) — then the SQLite store's codec
(a format byte, zlib unless that does not shrink it). Memory, measured on Redis 7.0 (jemalloc) with 46-character
store keys: a 3.8 KB chat completion of varied text is stored in 1,151 bytes; ``MEMORY USAGE`` reports 1,400
(1.0/2.0 KB replies: 584/904), and ``used_memory`` grows by 1,468 bytes per entry over 10,000 of them: the stored
value plus ~320 bytes of key, object, keyspace and expiry entries and allocator rounding (``ENTRY_OVERHEAD``).
So a million 4 KB replies take ~1.5 GB.

The cache must never fail a request, so the request path never raises:

- ``get`` and ``set`` are bounded by short timeouts (``get_timeout``, 50 ms by default); a timeout, a refused
  connection or any Redis error makes ``get`` a miss and drops the ``set``. ``delete`` answers ``False``.
- Failures are counted (``errors``, ``timeouts``); ``failure_threshold`` consecutive ones mark the store
  unhealthy (``healthy`` is False, one warning is logged). While unhealthy, calls skip Redis (``skipped``),
  except one probe per ``retry_interval``; the first success marks it healthy again (one info line). An outage
  costs a request nothing after the first few, and recovery needs no restart.
- Cancellation: every command runs in its own task which the caller only *waits for*. A caller that times out or
  is cancelled leaves the task to finish its round trip and hand its connection back to the pool with nothing
  left unread; the connection's own ``socket_timeout`` bounds how long such a task can live. (redis-py 8.1 does
  disconnect a connection whose read is cancelled, but a second cancellation while ``pool.release`` waits on the
  pool lock loses the connection for good; a detached task is never cancelled, and a timed-out read does not
  cost a reconnect.) ``get`` and ``set`` on a plain single server go over a pipelined connection instead
  (``redis_pipelined.py``, ``RedisCalls.send``): there a reply nobody waits for is read and dropped in order, so
  they need no task; the timeouts and the health rules are the same.

Admin calls (``clear``, ``stats``) have a longer ``admin_timeout``. ``clear`` walks the prefix with ``SCAN MATCH``
(never ``KEYS``) and removes batches with ``UNLINK``; it raises when Redis is unreachable, because a clear that
silently did nothing would be a lie. ``stats`` counts the entries with the same SCAN and sums ``STRLEN`` in a
pipeline per batch: O(entries), ~0.1 s per 10k entries on loopback, so its answer is kept for ``stats_ttl``
seconds; when Redis is down it returns the last figures it had. ``evictions`` (Redis's own ``maxmemory``
evictions) and ``expired`` (TTL expiry) are not tracked per prefix and are reported as 0.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from redis.exceptions import RedisError

from .base import CacheEntry, CacheStore, StoreStats
from .redis_connect import DEFAULT_MAX_CONNECTIONS, RedisClient, connect
from .redis_pipelined import Arg, PipelinedConnection, for_url
from .sqlite import DEFAULT_COMPRESS_LEVEL, decode_value, encode_value

__all__ = [
    "DEFAULT_GET_TIMEOUT",
    "DEFAULT_KEY_PREFIX",
    "DEFAULT_SET_TIMEOUT",
    "ENTRY_OVERHEAD",
    "Health",
    "RedisCalls",
    "RedisStore",
    "pack_entry",
    "unpack_entry",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

DEFAULT_KEY_PREFIX = "slipstream:cache:"
DEFAULT_GET_TIMEOUT = 0.05
DEFAULT_SET_TIMEOUT = 0.05
DEFAULT_ADMIN_TIMEOUT = 10.0
DEFAULT_FAILURE_THRESHOLD = 3
DEFAULT_RETRY_INTERVAL = 1.0
DEFAULT_STATS_TTL = 5.0
SCAN_COUNT = 1000
ENTRY_OVERHEAD = 320  # bytes Redis spends on a cache key beyond its stored value (see the module docstring)

_HEADER = struct.Struct(">Bdd")  # version, created_at, expires_at
_HEADER_VERSION = 1


def pack_entry(
    value: bytes, created_at: float, expires_at: float, level: int = DEFAULT_COMPRESS_LEVEL
) -> bytes:
    """The stored form of one entry: the header, then ``encode_value``'s format byte and data."""
    return _HEADER.pack(_HEADER_VERSION, created_at, expires_at) + encode_value(value, level)


def unpack_entry(stored: object) -> CacheEntry | None:
    """The entry back from its stored form; ``None`` when it is not something ``pack_entry`` produced."""
    if not isinstance(stored, bytes) or len(stored) <= _HEADER.size:
        return None
    version, created_at, expires_at = _HEADER.unpack_from(stored)
    if version != _HEADER_VERSION:
        return None
    value = decode_value(stored[_HEADER.size :])
    if value is None:
        return None
    return CacheEntry(value, created_at, expires_at)


class Health:
    """Healthy until ``threshold`` failures in a row; then one probe per ``retry_interval`` until a success.

    Pure: the caller passes ``now`` (a monotonic clock). The transition methods answer True when the state
    flipped, so the caller logs once per outage, not once per request.
    """

    __slots__ = ("_next_probe", "failures", "healthy", "retry_interval", "threshold")

    def __init__(
        self, threshold: int = DEFAULT_FAILURE_THRESHOLD, retry_interval: float = DEFAULT_RETRY_INTERVAL
    ) -> None:
        if threshold < 1 or retry_interval < 0:
            raise ValueError("threshold must be at least 1 and retry_interval not negative")
        self.threshold = threshold
        self.retry_interval = retry_interval
        self.healthy = True
        self.failures = 0  # in a row
        self._next_probe = 0.0

    def allow(self, now: float) -> bool:
        """May a call go to Redis now? While unhealthy, one call per ``retry_interval`` (the probe)."""
        if self.healthy:
            return True
        if now >= self._next_probe:
            self._next_probe = now + self.retry_interval
            return True
        return False

    def success(self) -> bool:
        self.failures = 0
        if self.healthy:
            return False
        self.healthy = True
        return True

    def failure(self, now: float) -> bool:
        self.failures += 1
        if not self.healthy or self.failures < self.threshold:
            return False
        self.healthy = False
        self._next_probe = now + self.retry_interval
        return True


class RedisCalls:
    """Runs Redis commands as detached tasks with a timeout, and keeps health and counters for them."""

    def __init__(
        self,
        name: str,
        health: Health,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.health = health
        self.clock = clock
        self.errors = 0
        self.timeouts = 0
        self.skipped = 0
        self.last_error: str | None = None
        self._pending: set[asyncio.Future[Any]] = set()

    @property
    def healthy(self) -> bool:
        return self.health.healthy

    def allow(self) -> bool:
        if self.health.allow(self.clock()):
            return True
        self.skipped += 1
        return False

    async def call(
        self,
        factory: Callable[[], Awaitable[T]],
        timeout: float,
        *,
        on_abandon: Callable[[T], Awaitable[object]] | None = None,
    ) -> T:
        """``await factory()`` within ``timeout``; raises ``TimeoutError`` or the command's ``RedisError``/``OSError``.

        On a timeout or a cancellation the command keeps running to its end (so its connection goes back to the
        pool clean); ``on_abandon`` then receives its result, to undo what nobody will use (a lease, a grant).
        """
        return await self._wait(asyncio.ensure_future(factory()), timeout, on_abandon)

    async def send(
        self,
        conn: PipelinedConnection,
        command: tuple[Arg, ...],
        timeout: float,
        *,
        on_abandon: Callable[[Any], Awaitable[object]] | None = None,
    ) -> Any:
        """``call`` for one command on a pipelined connection, without a task of its own: the connection needs
        none to stay clean (a reply nobody waits for is read and dropped in order). Same timeout, health and
        ``on_abandon`` rules. Opening the connection, when it is not open, goes through ``call``."""
        future = conn.send_nowait(command)
        if future is None:
            return await self.call(lambda: conn.execute(*command), timeout, on_abandon=on_abandon)
        return await self._wait(future, timeout, on_abandon)

    async def _wait(
        self,
        future: asyncio.Future[T],
        timeout: float,
        on_abandon: Callable[[T], Awaitable[object]] | None,
    ) -> T:
        # asyncio.wait's work for one future, without the set and the task it builds.
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()

        def wake(_: object = None) -> None:
            if not waiter.done():
                waiter.set_result(None)

        future.add_done_callback(wake)
        timer = loop.call_later(timeout, wake)
        try:
            await waiter
        except asyncio.CancelledError:
            future.remove_done_callback(wake)
            self._detach(future, on_abandon)
            raise
        finally:
            timer.cancel()
        if not future.done():
            future.remove_done_callback(wake)
            self._detach(future, on_abandon)
            self._failed(TimeoutError(f"no answer within {timeout * 1000:.0f} ms"), timeout=True)
            raise TimeoutError(f"Redis did not answer within {timeout:.3f}s")
        try:
            result = future.result()
        except (RedisError, OSError) as exc:
            self._failed(exc, timeout=False)
            raise
        if self.health.success():
            log.info("%s: Redis answers again; back in use", self.name)
        return result

    async def drain(self, timeout: float) -> None:
        """Wait (up to ``timeout``) for abandoned commands to finish, and for the undo calls they start."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._pending and (left := deadline - loop.time()) > 0:
            await asyncio.wait(tuple(self._pending), timeout=left)

    def _failed(self, exc: BaseException, *, timeout: bool) -> None:
        if timeout:
            self.timeouts += 1
        else:
            self.errors += 1
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.health.failure(self.clock()):
            log.warning(
                "%s: Redis unavailable (%s); bypassing it, retrying every %gs",
                self.name,
                self.last_error,
                self.health.retry_interval,
            )

    def _detach(self, task: asyncio.Future[T], on_abandon: Callable[[T], Awaitable[object]] | None) -> None:
        self._pending.add(task)

        def finished(task: asyncio.Future[T]) -> None:
            self._pending.discard(task)
            if task.cancelled() or task.exception() is not None:  # retrieving it silences asyncio's warning
                return
            if on_abandon is not None:
                undo = asyncio.ensure_future(on_abandon(task.result()))
                self._pending.add(undo)
                undo.add_done_callback(_forget(self._pending))

        task.add_done_callback(finished)


def _forget(pending: set[asyncio.Future[Any]]) -> Callable[[asyncio.Task[Any]], None]:
    def done(task: asyncio.Task[Any]) -> None:
        pending.discard(task)
        if not task.cancelled():
            task.exception()

    return done


# The one client factory lives in redis_connect (one server, TLS, Sentinel, Cluster); the old name stays for
# code written against it.
make_client = connect


def _glob_escape(text: str) -> str:
    return "".join("\\" + ch if ch in "*?[]\\" else ch for ch in text)


class RedisStore(CacheStore):
    """A cache store in Redis, shareable by every instance that points at the same server."""

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        client: RedisClient | None = None,
        key_prefix: str = DEFAULT_KEY_PREFIX,
        get_timeout: float = DEFAULT_GET_TIMEOUT,
        set_timeout: float = DEFAULT_SET_TIMEOUT,
        admin_timeout: float = DEFAULT_ADMIN_TIMEOUT,
        compress_level: int = DEFAULT_COMPRESS_LEVEL,
        failure_threshold: int = DEFAULT_FAILURE_THRESHOLD,
        retry_interval: float = DEFAULT_RETRY_INTERVAL,
        stats_ttl: float = DEFAULT_STATS_TTL,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if min(get_timeout, set_timeout, admin_timeout) <= 0:
            raise ValueError("timeouts must be positive")
        if not -1 <= compress_level <= 9:
            raise ValueError("compress_level must be between -1 and 9 (zlib levels)")
        self._own_client = client is None
        self.client = client if client is not None else connect(url, max_connections=max_connections)
        # GET and SET on the request path go over one pipelined connection when the store has its own client
        # to one plain server (see redis_pipelined.py); everything else, and TLS/Sentinel/Cluster, use redis-py.
        self.fast = for_url(url) if client is None else None
        self.key_prefix = key_prefix
        self.get_timeout = get_timeout
        self.set_timeout = set_timeout
        self.admin_timeout = admin_timeout
        self.compress_level = compress_level
        self.stats_ttl = stats_ttl
        self.clock = clock
        self.calls = RedisCalls(
            f"RedisStore({key_prefix})", Health(failure_threshold, retry_interval), monotonic
        )
        self.corrupt = 0
        self._stats: StoreStats | None = None
        self._stats_at = -float("inf")
        self._closed = False

    # Health and counters.

    @property
    def healthy(self) -> bool:
        return self.calls.healthy

    @property
    def errors(self) -> int:
        return self.calls.errors

    @property
    def timeouts(self) -> int:
        return self.calls.timeouts

    def counters(self) -> dict[str, Any]:
        c = self.calls
        return {
            "healthy": c.healthy,
            "errors": c.errors,
            "timeouts": c.timeouts,
            "skipped": c.skipped,
            "corrupt": self.corrupt,
            "last_error": c.last_error,
        }

    # The request path: never raises for Redis trouble.

    async def get(self, key: str) -> CacheEntry | None:
        if self._closed or not self.calls.allow():
            return None
        rkey = self.key_prefix + key
        fast = self.fast
        try:
            if fast is not None:
                stored = await self.calls.send(fast, (b"GET", rkey), self.get_timeout)
            else:
                stored = await self.calls.call(lambda: self.client.get(rkey), self.get_timeout)
        except (TimeoutError, RedisError, OSError):
            return None
        if stored is None:
            return None
        entry = unpack_entry(stored)
        if entry is None:
            self.corrupt += 1
            log.warning("corrupt Redis cache entry %r: deleting it", rkey)
            await self._delete_if_same(rkey, stored)
            return None
        if entry.expires_at <= self.clock():  # Redis's clock and ours disagree slightly: ours decides
            return None
        return entry

    async def set(self, key: str, value: bytes, ttl: float) -> None:
        if self._closed or not self.calls.allow():
            return
        rkey = self.key_prefix + key
        if ttl <= 0:  # like the other stores: a set drops the earlier value even when it stores nothing
            await self._quiet(self.calls.call(lambda: self.client.unlink(rkey), self.set_timeout))
            return
        now = self.clock()
        stored = pack_entry(value, now, now + ttl, self.compress_level)
        px = max(1, round(ttl * 1000))
        fast = self.fast
        if fast is not None:
            await self._quiet(self.calls.send(fast, (b"SET", rkey, stored, b"PX", px), self.set_timeout))
        else:
            await self._quiet(self.calls.call(lambda: self.client.set(rkey, stored, px=px), self.set_timeout))

    async def delete(self, key: str) -> bool:
        if self._closed or not self.calls.allow():
            return False
        rkey = self.key_prefix + key
        removed = await self._quiet(self.calls.call(lambda: self.client.unlink(rkey), self.set_timeout))
        return bool(removed)

    # Admin calls.

    async def clear(self, prefix: str = "") -> int:
        """Remove every key under ``prefix``; raises ``TimeoutError``/``RedisError`` when Redis cannot be reached."""
        self._check_open()
        return await self.calls.call(lambda: self._clear(prefix), self.admin_timeout)

    async def stats(self) -> StoreStats:
        """Entries and stored bytes (a SCAN: see the module docstring), at most ``stats_ttl`` seconds old."""
        self._check_open()
        now = self.calls.clock()
        if self._stats is not None and now - self._stats_at < self.stats_ttl:
            return self._stats
        if self.calls.allow():
            try:
                self._stats = await self.calls.call(self._scan_stats, self.admin_timeout)
                self._stats_at = now
            except (TimeoutError, RedisError, OSError):
                pass
        return self._stats if self._stats is not None else StoreStats(0, 0, 0)

    async def flush(self) -> None:
        """Writes are acknowledged by Redis before ``set`` returns: nothing to wait for."""
        return None

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await self.calls.drain(self.admin_timeout)
        if self._own_client:
            await self.client.aclose()
        if self.fast is not None:
            await self.fast.aclose()

    # Internals.

    async def _quiet(self, command: Awaitable[T]) -> T | None:
        """A ``calls.call``/``calls.send`` whose Redis trouble the request path ignores (already counted)."""
        try:
            return await command
        except (TimeoutError, RedisError, OSError):
            return None

    async def _delete_if_same(self, rkey: str, stored: bytes | str) -> None:
        """Delete a corrupt value, unless another instance has rewritten the key since we read it."""
        await self._quiet(
            self.calls.call(lambda: self.client.eval(_DELETE_IF_SAME, 1, rkey, stored), self.set_timeout)
        )

    def _pattern(self, prefix: str) -> str:
        return _glob_escape(self.key_prefix + prefix) + "*"

    async def _clear(self, prefix: str) -> int:
        full = (self.key_prefix + prefix).encode()
        removed = 0
        batch: list[bytes] = []
        async for rkey in self.client.scan_iter(match=self._pattern(prefix), count=SCAN_COUNT):
            if rkey.startswith(full):  # SCAN's glob is ours, but checking costs nothing
                batch.append(rkey)
            if len(batch) >= SCAN_COUNT:
                removed += await self.client.unlink(*batch)
                batch = []
        if batch:
            removed += await self.client.unlink(*batch)
        self._stats = None
        return int(removed)

    async def _scan_stats(self) -> StoreStats:
        entries = 0
        total = 0
        batch: list[bytes] = []

        async def measure(keys: list[bytes]) -> int:
            pipe = self.client.pipeline(transaction=False)
            for k in keys:
                pipe.strlen(k)
            return sum(int(n) for n in await pipe.execute())

        async for rkey in self.client.scan_iter(match=self._pattern(""), count=SCAN_COUNT):
            batch.append(rkey)
            if len(batch) >= SCAN_COUNT:
                entries += len(batch)
                total += await measure(batch)
                batch = []
        if batch:
            entries += len(batch)
            total += await measure(batch)
        return StoreStats(entries, total, 0, 0)

    def _check_open(self) -> None:
        if self._closed:
            raise RuntimeError("RedisStore is closed")


_DELETE_IF_SAME = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('UNLINK', KEYS[1]) end
return 0
"""
