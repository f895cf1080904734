"""The in-process vector index: one ``PartitionIndex`` per partition, inside one ``SemanticIndex``.

A partition holds the unit vectors of its entries' last user turns. Search is exact — one matrix-vector
product in numpy — while the partition is small, and moves to an HNSW graph (faiss ``IndexHNSWFlat``, inner
product) once it holds ``ann_threshold`` vectors. Measured on 2 cores with 384-dimension vectors: the exact
scan costs ~0.4 ms at 10,000 vectors and grows linearly (it reads the whole matrix: ~10 ms at 100,000); the
graph answers in ~1 ms at 100,000 (figures in ``bench/SEMANTIC.md``). The graph is built in a background thread
from a snapshot; until it is ready, search stays exact. Once it is in place, each new row is inserted into it
as it is added (~1 ms), and rows added during the build are taken in a few per store; rows the graph has not
taken in yet are scanned exactly beside it.

Deletes: faiss's HNSW cannot remove a vector, so a removed row is a tombstone (skipped in results, searched
past by asking for more neighbours); when tombstones pass a quarter of the rows the partition is compacted
(rows and graph rebuilt).

``SemanticIndex`` owns the entries (what a match returns: the exact-cache key of the stored reply, the text,
the expiry) and enforces ``max_entries`` by dropping the oldest. Expired entries are dropped as searches meet
them. It is pure in-memory state, used from the event loop; persistence and cross-instance sync listen to its
changes (``semantic.persist``, ``semantic.shared``).
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from .guards import TextProfile

__all__ = ["DEFAULT_ANN_THRESHOLD", "Entry", "PartitionIndex", "SemanticIndex"]

log = logging.getLogger("slipstream.semantic")

Vector = npt.NDArray[np.float32]

DEFAULT_ANN_THRESHOLD = 20_000
DEFAULT_MAX_ENTRIES = 200_000
# HNSW: 32 links per node; efConstruction 80 and efSearch 96 keep recall of the true nearest neighbour above
# 0.99 on the dev data's vectors at 100k entries while a query stays well under a millisecond.
HNSW_LINKS = 32
HNSW_EF_CONSTRUCTION = 80
HNSW_EF_SEARCH = 96
COMPACT_FRACTION = 0.25
CATCH_UP_ROWS = 8
_INITIAL_ROWS = 64


@dataclass(slots=True)
class Entry:
    """One cached prompt: where its reply is stored, and what it said."""

    id: str  # stable across instances: the exact-cache key of the reply it answers with
    partition: str
    text: str  # the last user turn
    created_at: float
    expires_at: float
    vector: Vector = field(repr=False)
    _profile: TextProfile | None = field(default=None, repr=False)

    @property
    def key(self) -> str:
        """The exact-cache key of the stored reply."""
        return self.id

    @property
    def profile(self) -> TextProfile:
        if self._profile is None:
            self._profile = TextProfile(self.text)
        return self._profile


def ann_available() -> bool:
    return importlib.util.find_spec("faiss") is not None


class PartitionIndex:
    """The vectors of one partition: row ``i`` belongs to ``ids[i]`` (``None`` once removed)."""

    def __init__(
        self, dim: int, *, ann_threshold: int = DEFAULT_ANN_THRESHOLD, background: bool = True
    ) -> None:
        self.dim = dim
        self.ann_threshold = ann_threshold
        self.background = background  # build the graph in a thread (False: at once, for tests and benchmarks)
        self._matrix = np.zeros((_INITIAL_ROWS, dim), dtype=np.float32)
        self._ids: list[str | None] = []
        self._rows: dict[str, int] = {}
        self._dead = 0
        self._ann: Any = None  # faiss index over rows [0, _ann_rows)
        self._ann_rows = 0
        self._building: threading.Thread | None = None
        self._built: tuple[Any, int] | None = None  # (graph, rows) handed over by the builder thread

    def __len__(self) -> int:
        return len(self._rows)

    @property
    def uses_ann(self) -> bool:
        return self._ann is not None

    def add(self, id: str, vector: Vector) -> None:
        if id in self._rows:
            self.remove(id)
        n = len(self._ids)
        if n == len(self._matrix):
            grown = np.zeros((max(_INITIAL_ROWS, n * 2), self.dim), dtype=np.float32)
            grown[:n] = self._matrix[:n]
            self._matrix = grown
        self._matrix[n] = vector
        self._ids.append(id)
        self._rows[id] = n
        if self._ann is not None:
            self._catch_up(CATCH_UP_ROWS)
        else:
            self._maybe_build()

    def remove(self, id: str) -> bool:
        row = self._rows.pop(id, None)
        if row is None:
            return False
        self._ids[row] = None
        self._matrix[row] = 0.0  # a tombstone scores 0 in the exact scan, and is skipped by id anyway
        self._dead += 1
        if self._dead > COMPACT_FRACTION * len(self._ids) and self._dead > _INITIAL_ROWS:
            self._compact()
        return True

    def search(self, vector: Vector, k: int) -> list[tuple[str, float]]:
        """Up to ``k`` (id, cosine) pairs, best first."""
        if not self._rows:
            return []
        self._take_built()
        n = len(self._ids)
        found: dict[str, float] = {}
        if self._ann is not None:
            # Tombstones take places in the answer: ask for more, up to a bound (approximate search anyway).
            want = min(self._ann_rows, k + min(self._dead, 4 * k) + 8)
            scores, rows = self._ann.search(vector.reshape(1, -1), want)
            for score, row in zip(scores[0], rows[0], strict=True):
                if row >= 0:
                    id = self._ids[row]
                    if id is not None:
                        found[id] = float(score)
            if self._ann_rows < n:  # rows the graph has not taken in yet: scanned exactly
                self._exact(vector, k, self._ann_rows, n, found)
        else:
            self._exact(vector, k, 0, n, found)
        return sorted(found.items(), key=lambda item: -item[1])[:k]

    def _exact(self, vector: Vector, k: int, start: int, stop: int, found: dict[str, float]) -> None:
        scores = self._matrix[start:stop] @ vector
        want = min(len(scores), k + self._dead)
        top = np.argpartition(-scores, want - 1)[:want] if want < len(scores) else np.arange(len(scores))
        for row in top:
            id = self._ids[start + int(row)]
            if id is not None:
                found[id] = max(found.get(id, -2.0), float(scores[row]))

    # --------------------------------------------------------------------------------------- the ANN graph
    def _maybe_build(self) -> None:
        if self._ann is not None or self._building is not None or len(self._rows) < self.ann_threshold:
            return
        if not ann_available():
            return  # exact search keeps working; slower past ~20k entries (faiss-cpu is in the extra)
        rows = len(self._ids)
        snapshot = self._matrix[:rows].copy()
        if not self.background:
            self._ann, self._ann_rows = _build_graph(snapshot), rows
            return

        def build() -> None:
            self._built = (_build_graph(snapshot), rows)

        self._building = threading.Thread(target=build, name="slipstream-semantic-ann", daemon=True)
        self._building.start()

    def _take_built(self) -> None:
        built = self._built
        if built is None:
            return
        self._built, self._building = None, None
        graph, rows = built
        if rows > len(self._ids):  # compacted since the snapshot: that graph's rows mean other things now
            self._maybe_build()
            return
        self._ann, self._ann_rows = graph, rows

    def _catch_up(self, limit: int) -> None:
        """Insert up to ``limit`` rows the graph lacks (~1 ms each at 100k): a store normally inserts its own
        row; the rows added while a background build ran are taken in a few at a time by the next stores."""
        stop = min(len(self._ids), self._ann_rows + limit)
        if stop > self._ann_rows:
            self._ann.add(np.ascontiguousarray(self._matrix[self._ann_rows : stop]))
            self._ann_rows = stop

    def wait_for_graph(self, timeout: float = 60.0) -> None:
        """Block until a background build finishes (benchmarks and tests)."""
        thread = self._building
        if thread is not None:
            thread.join(timeout)
        self._take_built()

    def _compact(self) -> None:
        live = [(id, row) for row, id in enumerate(self._ids) if id is not None]
        matrix = np.zeros((max(_INITIAL_ROWS, len(live) * 2), self.dim), dtype=np.float32)
        for new, (_, row) in enumerate(live):
            matrix[new] = self._matrix[row]
        self._matrix = matrix
        self._ids = [id for id, _ in live]
        self._rows = {id: i for i, id in enumerate(self._ids) if id is not None}
        self._dead = 0
        self._ann, self._ann_rows, self._built = None, 0, None
        self._building = None  # a build still running hands over a graph that _take_built refuses
        self._maybe_build()


def _build_graph(vectors: Vector) -> Any:
    import faiss

    graph = faiss.IndexHNSWFlat(vectors.shape[1], HNSW_LINKS, faiss.METRIC_INNER_PRODUCT)
    graph.hnsw.efConstruction = HNSW_EF_CONSTRUCTION
    graph.hnsw.efSearch = HNSW_EF_SEARCH
    graph.add(np.ascontiguousarray(vectors))
    return graph


Listener = Callable[[str, Entry], None]


class SemanticIndex:
    """Every partition's vectors and entries; ``listeners`` hear ``("add"|"remove", entry)`` for local changes."""

    def __init__(
        self,
        dim: int,
        *,
        max_entries: int = DEFAULT_MAX_ENTRIES,
        ann_threshold: int = DEFAULT_ANN_THRESHOLD,
        clock: Callable[[], float] = time.time,
        background: bool = True,
    ) -> None:
        self.dim = dim
        self.max_entries = max_entries
        self.ann_threshold = ann_threshold
        self.clock = clock
        self.background = background
        self.listeners: list[Listener] = []
        self._entries: OrderedDict[str, Entry] = OrderedDict()  # oldest first
        self._partitions: dict[str, PartitionIndex] = {}

    def __len__(self) -> int:
        return len(self._entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(list(self._entries.values()))

    def get(self, id: str) -> Entry | None:
        return self._entries.get(id)

    def partition(self, name: str) -> PartitionIndex | None:
        return self._partitions.get(name)

    def add(self, entry: Entry, *, notify: bool = True) -> None:
        """Add (or replace) an entry; ``notify=False`` for entries that came from persistence or a peer."""
        if entry.expires_at <= self.clock():
            return
        if entry.id in self._entries:
            self._drop(self._entries[entry.id])
        part = self._partitions.get(entry.partition)
        if part is None:
            part = self._partitions[entry.partition] = PartitionIndex(
                self.dim, ann_threshold=self.ann_threshold, background=self.background
            )
        part.add(entry.id, entry.vector)
        self._entries[entry.id] = entry
        if notify:
            self._notify("add", entry)
        while len(self._entries) > self.max_entries:
            oldest = next(iter(self._entries.values()))
            self.remove(oldest.id, notify=notify)

    def remove(self, id: str, *, notify: bool = True) -> Entry | None:
        entry = self._entries.get(id)
        if entry is None:
            return None
        self._drop(entry)
        if notify:
            self._notify("remove", entry)
        return entry

    def search(self, partition: str, vector: Vector, k: int) -> list[tuple[Entry, float]]:
        """Up to ``k`` live entries of ``partition`` with their cosine to ``vector``, best first."""
        part = self._partitions.get(partition)
        if part is None:
            return []
        now = self.clock()
        found: list[tuple[Entry, float]] = []
        for id, score in part.search(vector, k):
            entry = self._entries[id]
            if entry.expires_at <= now:
                self.remove(id, notify=False)  # every holder drops it by itself at the same moment
                continue
            found.append((entry, score))
        return found

    def purge_expired(self) -> int:
        now = self.clock()
        expired = [e.id for e in self._entries.values() if e.expires_at <= now]
        for id in expired:
            self.remove(id, notify=False)
        return len(expired)

    def _drop(self, entry: Entry) -> None:
        del self._entries[entry.id]
        part = self._partitions.get(entry.partition)
        if part is not None:
            part.remove(entry.id)
            if not len(part):
                del self._partitions[entry.partition]

    def _notify(self, op: str, entry: Entry) -> None:
        for listener in self.listeners:
            try:
                listener(op, entry)
            except Exception:  # a failing sink must not fail the request that changed the index
                log.warning("semantic index listener failed on %s", op, exc_info=True)
