"""A separate process for test_processes.py: increments one counter through ``update``, racing the others.

``python -m tests.state.counter_worker BACKEND TARGET COUNT TASKS``: opens the store, prints ``ready``, waits for
a line on stdin (so every process starts at once), runs COUNT increments spread over TASKS tasks, and prints a
JSON line: how many increments it made and how often ``fn`` ran (more than COUNT: it lost races and retried).
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import orjson

from slipstream.state import RedisStateStore, SqliteStateStore, StateStore


async def main(backend: str, target: str, count: int, tasks: int) -> None:
    store: StateStore = (
        RedisStateStore(target, timeout=5.0) if backend == "redis" else SqliteStateStore(target)
    )
    calls = 0

    def increment(value: Any) -> int:
        nonlocal calls
        calls += 1
        return (value or 0) + 1

    async def worker(n: int) -> None:
        for _ in range(n):
            await store.update("counter", increment, retries=1000)

    try:
        await store.get("counter")  # connect (and create the file) before the start signal
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        shares = [count // tasks + (1 if i < count % tasks else 0) for i in range(tasks)]
        await asyncio.gather(*(worker(n) for n in shares))
        print(orjson.dumps({"increments": count, "calls": calls}).decode(), flush=True)
    finally:
        await store.aclose()


if __name__ == "__main__":
    backend, target, count, tasks = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    asyncio.run(main(backend, target, count, tasks))
