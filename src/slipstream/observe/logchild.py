"""The parent's end of a request-log writer process: ``LogSink``'s calls, carried out by a child.

``ChildSink`` has ``LogSink``'s interface (``write``, ``maintain``, ``counts``, ``close``) and runs each call
in a child process (``observe/logsink.py`` is its program), waiting for the answer: the caller is the request
log's writer thread, which waited on SQLite the same way. Waiting on a pipe holds no GIL.

A child that dies (killed, out of memory) is started again on the next call; the batch that was in flight is
counted as failed, and so are batches while it cannot be started (at most one attempt every
``RESTART_INTERVAL`` seconds, one log line per outage). Its totals (written, failed, purged, evicted) restart
with it, so this class keeps what earlier children reported and adds the current one's.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import logsink

__all__ = ["ChildSink", "LogWriterError"]

log = logging.getLogger(__name__)

RESTART_INTERVAL = 5.0  # seconds between attempts to start a child that failed to start or died


class LogWriterError(RuntimeError):
    """The writer process refused a request or could not be started."""


class ChildSink:
    def __init__(self, path: str | Path, columns: Sequence[str]) -> None:
        self.path = Path(path)
        self.columns = tuple(columns)
        self._earlier: Totals = (0, 0, 0, 0)  # totals of children that are gone
        self._current: Totals = (0, 0, 0, 0)
        self._lost = 0  # records counted failed here (no child to take them)
        self._proc: subprocess.Popen[bytes] | None = None
        self._next_start = 0.0
        self._failing = False  # an outage is logged once, when it starts
        self._start()  # the first start raises: a log that cannot open its file is a configuration error

    # -------------------------------------------------------------------------------- LogSink's interface
    def write(self, rows: Sequence[Sequence[Any]], operations: Sequence[Sequence[Any]] = ()) -> None:
        if not self._call(("write", list(rows), list(operations))):
            self._lost += len(rows) + len(operations)

    def maintain(self, cutoff: float | None, max_bytes: int) -> None:
        self._call(("maintain", cutoff, max_bytes))

    def counts(self) -> tuple[int, int, int, int]:
        written, failed, purged, evicted = _add(self._earlier, self._current)
        return written, failed + self._lost, purged, evicted

    def close(self) -> None:
        """Close the child's input: it commits nothing more (every write was answered), closes the database
        and exits."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        assert proc.stdin is not None and proc.stdout is not None
        try:
            proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()

    # -------------------------------------------------------------------------------- the child
    def _start(self) -> None:
        # -I: no user site, no PYTHON* variables; the program is a file of the standard library's modules only.
        proc = subprocess.Popen(
            [sys.executable, "-I", logsink.__file__],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        assert proc.stdin is not None and proc.stdout is not None
        try:
            logsink.write_frame(proc.stdin, ("open", str(self.path), self.columns))
            reply = logsink.read_frame(proc.stdout)
        except OSError as exc:
            reply = ("error", f"{type(exc).__name__}: {exc}")
        if reply is None or reply[0] != "ok":
            proc.kill()
            proc.wait()
            proc.stdin.close()
            proc.stdout.close()
            detail = "it exited" if reply is None else reply[1]
            raise LogWriterError(f"request log {self.path}: the writer process could not open it: {detail}")
        self._proc = proc
        self._current = _totals(reply)

    def _call(self, message: tuple[Any, ...]) -> bool:
        """Send one request and wait for its answer; False when there is no child to answer it."""
        if self._proc is not None and self._proc.poll() is not None:  # died while idle: this batch can go
            self._lose_child(self._proc)  # to the next one
        if self._proc is None and not self._restart():
            return False
        proc = self._proc
        assert proc is not None and proc.stdin is not None and proc.stdout is not None
        try:
            logsink.write_frame(proc.stdin, message)
            reply = logsink.read_frame(proc.stdout)
        except OSError:
            reply = None
        if reply is None:
            self._lose_child(proc)
            return False
        if reply[0] != "ok":
            log.warning("request log %s: the writer process refused %s: %s", self.path, message[0], reply[1])
            return False
        self._current = _totals(reply)
        return True

    def _lose_child(self, proc: subprocess.Popen[bytes]) -> None:
        log.warning(
            "request log %s: the writer process exited (%s); starting another", self.path, proc.poll()
        )
        self._earlier = _add(self._earlier, self._current)
        self._current = (0, 0, 0, 0)
        self._proc = None
        try:
            proc.kill()
        except OSError:
            pass
        proc.wait()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None:
                try:
                    stream.close()
                except OSError:
                    pass
        self._next_start = 0.0  # the first restart is immediate

    def _restart(self) -> bool:
        now = time.monotonic()
        if now < self._next_start:
            return False
        try:
            self._start()
        except (LogWriterError, OSError) as exc:
            self._next_start = now + RESTART_INTERVAL
            if not self._failing:
                self._failing = True
                log.warning(
                    "request log %s: %s (trying again every %.0f s)", self.path, exc, RESTART_INTERVAL
                )
            return False
        if self._failing:
            self._failing = False
            log.warning("request log %s: the writer process is back", self.path)
        return True


Totals = tuple[int, int, int, int]


def _totals(reply: Any) -> Totals:
    written, failed, purged, evicted = (int(n) for n in reply[1:5])
    return written, failed, purged, evicted


def _add(a: Totals, b: Totals) -> Totals:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]
