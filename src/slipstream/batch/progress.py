"""Progress of a batch: a rich progress bar on a terminal, periodic plain lines for logs (``--quiet``).

Both show the same figures, formatted by ``describe``: done/total, rate, ETA, tokens, cost, cache hit rate and
failures. The engine reports after every result; a reporter redraws at most every ``interval`` seconds (injected
clock), so a batch running thousands of results a second does not spend its time drawing. Everything goes to
stderr: stdout stays free for what a command prints as its product.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol, TextIO

from .engine import BatchStats

if TYPE_CHECKING:
    from rich.console import Console

__all__ = ["LogReporter", "Reporter", "RichReporter", "describe", "describe_compact", "make_reporter"]

Clock = Callable[[], float]
RICH_INTERVAL = 0.1  # seconds between redraws of the bar
LOG_INTERVAL = 5.0  # seconds between log lines in quiet mode
WIDE_TERMINAL = 130  # columns from which the bar shows the figures in full


class Reporter(Protocol):
    def start(self, stats: BatchStats) -> None: ...

    def update(self, stats: BatchStats) -> None: ...

    def note(self, message: str) -> None: ...

    def finish(self, stats: BatchStats) -> None: ...


def describe(stats: BatchStats, now: float | None = None, *, counts: bool = True) -> str:
    """``1,200/10,000 (12.0%)  340.2/s  ETA 0:00:26  tokens 123,456  $0.0123  hits 4.0%  failed 3``."""
    parts = []
    if counts:
        if stats.total is not None:
            share = stats.done / stats.total * 100 if stats.total else 100.0
            parts.append(f"{stats.done:,}/{stats.total:,} ({share:.1f}%)")
        else:
            parts.append(f"{stats.done:,} done")
    eta = stats.eta(now)
    parts += [
        f"{stats.rate(now):,.1f}/s",
        f"ETA {_clock(eta)}" if eta is not None else "ETA -",
        f"tokens {stats.tokens:,}",
        f"${stats.cost:,.4f}",
        f"hits {stats.hit_rate * 100:.1f}%",
        f"failed {stats.failed:,}",
    ]
    return "  ".join(parts)


def describe_compact(stats: BatchStats, now: float | None = None) -> str:
    """The same figures in about 45 characters, for an 80-column terminal: ``340/s 0:00:26 1.2M tok $0.01 4% hit
    3 fail``."""
    eta = stats.eta(now)
    return (
        f"{stats.rate(now):,.0f}/s {_clock(eta) if eta is not None else '-:--:--'} {_short(stats.tokens)} tok "
        f"${stats.cost:,.2f} {stats.hit_rate * 100:.0f}% hit {stats.failed:,} fail"
    )


class LogReporter:
    """A plain line every ``interval`` seconds and at the end; for logs and non-terminals."""

    def __init__(
        self, stream: TextIO | None = None, *, interval: float = LOG_INTERVAL, clock: Clock = time.monotonic
    ) -> None:
        self.stream = stream
        self.interval = interval
        self.clock = clock
        self._last = 0.0

    def _print(self, text: str) -> None:
        stream = self.stream or sys.stderr
        stream.write(text + "\n")
        stream.flush()

    def start(self, stats: BatchStats) -> None:
        self._last = self.clock()

    def update(self, stats: BatchStats) -> None:
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self._print(f"batch: {describe(stats, now)}")

    def note(self, message: str) -> None:
        self._print(message)

    def finish(self, stats: BatchStats) -> None:
        self._print(f"batch: {describe(stats, self.clock())}")


class RichReporter:
    """A rich progress bar on stderr, redrawn at most every ``interval`` seconds."""

    def __init__(
        self,
        *,
        console: Console | None = None,
        interval: float = RICH_INTERVAL,
        clock: Clock = time.monotonic,
    ) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
        from rich.table import Column

        self.interval = interval
        self.clock = clock
        self._last = 0.0
        console = console or Console(stderr=True)
        self.compact = console.width < WIDE_TERMINAL
        self.progress = Progress(
            TextColumn("batch", table_column=Column(no_wrap=True)),
            BarColumn(bar_width=16 if self.compact else 30),
            MofNCompleteColumn(table_column=Column(no_wrap=True)),
            # the figures take the width left: on a narrow terminal they are cut at the end, never the counts
            TextColumn(
                "{task.fields[figures]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)
            ),
            console=console,
            auto_refresh=True,
            refresh_per_second=10,
        )
        self._task = self.progress.add_task("batch", total=None, figures="")

    def start(self, stats: BatchStats) -> None:
        self.progress.update(self._task, total=stats.total)
        self.progress.start()

    def update(self, stats: BatchStats) -> None:
        now = self.clock()
        if now - self._last >= self.interval:
            self._last = now
            self._draw(stats, now)

    def _draw(self, stats: BatchStats, now: float) -> None:
        figures = describe_compact(stats, now) if self.compact else describe(stats, now, counts=False)
        self.progress.update(self._task, completed=stats.done, figures=figures)

    def note(self, message: str) -> None:
        self.progress.console.print(message, markup=False, highlight=False)

    def finish(self, stats: BatchStats) -> None:
        self._draw(stats, self.clock())
        self.progress.stop()


def make_reporter(*, quiet: bool) -> Reporter:
    """The bar on a terminal; log lines with ``--quiet`` or when stderr is not a terminal (a log file)."""
    if quiet or not sys.stderr.isatty():
        return LogReporter()
    return RichReporter()


def _short(count: int) -> str:
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if count >= scale:
            return f"{count / scale:.1f}{suffix}"
    return str(count)


def _clock(seconds: float) -> str:
    seconds = int(seconds + 0.5)
    return f"{seconds // 3600}:{seconds % 3600 // 60:02d}:{seconds % 60:02d}"
