"""``slipstream batch``: a JSONL file of requests through the pipeline, exactly once and resumable.

A run

1. opens the output and failures files as journals (``journal.py``): a torn last line is cut off, and every
   custom_id they hold is finished;
2. reads the input once to plan (``reader.py``): which lines are this shard's (``shard.py``), which are finished,
   which are rejected. Rejects are written to their own file and shown before anything is spent;
3. reads the input again, lazily, feeding the engine (``engine.py``) the lines still to do, and appends each result
   to the output or the failures journal the moment it completes;
4. on SIGINT or SIGTERM takes no new lines and lets the ones in flight finish and be written (the same signal
   again abandons them: they are not written and run on resume), then exits 130/143 saying how to resume.

Exactly-once is a property of the files: a custom_id is written at most once (the reader refuses duplicate ids,
finished ids are skipped, one process at a time holds a journal's lock) and every selected line has been written
once a run completes. A request whose upstream call finished but whose line was not yet written when the process
died is called again on resume (the response cache often answers it): at-least-once upstream, exactly-once in the
files.

``estimate`` (``--dry-run``) does steps 1-2 read-only and returns the estimate; nothing is called or written.
Exit codes: 0 all done; 1 done, with failures or rejected lines; 2 unusable input or files; 130/143 interrupted.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import secrets
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import orjson

from ..client import Slipstream
from ..config import Config
from .engine import DEFAULT_CONCURRENCY, BatchStats, Engine, MapResult
from .estimate import Estimate
from .journal import Journal, read_done
from .progress import LogReporter, Reporter
from .reader import BatchRequest, Reject, read_batch
from .shard import Shard

__all__ = [
    "EXIT_ERROR",
    "EXIT_FAILURES",
    "EXIT_OK",
    "SIGNAL_EXIT",
    "BatchError",
    "BatchFiles",
    "BatchRunner",
    "BatchSummary",
    "Plan",
]

EXIT_OK = 0
EXIT_FAILURES = 1  # the run completed, but some lines failed or were rejected
EXIT_ERROR = 2
SIGNAL_EXIT = {"SIGINT": 130, "SIGTERM": 143}  # 128 + the signal's number, as shells report it
SYNC_INTERVAL = 1.0  # seconds between fsyncs of the result files (see journal.py for why not per line)
SHOWN_REJECTS = 10  # rejects printed; the rest are only in the rejects file


class BatchError(Exception):
    """The batch cannot start or go on; the message says why, for the user (no traceback)."""


@dataclass(frozen=True, slots=True)
class BatchFiles:
    input: Path
    output: Path
    failures: Path
    rejects: Path

    @classmethod
    def beside(
        cls, input: Path, output: Path, *, failures: Path | None = None, rejects: Path | None = None
    ) -> BatchFiles:
        """Failures and rejects default to ``OUT.failures.jsonl`` and ``OUT.rejects.jsonl`` next to ``OUT``."""
        stem, suffix = (output.stem, output.suffix) if output.suffix else (output.name, ".jsonl")
        files = cls(
            input,
            output,
            failures or output.with_name(f"{stem}.failures{suffix}"),
            rejects or output.with_name(f"{stem}.rejects{suffix}"),
        )
        resolved = [p.resolve() for p in (files.input, files.output, files.failures, files.rejects)]
        if len(set(resolved)) != len(resolved):
            raise BatchError("the input, output, failures and rejects files must be four different files")
        return files


@dataclass(slots=True)
class Plan:
    """What the input holds for this run."""

    to_run: int = 0
    finished: int = 0  # selected lines whose custom_id a result file already holds
    rejected: int = 0
    other_shards: int = 0
    shown_rejects: list[Reject] = field(default_factory=list)

    @property
    def selected(self) -> int:
        """This shard's runnable lines, finished or not."""
        return self.to_run + self.finished


@dataclass(frozen=True, slots=True)
class BatchSummary:
    files: BatchFiles
    plan: Plan
    stats: BatchStats
    succeeded: int  # lines in the output file now
    failed: int  # lines in the failures file now
    interrupted: str | None  # the signal that stopped the run, if one did

    @property
    def exit_code(self) -> int:
        if self.interrupted is not None:
            return SIGNAL_EXIT.get(self.interrupted, EXIT_ERROR)
        return EXIT_FAILURES if self.failed or self.plan.rejected else EXIT_OK

    def message(self) -> str:
        plan, files = self.plan, self.files
        if self.interrupted is not None:
            finished = plan.finished + self.stats.done
            return (
                f"interrupted by {self.interrupted}: {finished:,} of {plan.selected:,} lines finished, "
                f"{plan.selected - finished:,} left; run the same command again to resume."
            )
        text = f"done: {self.succeeded:,} results in {files.output}"
        if self.failed:
            text += f", {self.failed:,} failed (see {files.failures})"
        if plan.rejected:
            text += f", {plan.rejected:,} rejected lines (see {files.rejects})"
        elapsed = self.stats.elapsed()
        rate = f" ({self.stats.done / elapsed:,.0f}/s)" if self.stats.done and elapsed > 0 else ""
        return text + f"; this run: {self.stats.done:,} in {elapsed:.1f} s{rate}."


