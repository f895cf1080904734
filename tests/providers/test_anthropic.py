"""The Anthropic adapter: pure translation against fixtures, then end to end against a local server.

Fixtures in ``fixtures/anthropic/`` follow Anthropic's published request, response and streaming shapes; each
``<case>.json`` holds the OpenAI request, the Messages API request it must become, Anthropic's answer and the
OpenAI reply (or chunks) that answer must become.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import orjson
import pytest
from aiohttp import web

from slipstream.errors import InvalidRequest, UpstreamProtocolError, UpstreamStatusError
from slipstream.providers import base
from slipstream.providers.anthropic import (
    AnthropicProvider,
    StreamTranslator,
    finish_reason,
    from_messages_response,
    parse_event,
    stream_error,
    to_messages_request,
    usage_from_anthropic,
)
from slipstream.providers.base import Deployment, Timeouts
from slipstream.providers.http import HttpPool, SSEEvent
from slipstream.streams import StreamAssembler
from slipstream.types import ChatRequest, Chunk

FIXTURES = Path(__file__).parent / "fixtures" / "anthropic"
MODEL = "claude-sonnet-4-5-20250929"
CREATED = 1_700_000_000

COMPLETE_CASES = [
    "simple_text",
    "system_multiturn",
    "image_input",
    "tool_call",
    "tool_result",
    "max_tokens",
    "cache_usage",
    "json_schema_thinking",
]
STREAM_CASES = ["stream_text", "stream_tool_use"]


def load(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / f"{name}.json").read_text())
    return data


def sse_text(name: str) -> str:
    return (FIXTURES / f"{name}.sse").read_text()


def sse_events(text: str) -> list[SSEEvent]:
    """The fixture's SSE events, split the way the wire format says (blank line between events)."""
    events = []
    for block in text.strip().split("\n\n"):
        lines = block.splitlines()
        name = next((line[len("event: ") :] for line in lines if line.startswith("event: ")), None)
        data = "\n".join(line[len("data: ") :] for line in lines if line.startswith("data: "))
        events.append(SSEEvent(name, data.encode()))
    return events


def translate(events: list[SSEEvent]) -> tuple[StreamTranslator, list[dict[str, Any]]]:
    translator = StreamTranslator(created=CREATED)
    chunks: list[dict[str, Any]] = []
    for event in events:
        chunks.extend(translator.feed(parse_event(event)))
    return translator, chunks


def openai_body(case: dict[str, Any]) -> dict[str, Any]:
    return ChatRequest(case["openai_request"]).with_model(MODEL)


# ---------------------------------------------------------------------------------------------------- request
@pytest.mark.parametrize("name", COMPLETE_CASES + STREAM_CASES)
def test_request_translation(name: str) -> None:
    case = load(name)
    expected = dict(case["anthropic_request"])
    expected.pop("stream", None)  # the driver adds it; the translation never copies the client's flag
    assert to_messages_request(openai_body(case)) == expected


def test_default_max_tokens_is_configurable() -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
    assert to_messages_request(body, default_max_tokens=1024)["max_tokens"] == 1024


@pytest.mark.parametrize("n", [2, 0])
def test_n_other_than_one_is_rejected(n: int) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "n": n}
    with pytest.raises(InvalidRequest) as caught:
        to_messages_request(body)
    assert caught.value.param == "n"


TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]


@pytest.mark.parametrize(
    ("tool_choice", "parallel", "expected"),
    [
        ("auto", None, {"type": "auto"}),
        ("none", None, {"type": "none"}),
        ("required", None, {"type": "any"}),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            None,
            {"type": "tool", "name": "get_weather"},
        ),
        (
            {"type": "function", "function": {"name": "get_weather"}},
            False,
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        ),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        ("none", False, {"type": "none"}),
        ("auto", True, {"type": "auto"}),
    ],
)
def test_tool_choice(tool_choice: Any, parallel: bool | None, expected: dict[str, Any]) -> None:
    body: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if parallel is not None:
        body["parallel_tool_calls"] = parallel
    assert to_messages_request(body)["tool_choice"] == expected


