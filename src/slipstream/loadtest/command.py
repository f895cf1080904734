"""``slipstream loadtest URL``: the click command, turning options into a plan, a run and a report.

The order of checks is deliberate: the target is resolved and refused if it is not loopback *before* anything
else happens, so a wrong URL never sends a byte. matplotlib is imported only when a chart is asked for.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click
from rich.console import Console

from .breaking import (
    DEFAULT_SLO_ERROR_RATE,
    DEFAULT_SLO_P95_MS,
    BreakingPointSearch,
    Slo,
    find_breaking_point,
)
from .drivers import LoadPlan, Mode, run_load
from .mix import MixError, RequestMix, read_bodies
from .profile import DEFAULT_DURATIONS, RAMPED_SCENARIOS, SCENARIOS, constant, scenario_profile
from .report import LoadReport, print_report, to_json, to_markdown
from .target import Target, TargetError, resolve_target

__all__ = ["DEFAULT_MAX_REQUESTS", "MAX_DURATION", "MAX_REQUESTS", "loadtest"]

MAX_DURATION = 6 * 3600.0  # the longest run (or search) allowed: a soak of a working day
MAX_REQUESTS = 50_000_000  # ~800 MB of samples at most
DEFAULT_MAX_REQUESTS = 10_000_000
DEFAULT_USERS = 10
DEFAULT_START_RATE = 10.0
DEFAULT_SEARCH_DURATION = 120.0

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run on uvloop when it is installed: it is what lets one process drive thousands of requests/s."""
    try:
        import uvloop

        factory: Any = uvloop.new_event_loop
    except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
        factory = None
    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(coro)


