"""Progress figures and their two displays, on an injected clock."""

from __future__ import annotations

import io

from rich.console import Console

from slipstream.batch import BatchStats
from slipstream.batch.progress import LogReporter, RichReporter, describe


def _stats() -> BatchStats:
    stats = BatchStats(total=1000, started=100.0)
    stats.done, stats.failed, stats.cache_hits = 250, 3, 50
    stats.prompt_tokens, stats.completion_tokens, stats.cost = 10_000, 2_345, 0.01234
    return stats


def test_describe_shows_every_figure():
    assert describe(_stats(), now=110.0) == (
        "250/1,000 (25.0%)  25.0/s  ETA 0:00:30  tokens 12,345  $0.0123  hits 20.0%  failed 3"
    )
    unknown = BatchStats(total=None, started=0.0)
    assert describe(unknown, now=0.0).startswith("0 done  0.0/s  ETA -")


def test_log_reporter_prints_every_interval_and_at_the_end():
    now = [0.0]
    out = io.StringIO()
    reporter = LogReporter(out, interval=5.0, clock=lambda: now[0])
    stats = _stats()
    reporter.start(stats)
    for t in (1.0, 4.9, 5.0, 6.0, 10.5):
        now[0] = t
        reporter.update(stats)
    reporter.note("a note")
    reporter.finish(stats)
    lines = out.getvalue().splitlines()
    assert [line.split()[0] for line in lines] == ["batch:", "batch:", "a", "batch:"]  # at 5.0, 10.5, end


def _draw(width: int) -> str:
    out = io.StringIO()
    console = Console(file=out, force_terminal=True, width=width, color_system=None)
    reporter = RichReporter(console=console, clock=lambda: 110.0)
    stats = _stats()
    reporter.start(stats)
    reporter.update(stats)
    reporter.note("resuming: 5 of 10 lines already finished")
    reporter.finish(stats)
    return out.getvalue()


def test_rich_reporter_draws_the_bar_and_notes():
    text = _draw(160)
    assert "resuming: 5 of 10 lines already finished" in text
    assert "250/1000" in text and "tokens 12,345" in text and "hits 20.0%" in text


def test_an_80_column_terminal_gets_every_figure_in_short():
    last = _draw(80).split("\r")[-1]
    assert "250/1000 25/s 0:00:30 12.3k tok $0.01 20% hit 3 fail" in last
