"""Reading batch files: both line shapes, and every kind of bad line named with its line number and reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from slipstream import InvalidRequest
from slipstream.batch import BatchRequest, Reject, read_batch
from slipstream.batch.reader import parse_request

from .conftest import batch_line, chat_body, write_jsonl


def test_batch_lines_and_bare_bodies(tmp_path: Path):
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [
            batch_line("a", chat_body("one")),
            chat_body("two"),
            "",  # blank lines are skipped but still counted
            batch_line("e", {"model": "sim", "input": "embed me"}, url="/v1/embeddings"),
        ],
    )
    items = list(read_batch(path))
    assert all(isinstance(item, BatchRequest) for item in items)
    assert [(i.index, i.custom_id, i.kind) for i in items if isinstance(i, BatchRequest)] == [
        (1, "a", "chat"),
        (2, "line-2", "chat"),
        (4, "e", "embed"),
    ]


def test_bad_lines_are_rejected_with_line_and_reason(tmp_path: Path):
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [
            chat_body("fine"),
            '{"model": "sim", "messages": [',
            "[1, 2]",
            {"model": "sim"},
            batch_line("x", chat_body("ok")),
            batch_line("x", chat_body("same id")),
            batch_line("s", chat_body("stream", stream=True)),
            batch_line("u", chat_body("url"), url="/v1/completions"),
            {"custom_id": "m", "method": "GET", "url": "/v1/chat/completions", "body": chat_body("m")},
            {"custom_id": "", "body": chat_body("no id")},
            batch_line("b", {"model": "sim", "messages": [{"role": "user", "content": 3}]}),
            {"custom_id": "nb", "url": "/v1/chat/completions"},
        ],
    )
    rejects = {item.line: item for item in read_batch(path) if isinstance(item, Reject)}
    reasons = {line: reject.reason for line, reject in rejects.items()}
    assert sorted(reasons) == [2, 3, 4, 6, 7, 8, 9, 10, 11, 12]
    assert reasons[2].startswith("not valid JSON")
    assert "must be a JSON object" in reasons[3]
    assert reasons[4] == "messages: missing required field 'messages'"
    assert reasons[6] == "duplicate custom_id 'x' (first on line 5)"
    assert reasons[7].startswith("body.stream: a batch request cannot stream")
    assert reasons[8].startswith("url: expected one of /v1/chat/completions, /v1/embeddings")
    assert reasons[9] == "method: expected 'POST', got 'GET'"
    assert reasons[10].startswith("custom_id:")
    assert (
        reasons[11] == "body.messages[0].content: expected a string or an array of content parts, got number"
    )
    assert reasons[12].startswith("body: a batch line needs the request body")
    assert rejects[6].custom_id == "x" and rejects[2].custom_id is None
    assert rejects[2].to_json()["text"] == '{"model": "sim", "messages": ['


def test_a_custom_id_belongs_to_the_first_line_naming_it_even_when_that_line_is_bad(tmp_path: Path):
    path = write_jsonl(
        tmp_path / "in.jsonl",
        [batch_line("line-2", {"model": "sim"}), chat_body("gets line-2 as its id")],
    )
    first, second = read_batch(path)
    assert isinstance(first, Reject) and "messages" in first.reason
    assert isinstance(second, Reject) and second.reason == "duplicate custom_id 'line-2' (first on line 1)"


def test_invalid_utf8_is_a_reject(tmp_path: Path):
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"model": "sim", "messages": [{"role": "user", "content": "\xff"}]}\n')
    (item,) = read_batch(path)
    assert isinstance(item, Reject) and item.reason.startswith("not valid UTF-8")


def test_parse_request_raises_naming_the_field():
    request = parse_request(chat_body("hi"), 0, "request-0")
    assert request.custom_id == "request-0" and request.request.model == "sim"
    with pytest.raises(InvalidRequest) as info:
        parse_request(batch_line("a", {"model": "sim", "messages": []}), 0, "request-0")
    assert info.value.param == "body.messages"