class BatchRunner:
    def __init__(
        self,
        files: BatchFiles,
        *,
        config: Config,
        concurrency: int = DEFAULT_CONCURRENCY,
        shard: Shard | None = None,
        reporter: Reporter | None = None,
        sync_interval: float = SYNC_INTERVAL,
    ) -> None:
        self.files = files
        self.config = config
        self.concurrency = concurrency
        self.shard = shard or Shard(1, 1)
        self.reporter: Reporter = reporter or LogReporter()
        self.sync_interval = sync_interval
        self._interrupted: str | None = None

    # ------------------------------------------------------------------------------------------ dry run
    def estimate(self) -> tuple[Plan, Estimate]:
        """What a run would send now, and its estimated tokens and cost; reads files, writes and calls nothing."""
        finished = read_done(self.files.output).done | read_done(self.files.failures).done
        estimate = Estimate(self.config)
        return self._plan(finished, on_request=estimate.add), estimate

    # ------------------------------------------------------------------------------------------ the run
    async def run(self) -> BatchSummary:
        output = Journal.open(self.files.output)
        try:
            failures = Journal.open(self.files.failures)
        except BaseException:
            output.close()
            raise
        try:
            for journal in (output, failures):
                if journal.repaired_bytes:
                    self.reporter.note(
                        f"{journal.path}: cut off a torn last line ({journal.repaired_bytes} bytes) left by an "
                        "interrupted run; that request runs again"
                    )
            finished = output.done | failures.done
            with _RejectsFile(self.files.rejects) as rejects:
                plan = self._plan(finished, on_reject=rejects.write)
            self._announce(plan, len(finished))
            stats = await self._execute(plan, finished, output, failures)
            succeeded, failed = len(output.done) + stats.succeeded, len(failures.done) + stats.failed
        finally:
            output.close()
            failures.close()
        return BatchSummary(self.files, plan, stats, succeeded, failed, self._interrupted)

    async def _execute(
        self, plan: Plan, finished: set[str], output: Journal, failures: Journal
    ) -> BatchStats:
        async with Slipstream(self.config) as client:
            engine = Engine(
                client.pipeline,
                concurrency=self.concurrency,
                total=plan.to_run,
                on_progress=self.reporter.update,
            )
            if plan.to_run == 0:
                return engine.stats
            jobs = self._jobs(finished)
            stop_syncing = asyncio.Event()
            syncing = asyncio.create_task(self._sync_every(stop_syncing, output, failures))
            handled = self._handle_signals(engine)
            self.reporter.start(engine.stats)
            try:
                async with contextlib.aclosing(engine.run(jobs)) as results:
                    async for result in results:
                        if result.ok:
                            _append(output, _result_line(result))
                        else:
                            _append(failures, _failure_line(result))
            finally:
                self.reporter.finish(engine.stats)
                loop = asyncio.get_running_loop()
                for signum in handled:
                    loop.remove_signal_handler(signum)
                stop_syncing.set()
                await syncing
            return engine.stats

    def _jobs(self, finished: set[str]) -> Iterator[BatchRequest]:
        for item in self._read():
            if (
                isinstance(item, BatchRequest)
                and item.custom_id not in finished
                and self.shard.selects(item.custom_id)
            ):
                yield item

    def _plan(
        self,
        finished: set[str],
        *,
        on_request: Callable[[BatchRequest], None] | None = None,
        on_reject: Callable[[Reject], None] | None = None,
    ) -> Plan:
        plan = Plan()
        for item in self._read():
            if isinstance(item, Reject):
                if not self.shard.selects(item.custom_id or f"line-{item.line}"):
                    plan.other_shards += 1
                    continue
                plan.rejected += 1
                if len(plan.shown_rejects) < SHOWN_REJECTS:
                    plan.shown_rejects.append(item)
                if on_reject is not None:
                    on_reject(item)
            elif not self.shard.selects(item.custom_id):
                plan.other_shards += 1
            elif item.custom_id in finished:
                plan.finished += 1
            else:
                plan.to_run += 1
                if on_request is not None:
                    on_request(item)
        return plan

    def _read(self) -> Iterator[BatchRequest | Reject]:
        try:
            yield from read_batch(self.files.input)
        except OSError as exc:
            raise BatchError(f"{self.files.input}: cannot read: {exc.strerror or exc}") from None

    def _announce(self, plan: Plan, journaled: int) -> None:
        note = self.reporter.note
        for reject in plan.shown_rejects:
            note(f"{self.files.input}:{reject.line}: rejected: {reject.reason}")
        if plan.rejected > len(plan.shown_rejects):
            note(f"... and {plan.rejected - len(plan.shown_rejects):,} more rejected lines")
        if plan.rejected:
            note(f"{plan.rejected:,} rejected lines written to {self.files.rejects}; the other lines run")
        if plan.finished:
            note(f"resuming: {plan.finished:,} of {plan.selected:,} lines already finished")
        if journaled > plan.finished:
            note(
                f"warning: {journaled - plan.finished:,} results in {self.files.output} or {self.files.failures} "
                "name custom_ids this input does not have (here or in this shard): another input's results?"
            )

    # ------------------------------------------------------------------------------------------ signals, fsync
    def _handle_signals(self, engine: Engine) -> list[signal.Signals]:
        loop = asyncio.get_running_loop()
        handled: list[signal.Signals] = []
        for signum in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.add_signal_handler(signum, self._on_signal, engine, signum.name)
            except (RuntimeError, ValueError):  # not the main thread: the caller owns the signals
                continue
            handled.append(signum)
        return handled

    def _on_signal(self, engine: Engine, name: str) -> None:
        if self._interrupted is None:
            self._interrupted = name
            engine.stop()
            self.reporter.note(
                f"{name}: taking no new requests; finishing the {engine.in_flight} in flight "
                f"(send {name} again to abandon them)"
            )
        else:
            abandoned = engine.abandon()
            self.reporter.note(f"{name} again: abandoned {abandoned} requests in flight; they run on resume")

    async def _sync_every(self, stop: asyncio.Event, *journals: Journal) -> None:
        """fsync the journals every ``sync_interval`` seconds, off the event loop, until ``stop`` is set."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.sync_interval)
            for journal in journals:
                await asyncio.to_thread(journal.sync)


class _RejectsFile:
    """Rejects are a function of the input, so each run writes the file anew (via a temporary file, replaced
    at the end); with no rejects, a stale file from an earlier run of an older input is removed."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self._file: IO[bytes] | None = None

    def write(self, reject: Reject) -> None:
        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = self._tmp.open("wb")
        self._file.write(orjson.dumps(reject.to_json(), option=orjson.OPT_APPEND_NEWLINE))

    def __enter__(self) -> _RejectsFile:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if self._file is None:
            if exc_type is None:
                self.path.unlink(missing_ok=True)
            return
        self._file.close()
        if exc_type is None:
            os.replace(self._tmp, self.path)
        else:
            self._tmp.unlink(missing_ok=True)


