"""The sim's embeddings: deterministic unit vectors, dimensions, base64, texts sharing words being close."""

from __future__ import annotations

import base64
import math
from array import array
from typing import Any

import pytest

from slipstream.errors import InvalidRequest
from slipstream.sim.embeddings import embeddings_body, plan_embeddings
from slipstream.sim.options import SimOptions

OPTIONS = SimOptions()


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_embeddings_are_deterministic_unit_vectors() -> None:
    plan = plan_embeddings({"model": "e", "input": ["alpha beta", "gamma", "alpha beta"]}, OPTIONS)
    a, g, a2 = plan.vectors
    assert len(a) == OPTIONS.embedding_dim
    assert math.isclose(math.fsum(x * x for x in a), 1.0, rel_tol=1e-9)
    assert a == a2 and a != g
    assert plan.prompt_tokens == 3 + 2 + 3
    again = plan_embeddings({"model": "e", "input": "alpha beta"}, OPTIONS).vectors[0]
    assert again == a
    assert plan_embeddings({"model": "other", "input": "alpha beta"}, OPTIONS).vectors[0] != a


def test_embeddings_of_texts_sharing_words_are_closer() -> None:
    vectors = plan_embeddings(
        {
            "model": "e",
            "input": ["what is the capital of france", "what is the capital city of france", "bake bread"],
        },
        OPTIONS,
    ).vectors
    assert _cos(vectors[0], vectors[1]) > 0.8
    assert abs(_cos(vectors[0], vectors[2])) < 0.3


def test_embedding_dimensions_and_base64() -> None:
    plan = plan_embeddings(
        {"model": "e", "input": "hello", "dimensions": 64, "encoding_format": "base64"}, OPTIONS
    )
    body = embeddings_body(plan)
    assert body["object"] == "list" and body["model"] == "e"
    assert body["usage"] == {"prompt_tokens": 2, "total_tokens": 2}
    decoded = array("f", base64.b64decode(body["data"][0]["embedding"])).tolist()
    assert len(decoded) == 64
    assert decoded == pytest.approx(plan.vectors[0], rel=1e-6)
    options = SimOptions.from_dict({"embedding_dim": 32})
    assert len(plan_embeddings({"model": "e", "input": [[1, 2, 3]]}, options).vectors[0]) == 32


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"input": "x"}, "model"),
        ({"model": "e", "input": []}, "input"),
        ({"model": "e", "input": [1, "a"]}, "input"),
        ({"model": "e", "input": "x", "dimensions": 0}, "dimensions"),
        ({"model": "e", "input": "x", "encoding_format": "hex"}, "encoding_format"),
    ],
)
def test_bad_embedding_requests_name_the_field(body: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        plan_embeddings(body, OPTIONS)
    assert info.value.param == param
