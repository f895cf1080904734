"""The state store's contract, run against every backend (see conftest.py): the same tests, SQLite and Redis."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime
from typing import Any

import pytest

from slipstream.state import Conflict, Entry, StateError, StateStore

from .conftest import OpenStore

# ------------------------------------------------------------------------------------------ values


async def test_absent_then_set_then_get(store: StateStore) -> None:
    assert await store.get("session:1") is None
    version = await store.set("session:1", {"step": 1})
    assert version > 0
    assert await store.get("session:1") == Entry({"step": 1}, version)
    value, got_version = await store.get("session:1")  # type: ignore[misc]
    assert (value, got_version) == ({"step": 1}, version)


@pytest.mark.parametrize(
    "value",
    [
        {"nested": {"list": [1, 2.5, "three", None, True], "empty": {}}, "unicode": "héllo ✓ 日本"},
        [1, [2, [3, [4]]]],
        "a plain string",
        12345678901234567,
        -0.125,
        False,
        None,
    ],
)
async def test_json_round_trip(store: StateStore, value: Any) -> None:
    await store.set("k", value)
    entry = await store.get("k")
    assert entry is not None and entry.value == value and type(entry.value) is type(value)


async def test_json_null_is_not_absence(store: StateStore) -> None:
    await store.set("k", None)
    assert await store.get("k") == Entry(None, (await store.get("k")).version)  # type: ignore[union-attr]
    assert await store.get("other") is None


async def test_values_come_back_as_plain_json(store: StateStore) -> None:
    @dataclasses.dataclass
    class Step:
        name: str
        at: datetime.date

    await store.set("k", {"tuple": (1, 2), "step": Step("ask", datetime.date(2025, 1, 2))})
    entry = await store.get("k")
    assert entry is not None and entry.value == {"tuple": [1, 2], "step": {"name": "ask", "at": "2025-01-02"}}


async def test_values_that_are_not_json_are_refused(store: StateStore) -> None:
    with pytest.raises(TypeError, match="JSON"):
        await store.set("k", {1, 2, 3})
    with pytest.raises(TypeError, match="JSON"):
        await store.set("k", {"obj": object()})
    assert await store.get("k") is None


async def test_bad_arguments(store: StateStore) -> None:
    with pytest.raises(ValueError, match="key"):
        await store.get("")
    with pytest.raises(ValueError, match="ttl"):
        await store.set("k", 1, ttl=0)
    with pytest.raises(ValueError, match="ttl"):
        await store.set("k", 1, ttl=-5)
    with pytest.raises(ValueError, match="namespace"):
        store.namespaced("has:colon")
    with pytest.raises(ValueError, match="retries"):
        await store.update("k", lambda v: v, retries=-1)


# ---------------------------------------------------------------------------------------- versions


async def test_every_write_gets_a_greater_version(store: StateStore) -> None:
    versions = [await store.set("k", i) for i in range(20)]
    assert versions == sorted(set(versions))


async def test_write_at_the_expected_version(store: StateStore) -> None:
    v1 = await store.set("k", "first")
    v2 = await store.set("k", "second", if_version=v1)
    assert v2 > v1
    with pytest.raises(Conflict) as caught:
        await store.set("k", "stale", if_version=v1)
    assert (caught.value.key, caught.value.expected, caught.value.actual) == ("k", v1, v2)
    assert caught.value.status == 409
    assert await store.get("k") == Entry("second", v2)


async def test_version_zero_means_create_only(store: StateStore) -> None:
    version = await store.set("k", "mine", if_version=0)
    with pytest.raises(Conflict) as caught:
        await store.set("k", "theirs", if_version=0)
    assert caught.value.actual == version
    with pytest.raises(Conflict) as caught:
        await store.set("absent", "x", if_version=version)
    assert caught.value.actual == 0
    assert await store.get("absent") is None


async def test_delete(store: StateStore) -> None:
    assert await store.delete("k") is False
    version = await store.set("k", 1)
    with pytest.raises(Conflict):
        await store.delete("k", if_version=version + 1)
    assert await store.get("k") == Entry(1, version)
    assert await store.delete("k", if_version=version) is True
    assert await store.get("k") is None
    with pytest.raises(Conflict):
        await store.delete("k", if_version=version)
    assert await store.delete("k", if_version=0) is False  # absent, as expected


async def test_versions_never_repeat_after_delete(store: StateStore) -> None:
    """A reader holding an old version must not be able to overwrite a key that was deleted and re-created
    (the ABA problem): versions keep growing across deletes."""
    old = await store.set("k", "old")
    await store.delete("k")
    new = await store.set("k", "new")
    assert new > old
    with pytest.raises(Conflict):
        await store.set("k", "stale writer", if_version=old)


# ---------------------------------------------------------------------------------------------- TTL


async def test_ttl_expiry(store: StateStore) -> None:
    await store.set("short", "gone soon", ttl=0.1)
    kept = await store.set("long", "stays", ttl=60)
    forever = await store.set("forever", "stays")
    await asyncio.sleep(0.3)
    assert await store.get("short") is None
    assert await store.get("long") == Entry("stays", kept)
    assert await store.get("forever") == Entry("stays", forever)


async def test_an_expired_entry_is_absent_to_version_checks(store: StateStore) -> None:
    old = await store.set("k", "v", ttl=0.1)
    await asyncio.sleep(0.3)
    with pytest.raises(Conflict) as caught:
        await store.set("k", "w", if_version=old)
    assert caught.value.actual == 0
    assert await store.delete("k") is False
    new = await store.set("k", "w", if_version=0)
    assert new > old


async def test_a_write_without_ttl_clears_the_old_ttl(store: StateStore) -> None:
    await store.set("k", 1, ttl=0.1)
    version = await store.set("k", 2)
    await asyncio.sleep(0.3)
    assert await store.get("k") == Entry(2, version)


async def test_default_ttl(open_store: OpenStore) -> None:
    store = open_store(default_ttl=0.1)
    await store.set("default", 1)
    explicit = await store.set("explicit", 2, ttl=60)
    await store.update("updated", lambda _: 3)
    await asyncio.sleep(0.3)
    assert await store.get("default") is None
    assert await store.get("updated") is None
    assert await store.get("explicit") == Entry(2, explicit)


# ------------------------------------------------------------------------------------------- update


async def test_update_reads_applies_and_writes(store: StateStore) -> None:
    seen: list[Any] = []

    def step(value: Any) -> Any:
        seen.append(value)
        return {"count": (value or {"count": 0})["count"] + 1}

    first = await store.update("k", step)
    second = await store.update("k", step)
    assert seen == [None, {"count": 1}]
    assert first.value == {"count": 1} and second.value == {"count": 2}
    assert second.version > first.version
    assert await store.get("k") == second


async def test_update_with_a_coroutine_function(store: StateStore) -> None:
    async def append(value: Any) -> Any:
        await asyncio.sleep(0)
        return [*(value or []), "x"]

    await store.update("k", append)
    entry = await store.update("k", append, ttl=60)
    assert entry.value == ["x", "x"]


async def test_concurrent_updates_lose_nothing(store: StateStore) -> None:
    await asyncio.gather(*(store.update("counter", lambda v: (v or 0) + 1) for _ in range(100)))
    entry = await store.get("counter")
    assert entry is not None and entry.value == 100


async def test_concurrent_updates_through_separate_stores_lose_nothing(open_store: OpenStore) -> None:
    """Separate stores share no lock: their updates really race, conflict and retry (as two processes do)."""
    stores = [open_store() for _ in range(4)]
    calls = 0

    def increment(value: Any) -> int:
        nonlocal calls
        calls += 1
        return (value or 0) + 1

    await asyncio.gather(*(stores[i % 4].update("counter", increment) for i in range(80)))
    entry = await stores[0].get("counter")
    assert entry is not None and entry.value == 80
    assert calls >= 80


async def test_update_gives_up_after_its_retries(open_store: OpenStore) -> None:
    store, meddler = open_store(), open_store()
    calls = 0

    async def always_overtaken(value: Any) -> Any:
        nonlocal calls
        calls += 1
        await meddler.set("k", f"changed underneath {calls}")  # so the write that follows always conflicts
        return "never stored"

    with pytest.raises(Conflict):
        await store.update("k", always_overtaken, retries=3)
    assert calls == 4
    entry = await store.get("k")
    assert entry is not None and entry.value == "changed underneath 4"


async def test_an_error_in_fn_writes_nothing(store: StateStore) -> None:
    version = await store.set("k", 1)

    def broken(value: Any) -> Any:
        raise RuntimeError("no")

    with pytest.raises(RuntimeError, match="no"):
        await store.update("k", broken)
    assert await store.get("k") == Entry(1, version)


# --------------------------------------------------------------------------------- namespaces, close


async def test_namespaces_are_apart(store: StateStore) -> None:
    tenant_a, tenant_b = store.namespaced("tenant-a"), store.namespaced("tenant-b")
    await tenant_a.set("session", "a's")
    await tenant_b.set("session", "b's")
    assert (await tenant_a.get("session")).value == "a's"  # type: ignore[union-attr]
    assert (await tenant_b.get("session")).value == "b's"  # type: ignore[union-attr]
    assert await store.get("session") is None
    assert await tenant_a.delete("session") is True
    assert await tenant_b.get("session") is not None


async def test_closing_a_view_keeps_the_store_open_and_closing_the_store_closes_its_views(
    open_store: OpenStore,
) -> None:
    store = open_store()
    view = store.namespaced("v")
    await view.aclose()
    await view.set("k", 1)
    await store.aclose()
    await store.aclose()  # twice is harmless
    for closed in (store, view):
        assert closed.closed
        with pytest.raises(StateError, match="closed"):
            await closed.get("k")
