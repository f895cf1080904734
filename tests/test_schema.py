"""Request validation: what OpenAI accepts passes untouched; what it rejects fails naming the field."""

from __future__ import annotations

import copy
import enum
import math
from typing import Any

import orjson
import pytest

from slipstream.errors import InvalidRequest
from slipstream.schema import (
    MAX_EMBEDDING_INPUTS,
    MAX_MESSAGES,
    MAX_TOOLS,
    ROLES,
    parse_chat_request,
    parse_embeddings_request,
    parse_json_body,
    validate_chat_request,
    validate_embeddings_request,
)
from slipstream.types import ChatRequest, EmbeddingsRequest


def minimal() -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hello"}]}


def with_fields(**fields: Any) -> dict[str, Any]:
    return {**minimal(), **fields}


def with_messages(*messages: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": list(messages)}


def tool_call(call_id: str = "call_1", name: str = "get_weather", arguments: str = "{}") -> dict[str, Any]:
    return {"id": call_id, "type": "function", "function": {"name": name, "arguments": arguments}}


def function_tool(name: str = "get_weather", **fields: Any) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, **fields}}


def full_request() -> dict[str, Any]:
    """Every field slipstream checks, each with a valid value."""
    return {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "You are terse.", "name": "sys"},
            {"role": "developer", "content": [{"type": "text", "text": "Answer in JSON."}]},
            {
                "role": "user",
                "name": "alice",
                "content": [
                    {"type": "text", "text": "What is in these?"},
                    {
                        "type": "image_url",
                        "image_url": {"url": "https://example.com/a.png", "detail": "high"},
                    },
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    {"type": "input_audio", "input_audio": {"data": "UklGRg==", "format": "wav"}},
                    {"type": "file", "file": {"file_id": "file-abc"}},
                    {"type": "file", "file": {"file_data": "JVBERi0=", "filename": "a.pdf"}},
                ],
            },
            {"role": "assistant", "content": None, "tool_calls": [tool_call("call_1"), tool_call("call_2")]},
            {"role": "tool", "tool_call_id": "call_1", "content": "sunny"},
            {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "rainy"}]},
            {
                "role": "assistant",
                "content": [{"type": "text", "text": "Done."}, {"type": "refusal", "refusal": "no"}],
            },
            {"role": "assistant", "refusal": "I can't help with that."},
            {"role": "assistant", "content": None, "function_call": {"name": "legacy", "arguments": "{}"}},
            {"role": "function", "name": "legacy", "content": "42"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [{"id": "c", "type": "custom", "custom": {"name": "sh", "input": "ls"}}],
            },
        ],
        "tools": [
            function_tool(
                "get_weather",
                description="Weather for a city",
                parameters={
                    "type": "object",
                    "properties": {"city": {"type": "string"}},
                    "required": ["city"],
                },
                strict=True,
            ),
            {
                "type": "custom",
                "custom": {"name": "sh", "description": "a shell", "format": {"type": "text"}},
            },
        ],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
        "parallel_tool_calls": False,
        "functions": [{"name": "legacy", "parameters": {"type": "object"}}],
        "function_call": {"name": "legacy"},
        "temperature": 0.7,
        "top_p": 1,
        "presence_penalty": -2,
        "frequency_penalty": 2.0,
        "max_tokens": 100,
        "max_completion_tokens": 200,
        "n": 2,
        "seed": -42,
        "logprobs": True,
        "top_logprobs": 5,
        "logit_bias": {"50256": -100, "1234": 2.5},
        "stop": ["\n\n", "END"],
        "stream": True,
        "stream_options": {"include_usage": True},
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "answer", "schema": {"type": "object"}, "strict": True},
        },
        "user": "user-123",
        "metadata": {"team": "search", "run": "7"},
    }


def rejected(body: Any, **kw: Any) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as info:
        validate_chat_request(body, **kw)
    return info.value


# --------------------------------------------------------------------------------------------- accepted
def test_minimal_request_is_valid_and_kept_as_is() -> None:
    body = minimal()
    request = validate_chat_request(body)
    assert isinstance(request, ChatRequest)
    assert request.body is body
    assert request.model == "gpt-4o-mini"
    assert request.stream is False
    assert request.include_usage is False


def test_full_request_with_every_field_is_valid() -> None:
    body = full_request()
    before = copy.deepcopy(body)
    request = validate_chat_request(body)
    assert request.stream is True
    assert request.include_usage is True
    assert body == before  # validation never changes the body