def _headers(values: tuple[str, ...]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip() or any(c in value for c in "\r\n"):
            raise click.BadParameter(f"expected 'Name: value', got {value!r}", param_hint="--header")
        headers[name.strip()] = content.strip()
    return headers


@click.command("loadtest")
@click.argument("url")
@click.option(
    "--scenario", type=click.Choice(SCENARIOS), default="custom", show_default=True, help="Load shape."
)
@click.option(
    "-u", "--users", type=click.IntRange(1, 100_000), help="Closed loop: this many users back to back."
)
@click.option(
    "-r",
    "--rate",
    type=click.FloatRange(0, 1_000_000, min_open=True),
    help="Open loop: requests/s on a fixed schedule (the start rate of --breaking-point).",
)
@click.option(
    "-d",
    "--duration",
    type=click.FloatRange(0, MAX_DURATION, min_open=True),
    help="Seconds (the whole search with --breaking-point). Default per scenario: "
    + ", ".join(f"{k} {v:g}" for k, v in DEFAULT_DURATIONS.items())
    + f"; search {DEFAULT_SEARCH_DURATION:g}.",
)
@click.option("--ramp", type=click.FloatRange(min=0), help="Seconds to ramp up (peak, soak, custom).")
@click.option(
    "-n",
    "--max-requests",
    type=click.IntRange(1, MAX_REQUESTS),
    default=DEFAULT_MAX_REQUESTS,
    show_default=True,
    help="Stop after starting this many requests.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(0, 600, min_open=True),
    default=30.0,
    show_default=True,
    help="Seconds a request may take (open loop: from its intended send time).",
)
@click.option(
    "-c",
    "--connections",
    type=click.IntRange(1, 20_000),
    default=256,
    show_default=True,
    help="Open loop: the most connections to open.",
)
@click.option(
    "--requests",
    "requests_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="JSONL of chat request bodies (or OpenAI batch lines), sent round-robin.",
)
@click.option(
    "--stream-share",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Share of requests sent with stream=true (their TTFT is measured).",
)
@click.option("-m", "--model", help="Model for every request (overrides the bodies').")
@click.option(
    "-H", "--header", "headers", multiple=True, metavar="'NAME: VALUE'", help="Extra request header."
)
@click.option("--breaking-point", is_flag=True, help="Raise the open-loop rate until the SLO is missed.")
@click.option("--slo-p95-ms", type=click.FloatRange(0, min_open=True), help="SLO: p95 latency (ms).")
@click.option("--slo-error-rate", type=click.FloatRange(0, 1), help="SLO: share of failed requests.")
@click.option(
    "--step-duration",
    type=click.FloatRange(0, 600, min_open=True),
    default=5.0,
    show_default=True,
    help="Seconds per breaking-point step.",
)
@click.option(
    "--step-factor",
    type=click.FloatRange(1, 100, min_open=True),
    default=2.0,
    show_default=True,
    help="Rate multiplier between steps.",
)
@click.option(
    "--max-rate",
    type=click.FloatRange(0, 1_000_000, min_open=True),
    default=100_000.0,
    show_default=True,
    help="Highest rate the search tries.",
)
@click.option("--refine", type=click.IntRange(0, 20), default=2, show_default=True, help="Bisection steps.")
@click.option(
    "--json", "json_path", type=click.Path(dir_okay=False, path_type=Path), help="Write the JSON report."
)
@click.option(
    "--markdown", "markdown_path", type=click.Path(dir_okay=False, path_type=Path), help="Write markdown."
)
@click.option(
    "--chart", "chart_path", type=click.Path(dir_okay=False, path_type=Path), help="Write a PNG chart."
)
@click.option("-q", "--quiet", is_flag=True, help="Print nothing but errors.")
@click.option("--allow-remote", is_flag=True, help="Allow a target outside loopback (127.0.0.0/8, ::1).")
def loadtest(**params: Any) -> None:
    """Load-test an OpenAI-compatible chat endpoint at URL (the gateway, `slipstream sim`, any server).

    \b
    Closed loop (--users N): N users send back to back, like wrk.
    Open loop (--rate R): R requests/s on a fixed schedule. Latency counts
      from the intended send time, so a stalled server cannot hide its
      stall (no coordinated omission).
    --breaking-point: open-loop steps from --rate up, until p95 latency or
      the error rate misses the SLO; reports the last good rate.

    Runs are bounded by --duration and --max-requests. Targets must be on this machine unless --allow-remote.
    """
    o = _Options(**params)
    try:
        target = resolve_target(o.url, allow_remote=o.allow_remote)
    except TargetError as exc:
        raise click.UsageError(str(exc)) from None
    if o.users is not None and o.rate is not None:
        raise click.UsageError("give --users (closed loop) or --rate (open loop), not both")
    if o.breaking_point and (o.users is not None or o.scenario != "custom"):
        raise click.UsageError(
            "--breaking-point is its own open-loop scenario: give a start --rate, no --users"
        )
    if o.ramp is not None and o.scenario not in RAMPED_SCENARIOS:
        raise click.UsageError(f"--ramp applies to the {', '.join(RAMPED_SCENARIOS)} scenarios")
    try:
        bodies = read_bodies(o.requests_file) if o.requests_file is not None else None
        mix = RequestMix(
            target, bodies, model=o.model, stream_share=o.stream_share, headers=_headers(o.headers)
        )
    except MixError as exc:
        raise click.BadParameter(str(exc), param_hint="--requests") from None

    slo = Slo(
        p95_ms=DEFAULT_SLO_P95_MS if o.slo_p95_ms is None else o.slo_p95_ms,
        error_rate=DEFAULT_SLO_ERROR_RATE if o.slo_error_rate is None else o.slo_error_rate,
    )
    settings: dict[str, Any] = {
        "max_requests": o.max_requests,
        "timeout": o.timeout,
        "stream_share": o.stream_share,
        "requests_file": str(o.requests_file) if o.requests_file else None,
        "request_bodies": mix.size,
        "model": o.model,
    }
    if o.breaking_point:
        report = _search(o, target, mix, slo, settings)
    else:
        report = _single_run(o, target, mix, settings)
        if o.slo_p95_ms is not None or o.slo_error_rate is not None:
            report = dataclasses.replace(report, slo=slo)  # checked: the exit code says whether it held
    _emit(report, o)
    if report.slo_violations():
        sys.exit(1)


@dataclass(frozen=True, slots=True)
class _Options:
    """The command's options, named as click passes them."""

    url: str
    scenario: str
    users: int | None
    rate: float | None
    duration: float | None
    ramp: float | None
    max_requests: int
    timeout: float
    connections: int
    requests_file: Path | None
    stream_share: float
    model: str | None
    headers: tuple[str, ...]
    breaking_point: bool
    slo_p95_ms: float | None
    slo_error_rate: float | None
    step_duration: float
    step_factor: float
    max_rate: float
    refine: int
    json_path: Path | None
    markdown_path: Path | None
    chart_path: Path | None
    quiet: bool
    allow_remote: bool


def _single_run(o: _Options, target: Target, mix: RequestMix, settings: dict[str, Any]) -> LoadReport:
    mode: Mode = "open" if o.rate is not None else "closed"
    level = (
        o.rate if o.rate is not None else float(o.users or (1 if o.scenario == "baseline" else DEFAULT_USERS))
    )
    duration = o.duration or DEFAULT_DURATIONS[o.scenario]
    try:
        profile = scenario_profile(o.scenario, level, duration, o.ramp)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    settings = {**settings, "duration": duration, "ramp": o.ramp}
    if mode == "open":
        settings["connections"] = o.connections
    plan = LoadPlan(
        target=target,
        mix=mix,
        profile=profile,
        mode=mode,
        max_requests=o.max_requests,
        timeout=o.timeout,
        connections=o.connections,
    )
    run = _run(run_load(plan))
    return LoadReport(
        target=target.url, scenario=o.scenario, mode=mode, level=level, settings=settings, run=run
    )


def _search(o: _Options, target: Target, mix: RequestMix, slo: Slo, settings: dict[str, Any]) -> LoadReport:
    start = o.rate or DEFAULT_START_RATE
    budget = o.duration or DEFAULT_SEARCH_DURATION
    step_duration = min(o.step_duration, budget)
    search = BreakingPointSearch(
        start_rate=start, factor=o.step_factor, max_rate=max(o.max_rate, start), refine=o.refine
    )
    # A step's stragglers may be out for up to ``timeout`` after it: keep steps from blurring into each other.
    step_timeout = min(o.timeout, max(1.0, step_duration))

    def plan_for(rate: float, seconds: float, budget_requests: int) -> LoadPlan:
        return LoadPlan(
            target=target,
            mix=mix,
            profile=constant(rate, seconds),
            mode="open",
            max_requests=budget_requests,
            timeout=step_timeout,
            connections=o.connections,
        )

    result = _run(
        find_breaking_point(
            plan_for,
            search,
            slo,
            step_duration=step_duration,
            max_duration=budget,
            max_requests=o.max_requests,
        )
    )
    settings = {
        **settings,
        "duration": budget,
        "step_duration": step_duration,
        "step_factor": o.step_factor,
        "max_rate": search.max_rate,
        "refine": o.refine,
        "timeout": step_timeout,
        "connections": o.connections,
    }
    return LoadReport(
        target=target.url,
        scenario="breaking-point",
        mode="open",
        level=start,
        settings=settings,
        search=result,
    )


def _emit(report: LoadReport, o: _Options) -> None:
    if not o.quiet:
        print_report(report, Console(highlight=False))
    if o.json_path is not None:
        o.json_path.parent.mkdir(parents=True, exist_ok=True)
        o.json_path.write_text(
            json.dumps(to_json(report), indent=2, allow_nan=False) + "\n", encoding="utf-8"
        )
    if o.markdown_path is not None:
        o.markdown_path.parent.mkdir(parents=True, exist_ok=True)
        o.markdown_path.write_text(to_markdown(report), encoding="utf-8")
    if o.chart_path is not None:
        from .chart import ChartUnavailable, write_chart

        try:
            write_chart(report, o.chart_path)
        except ChartUnavailable as exc:
            raise click.ClickException(str(exc)) from None
    written = [str(p) for p in (o.json_path, o.markdown_path, o.chart_path) if p is not None]
    if written and not o.quiet:
        click.echo("wrote " + ", ".join(written))
