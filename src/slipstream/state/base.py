"""The session state store's interface: JSON values under string keys, with TTLs and optimistic concurrency.

Every write gives the entry a new *version*; a write or delete may name the version it expects
(``if_version``) and raises ``Conflict`` when the entry has changed since, so two workflow steps that read the
same session never silently overwrite each other. ``update`` is the read-modify-write loop built on that: read,
apply ``fn``, write with ``if_version``; on a conflict read again and retry (``fn`` may run more than once, so
it should only compute). Inside one process, updates of the same key also queue behind each other (a per-key
lock), so conflicts — and repeated ``fn`` calls — only happen between processes or stores.

Versions are positive integers that only grow, also across expiry and deletion: a write's version is
``max(previous + 1, now in µs)`` (the backend's clock), so a key that expires and is created again never
repeats a version an old reader may still hold (the ABA problem). ``if_version=0`` means "only if absent".
Compare versions for equality only; their size carries no meaning.

Values are anything orjson serialises (dicts, lists, str, int, float, bool, None, dataclasses, datetimes);
they come back as plain JSON (a tuple returns as a list). A TTL (seconds) counts from the write; ``ttl=None``
takes the store's ``default_ttl`` (``None``: kept until deleted). Each store works in one *namespace*
(``namespaced()`` gives a view on another), so tenants and applications never see each other's keys.

Errors::

    SlipstreamError
    └── StateError                   500  a stored value is not JSON, or a misuse
        ├── Conflict                 409  the entry's version is not the one expected
        └── StateUnavailable         503  the backend did not answer in time or could not be reached
"""

from __future__ import annotations

import abc
import asyncio
import copy
import inspect
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, Self

import orjson

from ..errors import SlipstreamError

__all__ = [
    "DEFAULT_NAMESPACE",
    "DEFAULT_UPDATE_RETRIES",
    "Conflict",
    "Entry",
    "StateError",
    "StateStore",
    "StateUnavailable",
    "UpdateFn",
    "check_namespace",
    "conflict_backoff",
    "decode",
    "encode",
    "next_version",
]

DEFAULT_NAMESPACE = "default"
DEFAULT_UPDATE_RETRIES = 32
# Full-jitter backoff between update attempts after a conflict: spreads competing writers apart.
BACKOFF_BASE = 0.002
BACKOFF_CAP = 0.1

UpdateFn = Callable[[Any], Any | Awaitable[Any]]


class StateError(SlipstreamError):
    """Something went wrong with session state."""


class Conflict(StateError):
    """The entry's version is not the one the write expected (``expected``); ``actual`` is 0 when absent."""

    status = 409
    type = "conflict_error"
    code = "version_conflict"

    def __init__(self, key: str, expected: int, actual: int) -> None:
        super().__init__(f"state key {key!r} is at version {actual}, not {expected}")
        self.key = key
        self.expected = expected
        self.actual = actual


class StateUnavailable(StateError):
    """The backend (Redis) did not answer within the timeout or could not be reached."""

    status = 503
    type = "service_unavailable"
    code = "state_unavailable"


class Entry(NamedTuple):
    """A stored value and its version: ``value, version = await store.get(key)``."""

    value: Any
    version: int


def encode(value: Any) -> bytes:
    try:
        return orjson.dumps(value)
    except TypeError as exc:  # orjson.JSONEncodeError is a TypeError
        raise TypeError(f"state values must be JSON-serialisable: {exc}") from None


def decode(stored: bytes | str, key: str) -> Any:
    try:
        return orjson.loads(stored)
    except orjson.JSONDecodeError:
        raise StateError(f"the stored value of state key {key!r} is not JSON") from None


def next_version(previous: int, now_us: int) -> int:
    """The version a write gives an entry whose last version (live, expired or deleted: 0) was ``previous``."""
    return max(previous + 1, now_us)


def conflict_backoff(attempt: int, rng: random.Random) -> float:
    """Seconds to wait before update attempt ``attempt + 1`` (full jitter, capped)."""
    return rng.uniform(0.0, min(BACKOFF_CAP, BACKOFF_BASE * 2.0**attempt))


def check_namespace(namespace: str) -> str:
    if not namespace or ":" in namespace:
        raise ValueError(f"a state namespace must be a non-empty string without ':', got {namespace!r}")
    return namespace


