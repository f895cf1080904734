"""The Gemini adapter: translation both ways against fixtures, then end to end against a local HTTP server."""

from __future__ import annotations

import array
import base64
import copy
import json
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from slipstream.errors import InvalidRequest, UpstreamProtocolError, UpstreamStatusError
from slipstream.providers import get_provider_class
from slipstream.providers.base import Deployment
from slipstream.providers.gemini import (
    GeminiProvider,
    GeminiStream,
    clean_schema,
    from_embed_response,
    from_gemini_response,
    to_embed_request,
    to_gemini_request,
)
from slipstream.providers.http import HttpPool
from slipstream.streams import StreamAssembler
from slipstream.types import ChatRequest, Chunk, EmbeddingsRequest

FIXTURES = Path(__file__).parent / "fixtures" / "gemini"
MODEL = "gemini-2.5-flash"
CREATED = 1700000000
FAKE_ID = "chatcmpl-fixture"
CHAT_CASES = [
    "text",
    "system_multiturn",
    "image",
    "tools_call",
    "tools_result",
    "max_tokens",
    "prompt_blocked",
    "safety_candidate",
    "cached_usage",
]
STREAM_CASES = ["stream_text", "stream_function_call"]


def load(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text())


def sse_events(name: str) -> list[dict[str, Any]]:
    text = (
        (FIXTURES / name).read_bytes().decode()
    )  # bytes: read_text() would turn the \r\n separators into \n
    return [json.loads(block[len("data: ") :]) for block in text.split("\r\n\r\n") if block]


def translate_stream(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    stream = GeminiStream(model=MODEL, created=CREATED, fallback_id=FAKE_ID)
    chunks = [chunk for event in events for chunk in stream.feed(event)]
    return chunks + stream.finish()


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": text}


# ---------------------------------------------------------------------------------------------- request
@pytest.mark.parametrize("case", CHAT_CASES + STREAM_CASES)
def test_request_translation(case: str) -> None:
    assert to_gemini_request(load(f"{case}.openai_request.json")) == load(f"{case}.gemini_request.json")


@pytest.mark.parametrize(
    ("tool_choice", "expected"),
    [
        ("auto", {"mode": "AUTO"}),
        ("none", {"mode": "NONE"}),
        ("required", {"mode": "ANY"}),
        ({"type": "function", "function": {"name": "f"}}, {"mode": "ANY", "allowedFunctionNames": ["f"]}),
    ],
)
def test_tool_choice(tool_choice: Any, expected: dict[str, Any]) -> None:
    tools = [{"type": "function", "function": {"name": "f"}}]
    body = {"messages": [user("hi")], "tools": tools, "tool_choice": tool_choice}
    assert to_gemini_request(body)["toolConfig"] == {"functionCallingConfig": expected}


def test_tool_choice_unknown_is_rejected() -> None:
    body = {
        "messages": [user("hi")],
        "tools": [{"type": "function", "function": {"name": "f"}}],
        "tool_choice": "any",
    }
    with pytest.raises(InvalidRequest) as info:
        to_gemini_request(body)
    assert info.value.param == "tool_choice"


def test_no_tools_means_no_tool_config() -> None:
    assert "toolConfig" not in to_gemini_request({"messages": [user("hi")], "tool_choice": "none"})


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    body = {"messages": [user("hi")], "max_tokens": 10, "max_completion_tokens": 99}
    assert to_gemini_request(body)["generationConfig"] == {"maxOutputTokens": 99}


@pytest.mark.parametrize(
    ("response_format", "expected"),
    [
        ({"type": "text"}, None),
        ({"type": "json_object"}, {"responseMimeType": "application/json"}),
        ({"type": "json_schema", "json_schema": {"name": "x"}}, {"responseMimeType": "application/json"}),
    ],
)
def test_response_format(response_format: dict[str, Any], expected: dict[str, Any] | None) -> None:
    out = to_gemini_request({"messages": [user("hi")], "response_format": response_format})
    assert out.get("generationConfig") == expected


def test_stop_list_and_unknown_fields() -> None:
    body = {
        "messages": [user("hi")],
        "stop": ["a", "b"],
        "user": "u1",
        "logit_bias": {"1": 2},
        "metadata": {},
    }
    assert to_gemini_request(body)["generationConfig"] == {"stopSequences": ["a", "b"]}


def test_audio_and_file_parts_become_inline_data() -> None:
    content = [
        {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "mp3"}},
        {"type": "file", "file": {"file_data": "data:application/pdf;base64,JVBERi0=", "filename": "a.pdf"}},
        {"type": "image_url", "image_url": {"url": "gs://bucket/scan.tiff"}},
    ]
    parts = to_gemini_request({"messages": [{"role": "user", "content": content}]})["contents"][0]["parts"]
    assert parts == [
        {"inlineData": {"mimeType": "audio/mp3", "data": "UklGRg=="}},
        {"inlineData": {"mimeType": "application/pdf", "data": "JVBERi0="}},
        {"fileData": {"mimeType": "image/tiff", "fileUri": "gs://bucket/scan.tiff"}},
    ]


