"""Garbage-collector settings for a gateway process (``slipstream serve`` only: the SDK leaves its host's GC alone).

A gateway allocates a few hundred container objects per request, nearly all of them freed at once by reference
counting. CPython's default thresholds (700, 10, 10) still run a young collection every few requests and,
as objects that live a little longer (cache entries, queued log rows, in-flight calls) reach the old
generation, full collections that walk every tracked object: the imported modules, the config, the pipeline,
the memory cache tier. Measured on the miss path (bench/overhead_bench.py), that walking grew with every
object a request kept alive for a moment, which made each extra record on the request path cost several
times its own CPU.

- ``gc.freeze()`` once startup is done: what exists then (modules, config, pipeline) moves to a permanent
  generation that no collection walks.
- A young collection every ``GEN0`` allocations instead of 700; middle and old generations at their usual
  ratios above it. Cycles are still collected, later; a gateway's garbage is mostly not cyclic.
"""

from __future__ import annotations

import gc

__all__ = ["tune_gc"]

GEN0 = 50_000
GEN1 = 20
GEN2 = 20


def tune_gc() -> None:
    """Call once, after the app and its pipeline are built and before serving."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(GEN0, GEN1, GEN2)
