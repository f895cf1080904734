"""A load test's outcome as data, and its three text renderings: a rich table, JSON and markdown.

:class:`LoadReport` is what a ``slipstream loadtest`` invocation produced — a run, a breaking-point search, or
both absent fields for neither — plus the settings that produced it, so a saved JSON or markdown file is enough
to reproduce and compare runs. Renderers are pure functions of the report (the PNG chart is in ``chart.py``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich.console import Console
from rich.table import Table

from .breaking import SearchResult, Slo, Step
from .drivers import Mode, RunResult
from .record import Summary

__all__ = ["LoadReport", "print_report", "to_json", "to_markdown"]

SATURATED = 0.9  # a tester busier than this share of its one core was measuring itself as much as the target


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True, slots=True)
class LoadReport:
    target: str
    scenario: str  # a scenario name, or "breaking-point"
    mode: Mode
    level: float  # users (closed loop) or requests/s (open loop); the start rate of a search
    settings: dict[str, Any]
    run: RunResult | None = None
    search: SearchResult | None = None
    slo: Slo | None = None  # checked against ``run`` when given
    created: str = field(default_factory=_utc_now)

    @property
    def level_unit(self) -> str:
        return "users" if self.mode == "closed" else "req/s"

    def slo_violations(self) -> tuple[str, ...]:
        if self.slo is None or self.run is None:
            return ()
        lag = self.run.send_lag_ms
        return self.slo.violations(self.run.summary, lag.p95 if lag is not None and lag.count else 0.0)


# ---------------------------------------------------------------------------------------------------- JSON
def to_json(report: LoadReport) -> dict[str, Any]:
    data: dict[str, Any] = {
        "target": report.target,
        "scenario": report.scenario,
        "mode": report.mode,
        "level": report.level,
        "level_unit": report.level_unit,
        "created": report.created,
        "settings": report.settings,
    }
    if report.run is not None:
        data.update(_run_json(report.run))
    if report.slo is not None and report.run is not None:
        violations = report.slo_violations()
        data["slo"] = {
            "p95_ms": report.slo.p95_ms,
            "error_rate": report.slo.error_rate,
            "met": not violations,
            "violations": list(violations),
        }
    if report.search is not None:
        search = report.search
        data["breaking_point"] = {
            "slo": {"p95_ms": search.slo.p95_ms, "error_rate": search.slo.error_rate},
            "last_good_rate": search.last_good_rate,
            "first_bad_rate": search.first_bad_rate,
            "stopped_because": search.stopped_because,
            "steps": [
                {"rate": step.rate, "ok": step.ok, "violations": list(step.violations), **_run_json(step.run)}
                for step in search.steps
            ],
        }
    return data


def _run_json(run: RunResult) -> dict[str, Any]:
    lag = run.send_lag_ms
    return {
        "summary": run.summary.to_dict(),
        "started": run.started,
        "tester_cpu_s": run.tester_cpu_s,
        "send_lag_ms": None if lag is None else lag.to_dict(),
        "timeline": [second.to_dict() for second in run.timeline],
    }


# ---------------------------------------------------------------------------------------------------- text
def _ms(value: float) -> str:
    if math.isnan(value):
        return "-"
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def _errors(summary: Summary) -> str:
    return ", ".join(f"{kind} {count:,}" for kind, count in summary.errors_by_class.items()) or "none"


def _headline(report: LoadReport) -> str:
    s = report.settings
    bits = [f"{report.scenario}", f"{report.mode} loop", f"{report.level:g} {report.level_unit}"]
    if s.get("duration") is not None:
        bits.append(f"{s['duration']:g} s")
    if s.get("stream_share"):
        bits.append(f"{s['stream_share']:.0%} streamed")
    return ", ".join(bits)


def _summary_rows(run: RunResult) -> list[tuple[str, str]]:
    summary, lag = run.summary, run.send_lag_ms
    lat, ttft = summary.latency_ms, summary.ttft_ms
    rows = [
        ("requests", f"{summary.requests:,} in {summary.elapsed_s:.2f} s ({summary.ok:,} ok)"),
        ("requests/s", f"{summary.requests_per_s:,.1f} (ok {summary.ok_per_s:,.1f})"),
        ("latency ms", f"p50 {_ms(lat.p50)}  p95 {_ms(lat.p95)}  p99 {_ms(lat.p99)}  max {_ms(lat.max)}"),
    ]
    if ttft.count:
        rows.append(
            (
                "TTFT ms",
                f"p50 {_ms(ttft.p50)}  p95 {_ms(ttft.p95)}  p99 {_ms(ttft.p99)}  max {_ms(ttft.max)}"
                f"  ({ttft.count:,} streams)",
            )
        )
    rows.append(("errors", f"{summary.errors:,} ({summary.error_rate:.2%}): {_errors(summary)}"))
    if lag is not None and lag.count:
        rows.append(("send lag ms", f"p50 {_ms(lag.p50)}  p99 {_ms(lag.p99)}  max {_ms(lag.max)}"))
    busy = run.tester_cpu_s / summary.elapsed_s if summary.elapsed_s > 0 else 0.0
    note = " — the tester was the bottleneck: add a process or lower the load" if busy > SATURATED else ""
    rows.append(("tester CPU", f"{run.tester_cpu_s:.2f} s ({busy:.0%} of a core){note}"))
    return rows


def _step_cells(step: Step) -> list[str]:
    s = step.run.summary
    return [
        f"{step.rate:,.1f}",
        f"{s.requests_per_s:,.1f}",
        _ms(s.latency_ms.p50),
        _ms(s.latency_ms.p95),
        _ms(s.latency_ms.p99),
        f"{s.error_rate:.2%}",
        "ok" if step.ok else "; ".join(step.violations),
    ]


_STEP_HEADERS = ["rate req/s", "done req/s", "p50 ms", "p95 ms", "p99 ms", "errors", "verdict"]


def _search_verdict(search: SearchResult) -> str:
    good = f"{search.last_good_rate:,.1f} req/s" if search.last_good_rate is not None else "none"
    return f"last good rate: {good} — {search.stopped_because}"


def print_report(report: LoadReport, console: Console) -> None:
    console.print(f"[bold]slipstream loadtest[/bold] {report.target} — {_headline(report)}")
    if report.run is not None:
        table = Table(show_header=False, box=None, pad_edge=False)
        table.add_column(style="bold")
        table.add_column()
        for name, value in _summary_rows(report.run):
            table.add_row(name, value)
        console.print(table)
        if report.slo is not None:
            violations = report.slo_violations()
            console.print(
                "SLO: "
                + ("[green]met[/green]" if not violations else "[red]missed[/red]: " + "; ".join(violations))
            )
    if report.search is not None:
        table = Table(title="breaking-point search")
        for header in _STEP_HEADERS:
            table.add_column(header, justify="left" if header == "verdict" else "right")
        for step in report.search.steps:
            table.add_row(*_step_cells(step), style=None if step.ok else "red")
        console.print(table)
        console.print(f"[bold]{_search_verdict(report.search)}[/bold]")


def to_markdown(report: LoadReport) -> str:
    lines = [
        f"# Load test: {report.target}",
        "",
        f"- {_headline(report)}",
        f"- date: {report.created}",
        "- settings: " + ", ".join(f"{k}={v}" for k, v in report.settings.items() if v is not None),
        "",
    ]
    if report.run is not None:
        lines += ["| measure | value |", "|---|---|"]
        lines += [f"| {name} | {value} |" for name, value in _summary_rows(report.run)]
        lines.append("")
        if report.slo is not None:
            violations = report.slo_violations()
            lines += ["SLO: " + ("met" if not violations else "missed: " + "; ".join(violations)), ""]
    if report.search is not None:
        lines += [
            "## Breaking-point search",
            "",
            f"SLO: p95 ≤ {report.search.slo.p95_ms:g} ms, error rate ≤ {report.search.slo.error_rate:.2%}",
            "",
            "| " + " | ".join(_STEP_HEADERS) + " |",
            "|" + "---:|" * (len(_STEP_HEADERS) - 1) + "---|",
        ]
        lines += ["| " + " | ".join(_step_cells(step)) + " |" for step in report.search.steps]
        lines += ["", f"**{_search_verdict(report.search)}**", ""]
    return "\n".join(lines)