def test_assistant_text_and_tool_calls_share_one_model_turn() -> None:
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": ""}}
    messages = [user("hi"), {"role": "assistant", "content": "Let me check.", "tool_calls": [call]}]
    contents = to_gemini_request({"messages": messages})["contents"]
    assert contents[1] == {
        "role": "model",
        "parts": [{"text": "Let me check."}, {"functionCall": {"name": "f", "args": {}}}],
    }


def test_tool_result_names_the_latest_call_with_that_id() -> None:
    def turn(name: str) -> dict[str, Any]:
        call = {"id": "call_0_0", "type": "function", "function": {"name": name, "arguments": "{}"}}
        return {"role": "assistant", "tool_calls": [call]}

    messages = [
        user("go"),
        turn("first"),
        {"role": "tool", "tool_call_id": "call_0_0", "content": "[1, 2]"},
        turn("second"),
        {"role": "tool", "tool_call_id": "call_0_0", "content": "ok"},
    ]
    contents = to_gemini_request({"messages": messages})["contents"]
    responses = [p["functionResponse"] for c in contents for p in c["parts"] if "functionResponse" in p]
    # a JSON array is not an object: it is wrapped like plain text
    assert responses == [
        {"name": "first", "response": {"content": "[1, 2]"}},
        {"name": "second", "response": {"content": "ok"}},
    ]


def test_legacy_function_message_uses_its_name() -> None:
    messages = [user("go"), {"role": "function", "name": "lookup", "content": '{"found": true}'}]
    parts = to_gemini_request({"messages": messages})["contents"][0]["parts"]
    assert parts[1] == {"functionResponse": {"name": "lookup", "response": {"found": True}}}


def test_function_without_parameters_declares_none() -> None:
    tools = [{"type": "function", "function": {"name": "now", "parameters": {}}}]
    assert to_gemini_request({"messages": [user("hi")], "tools": tools})["tools"] == [
        {"functionDeclarations": [{"name": "now"}]}
    ]