def test_unknown_fields_are_kept_at_every_level() -> None:
    body = with_fields(
        reasoning_effort="low",
        vendor_extension={"top_k": 40},
        messages=[
            {"role": "user", "content": "hi", "cache_control": {"type": "ephemeral"}},
            {
                "role": "user",
                "content": [{"type": "text", "text": "x", "cache_control": {"type": "ephemeral"}}],
            },
        ],
    )
    request = validate_chat_request(body)
    assert request.body["reasoning_effort"] == "low"
    assert request.body["vendor_extension"] == {"top_k": 40}
    assert request.messages[0]["cache_control"] == {"type": "ephemeral"}  # type: ignore[typeddict-item]
    assert request.body["messages"][1]["content"][0]["cache_control"] == {"type": "ephemeral"}


def test_parse_chat_request_from_bytes() -> None:
    request = parse_chat_request(orjson.dumps(full_request()))
    assert request.model == "gpt-4o"
    assert request.body["metadata"] == {"team": "search", "run": "7"}


@pytest.mark.parametrize(
    "field",
    [
        "temperature",
        "top_p",
        "presence_penalty",
        "frequency_penalty",
        "max_tokens",
        "max_completion_tokens",
        "n",
        "seed",
        "logprobs",
        "top_logprobs",
        "logit_bias",
        "stop",
        "stream",
        "stream_options",
        "response_format",
        "tools",
        "tool_choice",
        "parallel_tool_calls",
        "user",
        "metadata",
    ],
)
def test_null_optional_fields_count_as_absent(field: str) -> None:
    assert validate_chat_request(with_fields(**{field: None})).body[field] is None


@pytest.mark.parametrize(
    "fields",
    [
        {"temperature": 0},
        {"temperature": 2},
        {"top_p": 0.0},
        {"top_p": 1},
        {"presence_penalty": -2.0, "frequency_penalty": 2},
        {"max_tokens": 1},
        {"n": 1},
        {"n": 128},
        {"seed": 2**63 - 1},
        {"top_logprobs": 0, "logprobs": True},
        {"top_logprobs": 20, "logprobs": True},
        {"logit_bias": {"0": 100, "1": -100.0}},
        {"stop": "END"},
        {"stop": []},
        {"stop": ["a", "b", "c", "d"]},
        {"tool_choice": "none"},
        {"tool_choice": "required", "tools": [function_tool()]},
        {"tool_choice": {"type": "custom", "custom": {"name": "sh"}}},
        {
            "tool_choice": {
                "type": "allowed_tools",
                "allowed_tools": {"mode": "auto", "tools": [function_tool()]},
            }
        },
        {"function_call": "auto"},
        {"response_format": {"type": "text"}},
        {"response_format": {"type": "json_object"}},
        {"stream": False},
        {"stream": True, "stream_options": {"include_usage": False, "include_obfuscation": False}},
        {"metadata": {"k" * 64: "v" * 512}},
        {"metadata": {}},
        {"tools": [function_tool(name="a" * 64)]},
        {"tools": [function_tool(name="A-b_9")]},
    ],
    ids=lambda fields: ",".join(fields),
)
def test_boundary_values_are_accepted(fields: dict[str, Any]) -> None:
    assert validate_chat_request(with_fields(**fields)).body.items() >= fields.items()


@pytest.mark.parametrize(
    "message",
    [
        {"role": "user", "content": ""},
        {"role": "assistant", "tool_calls": [tool_call()]},  # content absent
        {"role": "assistant", "content": None, "refusal": "no"},
        {"role": "assistant", "content": "hi", "name": "bot", "refusal": None, "tool_calls": None},
        {"role": "function", "name": "f", "content": None},
        {"role": "tool", "tool_call_id": "c", "content": ""},
        {
            "role": "user",
            "content": [{"type": "image_url", "image_url": {"url": "https://x", "detail": "original"}}],
        },
        {"role": "user", "content": [{"type": "file", "file": {}}]},
    ],
)
def test_valid_message_shapes(message: dict[str, Any]) -> None:
    validate_chat_request(with_messages(message))


def test_roles_from_a_str_enum_are_accepted() -> None:
    class Role(enum.StrEnum):
        USER = "user"

    validate_chat_request(with_messages({"role": Role.USER, "content": "hi"}))


