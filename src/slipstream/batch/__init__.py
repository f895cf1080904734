"""Bulk work: ``slipstream batch`` over a JSONL file, and ``Slipstream.map`` over any iterable of requests.

Both drive one engine (``engine.py``): requests through the full pipeline — cache, coalescing, limits, retries,
routing — with bounded concurrency, results as they complete. The file batch adds what a long unattended run
needs::

    reader.py    input lines (OpenAI batch lines or bare bodies) -> requests, or rejects with line and reason
    shard.py     --shard i/n: a stable hash of custom_id splits one file across processes or machines
    journal.py   the output file is the journal: exactly once, resumable after kill -9, torn lines repaired
    estimate.py  --dry-run: tokens and USD from the bodies and the price table, nothing called
    progress.py  a rich progress bar, or plain log lines (--quiet)
    runner.py    the run: plan, execute, write, signals
    cli.py       the click command
"""

from __future__ import annotations

from .engine import DEFAULT_CONCURRENCY, BatchStats, Engine, MapResult, ProgressCallback
from .reader import BatchRequest, Reject, read_batch
from .shard import Shard

__all__ = [
    "DEFAULT_CONCURRENCY",
    "BatchRequest",
    "BatchStats",
    "Engine",
    "MapResult",
    "ProgressCallback",
    "Reject",
    "Shard",
    "read_batch",
]
