"""The state store suite runs against every backend: ``store``/``open_store`` are parametrized over SQLite (a
file in the test's temp dir) and Redis (the session's real redis-server, emptied before each test)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from slipstream.state import RedisStateStore, SqliteStateStore, StateStore
from tests.redis_server import redis_server, redis_url  # noqa: F401

OpenStore = Callable[..., StateStore]

BACKENDS = ["sqlite", "redis"]


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def target(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """Where the backend keeps its data: the SQLite file, or the Redis URL."""
    if backend == "redis":
        return str(request.getfixturevalue("redis_url"))
    return str(tmp_path / "state.db")


@pytest.fixture
async def open_store(backend: str, target: str) -> AsyncIterator[OpenStore]:
    """Opens stores on the same data (so two of them act like two processes); closes them at the end."""
    stores: list[StateStore] = []

    def make(**kwargs: object) -> StateStore:
        store: StateStore
        if backend == "redis":
            kwargs.setdefault("timeout", 5.0)  # generous: a loaded machine must not turn calls into failures
            store = RedisStateStore(target, **kwargs)  # type: ignore[arg-type]
        else:
            store = SqliteStateStore(target, **kwargs)  # type: ignore[arg-type]
        stores.append(store)
        return store

    yield make
    for store in stores:
        await store.aclose()


@pytest.fixture
def store(open_store: OpenStore) -> StateStore:
    return open_store()