def test_no_tool_choice_without_tools_or_choice() -> None:
    with_tools = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tools": TOOLS}
    assert "tool_choice" not in to_messages_request(with_tools)
    choice_only = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "tool_choice": "auto"}
    assert "tool_choice" not in to_messages_request(choice_only)


def test_stop_list_and_dropped_formats() -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "stop": ["END", "STOP"],
        "response_format": {"type": "json_object"},
        "temperature": 0.0,
    }
    out = to_messages_request(body)
    assert out["stop_sequences"] == ["END", "STOP"]
    assert out["temperature"] == 0.0
    assert "output_config" not in out


def test_tool_results_open_the_user_turn_they_are_merged_into() -> None:
    body = {
        "model": MODEL,
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "t1", "type": "function", "function": {"name": "f", "arguments": ""}}],
            },
            {"role": "user", "content": "also, hurry"},
            {"role": "tool", "tool_call_id": "t1", "content": "done"},
        ],
    }
    messages = to_messages_request(body)["messages"]
    assert messages[1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "t1", "name": "f", "input": {}}],
    }
    assert messages[2] == {
        "role": "user",
        "content": [
            {"type": "tool_result", "tool_use_id": "t1", "content": "done"},
            {"type": "text", "text": "also, hurry"},
        ],
    }


@pytest.mark.parametrize(
    ("message", "param"),
    [
        (
            {
                "role": "user",
                "content": [{"type": "image_url", "image_url": {"url": "data:image/png,plain"}}],
            },
            "messages[0].content[0].image_url.url",
        ),
        (
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}]},
            "messages[0].content[0].image_url.url",
        ),
        (
            {
                "role": "user",
                "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
            },
            "messages[0].content[0].type",
        ),
        (
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "t", "type": "function", "function": {"name": "f", "arguments": "{nope"}}
                ],
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        (
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "t", "type": "function", "function": {"name": "f", "arguments": "[1]"}}
                ],
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        ({"role": "tool", "content": "x"}, "messages[0].tool_call_id"),
        ({"role": "function", "name": "f", "content": "x"}, "messages[0].role"),
        (
            {"role": "system", "content": [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
            "messages[0].content[0]",
        ),
    ],
)
def test_untranslatable_messages_name_the_field(message: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidRequest) as caught:
        to_messages_request({"model": MODEL, "messages": [message]})
    assert caught.value.param == param


def test_non_function_tools_are_rejected() -> None:
    body = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "hi"}],
        "tools": [{"type": "web_search"}],
    }
    with pytest.raises(InvalidRequest) as caught:
        to_messages_request(body)
    assert caught.value.param == "tools[0].type"


# ---------------------------------------------------------------------------------------------------- reply
@pytest.mark.parametrize("name", COMPLETE_CASES)
def test_response_translation(name: str) -> None:
    case = load(name)
    assert from_messages_response(case["anthropic_response"], created=CREATED) == case["openai_response"]


def test_tool_use_only_reply_has_null_content() -> None:
    data = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": MODEL,
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "f", "input": {"a": [1, 2]}}],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 1, "output_tokens": 2},
    }
    message = from_messages_response(data, created=CREATED)["choices"][0]["message"]
    assert message["content"] is None
    assert message["tool_calls"][0]["function"] == {"name": "f", "arguments": '{"a":[1,2]}'}


def test_a_body_that_is_not_a_message_is_a_protocol_error() -> None:
    with pytest.raises(UpstreamProtocolError):
        from_messages_response({"type": "error", "error": {"message": "x"}}, created=CREATED)


@pytest.mark.parametrize(
    ("stop_reason", "expected"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
        (None, "stop"),
    ],
)
def test_finish_reason(stop_reason: str | None, expected: str) -> None:
    assert finish_reason(stop_reason) == expected


