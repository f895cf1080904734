"""The output file is the journal: what a batch has finished is exactly what its result files hold.

There is no separate state file to drift out of step with the results. On start, the output and failures files are
read; every custom_id in them is finished and is skipped. Each result is then appended as one ``write()`` of one
whole line (``O_APPEND``, no user-space buffer), so a line is either entirely in the kernel's hands or not written
at all — except when the process dies inside that one ``write()`` (or the disk fills), which leaves a torn last
line without its newline. The next start truncates that torn tail (its custom_id runs again); a malformed
*complete* line cannot come from a crash and is refused with its line number rather than guessed at.

Durability (fsync policy): each line reaches the kernel as it completes, which already survives ``kill -9``,
Ctrl-C and any crash of the process. ``sync()`` (an ``fsync``) is called by the runner about once a second and at
the end, not per line: an fsync per line would cap a batch at the disk's fsync rate (hundreds per second on many
disks), while losing power can cost at most the last second of lines — whose custom_ids are then simply absent,
so they run again on resume: paid twice at worst, never duplicated in the output, never lost.

An exclusive ``flock`` on the file keeps two processes from appending to the same journal (each would skip only
what the other had finished when it started, and both would run the rest). The kernel drops the lock when the
process dies, so a ``kill -9`` never leaves a stale lock behind.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

__all__ = ["Journal", "JournalError", "JournalScan", "read_done", "scan_journal"]


class JournalError(Exception):
    """A result file that cannot be used as a journal: unreadable, malformed mid-file, or locked."""


@dataclass(slots=True)
class JournalScan:
    """What a result file holds: the finished custom_ids and where its well-formed part ends."""

    done: set[str] = field(default_factory=set)
    lines: int = 0
    valid_bytes: int = 0  # the length of the prefix made of whole, well-formed lines
    torn_bytes: int = 0  # the length of a torn last line (no newline) after it; 0 when the file ends cleanly


def scan_journal(lines: Iterable[bytes], *, source: str = "<journal>") -> JournalScan:
    """Read result lines (as a binary file yields them). Only the last line may be torn."""
    scan = JournalScan()
    for raw in lines:
        if not raw.endswith(b"\n"):
            scan.torn_bytes = len(raw)  # a file iterator yields a line without its newline only at the end
            break
        custom_id = _custom_id(raw)
        if custom_id is None and raw.strip():
            raise JournalError(
                f"{source}:{scan.lines + 1}: not a result line (expected JSON with a custom_id): the file was "
                "edited, or damaged by a power loss. Fix or remove that line, then run again."
            )
        if custom_id is not None:
            scan.done.add(custom_id)
        scan.lines += 1
        scan.valid_bytes += len(raw)
    return scan


def read_done(path: Path) -> JournalScan:
    """The journal's content without changing the file (a torn tail is ignored, not truncated)."""
    try:
        with path.open("rb") as lines:
            return scan_journal(lines, source=str(path))
    except FileNotFoundError:
        return JournalScan()
    except OSError as exc:
        raise JournalError(f"{path}: cannot read: {exc.strerror or exc}") from None


class Journal:
    """An append-only JSON-lines result file, opened for resuming: torn tail repaired, finished ids known."""

    def __init__(self, path: Path, fd: int, scan: JournalScan) -> None:
        self.path = path
        self._fd = fd
        self.scan = scan
        self.size = scan.valid_bytes
        self.repaired_bytes = scan.torn_bytes  # what ``open`` cut off (a torn last line)

    @classmethod
    def open(cls, path: Path) -> Journal:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError as exc:
            raise JournalError(f"{path}: cannot open: {exc.strerror or exc}") from None
        try:
            _lock(fd, path)
            with os.fdopen(os.dup(fd), "rb") as lines:
                scan = scan_journal(lines, source=str(path))
            if scan.torn_bytes:
                os.ftruncate(fd, scan.valid_bytes)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        return cls(path, fd, scan)

    @property
    def done(self) -> set[str]:
        return self.scan.done

    def append(self, line: bytes) -> None:
        """Write one whole line (it must end with a newline). On a failed write the file is cut back to the
        last whole line, so the journal never holds a torn line in its middle, and the error is raised."""
        view = memoryview(line)
        try:
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
        except BaseException:
            os.ftruncate(self._fd, self.size)
            raise
        self.size += len(line)

    def sync(self) -> None:
        os.fsync(self._fd)

    def close(self) -> None:
        if self._fd >= 0:
            try:
                os.fsync(self._fd)
            finally:
                os.close(self._fd)  # closing the descriptor releases the flock
                self._fd = -1


def _lock(fd: int, path: Path) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise JournalError(
            f"{path}: another process is writing this file (is another `slipstream batch` running with it?)"
        ) from None


def _custom_id(raw: bytes) -> str | None:
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    custom_id = obj.get("custom_id") if isinstance(obj, dict) else None
    return custom_id if isinstance(custom_id, str) else None
