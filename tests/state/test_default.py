"""``from slipstream import state``: the ``state:`` config section and the module-level default store."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis

import slipstream
from slipstream import state
from slipstream.config import ConfigError, StateConfig, default_config, parse_config
from slipstream.state import (
    FallbackStateStore,
    RedisStateStore,
    SqliteStateStore,
    StateStore,
    StateUnavailable,
)
from tests.redis_server import RedisServer, redis_server, redis_url  # noqa: F401

GROUPS = "model_groups: {sim: {deployments: [{provider: sim, model: sim-1}]}}\n"


@pytest.fixture(autouse=True)
async def _fresh_default() -> AsyncIterator[None]:
    """Every test starts without a module-level store and closes the one it made."""
    state.configure(None)
    yield
    await state.aclose()


# ---------------------------------------------------------------------------------------------- config


def test_state_section_defaults_beside_the_cache() -> None:
    config = parse_config("cache: {sqlite: {path: /data/x/cache.db}}\n" + GROUPS)
    assert config.state == StateConfig(path="/data/x/state.db")
    assert default_config(environ={"SLIPSTREAM_DATA_DIR": "/srv/d"}).state.path == "/srv/d/state.db"


def test_state_section_fields() -> None:
    config = parse_config(
        "state: {backend: redis, redis_url: 'redis://:pw@h:1/2', timeout: 0.2, on_redis_error: local,"
        " ttl: 3600, path: s.db}\n" + GROUPS
    )
    assert config.state == StateConfig(
        backend="redis",
        path="s.db",
        redis_url="redis://:pw@h:1/2",
        timeout=0.2,
        on_redis_error="local",
        ttl=3600,
    )
    assert "pw" not in repr(config.state)


def test_state_section_problems_name_their_lines() -> None:
    text = (
        "state:\n  backend: mongo\n  on_redis_error: maybe\n  timeout: 0\n  ttl: -1\n  colour: red\n" + GROUPS
    )
    with pytest.raises(ConfigError) as caught:
        parse_config(text, source="app.yaml")
    problems = "\n".join(caught.value.problems)
    assert "app.yaml:2: state.backend: expected one of sqlite, redis, got 'mongo'" in problems
    assert "app.yaml:3: state.on_redis_error: expected one of fail, local" in problems
    assert "app.yaml:4: state.timeout: must be positive" in problems
    assert "app.yaml:5: state.ttl" in problems
    assert "app.yaml:6: state.colour: unknown field" in problems


def test_redis_backend_needs_a_url_somewhere() -> None:
    with pytest.raises(ConfigError, match="no Redis URL"):
        parse_config("state: {backend: redis}\n" + GROUPS)
    parse_config(
        "state: {backend: redis}\ncache: {redis: {url: 'redis://h'}}\n" + GROUPS
    )  # the cache's will do


def test_environment_overrides(tmp_path: Path) -> None:
    config = parse_config(GROUPS, environ={"SLIPSTREAM__STATE__PATH": str(tmp_path / "env.db")})
    assert config.state.path == str(tmp_path / "env.db")


# ---------------------------------------------------------------------------------- which store


def test_which_store_the_config_opens(tmp_path: Path) -> None:
    async def kinds() -> list[type]:
        texts = [
            GROUPS,
            f"state: {{redis_url: 'redis://127.0.0.1:1/0'}}\n{GROUPS}",
            f"cache: {{redis: {{url: 'redis://127.0.0.1:1/0'}}}}\n{GROUPS}",
            f"state: {{backend: sqlite, redis_url: 'redis://127.0.0.1:1/0'}}\n{GROUPS}",
            f"state: {{redis_url: 'redis://127.0.0.1:1/0', on_redis_error: local}}\n{GROUPS}",
        ]
        found = []
        for text in texts:
            store = state.open_state_store(parse_config(text))
            found.append(type(store))
            await store.aclose()
        return found

    assert asyncio.run(kinds()) == [
        SqliteStateStore,
        RedisStateStore,
        RedisStateStore,
        SqliteStateStore,
        FallbackStateStore,
    ]


# -------------------------------------------------------------------------------- module functions


async def test_module_functions_use_the_config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(f"state: {{path: {tmp_path / 'app-state.db'}}}\n{GROUPS}")
    monkeypatch.setenv("SLIPSTREAM_CONFIG", str(path))
    assert slipstream.state is state
    version = await state.set("session:1", {"step": 1}, ttl=60)
    assert await state.get("session:1") == (({"step": 1}), version)
    entry = await state.update("session:1", lambda s: {**s, "step": s["step"] + 1})
    assert entry.value == {"step": 2}
    assert await state.delete("session:1", if_version=entry.version) is True
    assert (tmp_path / "app-state.db").exists()
    assert isinstance(state.default_store(), SqliteStateStore)


async def test_without_a_config_the_file_is_in_the_data_folder(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLIPSTREAM_CONFIG", raising=False)
    monkeypatch.delenv("SLIPSTREAM_DATA_DIR", raising=False)
    await state.set("k", 1)
    assert isinstance(state.default_store(), SqliteStateStore)
    assert Path(".slipstream/state.db").is_file()  # noqa: ASYNC240 - tests run in their own temp dir


async def test_configure_with_a_store(tmp_path: Path) -> None:
    store = SqliteStateStore(tmp_path / "mine.db")
    assert state.configure(store) is store
    await state.set("k", "via configure")
    assert (await store.get("k")).value == "via configure"  # type: ignore[union-attr]
    await state.aclose()
    assert store.closed


def test_a_redis_default_follows_a_new_event_loop(
    redis_url: str,  # noqa: F811
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """Two ``asyncio.run`` in a row: the Redis client of the first loop cannot serve the second; the default
    store built from config is rebuilt for it."""
    path = tmp_path / "app.yaml"
    path.write_text(f"state: {{redis_url: '{redis_url}', timeout: 5}}\n{GROUPS}")
    monkeypatch.setenv("SLIPSTREAM_CONFIG", str(path))

    async def first() -> StateStore:
        await state.set("k", "from the first loop")
        return state.default_store()

    async def second() -> StateStore:
        entry = await state.get("k")
        assert entry is not None and entry.value == "from the first loop"
        return state.default_store()

    one = asyncio.run(first())
    assert one.closed  # closed as its loop ended: no connection is left to a dead loop
    two = asyncio.run(second())
    assert isinstance(one, RedisStateStore) and isinstance(two, RedisStateStore) and one is not two
    assert two.closed

    async def check() -> bytes | None:
        raw = aioredis.Redis.from_url(redis_url)
        try:
            return await raw.hget("slipstream:state:default:k", "v")  # type: ignore[no-any-return]
        finally:
            await raw.aclose()

    assert asyncio.run(check()) == b'"from the first loop"'


async def test_fail_mode_raises_when_redis_is_down(
    redis_url: str,  # noqa: F811
    redis_server: RedisServer,  # noqa: F811
) -> None:
    state.configure(parse_config(f"state: {{redis_url: '{redis_url}', on_redis_error: fail}}\n{GROUPS}"))
    await state.set("k", 1)
    redis_server.stop()
    with pytest.raises(StateUnavailable):
        await state.get("k")
    with pytest.raises(StateUnavailable):
        await state.update("k", lambda v: v + 1)