def test_usage_counts_cache_reads_and_writes_as_prompt_tokens() -> None:
    usage = usage_from_anthropic(
        {
            "input_tokens": 3,
            "cache_creation_input_tokens": 100,
            "cache_read_input_tokens": 900,
            "output_tokens": 7,
        }
    )
    assert usage == {
        "prompt_tokens": 1003,
        "completion_tokens": 7,
        "total_tokens": 1010,
        "prompt_tokens_details": {"cached_tokens": 900, "cache_creation_tokens": 100},
    }


# ---------------------------------------------------------------------------------------------------- stream
@pytest.mark.parametrize("name", STREAM_CASES)
def test_stream_translation(name: str) -> None:
    translator, chunks = translate(sse_events(sse_text(name)))
    assert chunks == load(name)["chunks"]
    assert translator.done
    translator.close()  # a finished stream closes quietly


def test_streamed_tool_calls_assemble_into_whole_arguments() -> None:
    _, chunks = translate(sse_events(sse_text("stream_tool_use")))
    assembler = StreamAssembler()
    for chunk in chunks:
        assembler.feed(Chunk(chunk))
    message = assembler.reply()["choices"][0]["message"]
    assert message["content"] == "I'll check both cities."
    assert [json.loads(call["function"]["arguments"]) for call in message["tool_calls"]] == [
        {"location": "Paris"},
        {"location": "London"},
    ]
    assert assembler.finished


def test_stream_error_event_raises_the_status_it_stands_for() -> None:
    translator = StreamTranslator(created=CREATED)
    seen: list[dict[str, Any]] = []
    with pytest.raises(UpstreamStatusError) as caught:
        for event in sse_events(sse_text("stream_error")):
            seen.extend(translator.feed(parse_event(event)))
    assert caught.value.upstream_status == 529
    assert caught.value.message == "anthropic: Overloaded"
    assert [c["choices"][0]["delta"] for c in seen] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
    ]


def test_unknown_error_type_is_a_protocol_error() -> None:
    error = stream_error({"type": "error", "error": {"type": "brand_new_error", "message": "huh"}})
    assert isinstance(error, UpstreamProtocolError)
    assert error.message == "anthropic: huh"


def test_stream_cut_before_message_stop_raises_on_close() -> None:
    translator, chunks = translate(sse_events(sse_text("stream_cut")))
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"  # even after the finish chunk...
    assert not translator.done
    with pytest.raises(UpstreamProtocolError, match="before message_stop"):
        translator.close()  # ...a stream without message_stop is not a finished one


def test_events_before_message_start_are_a_protocol_error() -> None:
    translator = StreamTranslator(created=CREATED)
    with pytest.raises(UpstreamProtocolError):
        translator.feed(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "x"}}
        )


def test_unknown_events_are_skipped_and_message_delta_usage_is_cumulative() -> None:
    translator = StreamTranslator(created=CREATED)
    translator.feed(
        {"type": "message_start", "message": {"id": "m", "model": MODEL, "usage": {"input_tokens": 5}}}
    )
    assert translator.feed({"type": "some_future_event", "payload": 1}) == []
    assert (
        translator.feed(
            {"type": "content_block_start", "index": 0, "content_block": {"type": "server_tool_use"}}
        )
        == []
    )
    translator.feed(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "end_turn"},
            "usage": {"input_tokens": 6, "cache_read_input_tokens": 10, "output_tokens": 4},
        }
    )
    final = translator.feed({"type": "message_stop"})
    assert final == [
        {
            "id": "m",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": MODEL,
            "choices": [],
            "usage": {
                "prompt_tokens": 16,
                "completion_tokens": 4,
                "total_tokens": 20,
                "prompt_tokens_details": {"cached_tokens": 10, "cache_creation_tokens": 0},
            },
        }
    ]


def test_message_stop_without_stop_reason_still_finishes_the_choice() -> None:
    translator = StreamTranslator(created=CREATED)
    translator.feed({"type": "message_start", "message": {"id": "m", "model": MODEL, "usage": {}}})
    chunks = translator.feed({"type": "message_stop"})
    assert len(chunks) == 2
    assert chunks[0]["choices"] == [{"index": 0, "delta": {}, "logprobs": None, "finish_reason": "stop"}]
    assert chunks[1]["choices"] == []