@pytest.mark.parametrize(
    ("messages", "param"),
    [
        ([{"role": "tool", "tool_call_id": "nope", "content": "x"}], "messages[0].tool_call_id"),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "{oops"}}],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            [
                {
                    "role": "assistant",
                    "tool_calls": [{"id": "c", "function": {"name": "f", "arguments": "[1]"}}],
                }
            ],
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "video"}]}],
            "messages[0].content[1].type",
        ),
        (
            [
                {
                    "role": "user",
                    "content": [{"type": "image_url", "image_url": {"url": "data:image/png,raw"}}],
                }
            ],
            "messages[0].content[0].image_url.url",
        ),
        (
            [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://host/a.png"}}]}],
            "messages[0].content[0].image_url.url",
        ),
        (
            [{"role": "system", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}],
            "messages[0].content[0].type",
        ),
        ([{"role": "critic", "content": "x"}], "messages[0].role"),
    ],
)
def test_bad_messages_name_the_field(messages: list[dict[str, Any]], param: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        to_gemini_request({"messages": messages})
    assert info.value.param == param


def test_non_function_tool_is_rejected() -> None:
    with pytest.raises(InvalidRequest) as info:
        to_gemini_request({"messages": [user("hi")], "tools": [{"type": "web_search"}]})
    assert info.value.param == "tools[0].type"


def test_clean_schema_keeps_property_names_and_survives_recursion() -> None:
    schema = {
        "type": "object",
        "properties": {
            "type": {"type": "string", "const": "node"},
            "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
            "kind": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
            "tag": {"type": ["string", "integer"]},
        },
        "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
    }
    cleaned = clean_schema(schema)
    props = cleaned["properties"]
    assert props["type"] == {"type": "string", "enum": ["node"]}
    assert props["kind"] == {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    assert props["tag"] == {"anyOf": [{"type": "string"}, {"type": "integer"}]}
    node = props["children"]["items"]
    depth = 0
    while "properties" in node:  # inlined a bounded number of times, then a bare object
        node = node["properties"]["next"]
        depth += 1
    assert node == {"type": "object"}
    assert 1 < depth <= 10
    assert "$defs" not in cleaned


# ---------------------------------------------------------------------------------------------- response
@pytest.mark.parametrize("case", CHAT_CASES)
def test_response_translation(case: str) -> None:
    reply = from_gemini_response(
        load(f"{case}.gemini_response.json"), model=MODEL, created=CREATED, fallback_id=FAKE_ID
    )
    assert reply == load(f"{case}.openai_response.json")


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("STOP", "stop"),
        ("MAX_TOKENS", "length"),
        ("SAFETY", "content_filter"),
        ("RECITATION", "content_filter"),
        ("BLOCKLIST", "content_filter"),
        ("PROHIBITED_CONTENT", "content_filter"),
        ("SPII", "content_filter"),
        ("OTHER", "stop"),
        ("MALFORMED_FUNCTION_CALL", "stop"),
        (None, "stop"),
    ],
)
def test_finish_reasons(reason: str | None, expected: str) -> None:
    candidate: dict[str, Any] = {"content": {"role": "model", "parts": [{"text": "x"}]}}
    if reason:
        candidate["finishReason"] = reason
    reply = from_gemini_response(
        {"candidates": [candidate]}, model=MODEL, created=CREATED, fallback_id=FAKE_ID
    )
    assert reply["choices"][0]["finish_reason"] == expected


def test_no_candidates_and_no_block_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        from_gemini_response({"usageMetadata": {}}, model=MODEL, created=CREATED, fallback_id=FAKE_ID)


