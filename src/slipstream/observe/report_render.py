"""Rendering a ``Report`` as text (rich tables), markdown, JSON or CSV.

Text and markdown print the same tables from one column spec per row type, so the two never disagree. JSON is
the report's dataclasses as they are. CSV is one table, for spreadsheets: a ``section`` column (overall, model,
deployment, key, operation) and the union of the columns, raw numbers, empty where a column does not apply
(an operation's ``requests`` are its calls).
"""

from __future__ import annotations

import csv
import io
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from typing import Any, NamedTuple

import orjson

from .report import GroupRow, OperationRow, Report

__all__ = ["FORMATS", "render"]

FORMATS = ("text", "markdown", "json", "csv")

# Requests without a value: cache hits, coalesced followers and failures had no deployment answer them;
# SDK calls and gateways without keys have no key.
_NONE_LABELS = {"deployment": "(none answered)", "key": "(no key)", "operation": "(untracked)"}

Column = tuple[str, Callable[[Any], str]]  # header, cell text from a row
_TEXT_WIDTH = 220


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if value < 10 else f"{value:,.1f}"  # cache hits take tenths of a millisecond


def _rate(value: float) -> str:
    return f"{value * 100:.1f}%"


def _usd(value: float) -> str:
    return f"${value:,.2f}" if value >= 1000 else f"${value:.6f}"


_GROUP_COLUMNS: tuple[Column, ...] = (
    ("requests", lambda r: f"{r.requests:,}"),
    ("errors", lambda r: f"{r.errors:,}"),
    ("error rate", lambda r: _rate(r.error_rate)),
    ("p50 ms", lambda r: _ms(r.p50_ms)),
    ("p95 ms", lambda r: _ms(r.p95_ms)),
    ("p99 ms", lambda r: _ms(r.p99_ms)),
    ("hit rate", lambda r: _rate(r.hit_rate)),
    ("tokens in", lambda r: f"{r.prompt_tokens:,}"),
    ("tokens out", lambda r: f"{r.completion_tokens:,}"),
    ("cost", lambda r: _usd(r.cost_usd)),
    ("saved", lambda r: _usd(r.saved_usd)),
)
_OPERATION_COLUMNS: tuple[Column, ...] = (
    ("runs", lambda r: f"{r.runs:,}"),
    ("duration p50 ms", lambda r: _ms(r.duration_p50_ms)),
    ("duration total ms", lambda r: _ms(r.duration_total_ms) if r.runs else "-"),
    ("calls", lambda r: f"{r.calls:,}"),
    ("own calls", lambda r: f"{r.own_calls:,}"),
    ("errors", lambda r: f"{r.errors:,}"),
    ("hits", lambda r: f"{r.hits:,}"),
    ("hit rate", lambda r: _rate(r.hit_rate)),
    ("tokens in", lambda r: f"{r.prompt_tokens:,}"),
    ("tokens out", lambda r: f"{r.completion_tokens:,}"),
    ("cost", lambda r: _usd(r.cost_usd)),
    ("saved", lambda r: _usd(r.saved_usd)),
)


def render(report: Report, fmt: str, *, window: str | None = None, width: int | None = None) -> str:
    """The report in ``fmt`` (one of ``FORMATS``); ``window`` is how the window was written (``24h``),
    ``width`` the text format's line width (a terminal's; by default wide enough that no column wraps)."""
    label = window or f"{report.window_minutes:g}m"
    if fmt == "json":
        data = {"window": label, **report.as_dict()}
        return orjson.dumps(data, option=orjson.OPT_INDENT_2).decode() + "\n"
    if fmt == "csv":
        return _csv(report)
    if fmt == "markdown":
        return _markdown(report, label)
    if fmt == "text":
        return _text(report, label, width or _TEXT_WIDTH)
    raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")


class _Table(NamedTuple):
    title: str
    first: str  # the name column's header; "" for the overall table, which has none
    columns: Sequence[Column]
    rows: list[tuple[str, Any]]  # (name, row)
    empty: str  # what to say instead of an empty table