def _append(journal: Journal, line: bytes) -> None:
    try:
        journal.append(line)
    except OSError as exc:
        raise BatchError(f"{journal.path}: cannot write: {exc.strerror or exc}") from None


class _LineIds:
    """Unique ids for result lines: a random prefix per run and a counter (``secrets`` per line costs two
    ``urandom`` calls a line, a measurable share of a fast batch)."""

    def __init__(self) -> None:
        self._prefix = secrets.token_hex(8)
        self._next = itertools.count()

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._next):08x}"


_line_id = _LineIds()


def _result_line(result: MapResult) -> bytes:
    """The OpenAI batch-output shape."""
    assert result.completion is not None
    ident = _line_id()
    line: dict[str, Any] = {
        "id": f"batch_req_{ident}",
        "custom_id": result.custom_id,
        "response": {"status_code": 200, "request_id": f"req_{ident}", "body": result.completion.data},
        "error": None,
    }
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)


def _failure_line(result: MapResult) -> bytes:
    error = result.error
    assert error is not None
    line = {
        "id": f"batch_req_{_line_id()}",
        "custom_id": result.custom_id,
        "response": None,
        "error": {
            "code": error.code or error.type,
            "message": error.message,
            "type": error.type,
            "param": error.param,
            "status": error.status,
        },
    }
    return orjson.dumps(line, option=orjson.OPT_APPEND_NEWLINE)
