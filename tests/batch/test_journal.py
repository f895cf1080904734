"""The output file as the journal: finished ids, a torn tail cut off, damage refused, one writer at a time."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from slipstream.batch.journal import Journal, JournalError, read_done, scan_journal


def _line(custom_id: str) -> bytes:
    return json.dumps({"custom_id": custom_id, "response": {"status_code": 200}}).encode() + b"\n"


def test_scan_counts_whole_lines_and_measures_a_torn_tail():
    torn = _line("c")[:17]
    scan = scan_journal([_line("a"), _line("b"), torn])
    assert scan.done == {"a", "b"}
    assert (scan.lines, scan.valid_bytes, scan.torn_bytes) == (2, len(_line("a") + _line("b")), 17)


def test_a_malformed_complete_line_is_refused_with_its_number():
    with pytest.raises(JournalError, match=r"out.jsonl:2: not a result line"):
        scan_journal([_line("a"), b"\x00\x00garbage\n", _line("b")], source="out.jsonl")


def test_open_cuts_off_a_torn_last_line_and_appends_after_it(tmp_path: Path):
    path = tmp_path / "out.jsonl"
    path.write_bytes(_line("a") + _line("b") + _line("c")[:-9])
    journal = Journal.open(path)
    try:
        assert journal.done == {"a", "b"}
        assert journal.repaired_bytes == len(_line("c")) - 9
        assert path.read_bytes() == _line("a") + _line("b")
        journal.append(_line("c"))
    finally:
        journal.close()
    assert [json.loads(line)["custom_id"] for line in path.read_text().splitlines()] == ["a", "b", "c"]


def test_read_done_leaves_the_file_alone(tmp_path: Path):
    path = tmp_path / "out.jsonl"
    content = _line("a") + b'{"custom_id": "b", "resp'
    path.write_bytes(content)
    assert read_done(path).done == {"a"}
    assert path.read_bytes() == content
    assert read_done(tmp_path / "missing.jsonl").done == set()


def test_one_writer_at_a_time(tmp_path: Path):
    path = tmp_path / "out.jsonl"
    first = Journal.open(path)
    try:
        with pytest.raises(JournalError, match="another process is writing this file"):
            Journal.open(path)
    finally:
        first.close()
    Journal.open(path).close()  # the lock went with the first journal
