"""The ``slipstream batch`` command: argument parsing and messages around ``BatchRunner``.

Human-readable messages and progress go to stderr; stdout carries only the ``--dry-run`` estimate. Any problem with
the input, the result files or the config is one ``error:`` line and exit code 2, never a traceback.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from ..config import Config, ConfigError, load_config
from .engine import DEFAULT_CONCURRENCY
from .journal import JournalError
from .progress import make_reporter
from .runner import EXIT_ERROR, SIGNAL_EXIT, BatchError, BatchFiles, BatchRunner
from .shard import Shard

__all__ = ["batch"]

T = TypeVar("T")


def _shard(ctx: click.Context, param: click.Parameter, value: str | None) -> Shard | None:
    if value is None:
        return None
    try:
        return Shard.parse(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


@click.command("batch")
@click.argument("input_path", metavar="IN.jsonl", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "-o", "--output", required=True, metavar="OUT.jsonl", type=click.Path(dir_okay=False, path_type=Path)
)
@click.option(
    "--failures",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Failed requests with their errors (default: OUT.failures.jsonl).",
)
@click.option(
    "--rejects",
    metavar="FILE",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Lines that cannot run, with line number and reason (default: OUT.rejects.jsonl).",
)
@click.option(
    "--concurrency",
    type=click.IntRange(1, 100_000),
    default=DEFAULT_CONCURRENCY,
    show_default=True,
    help="Requests in flight at once.",
)
@click.option("-c", "--config", "config_path", metavar="FILE", help="YAML config (default: built-in).")
@click.option("--dry-run", is_flag=True, help="Estimate tokens and cost of what would run; call nothing.")
@click.option(
    "--shard", metavar="i/n", callback=_shard, help="Run only shard i of n (stable hash of custom_id)."
)
@click.option("-q", "--quiet", is_flag=True, help="Plain progress lines every few seconds instead of a bar.")
def batch(
    input_path: Path,
    output: Path,
    failures: Path | None,
    rejects: Path | None,
    concurrency: int,
    config_path: str | None,
    dry_run: bool,
    shard: Shard | None,
    quiet: bool,
) -> None:
    """Run every request in IN.jsonl through the pipeline, writing results to OUT.jsonl as they complete.

    Lines are OpenAI batch lines ({"custom_id", "method", "url", "body"}) or bare chat request bodies
    (custom_id "line-N"). Exactly once and resumable: after a crash, kill -9 or Ctrl-C, run the same command
    again and it continues where it stopped. Exit codes: 0 done; 1 done with failed or rejected lines;
    2 unusable input, files or config; 130/143 interrupted (run again to resume).
    """
    try:
        files = BatchFiles.beside(input_path, output, failures=failures, rejects=rejects)
        config = _config(config_path)
        reporter = make_reporter(quiet=quiet)
        runner = BatchRunner(files, config=config, concurrency=concurrency, shard=shard, reporter=reporter)
        if dry_run:
            plan, estimate = runner.estimate()
            click.echo(
                f"dry run: {plan.to_run:,} requests would be sent ({plan.finished:,} already finished, "
                f"{plan.rejected:,} rejected lines{_shard_note(shard, plan.other_shards)}); nothing was called."
            )
            for line in estimate.lines():
                click.echo(line)
            return
        summary = _run(runner.run)
    except (BatchError, JournalError) as exc:
        _fail(str(exc))
    except KeyboardInterrupt:  # Ctrl-C while the run did not own the signal (starting up, shutting down)
        click.echo("interrupted; run the same command again to resume (finished lines are kept).", err=True)
        sys.exit(SIGNAL_EXIT["SIGINT"])
    click.echo(summary.message(), err=True)
    sys.exit(summary.exit_code)


def _config(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        _fail("\n".join(f"error: {problem}" for problem in exc.problems), prefixed=True)


def _run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run on uvloop when it is installed (as the gateway does), else on asyncio's own loop."""
    factory = None
    if importlib.util.find_spec("uvloop") is not None:
        import uvloop

        factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(main())


def _shard_note(shard: Shard | None, others: int) -> str:
    return f"; shard {shard}, {others:,} lines belong to other shards" if shard is not None else ""


def _fail(message: str, *, prefixed: bool = False) -> NoReturn:
    click.echo(message if prefixed else f"error: {message}", err=True)
    sys.exit(EXIT_ERROR)
