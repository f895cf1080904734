"""``slipstream report`` against a request log written by a real pipeline (sim provider, virtual keys, tracked
blocks and gateway-named operations), read back through the real CLI in every format."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import math
import sqlite3
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from click.testing import CliRunner, Result

from slipstream import track
from slipstream.cli import main
from slipstream.config import parse_config
from slipstream.gateway.edge import Edge
from slipstream.observe.record import OperationRecord, RequestRecord
from slipstream.observe.report import parse_window
from slipstream.observe.requestlog import RequestLog
from slipstream.pipeline import Pipeline

CONFIG = """
keys:
  - {{key: sk-a, name: team-a}}
  - {{key: sk-b, name: team-b}}
cache: {{sqlite: {{path: {dir}/cache.db}}}}
observe: {{request_log: {{path: {dir}/requests.db}}}}
model_groups:
  fast:
    retries: {{max_attempts: 1}}
    deployments: [{{provider: sim, model: f, name: fast-1, price: {{input: 1.0, output: 2.0}}}}]
  smart:
    retries: {{max_attempts: 1}}
    deployments: [{{provider: sim, model: s, name: smart-1, price: {{input: 10.0, output: 30.0}}}}]
"""
OLD = 3 * 3600  # seconds: the age of the rows only a wide window includes


@dataclass
class Log:
    db: Path
    config: Path
    cycle_ms: float  # the tracked block's own duration, as the span measured it


async def _write_log(folder: Path) -> float:
    config_file = folder / "slipstream.yaml"
    pipeline = Pipeline(parse_config(config_file.read_text(), environ={}))
    edge = Edge(pipeline)

    async def chat(key: str, model: str, text: str, **headers: str) -> int:
        body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": text}]}
        if headers.pop("fault", None):
            body["sim"] = {"fault": "500"}
            headers["cache-control"] = "no-cache"
        headers["authorization"] = f"Bearer {key}"
        response = await edge.handle("POST", "/v1/chat/completions", headers, orjson.dumps(body))
        return response.status

    try:
        with track("cycle") as cycle:
            with track("propose"):
                assert await chat("sk-a", "fast", "idea") == 200
                assert await chat("sk-a", "fast", "idea") == 200  # a hit
            with track("validate"):
                assert await chat("sk-a", "smart", "check it") == 200
            assert await chat("sk-a", "fast", "wrap up") == 200
        named = {"x-slipstream-operation": "nightly/q1"}
        assert await chat("sk-b", "smart", "question one", **named) == 200
        assert await chat("sk-b", "smart", "question two", **named) == 200
        assert await chat("sk-b", "fast", "broken", fault="1", **named) == 502
        assert await chat("sk-b", "fast", "untracked") == 200
    finally:
        await pipeline.aclose()
    assert cycle.duration_ms is not None
    # Older rows, as an earlier run would have left them.
    old = RequestLog(folder / "requests.db")
    now = time.time()
    old.record(RequestRecord(ts=now - OLD, group="fast", status=200, latency_ms=5.0, key_name="team-a"))
    old.record_operation(
        OperationRecord(ts=now - OLD, operation="cycle", parent=None, duration_ms=7.0, calls=1)
    )
    old.close(timeout=10)
    return cycle.duration_ms


@pytest.fixture(scope="module")
def log(tmp_path_factory: pytest.TempPathFactory) -> Log:
    folder = tmp_path_factory.mktemp("report")
    config = folder / "slipstream.yaml"
    config.write_text(CONFIG.format(dir=folder))
    cycle_ms = asyncio.run(_write_log(folder))
    return Log(folder / "requests.db", config, cycle_ms)


def _run(*args: str) -> Result:
    return CliRunner().invoke(main, ["report", *args])


def _json(*args: str) -> dict[str, Any]:
    result = _run(*args, "--format", "json")
    assert result.exit_code == 0, result.output
    data: dict[str, Any] = json.loads(result.output)
    return data


def _nearest_rank(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


def _requests(db: Path, since: float) -> list[dict[str, Any]]:
    conn = sqlite3.connect(db)
    conn.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in conn.execute("SELECT * FROM requests WHERE ts >= ?", (since,))]
    finally:
        conn.close()


# ---------------------------------------------------------------------------------------------- the numbers
def test_json_totals_match_the_rows_of_the_request_log(log: Log):
    report = _json("--db", str(log.db), "--window", "30m")
    rows = _requests(log.db, report["since"])
    assert len(rows) == 8  # the old row is outside the window
    overall = report["overall"]
    assert overall["requests"] == 8 and overall["errors"] == 1
    assert overall["error_rate"] == pytest.approx(1 / 8)
    assert overall["hits"] == 1 and overall["hit_rate"] == pytest.approx(
        1 / 8
    )  # every call looked the cache up
    assert overall["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in rows)) and overall["cost_usd"] > 0
    assert (
        overall["saved_usd"] == pytest.approx(sum(r["saved_usd"] for r in rows)) and overall["saved_usd"] > 0
    )
    assert overall["prompt_tokens"] == sum(r["prompt_tokens"] for r in rows)
    latencies = [r["latency_ms"] for r in rows]
    for p in (50, 95, 99):
        assert overall[f"p{p}_ms"] == _nearest_rank(latencies, p)

    by_model = {g["name"]: g for g in report["groups"]["model"]}
    assert {m: g["requests"] for m, g in by_model.items()} == {"fast": 5, "smart": 3}
    assert by_model["fast"]["errors"] == 1 and by_model["smart"]["errors"] == 0
    smart = [r for r in rows if r["model"] == "smart"]
    assert by_model["smart"]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in smart))
    assert by_model["smart"]["p50_ms"] == _nearest_rank([r["latency_ms"] for r in smart], 50)
    assert [g["name"] for g in report["groups"]["model"]] == ["fast", "smart"]  # busiest first

    assert {g["name"]: g["requests"] for g in report["groups"]["key"]} == {"team-a": 4, "team-b": 4}
    by_deployment = {g["name"]: g["requests"] for g in report["groups"]["deployment"]}
    # The 502 is logged against the deployment it failed on; the hit went to none.
    assert by_deployment == {"fast-1": 4, "smart-1": 3, None: 1}


def test_operations_roll_children_up_and_show_runs_and_durations(log: Log):
    ops = _json("--db", str(log.db), "--window", "30m")["operations"]
    assert [o["operation"] for o in ops] == [
        "cycle",
        "cycle/propose",
        "cycle/validate",
        "nightly",
        "nightly/q1",
        None,  # the untracked calls
    ]
    table = {o["operation"]: o for o in ops}
    shape = {
        name: (o["runs"], o["calls"], o["own_calls"], o["hits"], o["errors"]) for name, o in table.items()
    }
    assert shape == {
        "cycle": (1, 4, 1, 1, 0),
        "cycle/propose": (1, 2, 2, 1, 0),
        "cycle/validate": (1, 1, 1, 0, 0),
        "nightly": (0, 3, 0, 0, 1),  # named by gateway clients: calls, but no timed runs
        "nightly/q1": (0, 3, 3, 0, 1),
        None: (0, 1, 1, 0, 0),
    }
    cycle = table["cycle"]
    assert cycle["duration_total_ms"] == pytest.approx(log.cycle_ms)
    assert cycle["duration_p50_ms"] == pytest.approx(log.cycle_ms)
    assert table["nightly"]["duration_p50_ms"] is None
    children = table["cycle/propose"]["cost_usd"] + table["cycle/validate"]["cost_usd"]
    assert cycle["cost_usd"] > children > 0  # the parent's own call is in its total too

    wide = {o["operation"]: o for o in _json("--db", str(log.db), "--window", "4h")["operations"]}
    assert wide["cycle"]["runs"] == 2 and wide["cycle"]["duration_total_ms"] == pytest.approx(
        log.cycle_ms + 7.0
    )
    assert wide[None]["calls"] == 2


def test_window_forms_and_sections(log: Log):
    assert _json("--db", str(log.db), "--window", "240")["overall"]["requests"] == 9
    assert _json("--db", str(log.db), "--window", "4h")["overall"]["requests"] == 9
    assert _json("--db", str(log.db), "--window", "1d")["window_minutes"] == 1440
    only = _json("--db", str(log.db), "--by", "model")
    assert list(only["groups"]) == ["model"] and only["operations"] is None
    assert parse_window("30m") == 30 and parse_window(" 1.5h ") == 90 and parse_window("7D") == 7 * 1440
    for bad in ("", "0", "-5m", "3w", "h"):
        with pytest.raises(ValueError):
            parse_window(bad)


def test_config_names_the_request_log(log: Log):
    report = _json("--config", str(log.config))
    assert report["overall"]["requests"] == 9 and Path(report["db"]) == log.db


# ---------------------------------------------------------------------------------------------- the formats
def _cells(output: str, first: str, sep: str) -> list[str]:
    """The cells of the table row whose first cell is ``first``."""
    for line in output.splitlines():
        cells = [c.strip() for c in line.strip().strip(sep).split(sep)]
        if cells and cells[0] == first:
            return cells
    raise AssertionError(f"no row {first!r} in:\n{output}")


def test_text_is_rich_tables(log: Log):
    result = _run("--db", str(log.db), "--window", "30m")
    assert result.exit_code == 0, result.output
    out = result.output
    for title in ("Overall", "By model", "By deployment", "By key", "By operation"):
        assert title in out
    assert "┃ operation" in out and "duration p50 ms" in out
    # operation | runs | duration p50 | duration total | calls | own calls | errors | hits | hit rate | ...
    cells = _cells(out, "cycle/propose", "│")
    assert (cells[1], cells[4], cells[5], cells[7], cells[8]) == ("1", "2", "2", "1", "50.0%")
    assert _cells(out, "nightly", "│")[1:3] == ["0", "-"]
    # model | requests | errors | error rate
    assert _cells(out, "fast", "│")[1:4] == ["5", "1", "20.0%"]
    assert _cells(out, "team-b", "│")[1] == "4"
    assert "\x1b[" not in out  # no colour codes in a pipe


def test_markdown_tables(log: Log):
    result = _run("--db", str(log.db), "--window", "30m", "--format", "markdown")
    assert result.exit_code == 0, result.output
    out = result.output
    assert out.startswith("## slipstream report: the last 30m")
    assert "### By operation" in out and "| operation | runs |" in out and "|---|---:|" in out
    cycle = _cells(out, "cycle", "|")
    assert (cycle[1], cycle[4], cycle[5]) == ("1", "4", "1")
    assert float(cycle[2].replace(",", "")) == pytest.approx(log.cycle_ms, abs=0.1)
    assert _cells(out, "(untracked)", "|")[4] == "1"
    assert _cells(out, "smart-1", "|")[1] == "3"


def test_csv_is_one_table_for_spreadsheets(log: Log):
    result = _run("--db", str(log.db), "--window", "30m", "--format", "csv")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(io.StringIO(result.output)))
    sections = [r["section"] for r in rows]
    assert sections[0] == "overall" and set(sections) == {
        "overall",
        "model",
        "deployment",
        "key",
        "operation",
    }
    by = {(r["section"], r["name"]): r for r in rows}
    assert by[("overall", "all")]["requests"] == "8"
    assert by[("key", "team-a")]["requests"] == "4"
    assert by[("deployment", "")]["hits"] == "1"  # requests no deployment answered: an empty name
    cycle = by[("operation", "cycle")]
    assert (cycle["requests"], cycle["own_calls"], cycle["runs"]) == ("4", "1", "1")
    assert float(cycle["duration_total_ms"]) == pytest.approx(log.cycle_ms)
    assert by[("operation", "nightly")]["duration_total_ms"] == ""
    assert by[("model", "smart")]["p50_ms"] != "" and by[("model", "smart")]["runs"] == ""


def test_names_from_clients_are_shown_as_they_are(tmp_path: Path):
    db = tmp_path / "requests.db"
    log = RequestLog(db)
    for name in ("[bold]loud[/bold]", "a|b"):
        log.record(RequestRecord(ts=time.time(), group="fast", status=200, latency_ms=1.0, operation=name))
    log.close(timeout=10)
    text = _run("--db", str(db)).output
    assert "[bold]loud[/bold]" in text
    markdown = _run("--db", str(db), "--format", "markdown").output
    assert "| a\\|b |" in markdown


def test_hits_are_exact_and_semantic_answers_over_cache_lookups(tmp_path: Path):
    db = tmp_path / "requests.db"
    log = RequestLog(db)
    for status in ("hit", "semantic-hit", "miss", "refresh", "bypass", "off"):
        log.record(
            RequestRecord(ts=time.time(), group="fast", status=200, latency_ms=1.0, cache_status=status)
        )
    log.close(timeout=10)
    overall = _json("--db", str(db))["overall"]
    assert overall["hits"] == 2 and overall["hit_rate"] == pytest.approx(2 / 4)


# ---------------------------------------------------------------------------------------------- edges
def test_an_empty_window_reports_zeros(tmp_path: Path):
    db = tmp_path / "requests.db"
    RequestLog(db).close(timeout=10)
    report = _json("--db", str(db))
    assert report["overall"]["requests"] == 0 and report["overall"]["p50_ms"] is None
    assert report["groups"]["model"] == [] and report["operations"] == []
    text = _run("--db", str(db)).output
    assert "By model: no requests" in text and "By operation: no tracked operations" in text


def test_a_log_written_before_operations_existed_still_reports(tmp_path: Path):
    db = tmp_path / "requests.db"
    log = RequestLog(db)
    log.record(RequestRecord(ts=time.time(), group="fast", status=200, latency_ms=1.0, operation="job"))
    log.close(timeout=10)
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE operations")
    conn.commit()
    conn.close()
    ops = _json("--db", str(db))["operations"]
    assert [(o["operation"], o["runs"], o["calls"]) for o in ops] == [("job", 0, 1)]


def test_bad_input_gets_a_clear_error(tmp_path: Path, log: Log):
    missing = _run("--db", str(tmp_path / "nope.db"))
    assert missing.exit_code == 1 and "no request log at" in missing.output
    for args, hint in (
        (["--window", "soon"], "--window"),
        (["--by", "model,colour"], "--by"),
        (["--format", "xml"], "--format"),
        (["--config", str(log.config)], "not both"),
    ):
        result = _run("--db", str(log.db), *args)
        assert result.exit_code == 2 and hint in result.output, result.output
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not a database" * 100)
    result = _run("--db", str(junk))
    assert result.exit_code == 1 and "cannot read the request log" in result.output
    off = tmp_path / "off.yaml"
    off.write_text(
        "observe: {request_log: {enabled: false}}\n"
        "model_groups: {sim: {deployments: [{provider: sim, model: s}]}}\n"
    )
    result = _run("--config", str(off))
    assert result.exit_code == 2 and "keeps no request log" in result.output
    assert "Traceback" not in result.output


def test_the_installed_command_runs(log: Log):
    done = subprocess.run(
        [sys.executable, "-m", "slipstream", "report", "--db", str(log.db), "--format", "csv", "--by", "key"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("section,name,requests,errors")
    assert "key,team-a,5," in done.stdout  # the default window, 24h, holds the old row too