def _tables(report: Report) -> list[_Table]:
    """Every table of the report, in order."""
    tables = [_Table("Overall", "", _GROUP_COLUMNS, [("all", report.overall)], "")]
    named: list[tuple[str, Any]]
    for dimension, rows in report.groups.items():
        named = [(_name(dimension, row.name), row) for row in rows]
        tables.append(_Table(f"By {dimension}", dimension, _GROUP_COLUMNS, named, "no requests"))
    if report.operations is not None:
        named = [(_name("operation", row.operation), row) for row in report.operations]
        tables.append(_Table("By operation", "operation", _OPERATION_COLUMNS, named, "no tracked operations"))
    return tables


def _name(dimension: str, value: str | None) -> str:
    return value if value is not None else _NONE_LABELS.get(dimension, "(none)")


def _heading(report: Report, label: str) -> str:
    since = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(report.since))
    return f"slipstream report: the last {label} (since {since}), {report.overall.requests:,} requests"


def _text(report: Report, label: str, width: int) -> str:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    out = io.StringIO()
    # Rendered to a string, without colour codes, so the output is the same on a terminal, in a pipe and in tests.
    console = Console(file=out, width=width, no_color=True, highlight=False, emoji=False)
    console.print(Text(_heading(report, label), style="bold"))
    console.print(Text(f"request log: {report.db}"))
    for title, first, columns, rows, empty in _tables(report):
        if not rows:
            console.print(Text(f"\n{title}: {empty}"))
            continue
        table = Table(title=title, title_justify="left")
        if first:
            table.add_column(first)
        for header, _ in columns:
            table.add_column(header, justify="right")
        for name, row in rows:
            # Text(): names come from clients and configs; rich must not read "[...]" in them as markup.
            cells = [Text(name)] if first else []
            table.add_row(*cells, *(cell(row) for _, cell in columns))
        console.print()
        console.print(table)
    return _rstrip_lines(out.getvalue())


def _rstrip_lines(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines()) + "\n"


def _markdown(report: Report, label: str) -> str:
    lines = [f"## {_heading(report, label)}", "", f"Request log: `{report.db}`"]
    for title, first, columns, rows, empty in _tables(report):
        lines += ["", f"### {title}", ""]
        if not rows:
            lines.append(f"{empty.capitalize()}.")
            continue
        headers = ([first] if first else []) + [header for header, _ in columns]
        lines.append("| " + " | ".join(headers) + " |")
        lines.append("|" + "|".join(["---"] * (1 if first else 0) + ["---:"] * len(columns)) + "|")
        for name, row in rows:
            cells = ([_md_cell(name)] if first else []) + [cell(row) for _, cell in columns]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _md_cell(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|")


_CSV_FIELDS = (
    "section",
    "name",
    "requests",
    "errors",
    "error_rate",
    "p50_ms",
    "p95_ms",
    "p99_ms",
    "hits",
    "hit_rate",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "saved_usd",
    "runs",
    "own_calls",
    "duration_p50_ms",
    "duration_p95_ms",
    "duration_total_ms",
)


def _csv(report: Report) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, _CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerow(_group_csv("overall", report.overall))
    for dimension, rows in report.groups.items():
        for row in rows:
            writer.writerow(_group_csv(dimension, row))
    for op in report.operations or []:
        writer.writerow(_operation_csv(op))
    return out.getvalue()


def _group_csv(section: str, row: GroupRow) -> dict[str, Any]:
    data = asdict(row)
    name = data.pop("name")
    return {"section": section, "name": "all" if section == "overall" else name, **data}


def _operation_csv(row: OperationRow) -> dict[str, Any]:
    return {
        "section": "operation",
        "name": row.operation,
        "requests": row.calls,
        "errors": row.errors,
        "error_rate": row.errors / row.calls if row.calls else 0.0,
        "hits": row.hits,
        "hit_rate": row.hit_rate,
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "cost_usd": row.cost_usd,
        "saved_usd": row.saved_usd,
        "runs": row.runs,
        "own_calls": row.own_calls,
        "duration_p50_ms": row.duration_p50_ms,
        "duration_p95_ms": row.duration_p95_ms,
        "duration_total_ms": row.duration_total_ms if row.runs else None,
    }