def test_deeply_nested_but_valid_content_and_schemas() -> None:
    # orjson serialises up to 254 levels; stay well inside that while nesting far deeper than real requests.
    schema: dict[str, Any] = {"type": "string"}
    for _ in range(100):
        schema = {"type": "object", "properties": {"inner": schema}}
    nested_extra: dict[str, Any] = {"leaf": True}
    for _ in range(200):
        nested_extra = {"next": nested_extra}
    parts = [{"type": "text", "text": f"part {k}", "vendor": nested_extra} for k in range(300)]
    parts.append({"type": "image_url", "image_url": {"url": "https://x/y.png", "extra": nested_extra}})
    body = with_fields(
        messages=[{"role": "user", "content": parts}],
        tools=[function_tool(parameters=schema)],
        response_format={"type": "json_schema", "json_schema": {"name": "deep", "schema": schema}},
    )
    raw = orjson.dumps(body)
    request = parse_chat_request(raw)
    assert len(request.body["messages"][0]["content"]) == 301
    assert request.body["tools"][0]["function"]["parameters"] == schema


# --------------------------------------------------------------------------------------------- rejected
def test_error_message_and_param_name_the_field() -> None:
    body = with_messages(
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {"role": "user", "content": 5},
    )
    error = rejected(body)
    assert error.param == "messages[2].content"
    assert error.message == "messages[2].content: expected a string or an array of content parts, got number"
    assert error.status == 400
    assert error.to_dict() == {
        "error": {
            "message": error.message,
            "type": "invalid_request_error",
            "param": "messages[2].content",
            "code": None,
        }
    }


def test_unknown_role_lists_the_valid_roles() -> None:
    error = rejected(with_messages({"role": "bot", "content": "hi"}))
    assert error.param == "messages[0].role"
    assert "'bot'" in error.message
    for role in ROLES:
        assert role in error.message


def test_empty_messages_has_the_documented_message() -> None:
    error = rejected(with_fields(messages=[]))
    assert error.param == "messages"
    assert "messages must contain at least one message" in error.message