def check_key(key: str) -> str:
    if not isinstance(key, str) or not key:
        raise ValueError(f"a state key must be a non-empty string, got {key!r}")
    return key


def check_ttl(ttl: float | None) -> float | None:
    if ttl is not None and not ttl > 0:
        raise ValueError(f"ttl must be a positive number of seconds or None, got {ttl!r}")
    return ttl


class _KeyLocks:
    """One asyncio lock per key in use, dropped when nobody holds or waits for it."""

    def __init__(self) -> None:
        self._locks: dict[tuple[str, str], tuple[asyncio.Lock, int]] = {}

    @asynccontextmanager
    async def hold(self, namespace: str, key: str) -> AsyncIterator[None]:
        name = (namespace, key)
        lock, users = self._locks.get(name) or (asyncio.Lock(), 0)
        self._locks[name] = (lock, users + 1)
        try:
            async with lock:
                yield
        finally:
            lock, users = self._locks[name]
            if users == 1:
                del self._locks[name]
            else:
                self._locks[name] = (lock, users - 1)


class _Lifecycle:
    """Shared by a store and its namespaced views, so closing the store closes them all."""

    __slots__ = ("closed",)

    def __init__(self) -> None:
        self.closed = False


class StateStore(abc.ABC):
    """Session state: ``get``/``set``/``delete`` with versions and TTLs, and ``update`` built on them."""

    namespace: str
    default_ttl: float | None

    def __init__(self, *, namespace: str = DEFAULT_NAMESPACE, default_ttl: float | None = None) -> None:
        self.namespace = check_namespace(namespace)
        self.default_ttl = check_ttl(default_ttl)
        self._key_locks = _KeyLocks()
        self._rng = random.Random()
        self._owner = True  # False on namespaced views: they share the owner's resources and never close them
        self._life = _Lifecycle()

    # The backend's part.

    @abc.abstractmethod
    async def get(self, key: str) -> Entry | None:
        """The live value and its version, or None when the key is absent or expired."""

    @abc.abstractmethod
    async def set(
        self, key: str, value: Any, ttl: float | None = None, *, if_version: int | None = None
    ) -> int:
        """Store ``value``; answers its new version. With ``if_version``: only if the entry is at that version
        (0: absent), else ``Conflict``."""

    @abc.abstractmethod
    async def delete(self, key: str, *, if_version: int | None = None) -> bool:
        """Remove the key; True when it existed. With ``if_version``: only at that version, else ``Conflict``."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Release the backend's resources (called once, on the owning store only)."""

    @property
    def loop_bound(self) -> bool:
        """Whether the store may only be used from the event loop that first used it (network clients are)."""
        return False

    # Built on the above.

    async def update(
        self,
        key: str,
        fn: UpdateFn,
        ttl: float | None = None,
        *,
        retries: int = DEFAULT_UPDATE_RETRIES,
    ) -> Entry:
        """Read the value (None when absent), store ``fn(value)`` (which may be a coroutine function) and
        answer the new entry; on a conflict read again and retry, up to ``retries`` times, then ``Conflict``."""
        check_key(key)
        if retries < 0:
            raise ValueError("retries must not be negative")
        async with self._key_locks.hold(self.namespace, key):
            attempt = 0
            while True:
                current = await self.get(key)
                value, version = (current.value, current.version) if current is not None else (None, 0)
                new = fn(value)
                if inspect.isawaitable(new):
                    new = await new
                try:
                    return Entry(new, await self.set(key, new, ttl, if_version=version))
                except Conflict:
                    if attempt >= retries:
                        raise
                await asyncio.sleep(conflict_backoff(attempt, self._rng))
                attempt += 1

    def namespaced(self, namespace: str) -> Self:
        """A view of this store in another namespace, sharing its connections; closing the view does nothing."""
        view = copy.copy(self)
        view.namespace = check_namespace(namespace)
        view._owner = False
        return view

    async def aclose(self) -> None:
        """Close the store (and its namespaced views); closing twice, or closing a view, does nothing."""
        if self._owner and not self._life.closed:
            self._life.closed = True
            await self._close()

    @property
    def closed(self) -> bool:
        return self._life.closed

    def _check_open(self) -> None:
        if self._life.closed:
            raise StateError(f"{type(self).__name__} is closed")

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _ttl(self, ttl: float | None) -> float | None:
        return check_ttl(ttl) if ttl is not None else self.default_ttl
