"""The vector index: exact search, the HNSW graph past a size, tombstones, TTL, caps and persistence."""

import numpy as np
import pytest

from slipstream.semantic.index import Entry, PartitionIndex, SemanticIndex
from slipstream.semantic.persist import SqliteIndexStore

DIM = 32


def unit(rng: np.random.Generator, n: int) -> np.ndarray:
    v = rng.standard_normal((n, DIM)).astype(np.float32)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make_entry(
    i: int, vector: np.ndarray, *, partition: str = "p", now: float = 1000.0, ttl: float = 60.0
) -> Entry:
    return Entry(f"default:chat:{i:032x}", partition, f"question {i}", now, now + ttl, vector)


def test_exact_search_ranks_by_cosine():
    rng = np.random.default_rng(1)
    vectors = unit(rng, 200)
    part = PartitionIndex(DIM)
    for i, v in enumerate(vectors):
        part.add(str(i), v)
    found = part.search(vectors[17], 3)
    assert found[0][0] == "17"
    assert found[0][1] == pytest.approx(1.0, abs=1e-5)
    assert [s for _, s in found] == sorted((s for _, s in found), reverse=True)
    assert not part.uses_ann


def test_past_the_threshold_search_uses_the_graph_and_still_finds_the_neighbour():
    rng = np.random.default_rng(2)
    vectors = unit(rng, 600)
    part = PartitionIndex(DIM, ann_threshold=500, background=False)
    for i, v in enumerate(vectors):
        part.add(str(i), v)
    assert part.uses_ann
    noisy = vectors[123] + 0.05 * unit(rng, 1)[0]
    assert part.search(noisy / np.linalg.norm(noisy), 1)[0][0] == "123"
    assert part.search(vectors[599], 1)[0][0] == "599"  # added after the graph was built: inserted into it


def test_a_background_build_is_swapped_in_with_rows_added_meanwhile():
    rng = np.random.default_rng(3)
    vectors = unit(rng, 400)
    part = PartitionIndex(DIM, ann_threshold=300, background=True)
    for i, v in enumerate(vectors[:350]):
        part.add(str(i), v)
    part.wait_for_graph()
    for i, v in enumerate(vectors[350:], start=350):
        part.add(str(i), v)
    assert part.uses_ann
    assert part.search(vectors[10], 1)[0][0] == "10"
    assert part.search(vectors[399], 1)[0][0] == "399"


def test_removed_rows_never_come_back_and_many_removals_compact():
    rng = np.random.default_rng(4)
    vectors = unit(rng, 300)
    part = PartitionIndex(DIM, ann_threshold=100, background=False)
    for i, v in enumerate(vectors):
        part.add(str(i), v)
    assert part.remove("5")
    assert not part.remove("5")
    assert all(id != "5" for id, _ in part.search(vectors[5], 5))
    for i in range(6, 200):
        part.remove(str(i))
    assert len(part) == 105
    assert part.search(vectors[250], 1)[0][0] == "250"
    assert all(int(id) < 5 or int(id) >= 200 for id, _ in part.search(vectors[100], 10))


def test_partitions_are_searched_separately():
    rng = np.random.default_rng(5)
    v = unit(rng, 2)
    index = SemanticIndex(DIM, clock=Clock())
    index.add(make_entry(1, v[0], partition="a"))
    assert index.search("b", v[0], 3) == []
    assert [e.text for e, _ in index.search("a", v[0], 3)] == ["question 1"]


def test_expired_entries_are_dropped_when_met():
    clock = Clock()
    rng = np.random.default_rng(6)
    v = unit(rng, 2)
    index = SemanticIndex(DIM, clock=clock)
    index.add(make_entry(1, v[0], ttl=10))
    index.add(make_entry(2, v[1], ttl=100))
    clock.now += 50
    assert [e.text for e, _ in index.search("p", v[0], 5)] == ["question 2"]
    assert len(index) == 1


def test_the_oldest_entries_go_past_max_entries_and_listeners_hear_of_it():
    rng = np.random.default_rng(7)
    v = unit(rng, 5)
    heard = []
    index = SemanticIndex(DIM, max_entries=3, clock=Clock())
    index.listeners.append(lambda op, e: heard.append((op, e.text)))
    for i in range(5):
        index.add(make_entry(i, v[i]))
    assert len(index) == 3
    assert index.get(make_entry(0, v[0]).id) is None
    assert ("remove", "question 0") in heard and ("remove", "question 1") in heard


async def test_sqlite_persistence_reloads_live_entries_of_the_same_model(tmp_path):
    clock = Clock()
    rng = np.random.default_rng(8)
    v = unit(rng, 3)
    path = tmp_path / "semantic.db"
    first = SemanticIndex(DIM, clock=clock)
    store = SqliteIndexStore(path, "model-a", clock=clock)
    await store.start(first)
    first.add(make_entry(1, v[0], ttl=100))
    first.add(make_entry(2, v[1], ttl=10))
    first.add(make_entry(3, v[2], ttl=100))
    first.remove(make_entry(3, v[2]).id)
    await store.aclose()

    clock.now += 50  # entry 2 has expired meanwhile
    second = SemanticIndex(DIM, clock=clock)
    again = SqliteIndexStore(path, "model-a", clock=clock)
    await again.start(second)
    assert [e.text for e in second] == ["question 1"]
    found = second.search("p", v[0], 1)
    assert found[0][1] == pytest.approx(1.0, abs=1e-5)
    await again.aclose()

    other = SemanticIndex(DIM, clock=clock)
    other_model = SqliteIndexStore(path, "model-b", clock=clock)
    await other_model.start(other)
    assert len(other) == 0  # another model's vectors are not comparable
    await other_model.aclose()


async def test_a_damaged_file_is_moved_aside(tmp_path):
    path = tmp_path / "semantic.db"
    path.write_bytes(b"this is not a database" * 100)
    index = SemanticIndex(DIM, clock=Clock())
    store = SqliteIndexStore(path, "m")
    await store.start(index)
    assert len(index) == 0
    assert list(tmp_path.glob("semantic.db.corrupt-*"))
    await store.aclose()
