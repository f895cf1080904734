"""Sharing the semantic index across instances through Redis.

Each instance keeps its own in-process index (a search never leaves the process: ~0.2 ms, not a round trip);
Redis carries the entries between instances:

- ``slipstream:semantic:{model}:entries`` — a hash, entry id → packed entry (partition, text, times, vector).
  It is the state a new instance loads on start.
- ``slipstream:semantic:{model}:log`` — a stream of changes (``add`` with the packed entry, ``remove`` with the
  id), trimmed to about ``max_log`` records. Every instance tails it with a blocking ``XREAD`` on a connection
  of its own and applies the changes made by others (each record names the instance that made it).

Start-up order avoids a gap: read the stream's last id first, then load the hash, then tail from that id —
a change made while loading is applied twice, which is harmless (adds replace, removes are idempotent).

The replies themselves are in the shared exact tier (``stores.redis``) under the entry's id, with their TTL:
an entry whose reply expired there is a miss everywhere. Hash fields do not expire by themselves (Redis 7.0
has no per-field TTL), so an instance drops expired fields when it loads the hash, and every index drops
expired entries as searches meet them. A write that fails (Redis down) is logged and dropped: the local index
still has the entry, peers do not — a cache may forget, it must never fail a request.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import struct
import uuid
from typing import Any

import numpy as np
import orjson

from .index import Entry, SemanticIndex

__all__ = ["RedisIndexSync", "pack_entry", "unpack_entry"]

log = logging.getLogger("slipstream.semantic")

DEFAULT_MAX_LOG = 100_000
BLOCK_MS = 1000
RETRY_SECONDS = 1.0
_LEN = struct.Struct(">I")


def pack_entry(entry: Entry) -> bytes:
    head = orjson.dumps({"p": entry.partition, "t": entry.text, "c": entry.created_at, "e": entry.expires_at})
    return _LEN.pack(len(head)) + head + entry.vector.astype(np.float32).tobytes()


def unpack_entry(id: str, blob: bytes, dim: int) -> Entry | None:
    """The entry back; ``None`` for anything else (another model's vectors, damage)."""
    try:
        (size,) = _LEN.unpack_from(blob)
        head = orjson.loads(blob[_LEN.size : _LEN.size + size])
        vector = np.frombuffer(blob[_LEN.size + size :], dtype=np.float32)
        if vector.shape[0] != dim:
            return None
        return Entry(id, str(head["p"]), str(head["t"]), float(head["c"]), float(head["e"]), vector.copy())
    except (struct.error, ValueError, KeyError, TypeError):
        return None


class RedisIndexSync:
    """Publishes local changes of an index and applies everyone else's."""

    def __init__(self, url: str, model: str, *, max_log: int = DEFAULT_MAX_LOG, timeout: float = 1.0) -> None:
        from ..stores.redis_connect import connect  # redis-py is imported only when an index is shared

        self.url = url
        self.timeout = timeout
        self.origin = uuid.uuid4().hex[:12]
        self.max_log = max_log
        self.hash_key = f"slipstream:semantic:{model}:entries"
        self.log_key = f"slipstream:semantic:{model}:log"
        # Any URL form the rest of slipstream takes: one server, TLS, Sentinel, Cluster.
        self.redis: Any = connect(url, socket_timeout=timeout)
        # XREAD BLOCK holds its connection: a client of its own, with a read timeout longer than the block.
        self._reader: Any = connect(url, max_connections=2, socket_timeout=BLOCK_MS / 1000 + timeout)
        self._index: SemanticIndex | None = None
        self._tail: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[None]] = set()
        self._closing = False
        self.applied = 0  # changes from other instances applied here

    async def start(self, index: SemanticIndex) -> None:
        self._index = index
        last = "0-0"
        try:
            newest = await self.redis.xrevrange(self.log_key, count=1)
            if newest:
                last = newest[0][0].decode()
            await self._load(index)
        except Exception as exc:
            log.warning("semantic index: cannot load shared entries from Redis (%s); starting empty", exc)
        index.listeners.append(self.changed)
        self._tail = asyncio.get_running_loop().create_task(self._follow(last))

    def changed(self, op: str, entry: Entry) -> None:
        task = asyncio.get_running_loop().create_task(self._publish(op, entry))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def flush(self) -> None:
        if self._pending:
            await asyncio.gather(*list(self._pending), return_exceptions=True)

    async def aclose(self) -> None:
        await self.flush()
        self._closing = True
        if self._tail is not None:
            self._tail.cancel()
            # redis-py can turn a cancel that lands as its read timeout fires into a TimeoutError: the loop
            # also stops on the flag, and the wait is bounded so a close never hangs on a blocked read.
            with contextlib.suppress(asyncio.CancelledError, asyncio.TimeoutError):
                await asyncio.wait_for(self._tail, BLOCK_MS / 1000 + self.timeout + 1)
        await self.redis.aclose()
        await self._reader.aclose()

    def closing(self) -> bool:
        return self._closing

    async def _load(self, index: SemanticIndex) -> None:
        now = index.clock()
        expired: list[bytes] = []
        cursor = 0
        while True:
            cursor, fields = await self.redis.hscan(self.hash_key, cursor, count=1000)
            for raw_id, blob in fields.items():
                entry = unpack_entry(raw_id.decode(), blob, index.dim)
                if entry is None or entry.expires_at <= now:
                    expired.append(raw_id)
                    continue
                index.add(entry, notify=False)
            if cursor == 0:
                break
        if expired:
            await self.redis.hdel(self.hash_key, *expired)

    async def _publish(self, op: str, entry: Entry) -> None:
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                if op == "add":
                    blob = pack_entry(entry)
                    pipe.hset(self.hash_key, entry.id, blob)
                    fields = {"op": "add", "id": entry.id, "origin": self.origin, "entry": blob}
                else:
                    pipe.hdel(self.hash_key, entry.id)
                    fields = {"op": "remove", "id": entry.id, "origin": self.origin}
                pipe.xadd(self.log_key, fields, maxlen=self.max_log, approximate=True)
                await pipe.execute()
        except Exception as exc:
            log.warning("semantic index: could not publish %s of %s to Redis: %s", op, entry.id, exc)

    async def _follow(self, last: str) -> None:
        failing = False
        while not self.closing():
            try:
                reply = await self._reader.xread({self.log_key: last}, block=BLOCK_MS, count=500)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if self.closing():
                    return
                if not failing:  # once per outage, not once a second
                    log.warning("semantic index: reading the Redis change log failed: %s (retrying)", exc)
                failing = True
                await asyncio.sleep(RETRY_SECONDS)
                continue
            if failing:
                log.info("semantic index: the Redis change log is readable again")
                failing = False
            for _stream, records in reply or ():
                for record_id, fields in records:
                    last = record_id.decode()
                    self._apply(fields)

    def _apply(self, fields: dict[bytes, bytes]) -> None:
        index = self._index
        if index is None or fields.get(b"origin", b"").decode() == self.origin:
            return
        id = fields.get(b"id", b"").decode()
        if fields.get(b"op") == b"add":
            entry = unpack_entry(id, fields.get(b"entry", b""), index.dim)
            if entry is not None:
                index.add(entry, notify=False)
                self.applied += 1
        elif fields.get(b"op") == b"remove":
            index.remove(id, notify=False)
            self.applied += 1
