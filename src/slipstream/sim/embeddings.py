"""The sim's embeddings: deterministic unit vectors, bag-of-words so that texts sharing words are close."""

from __future__ import annotations

import base64
import functools
import re
import sys
from array import array
from dataclasses import dataclass
from hashlib import shake_256
from typing import Any

from ..errors import InvalidRequest
from .engine import estimate_text_tokens
from .options import MAX_EMBEDDING_DIM, SimOptions

__all__ = ["EmbeddingsPlan", "embedding_vector", "embeddings_body", "plan_embeddings"]

_WORD = re.compile(r"\w+")


@dataclass(slots=True)
class EmbeddingsPlan:
    model: str
    vectors: list[list[float]]
    prompt_tokens: int
    encoding_format: str


def plan_embeddings(body: Any, options: SimOptions) -> EmbeddingsPlan:
    """Validate an embeddings request and compute its vectors."""
    if not isinstance(body, dict):
        raise InvalidRequest("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("you must provide a model parameter", param="model")
    texts = _embedding_inputs(body.get("input"))
    dim = body.get("dimensions")
    if dim is None:
        dim = options.embedding_dim
    if not isinstance(dim, int) or isinstance(dim, bool) or not 1 <= dim <= MAX_EMBEDDING_DIM:
        raise InvalidRequest(
            f"'dimensions' must be an integer between 1 and {MAX_EMBEDDING_DIM}", param="dimensions"
        )
    fmt = body.get("encoding_format") or "float"
    if fmt not in ("float", "base64"):
        raise InvalidRequest("'encoding_format' must be 'float' or 'base64'", param="encoding_format")
    vectors = [embedding_vector(model, text, dim) for text in texts]
    tokens = sum(max(1, estimate_text_tokens(t)) for t in texts)
    return EmbeddingsPlan(model, vectors, tokens, fmt)


def _embedding_inputs(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):  # one token array
            return [" ".join(map(str, value))]
        if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return [" ".join(map(str, v)) for v in value]
    raise InvalidRequest(
        "'input' must be a string, an array of strings or an array of token arrays", param="input"
    )


def embedding_vector(model: str, text: str, dim: int) -> list[float]:
    """A deterministic unit vector: the normalised sum of one fixed random vector per word.

    Same text, same vector; texts sharing words point in similar directions (cosine ≈ the share of common
    words), unrelated texts are near orthogonal — enough for semantic-cache tests to mean something.
    """
    words = _WORD.findall(text.lower()) or [text]
    total = [0.0] * dim
    for word in words:
        total = [a + b for a, b in zip(total, _word_vector(model, word, dim), strict=True)]
    norm = sum(x * x for x in total) ** 0.5
    if norm == 0:
        return _word_vector(model, text, dim)
    return [x / norm for x in total]


@functools.lru_cache(maxsize=16384)
def _word_vector(model: str, word: str, dim: int) -> list[float]:
    raw = array("h", shake_256(f"{model}\x00{word}".encode()).digest(2 * dim))
    norm = sum(float(x) * x for x in raw) ** 0.5 or 1.0
    return [x / norm for x in raw]


def embeddings_body(plan: EmbeddingsPlan) -> dict[str, Any]:
    data = []
    for i, vector in enumerate(plan.vectors):
        embedding: Any = vector
        if plan.encoding_format == "base64":
            floats = array("f", vector)
            if sys.byteorder != "little":
                floats.byteswap()
            embedding = base64.b64encode(floats.tobytes()).decode()
        data.append({"object": "embedding", "index": i, "embedding": embedding})
    usage = {"prompt_tokens": plan.prompt_tokens, "total_tokens": plan.prompt_tokens}
    return {"object": "list", "data": data, "model": plan.model, "usage": usage}