def test_event_type_falls_back_to_the_sse_event_name_and_bad_json_is_a_protocol_error() -> None:
    assert parse_event(SSEEvent("ping", b"{}")) == {"type": "ping"}
    with pytest.raises(UpstreamProtocolError):
        parse_event(SSEEvent("message_start", b"{not json"))


def test_registered_under_its_name() -> None:
    assert base._REGISTRY["anthropic"] is AnthropicProvider


# ---------------------------------------------------------------------------------------------------- http
Responder = Callable[[web.Request], Awaitable[web.StreamResponse]]


class FakeAnthropic:
    """A local Messages API endpoint: records each request, answers with what the test set."""

    def __init__(self) -> None:
        self.url = ""
        self.received: list[tuple[dict[str, str], dict[str, Any]]] = []
        self.reply: Responder = self.json(200, {})

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.received.append((dict(request.headers), orjson.loads(await request.read())))
        return await self.reply(request)

    @staticmethod
    def json(status: int, body: dict[str, Any], headers: dict[str, str] | None = None) -> Responder:
        async def reply(request: web.Request) -> web.StreamResponse:
            return web.json_response(body, status=status, headers=headers)

        return reply

    @staticmethod
    def sse(text: str) -> Responder:
        async def reply(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            for block in text.split("\n\n"):  # one write per event, as a real stream arrives
                await response.write(block.encode() + b"\n\n")
            await response.write_eof()
            return response

        return reply

    @staticmethod
    def sse_held_open(text: str, release: asyncio.Event) -> Responder:
        """The events, then the connection stays open until ``release`` is set."""

        async def reply(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"content-type": "text/event-stream"})
            await response.prepare(request)
            await response.write(text.encode())
            await release.wait()
            await response.write_eof()
            return response

        return reply