# (case id, body, expected param, a fragment of the message)
CHAT_REJECTIONS: list[tuple[str, Any, str, str]] = [
    # model
    ("model missing", {"messages": [{"role": "user", "content": "x"}]}, "model", "missing required field"),
    ("model empty", with_fields(model=""), "model", "must not be empty"),
    ("model not a string", with_fields(model=4), "model", "expected a string, got number"),
    ("model null", with_fields(model=None), "model", "got null"),
    # messages
    ("messages missing", {"model": "m"}, "messages", "missing required field"),
    ("messages not array", with_fields(messages={"role": "user"}), "messages", "got object"),
    ("message not object", with_messages("hello"), "messages[0]", "expected a message object, got string"),
    ("role missing", with_messages({"content": "x"}), "messages[0].role", "missing required field 'role'"),
    ("role not string", with_messages({"role": 1, "content": "x"}), "messages[0].role", "got number"),
    ("role unknown", with_messages({"role": "User", "content": "x"}), "messages[0].role", "unknown role"),
    (
        "name not string",
        with_messages({"role": "user", "content": "x", "name": 3}),
        "messages[0].name",
        "string",
    ),
    ("content missing", with_messages({"role": "user"}), "messages[0].content", "missing required field"),
    ("content null", with_messages({"role": "system", "content": None}), "messages[0].content", "got null"),
    ("content object", with_messages({"role": "user", "content": {}}), "messages[0].content", "got object"),
    (
        "assistant without content or calls",
        with_messages({"role": "user", "content": "x"}, {"role": "assistant", "content": None}),
        "messages[1].content",
        "tool_calls",
    ),
    (
        "parts empty",
        with_messages({"role": "user", "content": []}),
        "messages[0].content",
        "must not be empty",
    ),
    # tool and function messages
    (
        "tool without id",
        with_messages({"role": "tool", "content": "x"}),
        "messages[0].tool_call_id",
        "missing",
    ),
    (
        "tool id not string",
        with_messages({"role": "tool", "content": "x", "tool_call_id": 7}),
        "messages[0].tool_call_id",
        "got number",
    ),
    (
        "tool without content",
        with_messages({"role": "tool", "tool_call_id": "c"}),
        "messages[0].content",
        "missing",
    ),
    (
        "function without name",
        with_messages({"role": "function", "content": "x"}),
        "messages[0].name",
        "missing",
    ),
    # content parts
    (
        "part not object",
        with_messages({"role": "user", "content": ["hi"]}),
        "messages[0].content[0]",
        "expected a content part object, got string",
    ),
    (
        "part type missing",
        with_messages({"role": "user", "content": [{"text": "x"}]}),
        "messages[0].content[0].type",
        "missing",
    ),
    (
        "part type unknown",
        with_messages(
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "video", "video": {}}]}
        ),
        "messages[0].content[1].type",
        "unknown content part type 'video'",
    ),
    (
        "text part without text",
        with_messages({"role": "user", "content": [{"type": "text"}]}),
        "messages[0].content[0].text",
        "missing",
    ),
    (
        "text part text not string",
        with_messages({"role": "user", "content": [{"type": "text", "text": ["a"]}]}),
        "messages[0].content[0].text",
        "got array",
    ),
    (
        "image without url",
        with_messages(
            {
                "role": "user",
                "content": [{"type": "text", "text": "a"}, {"type": "image_url", "image_url": {}}],
            }
        ),
        "messages[0].content[1].image_url.url",
        "missing",
    ),
    (
        "image url not string",
        with_messages({"role": "user", "content": [{"type": "image_url", "image_url": {"url": 1}}]}),
        "messages[0].content[0].image_url.url",
        "got number",
    ),
    (
        "image url empty",
        with_messages({"role": "user", "content": [{"type": "image_url", "image_url": {"url": ""}}]}),
        "messages[0].content[0].image_url.url",
        "must not be empty",
    ),
    (
        "image_url a string",
        with_messages({"role": "user", "content": [{"type": "image_url", "image_url": "https://x"}]}),
        "messages[0].content[0].image_url",
        "expected an object, got string",
    ),
    (
        "image detail unknown",
        with_messages(
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "u", "detail": "max"}}]}
        ),
        "messages[0].content[0].image_url.detail",
        "'max'",
    ),
    (
        "audio without format",
        with_messages({"role": "user", "content": [{"type": "input_audio", "input_audio": {"data": "AA"}}]}),
        "messages[0].content[0].input_audio.format",
        "missing",
    ),
    (
        "audio without data",
        with_messages(
            {"role": "user", "content": [{"type": "input_audio", "input_audio": {"format": "wav"}}]}
        ),
        "messages[0].content[0].input_audio.data",
        "missing",
    ),
    (
        "file without file",
        with_messages({"role": "user", "content": [{"type": "file"}]}),
        "messages[0].content[0].file",
        "missing",
    ),
    (
        "file id not string",
        with_messages({"role": "user", "content": [{"type": "file", "file": {"file_id": 9}}]}),
        "messages[0].content[0].file.file_id",
        "got number",
    ),
    (
        "refusal part without refusal",
        with_messages({"role": "assistant", "content": [{"type": "refusal"}]}),
        "messages[0].content[0].refusal",
        "missing",
    ),
    # assistant fields
    (
        "tool_calls not array",
        with_messages({"role": "assistant", "tool_calls": tool_call()}),
        "messages[0].tool_calls",
        "got object",
    ),
    (
        "tool_calls empty",
        with_messages({"role": "assistant", "content": "x", "tool_calls": []}),
        "messages[0].tool_calls",
        "empty array",
    ),
    (
        "tool call without id",
        with_messages(
            {
                "role": "assistant",
                "tool_calls": [{"type": "function", "function": {"name": "f", "arguments": ""}}],
            }
        ),
        "messages[0].tool_calls[0].id",
        "missing",
    ),
    (
        "tool call bad type",
        with_messages({"role": "assistant", "tool_calls": [{**tool_call(), "type": "fn"}]}),
        "messages[0].tool_calls[0].type",
        "unknown tool call type 'fn'",
    ),
    (
        "tool call without function",
        with_messages({"role": "assistant", "tool_calls": [{"id": "c", "type": "function"}]}),
        "messages[0].tool_calls[0].function",
        "missing",
    ),
    (
        "tool call arguments an object",
        with_messages(
            {
                "role": "assistant",
                "tool_calls": [tool_call(), {**tool_call(), "function": {"name": "f", "arguments": {}}}],
            }
        ),
        "messages[0].tool_calls[1].function.arguments",
        "expected a string, got object",
    ),
    (
        "tool call without name",
        with_messages(
            {"role": "assistant", "tool_calls": [{**tool_call(), "function": {"arguments": "{}"}}]}
        ),
        "messages[0].tool_calls[0].function.name",
        "missing",
    ),
    (
        "function_call without arguments",
        with_messages({"role": "assistant", "function_call": {"name": "f"}}),
        "messages[0].function_call.arguments",
        "missing",
    ),
    (
        "refusal not string",
        with_messages({"role": "assistant", "refusal": True}),
        "messages[0].refusal",
        "got boolean",
    ),
    # tools
    ("tools not array", with_fields(tools={"type": "function"}), "tools", "got object"),
    ("tools empty", with_fields(tools=[]), "tools", "empty array"),
    (
        "tools too many",
        with_fields(tools=[function_tool(f"f{k}") for k in range(MAX_TOOLS + 1)]),
        "tools",
        "too many",
    ),
    ("tool not object", with_fields(tools=["f"]), "tools[0]", "got string"),
    ("tool type missing", with_fields(tools=[{"function": {"name": "f"}}]), "tools[0].type", "missing"),
    ("tool type unknown", with_fields(tools=[{"type": "retrieval"}]), "tools[0].type", "'retrieval'"),
    ("tool without function", with_fields(tools=[{"type": "function"}]), "tools[0].function", "missing"),
    (
        "tool name missing",
        with_fields(tools=[{"type": "function", "function": {}}]),
        "tools[0].function.name",
        "missing",
    ),
    (
        "tool name with space",
        with_fields(tools=[function_tool("get weather")]),
        "tools[0].function.name",
        "invalid name",
    ),
    (
        "tool name with dot",
        with_fields(tools=[function_tool(), function_tool("a.b")]),
        "tools[1].function.name",
        "invalid",
    ),
    ("tool name too long", with_fields(tools=[function_tool("a" * 65)]), "tools[0].function.name", "1 to 64"),
    ("tool name empty", with_fields(tools=[function_tool("")]), "tools[0].function.name", "invalid name"),
    (
        "tool description not string",
        with_fields(tools=[function_tool(description=1)]),
        "tools[0].function.description",
        "got number",
    ),
    (
        "tool parameters not object",
        with_fields(tools=[function_tool(parameters="{}")]),
        "tools[0].function.parameters",
        "expected an object, got string",
    ),
    (
        "tool strict not bool",
        with_fields(tools=[function_tool(strict="yes")]),
        "tools[0].function.strict",
        "boolean",
    ),
    (
        "custom tool without name",
        with_fields(tools=[{"type": "custom", "custom": {}}]),
        "tools[0].custom.name",
        "missing",
    ),
    # tool_choice, parallel_tool_calls, functions, function_call
    ("tool_choice unknown string", with_fields(tool_choice="any"), "tool_choice", "'any'"),
    ("tool_choice number", with_fields(tool_choice=1), "tool_choice", "got number"),
    (
        "tool_choice without type",
        with_fields(tool_choice={"function": {"name": "f"}}),
        "tool_choice.type",
        "missing",
    ),
    ("tool_choice bad type", with_fields(tool_choice={"type": "tool"}), "tool_choice.type", "'tool'"),
    (
        "tool_choice without name",
        with_fields(tool_choice={"type": "function", "function": {}}),
        "tool_choice.function.name",
        "missing",
    ),
    (
        "allowed_tools bad mode",
        with_fields(tool_choice={"type": "allowed_tools", "allowed_tools": {"mode": "none", "tools": []}}),
        "tool_choice.allowed_tools.mode",
        "'none'",
    ),
    ("parallel_tool_calls string", with_fields(parallel_tool_calls="true"), "parallel_tool_calls", "boolean"),
    ("functions empty", with_fields(functions=[]), "functions", "empty array"),
    ("functions bad name", with_fields(functions=[{"name": "a b"}]), "functions[0].name", "invalid name"),
    ("function_call unknown", with_fields(function_call="required"), "function_call", "'required'"),
    # numbers
    ("temperature high", with_fields(temperature=2.01), "temperature", "between 0 and 2, got 2.01"),
    ("temperature negative", with_fields(temperature=-0.1), "temperature", "between 0 and 2"),
    ("temperature string", with_fields(temperature="0.5"), "temperature", "got string"),
    ("temperature nan", with_fields(temperature=math.nan), "temperature", "between 0 and 2"),
    ("temperature inf", with_fields(temperature=math.inf), "temperature", "between 0 and 2"),
    ("top_p high", with_fields(top_p=1.5), "top_p", "between 0 and 1"),
    ("presence_penalty low", with_fields(presence_penalty=-2.5), "presence_penalty", "between -2 and 2"),
    ("frequency_penalty high", with_fields(frequency_penalty=3), "frequency_penalty", "between -2 and 2"),
    ("max_tokens zero", with_fields(max_tokens=0), "max_tokens", "at least 1, got 0"),
    ("max_tokens float", with_fields(max_tokens=10.0), "max_tokens", "integer"),
    (
        "max_completion_tokens negative",
        with_fields(max_completion_tokens=-1),
        "max_completion_tokens",
        "at least 1",
    ),
    ("n zero", with_fields(n=0), "n", "between 1 and 128"),
    ("n too big", with_fields(n=129), "n", "between 1 and 128"),
    ("seed float", with_fields(seed=1.5), "seed", "integer"),
    ("seed past int64", with_fields(seed=2**63), "seed", "integer"),
    ("logprobs string", with_fields(logprobs="true"), "logprobs", "boolean"),
    ("logprobs int", with_fields(logprobs=1), "logprobs", "expected a boolean, got number"),
    ("top_logprobs high", with_fields(top_logprobs=21), "top_logprobs", "between 0 and 20"),
    ("top_logprobs negative", with_fields(top_logprobs=-1), "top_logprobs", "between 0 and 20"),
    # logit_bias, stop, stream, stream_options
    ("logit_bias array", with_fields(logit_bias=[1]), "logit_bias", "got array"),
    ("logit_bias word key", with_fields(logit_bias={"hello": 1}), "logit_bias", "'hello' is not a token id"),
    ("logit_bias high", with_fields(logit_bias={"50256": 101}), "logit_bias.50256", "between -100 and 100"),
    ("logit_bias string value", with_fields(logit_bias={"1": "5"}), "logit_bias.1", "got string"),
    ("stop number", with_fields(stop=5), "stop", "a string or an array of strings, got number"),
    ("stop too many", with_fields(stop=["a", "b", "c", "d", "e"]), "stop", "at most 4"),
    ("stop item not string", with_fields(stop=["a", 1]), "stop[1]", "got number"),
    ("stream string", with_fields(stream="yes"), "stream", "boolean"),
    (
        "stream_options without stream",
        with_fields(stream_options={"include_usage": True}),
        "stream_options",
        "stream",
    ),
    (
        "stream_options with stream false",
        with_fields(stream=False, stream_options={"include_usage": True}),
        "stream_options",
        "only allowed when stream is true",
    ),
    ("stream_options array", with_fields(stream=True, stream_options=[]), "stream_options", "got array"),
    (
        "include_usage string",
        with_fields(stream=True, stream_options={"include_usage": "yes"}),
        "stream_options.include_usage",
        "expected a boolean, got string",
    ),
    # response_format
    ("response_format string", with_fields(response_format="json"), "response_format", "got string"),
    ("response_format without type", with_fields(response_format={}), "response_format.type", "missing"),
    (
        "response_format bad type",
        with_fields(response_format={"type": "xml"}),
        "response_format.type",
        "'xml'",
    ),
    (
        "json_schema missing",
        with_fields(response_format={"type": "json_schema"}),
        "response_format.json_schema",
        "missing",
    ),
    (
        "json_schema without name",
        with_fields(response_format={"type": "json_schema", "json_schema": {"schema": {}}}),
        "response_format.json_schema.name",
        "missing",
    ),
    (
        "json_schema schema not object",
        with_fields(response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": "x"}}),
        "response_format.json_schema.schema",
        "got string",
    ),
    # user, metadata
    ("user number", with_fields(user=1), "user", "expected a string, got number"),
    ("metadata array", with_fields(metadata=["a"]), "metadata", "got array"),
    ("metadata number value", with_fields(metadata={"a": 1}), "metadata.a", "got number"),
    ("metadata too many", with_fields(metadata={f"k{i}": "v" for i in range(17)}), "metadata", "at most 16"),
    ("metadata long key", with_fields(metadata={"k" * 65: "v"}), "metadata", "longer than 64"),
    ("metadata long value", with_fields(metadata={"k": "v" * 513}), "metadata.k", "longer than 512"),
]


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [case[1:] for case in CHAT_REJECTIONS],
    ids=[case[0] for case in CHAT_REJECTIONS],
)
def test_chat_rejections_name_the_field(body: Any, param: str, fragment: str) -> None:
    error = rejected(body)
    assert error.param == param
    assert error.message.startswith(f"{param}: ")
    assert fragment in error.message


