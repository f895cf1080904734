"""The PNG chart of a load report (matplotlib, Agg backend, imported only when a chart is asked for).

A run gets two panels sharing the time axis: completed requests and errors per second with the offered level
(rate, or users on a second axis), then p50/p99 latency per second on a log scale. A breaking-point search gets
p95 latency and error rate against the offered rate, with the SLO lines and the last good rate marked.

matplotlib is the ``loadtest`` extra (``pip install 'slipstream[loadtest]'``); without it :func:`write_chart`
raises :class:`ChartUnavailable` with that hint, and the rest of the load tester works as before.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from .breaking import SearchResult
from .drivers import RunResult
from .report import LoadReport

__all__ = ["ChartUnavailable", "write_chart"]


class ChartUnavailable(RuntimeError):
    """matplotlib is not installed."""


def write_chart(report: LoadReport, path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")  # no display: write files only
        from matplotlib import pyplot as plt
    except ImportError:
        raise ChartUnavailable("the PNG chart needs matplotlib: pip install 'slipstream[loadtest]'") from None
    panels = (2 if report.run is not None else 0) + (2 if report.search is not None else 0)
    fig, axes = plt.subplots(panels, 1, figsize=(10, 2.8 * panels), squeeze=False)
    column = [row[0] for row in axes]
    fig.suptitle(f"slipstream loadtest — {report.target}\n{report.scenario}, {report.mode} loop", fontsize=10)
    if report.run is not None:
        _run_panels(report, report.run, column[0], column[1])
        column = column[2:]
    if report.search is not None:
        _search_panels(report.search, column[0], column[1])
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100, format="png")
    plt.close(fig)


def _run_panels(report: LoadReport, run: RunResult, load: Any, latency: Any) -> None:
    rows = run.timeline
    middles = [row.t + row.span / 2 for row in rows]
    load.plot(
        middles, [row.requests_per_s for row in rows], label="completed/s", color="tab:blue", marker="."
    )
    load.plot(middles, [row.errors_per_s for row in rows], label="errors/s", color="tab:red", marker=".")
    # The offered level is drawn from the profile itself, finely, so ramps and steps keep their shape.
    end = rows[-1].t + rows[-1].span if rows else run.profile.duration
    times = [end * i / 400 for i in range(401)]
    offered = [run.profile.level_at(t) for t in times]
    if report.mode == "open":
        load.plot(times, offered, label="offered rate/s", color="grey", linestyle="--")
    else:
        users = load.twinx()
        users.plot(times, offered, label="users", color="grey", linestyle="--")
        users.set_ylabel("users (dashed)")
        users.set_ylim(bottom=0, top=max(offered, default=1) * 1.15)
    load.set_ylim(bottom=0)
    load.set_ylabel("requests/s")
    load.legend(loc="lower left", fontsize=8)
    load.grid(alpha=0.3)
    p50 = [row.p50_ms for row in rows]
    p99 = [row.p99_ms for row in rows]
    latency.plot(middles, p50, label="p50", color="tab:green", marker=".")
    latency.plot(middles, p99, label="p99", color="tab:orange", marker=".")
    _log_if_wide(latency, [v for v in p50 + p99 if v > 0 and not math.isnan(v)])
    latency.set_ylabel("latency ms")
    latency.set_xlabel("seconds")
    latency.legend(loc="upper left", fontsize=8)
    latency.grid(alpha=0.3)


def _log_if_wide(ax: Any, values: list[float]) -> None:
    """A log axis only when the values span more than 30x; plain numbers on the ticks either way."""
    from matplotlib.ticker import ScalarFormatter

    if values and max(values) / min(values) > 30:
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(ScalarFormatter())
    else:
        ax.set_ylim(bottom=0)


def _search_panels(search: SearchResult, latency: Any, errors: Any) -> None:
    rates = [step.rate for step in search.steps]
    order = sorted(range(len(rates)), key=rates.__getitem__)
    xs = [rates[i] for i in order]
    p95 = [search.steps[i].run.summary.latency_ms.p95 for i in order]
    error_rates = [search.steps[i].run.summary.error_rate * 100 for i in order]
    latency.plot(xs, p95, marker="o", label="p95 ms")
    latency.axhline(search.slo.p95_ms, color="tab:red", linestyle="--", label="SLO p95")
    _log_if_wide(latency, [v for v in [*p95, search.slo.p95_ms] if v > 0 and not math.isnan(v)])
    latency.set_ylabel("p95 ms")
    errors.plot(xs, error_rates, marker="o", color="tab:orange", label="error %")
    errors.axhline(search.slo.error_rate * 100, color="tab:red", linestyle="--", label="SLO errors")
    errors.set_ylabel("errors %")
    errors.set_xlabel("offered rate (req/s)")
    for ax in (latency, errors):
        if search.last_good_rate is not None:
            ax.axvline(search.last_good_rate, color="tab:green", linestyle=":", label="last good rate")
        if len(xs) > 1 and xs[-1] / xs[0] > 8:
            ax.set_xscale("log")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
