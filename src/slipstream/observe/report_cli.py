"""``slipstream report``: the request log's totals for a time window, as text, markdown, JSON or CSV.

The command only finds the log (``--db``, or the config's ``observe.request_log.path``), parses the options and
prints; ``report.py`` builds the report and ``report_render.py`` formats it. It reads the log read-only, so it
can run while a gateway writes to it.
"""

from __future__ import annotations

import shutil
import sqlite3
import sys

import click

from .report import DIMENSIONS, build_report, parse_window
from .report_render import FORMATS, render

__all__ = ["report"]


@click.command("report")
@click.option(
    "--window",
    default="24h",
    show_default=True,
    help="How far back: 30m, 24h, 7d, or a number of minutes.",
)
@click.option("--format", "fmt", type=click.Choice(FORMATS), default="text", show_default=True)
@click.option(
    "-c",
    "--config",
    "config_path",
    metavar="FILE",
    help="Read the request log this config names (default: $SLIPSTREAM_CONFIG or built-in defaults).",
)
@click.option("--db", "db_path", metavar="PATH", help="Read this request log file instead.")
@click.option(
    "--by",
    default=",".join(DIMENSIONS),
    show_default=True,
    help="Sections after the overall totals, comma-separated.",
)
def report(window: str, fmt: str, config_path: str | None, db_path: str | None, by: str) -> None:
    """Requests, errors, latency percentiles, hit rate, tokens, cost and savings from the request log, overall
    and per model, deployment, key and tracked operation (runs, durations, calls, hits, tokens, cost)."""
    try:
        minutes = parse_window(window)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--window") from None
    dimensions = [d.strip() for d in by.split(",") if d.strip()]
    unknown = [d for d in dimensions if d not in DIMENSIONS]
    if unknown:
        raise click.BadParameter(
            f"unknown {', '.join(unknown)}; choose from {', '.join(DIMENSIONS)}", param_hint="--by"
        )
    if db_path is not None and config_path is not None:
        raise click.UsageError("give --config or --db, not both")
    if db_path is None:
        from ..cli import _load

        settings = _load(config_path).observe
        if not settings.request_log:
            raise click.UsageError("the config keeps no request log (observe.request_log.enabled is false)")
        db_path = settings.request_log_path
    try:
        data = build_report(db_path, minutes, by=dimensions)
    except FileNotFoundError as exc:
        raise click.ClickException(
            f"{exc} (is observe.request_log enabled, and has anything run yet?)"
        ) from None
    except sqlite3.DatabaseError as exc:
        raise click.ClickException(f"cannot read the request log {db_path}: {exc}") from None
    width = shutil.get_terminal_size().columns if sys.stdout.isatty() else None
    click.echo(render(data, fmt, window=window.strip(), width=width), nl=False)