def test_the_error_points_at_the_first_bad_message_among_good_ones() -> None:
    messages: list[Any] = [{"role": "user", "content": f"m{k}"} for k in range(50)]
    messages[37] = {"role": "user", "content": [{"type": "text", "text": "ok"}, {"type": "image_url"}]}
    assert rejected(with_messages(*messages)).param == "messages[37].content[1].image_url"


NUMBER_FIELDS = [
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "seed",
    "top_logprobs",
]


@pytest.mark.parametrize("field", NUMBER_FIELDS)
@pytest.mark.parametrize("flag", [True, False])
def test_a_boolean_is_not_a_number(field: str, flag: bool) -> None:
    error = rejected(with_fields(**{field: flag}))
    assert error.param == field
    assert error.message.endswith("got boolean")


def test_a_boolean_is_not_a_logit_bias() -> None:
    assert rejected(with_fields(logit_bias={"1": True})).param == "logit_bias.1"


def test_message_limit() -> None:
    messages = [{"role": "user", "content": "x"}] * 5
    assert len(validate_chat_request(with_messages(*messages), max_messages=5).messages) == 5
    error = rejected(with_messages(*messages), max_messages=4)
    assert error.param == "messages"
    assert "too many messages: 5, the limit is 4" in error.message


def test_default_message_limit() -> None:
    messages = [{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1)
    assert rejected(with_messages(*messages)).param == "messages"
    raw = orjson.dumps(with_messages(*messages[:-1]))
    assert len(parse_chat_request(raw).messages) == MAX_MESSAGES
    with pytest.raises(InvalidRequest):
        parse_chat_request(raw, max_messages=10)


def test_a_body_that_is_not_a_dict_is_rejected() -> None:
    error = rejected([minimal()])
    assert error.message == "request body must be a JSON object"
    assert error.param is None


# --------------------------------------------------------------------------------------------- raw bodies
@pytest.mark.parametrize(
    ("raw", "fragment"),
    [
        (b'{"model": "m",', "request body is not valid JSON: "),
        (b"", "request body is not valid JSON: "),
        (b"{'model': 'm'}", "request body is not valid JSON: "),
        (b'{"a": 1} {"b": 2}', "request body is not valid JSON: "),
        (b'{"a": NaN}', "request body is not valid JSON: "),
        (b'\xef\xbb\xbf{"a": 1}', "request body is not valid JSON: "),
    ],
)
def test_malformed_json(raw: bytes, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_json_body(raw)
    assert info.value.message.startswith(fragment)
    assert len(info.value.message) > len(fragment)  # orjson's reason follows
    assert info.value.param is None
    assert info.value.status == 400


@pytest.mark.parametrize("raw", [b'{"model":"\xff"}', b'{"model":"\xed\xa0\x80"}', b'{"a\xc3":1}'])
def test_invalid_utf8(raw: bytes) -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_chat_request(raw)
    assert "UTF-8" in info.value.message
    assert info.value.message.startswith("request body is not valid UTF-8")


@pytest.mark.parametrize("raw", [b"[]", b'[{"model": "m"}]', b'"text"', b"42", b"null", b"true"])
def test_json_that_is_not_an_object(raw: bytes) -> None:
    for parse in (parse_json_body, parse_chat_request, parse_embeddings_request):
        with pytest.raises(InvalidRequest) as info:
            parse(raw)
        assert info.value.message == "request body must be a JSON object"


def test_json_nested_past_the_parser_limit_is_a_client_error() -> None:
    raw = b'{"model": "m", "messages": ' + b"[" * 2000 + b"]" * 2000 + b"}"
    with pytest.raises(InvalidRequest) as info:
        parse_chat_request(raw)
    assert info.value.message.startswith("request body is not valid JSON: depth limit exceeded")


def test_parse_json_body_returns_the_object() -> None:
    assert parse_json_body(b'{"model": "m", "x": [1, 2]}') == {"model": "m", "x": [1, 2]}


def test_parse_chat_request_validates() -> None:
    with pytest.raises(InvalidRequest) as info:
        parse_chat_request(b'{"model": "m", "messages": [{"role": "user", "content": 1}]}')
    assert info.value.param == "messages[0].content"


# --------------------------------------------------------------------------------------------- embeddings
@pytest.mark.parametrize(
    "body",
    [
        {"model": "text-embedding-3-small", "input": "hello"},
        {"model": "e", "input": ["a", "b"]},
        {"model": "e", "input": [1, 2, 3]},
        {"model": "e", "input": [0]},
        {"model": "e", "input": [[1, 2], [3]]},
        {"model": "e", "input": ["x"] * MAX_EMBEDDING_INPUTS},
        {"model": "e", "input": "x", "encoding_format": "base64", "dimensions": 256, "user": "u"},
        {"model": "e", "input": "x", "encoding_format": "float"},
        {"model": "e", "input": "x", "encoding_format": None, "dimensions": None, "user": None},
        {"model": "e", "input": "x", "vendor_field": {"truncate": "END"}},
    ],
)
def test_valid_embeddings(body: dict[str, Any]) -> None:
    request = validate_embeddings_request(body)
    assert isinstance(request, EmbeddingsRequest)
    assert request.body is body
    assert request.model == body["model"]


def test_parse_embeddings_request_from_bytes() -> None:
    request = parse_embeddings_request(b'{"model": "e", "input": ["a"], "extra": 1}')
    assert request.body == {"model": "e", "input": ["a"], "extra": 1}


EMBEDDING_REJECTIONS: list[tuple[str, Any, str, str]] = [
    ("model missing", {"input": "x"}, "model", "missing required field"),
    ("model empty", {"model": "", "input": "x"}, "model", "must not be empty"),
    ("input missing", {"model": "e"}, "input", "missing required field"),
    ("input null", {"model": "e", "input": None}, "input", "got null"),
    ("input number", {"model": "e", "input": 5}, "input", "got number"),
    ("input empty string", {"model": "e", "input": ""}, "input", "empty string"),
    ("input empty array", {"model": "e", "input": []}, "input", "empty array"),
    ("input empty string item", {"model": "e", "input": ["a", "b", "c", ""]}, "input[3]", "empty string"),
    ("input mixed", {"model": "e", "input": ["a", 1]}, "input[1]", "got number"),
    (
        "input too many",
        {"model": "e", "input": ["x"] * (MAX_EMBEDDING_INPUTS + 1)},
        "input",
        "too many inputs",
    ),
    ("token negative", {"model": "e", "input": [1, -2]}, "input[1]", "non-negative integer"),
    ("token float", {"model": "e", "input": [1, 2.5]}, "input[1]", "got 2.5"),
    ("token bool", {"model": "e", "input": [True]}, "input[0]", "got boolean"),
    ("token string among tokens", {"model": "e", "input": [1, "a"]}, "input[1]", "got string"),
    ("token array empty", {"model": "e", "input": [[1], []]}, "input[1]", "empty array"),
    ("token array bad token", {"model": "e", "input": [[1], [2, "x"]]}, "input[1][1]", "got string"),
    ("token arrays mixed", {"model": "e", "input": [[1], 2]}, "input[1]", "got number"),
    ("input of objects", {"model": "e", "input": [{"text": "a"}]}, "input[0]", "got object"),
    (
        "encoding_format unknown",
        {"model": "e", "input": "x", "encoding_format": "int8"},
        "encoding_format",
        "'int8'",
    ),
    ("dimensions zero", {"model": "e", "input": "x", "dimensions": 0}, "dimensions", "at least 1"),
    ("dimensions bool", {"model": "e", "input": "x", "dimensions": True}, "dimensions", "got boolean"),
    ("dimensions string", {"model": "e", "input": "x", "dimensions": "256"}, "dimensions", "got string"),
    ("user number", {"model": "e", "input": "x", "user": 1}, "user", "got number"),
]


@pytest.mark.parametrize(
    ("body", "param", "fragment"),
    [case[1:] for case in EMBEDDING_REJECTIONS],
    ids=[case[0] for case in EMBEDDING_REJECTIONS],
)
def test_embedding_rejections_name_the_field(body: Any, param: str, fragment: str) -> None:
    with pytest.raises(InvalidRequest) as info:
        validate_embeddings_request(body)
    assert info.value.param == param
    assert info.value.message.startswith(f"{param}: ")
    assert fragment in info.value.message