def test_missing_usage_is_zero() -> None:
    data = {"candidates": [{"content": {"parts": [{"text": "x"}]}, "finishReason": "STOP"}]}
    reply = from_gemini_response(data, model=MODEL, created=CREATED, fallback_id=FAKE_ID)
    assert reply["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}


# ---------------------------------------------------------------------------------------------- streaming
@pytest.mark.parametrize("case", STREAM_CASES)
def test_stream_translation(case: str) -> None:
    assert translate_stream(sse_events(f"{case}.sse")) == load(f"{case}.openai_chunks.json")


def test_streamed_tool_calls_assemble_like_a_complete_reply() -> None:
    assembler = StreamAssembler()
    for chunk in translate_stream(sse_events("stream_function_call.sse")):
        assembler.feed(Chunk(chunk))
    reply = assembler.reply()
    expected = load("tools_call.openai_response.json")["choices"][0]
    assert reply["choices"][0]["message"]["tool_calls"] == expected["message"]["tool_calls"]
    assert reply["choices"][0]["finish_reason"] == "tool_calls"
    assert assembler.finished


def test_stream_cut_before_finish_raises() -> None:
    stream = GeminiStream(model=MODEL, created=CREATED, fallback_id=FAKE_ID)
    for event in sse_events("stream_cut.sse"):
        stream.feed(event)
    with pytest.raises(UpstreamProtocolError):
        stream.finish()


def test_empty_stream_raises() -> None:
    with pytest.raises(UpstreamProtocolError):
        GeminiStream(model=MODEL, created=CREATED, fallback_id=FAKE_ID).finish()


def test_repeated_finish_reason_gives_one_finish_chunk_after_all_text() -> None:
    # Older models put finishReason STOP on every event (Google's streaming quickstart output shows it).
    events = [
        {
            "candidates": [
                {"content": {"parts": [{"text": piece}], "role": "model"}, "finishReason": "STOP", "index": 0}
            ]
        }
        for piece in ("In the ", "quaint ", "cottage")
    ]
    chunks = translate_stream(events)
    finishes = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finishes == [None, None, None, None, "stop"]
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == "In the quaint cottage"
    assert {c["id"] for c in chunks} == {FAKE_ID}  # no responseId: the made-up id, on every chunk
    assert not any("usage" in c for c in chunks)  # no usageMetadata at all: no usage chunk


def test_stream_blocked_prompt_finishes_with_content_filter() -> None:
    chunks = translate_stream([load("prompt_blocked.gemini_response.json")])
    assert [c["choices"][0]["finish_reason"] for c in chunks[:2]] == [None, "content_filter"]
    assert chunks[-1]["usage"]["prompt_tokens"] == 9


def test_stream_error_event_raises_with_upstream_status() -> None:
    stream = GeminiStream(model=MODEL, created=CREATED, fallback_id=FAKE_ID)
    with pytest.raises(UpstreamStatusError) as info:
        stream.feed(load("error_429.json"))
    assert info.value.status == 429
    assert "exceeded your current quota" in info.value.message


def test_stream_two_candidates_each_finish() -> None:
    events = [
        {
            "candidates": [
                {"content": {"parts": [{"text": "A"}]}, "index": 0},
                {"content": {"parts": [{"text": "B"}]}, "finishReason": "MAX_TOKENS", "index": 1},
            ]
        },
        {"candidates": [{"content": {"parts": [{"text": "!"}]}, "finishReason": "STOP", "index": 0}]},
    ]
    chunks = translate_stream(events)
    finish = {c["choices"][0]["index"]: c["choices"][0]["finish_reason"] for c in chunks if c["choices"]}
    assert finish == {0: "stop", 1: "length"}


# ---------------------------------------------------------------------------------------------- embeddings
def test_embed_request_translation() -> None:
    body = load("embeddings.openai_request.json")
    assert to_embed_request(body, "gemini-embedding-001") == load("embeddings.gemini_request.json")


def test_embed_single_string_without_dimensions() -> None:
    assert to_embed_request({"input": "hi"}, "models/text-embedding-004") == {
        "requests": [{"model": "models/text-embedding-004", "content": {"parts": [{"text": "hi"}]}}]
    }


@pytest.mark.parametrize("bad_input", [[1, 2, 3], [[1, 2], [3]], [], ["ok", 5], None])
def test_embed_rejects_token_arrays(bad_input: Any) -> None:
    with pytest.raises(InvalidRequest) as info:
        to_embed_request({"input": bad_input}, "gemini-embedding-001")
    assert info.value.param == "input"


def test_embed_response_translation() -> None:
    data = load("embeddings.gemini_response.json")
    out = from_embed_response(data, model="gemini-embedding-001", count=2)
    assert out == load("embeddings.openai_response.json")


def test_embed_response_base64() -> None:
    data = load("embeddings.gemini_response.json")
    out = from_embed_response(data, model="gemini-embedding-001", count=2, encoding_format="base64")
    decoded = [array.array("f", base64.b64decode(item["embedding"])).tolist() for item in out["data"]]
    assert decoded == [e["values"] for e in data["embeddings"]]


def test_embed_response_count_mismatch_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        from_embed_response({"embeddings": [{"values": [1.0]}]}, model="m", count=2)


# ---------------------------------------------------------------------------------------------- HTTP
@dataclass
class Seen:
    path_qs: str
    headers: Mapping[str, str]  # case-insensitive, as HTTP headers are
    body: Any


@dataclass
class FakeGemini:
    """A local Gemini: replies to each path with a canned answer and records what it was sent."""

    url: str = ""
    replies: dict[str, tuple[int, str, bytes]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)

    def reply(
        self, path_qs: str, body: bytes, *, status: int = 200, content_type: str = "application/json"
    ) -> None:
        self.replies[path_qs] = (status, content_type, body)

    async def handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        self.seen.append(Seen(request.path_qs, request.headers.copy(), json.loads(raw)))
        if request.path_qs not in self.replies:
            return web.json_response(
                {"error": {"code": 404, "message": f"no reply for {request.path_qs}"}}, status=404
            )
        status, content_type, body = self.replies[request.path_qs]
        return web.Response(status=status, body=body, content_type=content_type)


@pytest.fixture
async def upstream() -> AsyncIterator[FakeGemini]:
    fake = FakeGemini()
    app = web.Application()
    app.router.add_post("/{tail:.*}", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    yield fake
    await runner.cleanup()


@pytest.fixture
async def pool() -> AsyncIterator[HttpPool]:
    http = HttpPool()
    yield http
    await http.aclose()


def provider(upstream: FakeGemini, pool: HttpPool, model: str = MODEL, **options: Any) -> GeminiProvider:
    deployment = Deployment(
        provider="gemini", model=model, base_url=upstream.url, api_key="test-key", options=options
    )
    return GeminiProvider(deployment, pool)


def assert_sent(upstream: FakeGemini, path_qs: str, body: Any) -> None:
    assert len(upstream.seen) == 1
    seen = upstream.seen[0]
    assert seen.path_qs == path_qs
    assert seen.headers["x-goog-api-key"] == "test-key"
    assert "test-key" not in seen.path_qs  # the key travels in a header, never in the URL
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.body == body


def with_made_up_fields(expected: dict[str, Any], actual: dict[str, Any]) -> dict[str, Any]:
    """``expected`` with what the adapter makes up at run time (time, random id) taken from ``actual``."""
    expected = copy.deepcopy(expected)
    expected["created"] = actual["created"]
    if expected["id"] == FAKE_ID:
        assert actual["id"].startswith("chatcmpl-") and actual["id"] != FAKE_ID
        expected["id"] = actual["id"]
    return expected


def test_registered_under_its_name() -> None:
    assert get_provider_class("gemini") is GeminiProvider


@pytest.mark.parametrize("case", CHAT_CASES)
async def test_complete_end_to_end(case: str, upstream: FakeGemini, pool: HttpPool) -> None:
    path = f"/v1beta/models/{MODEL}:generateContent"
    upstream.reply(path, (FIXTURES / f"{case}.gemini_response.json").read_bytes())
    reply = await provider(upstream, pool).complete(ChatRequest(load(f"{case}.openai_request.json")))
    assert_sent(upstream, path, load(f"{case}.gemini_request.json"))
    assert reply.data == with_made_up_fields(load(f"{case}.openai_response.json"), reply.data)


async def test_api_version_option(upstream: FakeGemini, pool: HttpPool) -> None:
    path = f"/v1/models/{MODEL}:generateContent"
    upstream.reply(path, (FIXTURES / "text.gemini_response.json").read_bytes())
    reply = await provider(upstream, pool, api_version="v1").complete(
        ChatRequest(load("text.openai_request.json"))
    )
    assert upstream.seen[0].path_qs == path
    assert reply.text == "AI learns patterns from data to make predictions."


@pytest.mark.parametrize("case", STREAM_CASES)
async def test_stream_end_to_end(case: str, upstream: FakeGemini, pool: HttpPool) -> None:
    path = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    upstream.reply(path, (FIXTURES / f"{case}.sse").read_bytes(), content_type="text/event-stream")
    chunks = [
        c.data
        async for c in provider(upstream, pool).stream(ChatRequest(load(f"{case}.openai_request.json")))
    ]
    assert_sent(upstream, path, load(f"{case}.gemini_request.json"))
    assert len({(c["id"], c["created"], c["model"], c["object"]) for c in chunks}) == 1
    expected = [{**c, "created": chunks[0]["created"]} for c in load(f"{case}.openai_chunks.json")]
    assert chunks == expected


async def test_stream_cut_raises_after_the_content_it_got(upstream: FakeGemini, pool: HttpPool) -> None:
    path = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    upstream.reply(path, (FIXTURES / "stream_cut.sse").read_bytes(), content_type="text/event-stream")
    got: list[str] = []
    with pytest.raises(UpstreamProtocolError, match="before a finish reason"):
        async for chunk in provider(upstream, pool).stream(
            ChatRequest(load("stream_text.openai_request.json"))
        ):
            got.append(chunk.data["choices"][0]["delta"].get("content", ""))
    assert "".join(got) == "The quick brown"


async def test_stream_bad_json_raises(upstream: FakeGemini, pool: HttpPool) -> None:
    path = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    upstream.reply(path, (FIXTURES / "stream_bad_json.sse").read_bytes(), content_type="text/event-stream")
    got = []
    with pytest.raises(UpstreamProtocolError, match="not JSON"):
        async for chunk in provider(upstream, pool).stream(
            ChatRequest(load("stream_text.openai_request.json"))
        ):
            got.append(chunk)
    assert len(got) == 2  # the role chunk and "The" came through before the garbage


async def test_complete_400(upstream: FakeGemini, pool: HttpPool) -> None:
    upstream.reply(
        f"/v1beta/models/{MODEL}:generateContent", (FIXTURES / "error_400.json").read_bytes(), status=400
    )
    with pytest.raises(UpstreamStatusError) as info:
        await provider(upstream, pool).complete(ChatRequest({"model": MODEL, "messages": []}))
    assert info.value.upstream_status == 400
    assert info.value.status == 400
    assert "contents is not specified" in info.value.message


async def test_complete_429_resource_exhausted(upstream: FakeGemini, pool: HttpPool) -> None:
    upstream.reply(
        f"/v1beta/models/{MODEL}:generateContent", (FIXTURES / "error_429.json").read_bytes(), status=429
    )
    with pytest.raises(UpstreamStatusError) as info:
        await provider(upstream, pool).complete(ChatRequest(load("text.openai_request.json")))
    assert info.value.status == 429
    assert info.value.type == "rate_limit_error"
    assert "You exceeded your current quota" in info.value.message
    assert info.value.retry_after == 39.0  # RetryInfo.retryDelay in the body: Gemini sends no Retry-After


async def test_stream_429_list_wrapped(upstream: FakeGemini, pool: HttpPool) -> None:
    path = f"/v1beta/models/{MODEL}:streamGenerateContent?alt=sse"
    upstream.reply(path, (FIXTURES / "error_429_list.json").read_bytes(), status=429)
    with pytest.raises(UpstreamStatusError) as info:
        async for _ in provider(upstream, pool).stream(ChatRequest(load("stream_text.openai_request.json"))):
            pass
    assert info.value.status == 429
    assert "Resource has been exhausted" in info.value.message


async def test_embed_end_to_end(upstream: FakeGemini, pool: HttpPool) -> None:
    path = "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    upstream.reply(path, (FIXTURES / "embeddings.gemini_response.json").read_bytes())
    gemini = provider(upstream, pool, model="gemini-embedding-001")
    reply = await gemini.embed(EmbeddingsRequest(load("embeddings.openai_request.json")))
    assert_sent(upstream, path, load("embeddings.gemini_request.json"))
    assert reply.data == load("embeddings.openai_response.json")


async def test_embed_base64_end_to_end(upstream: FakeGemini, pool: HttpPool) -> None:
    path = "/v1beta/models/gemini-embedding-001:batchEmbedContents"
    upstream.reply(path, (FIXTURES / "embeddings.gemini_response.json").read_bytes())
    body = {**load("embeddings.openai_request.json"), "encoding_format": "base64"}
    reply = await provider(upstream, pool, model="gemini-embedding-001").embed(EmbeddingsRequest(body))
    vectors = [array.array("f", base64.b64decode(item["embedding"])).tolist() for item in reply.data["data"]]
    assert vectors == [item["embedding"] for item in load("embeddings.openai_response.json")["data"]]


async def test_embed_token_arrays_never_reach_upstream(upstream: FakeGemini, pool: HttpPool) -> None:
    with pytest.raises(InvalidRequest):
        await provider(upstream, pool).embed(EmbeddingsRequest({"model": "m", "input": [[1, 2, 3]]}))
    assert upstream.seen == []