@pytest.fixture
async def upstream() -> AsyncIterator[FakeAnthropic]:
    fake = FakeAnthropic()
    app = web.Application()
    app.router.add_post("/v1/messages", fake.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    fake.url = f"http://127.0.0.1:{port}"
    yield fake
    await runner.cleanup()


@pytest.fixture
async def pool() -> AsyncIterator[HttpPool]:
    http = HttpPool()
    yield http
    await http.aclose()


def make_provider(upstream: FakeAnthropic, pool: HttpPool, **options: Any) -> AnthropicProvider:
    deployment = Deployment(
        provider="anthropic",
        model=MODEL,
        base_url=upstream.url,
        api_key="test-key",
        headers={"anthropic-beta": "test-beta"},
        options=options,
    )
    return AnthropicProvider(deployment, pool, clock=lambda: CREATED + 0.75)


def assert_sent_headers(headers: dict[str, str], version: str = "2023-06-01") -> None:
    lowered = {k.lower(): v for k, v in headers.items()}
    assert lowered["x-api-key"] == "test-key"
    assert lowered["anthropic-version"] == version
    assert lowered["content-type"] == "application/json"
    assert lowered["anthropic-beta"] == "test-beta"


@pytest.mark.parametrize("name", COMPLETE_CASES)
async def test_complete_end_to_end(upstream: FakeAnthropic, pool: HttpPool, name: str) -> None:
    case = load(name)
    upstream.reply = FakeAnthropic.json(200, case["anthropic_response"])
    reply = await make_provider(upstream, pool).complete(ChatRequest(case["openai_request"]))
    [(headers, body)] = upstream.received
    assert_sent_headers(headers)
    assert body == case["anthropic_request"]
    assert reply.data == case["openai_response"]


async def test_complete_uses_the_configured_version_and_max_tokens(
    upstream: FakeAnthropic, pool: HttpPool
) -> None:
    case = load("simple_text")
    upstream.reply = FakeAnthropic.json(
        200, case["anthropic_response"], headers={"anthropic-ratelimit-requests-remaining": "41"}
    )
    provider = make_provider(upstream, pool, anthropic_version="2024-10-22", default_max_tokens=512)
    reply = await provider.complete(ChatRequest(case["openai_request"]))
    [(headers, body)] = upstream.received
    assert_sent_headers(headers, version="2024-10-22")
    assert body["max_tokens"] == 512
    assert reply.headers == {"anthropic-ratelimit-requests-remaining": "41"}


@pytest.mark.parametrize("name", STREAM_CASES)
async def test_stream_end_to_end(upstream: FakeAnthropic, pool: HttpPool, name: str) -> None:
    case = load(name)
    upstream.reply = FakeAnthropic.sse(sse_text(name))
    chunks = [
        chunk.data
        async for chunk in make_provider(upstream, pool).stream(ChatRequest(case["openai_request"]))
    ]
    [(headers, body)] = upstream.received
    assert_sent_headers(headers)
    assert body == case["anthropic_request"]
    assert chunks == case["chunks"]


async def test_stream_ends_at_message_stop_even_if_the_connection_stays_open(
    upstream: FakeAnthropic, pool: HttpPool
) -> None:
    release = asyncio.Event()
    upstream.reply = FakeAnthropic.sse_held_open(sse_text("stream_text"), release)
    deployment = Deployment(
        provider="anthropic",
        model=MODEL,
        base_url=upstream.url,
        api_key="k",
        timeouts=Timeouts(first_byte=5.0),
    )
    provider = AnthropicProvider(deployment, pool, clock=lambda: CREATED)
    request = ChatRequest(load("stream_text")["openai_request"])
    try:
        chunks = [chunk.data async for chunk in provider.stream(request)]  # would time out without the break
    finally:
        release.set()
    assert chunks == load("stream_text")["chunks"]


async def test_stream_error_event_end_to_end(upstream: FakeAnthropic, pool: HttpPool) -> None:
    upstream.reply = FakeAnthropic.sse(sse_text("stream_error"))
    request = ChatRequest(
        {"model": "claude-alias", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    seen: list[Chunk] = []
    with pytest.raises(UpstreamStatusError) as caught:
        async for chunk in make_provider(upstream, pool).stream(request):
            seen.append(chunk)
    assert caught.value.upstream_status == 529
    assert caught.value.status == 502
    assert "Overloaded" in caught.value.message
    assert [c.data["choices"][0]["delta"] for c in seen] == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
    ]


async def test_stream_cut_off_before_message_stop_raises(upstream: FakeAnthropic, pool: HttpPool) -> None:
    upstream.reply = FakeAnthropic.sse(sse_text("stream_cut"))
    request = ChatRequest(
        {"model": "claude-alias", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    )
    seen: list[Chunk] = []
    with pytest.raises(UpstreamProtocolError, match="before message_stop"):
        async for chunk in make_provider(upstream, pool).stream(request):
            seen.append(chunk)
    assert [c.data["choices"][0]["delta"].get("content") for c in seen][:2] == ["", "Hello"]


@pytest.mark.parametrize(
    ("name", "status", "retry_after"),
    [("error_400", 400, None), ("error_429", 429, 12.0), ("error_529", 502, None)],
)
@pytest.mark.parametrize("streaming", [False, True])
async def test_http_errors(
    upstream: FakeAnthropic,
    pool: HttpPool,
    name: str,
    status: int,
    retry_after: float | None,
    streaming: bool,
) -> None:
    case = load(name)
    upstream.reply = FakeAnthropic.json(case["status"], case["body"], headers=case["headers"])
    provider = make_provider(upstream, pool)
    request = ChatRequest({"model": "claude-alias", "messages": [{"role": "user", "content": "hi"}]})
    with pytest.raises(UpstreamStatusError) as caught:
        if streaming:
            async for _ in provider.stream(request):
                pytest.fail("no chunk may come out of an error response")
        else:
            await provider.complete(request)
    error = caught.value
    assert error.upstream_status == case["status"]
    assert error.status == status
    assert error.retry_after == retry_after
    assert error.message == f"anthropic: {case['body']['error']['message']}"
    assert error.provider == "anthropic"
