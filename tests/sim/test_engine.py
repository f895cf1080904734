"""The sim's chat answers: deterministic text, token counts and caps, tool calls, JSON replies, streams."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from slipstream.errors import InvalidRequest
from slipstream.sim.engine import (
    VOCABULARY,
    completion_body,
    estimate_prompt_tokens,
    plan_chat,
    stream_chunks,
    stream_events,
    usage_chunk,
    validate_chat,
)
from slipstream.sim.options import SimOptions

OPTIONS = SimOptions()
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "hourly": {"type": "boolean"},
            },
            "required": ["city"],
        },
    },
}
TIME_TOOL = {
    "type": "function",
    "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}},
}


def chat(content: str = "Tell me about rivers.", **extra: Any) -> dict[str, Any]:
    return {"model": "sim-1", "messages": [{"role": "user", "content": content}], **extra}


def text_of(body: dict[str, Any], options: SimOptions = OPTIONS) -> str:
    content = plan_chat(body, options).choices[0].content
    assert content is not None
    return content


# ------------------------------------------------------------------------------------------ determinism
def test_same_request_same_text_different_request_different_text() -> None:
    assert text_of(chat()) == text_of(chat())
    others = {text_of(chat(f"Tell me about rivers, take {i}.")) for i in range(20)}
    assert len(others) == 20
    assert text_of(chat()) not in others
    assert text_of(chat(model="sim-2")) != text_of(chat())
    assert text_of(chat(seed=1)) != text_of(chat(seed=2))
    assert text_of(chat(tools=[TIME_TOOL])) != text_of(chat())


def test_fields_that_do_not_shape_the_answer_leave_it_alone() -> None:
    base = text_of(chat())
    assert text_of(chat(stream=True, user="u1", metadata={"a": "b"}, sim={"fault": "500"})) == base
    # JSON key order does not matter.
    reordered = {"messages": [{"content": "Tell me about rivers.", "role": "user"}], "model": "sim-1"}
    assert text_of(reordered) == base


def test_text_is_sentences_of_vocabulary_words() -> None:
    text = text_of(chat())
    assert text[0].isupper()
    assert text[-1] in ".?"
    words = {w.strip(".,?").lower() for w in text.split()}
    assert words <= set(VOCABULARY)


# ------------------------------------------------------------------------------------------ token counts
def test_reply_length_follows_the_configured_range() -> None:
    options = SimOptions.from_dict({"reply_tokens_min": 20, "reply_tokens_max": 60})
    lengths = [plan_chat(chat(f"question {i}"), options).completion_tokens for i in range(200)]
    # The reply runs on to the end of its sentence: at most one sentence (16 words) past the drawn length.
    assert min(lengths) >= 20
    assert max(lengths) <= 60 + 16
    assert max(lengths) - min(lengths) > 20  # it varies with the request
    default = [plan_chat(chat(f"question {i}"), OPTIONS).completion_tokens for i in range(100)]
    assert min(default) >= 40 and max(default) <= 416


def test_completion_tokens_count_the_words_of_the_reply() -> None:
    plan = plan_chat(chat(), OPTIONS)
    assert plan.completion_tokens == len(plan.choices[0].content.split())  # type: ignore[union-attr]
    assert plan.usage() == {
        "prompt_tokens": plan.prompt_tokens,
        "completion_tokens": plan.completion_tokens,
        "total_tokens": plan.prompt_tokens + plan.completion_tokens,
    }


def test_prompt_tokens_are_about_four_characters_each_plus_a_few_per_message() -> None:
    short = estimate_prompt_tokens(chat("hi"))
    assert short == 3 + 4 + 1
    body = chat("x" * 400)
    assert estimate_prompt_tokens(body) == 3 + 4 + 100
    two = {
        "model": "m",
        "messages": [{"role": "system", "content": "x" * 40}, {"role": "user", "content": "y" * 8}],
    }
    assert estimate_prompt_tokens(two) == 3 + (4 + 10) + (4 + 2)
    parts = chat()
    parts["messages"][0]["content"] = [
        {"type": "text", "text": "z" * 20},
        {"type": "image_url", "image_url": {"url": "data:"}},
    ]
    assert estimate_prompt_tokens(parts) == 3 + 4 + 5 + 85
    assert estimate_prompt_tokens(chat("hi", tools=[WEATHER_TOOL])) > short + 20


@pytest.mark.parametrize("field", ["max_tokens", "max_completion_tokens"])
def test_max_tokens_caps_the_reply_with_finish_reason_length(field: str) -> None:
    full = plan_chat(chat(), OPTIONS)
    capped = plan_chat({**chat(), field: 7}, OPTIONS)
    assert capped.completion_tokens == 7
    assert capped.choices[0].finish_reason == "length"
    assert full.choices[0].finish_reason == "stop"
    # The cap cuts the same reply short: the capped text is a prefix of the full one.
    assert (full.choices[0].content or "").startswith(capped.choices[0].content or "-")
    roomy = plan_chat({**chat(), field: 10_000}, OPTIONS)
    assert roomy.choices[0].finish_reason == "stop"
    assert roomy.completion_tokens == full.completion_tokens


def test_n_choices_are_distinct_and_indexed() -> None:
    plan = plan_chat(chat(n=3), OPTIONS)
    assert [c.index for c in plan.choices] == [0, 1, 2]
    assert len({c.content for c in plan.choices}) == 3
    assert plan.choices[0].content == text_of(chat())  # choice 0 is the n=1 answer
    assert plan.completion_tokens == sum(c.completion_tokens for c in plan.choices)


# ------------------------------------------------------------------------------------------ tools, JSON
def test_a_tool_named_in_the_last_user_message_is_called() -> None:
    body = chat("What is the weather? Use get_weather please.", tools=[WEATHER_TOOL, TIME_TOOL])
    plan = plan_chat(body, OPTIONS)
    choice = plan.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.content is None
    assert choice.tool_calls is not None and len(choice.tool_calls) == 1
    call = choice.tool_calls[0]
    assert call["type"] == "function" and call["id"].startswith("call_")
    assert call["function"]["name"] == "get_weather"
    args = orjson.loads(call["function"]["arguments"])
    assert isinstance(args["city"], str) and isinstance(args["days"], int)
    assert args["unit"] in ("celsius", "fahrenheit") and isinstance(args["hourly"], bool)
    assert plan.completion_tokens > 0
    assert plan_chat(body, OPTIONS).choices[0].tool_calls == choice.tool_calls  # deterministic


def test_tool_choice_rules() -> None:
    tools = [WEATHER_TOOL, TIME_TOOL]
    not_named = plan_chat(chat("Hello there.", tools=tools), OPTIONS).choices[0]
    assert not_named.tool_calls is None and not_named.content
    none = plan_chat(chat("use get_weather", tools=tools, tool_choice="none"), OPTIONS).choices[0]
    assert none.tool_calls is None
    forced = {"type": "function", "function": {"name": "get_time"}}
    forced_call = plan_chat(chat("Hello.", tools=tools, tool_choice=forced), OPTIONS).choices[0]
    assert [c["function"]["name"] for c in forced_call.tool_calls or []] == ["get_time"]
    required = plan_chat(chat("Hello.", tools=tools, tool_choice="required"), OPTIONS).choices[0]
    assert [c["function"]["name"] for c in required.tool_calls or []] == ["get_weather"]
    both = plan_chat(chat("get_weather and get_time", tools=tools), OPTIONS).choices[0]
    assert [c["function"]["name"] for c in both.tool_calls or []] == ["get_weather", "get_time"]
    one = plan_chat(
        chat("get_weather and get_time", tools=tools, parallel_tool_calls=False), OPTIONS
    ).choices[0]
    assert len(one.tool_calls or []) == 1


def test_a_tool_result_gets_a_text_answer() -> None:
    body = chat("use get_weather", tools=[WEATHER_TOOL])
    body["messages"] += [
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ]
    choice = plan_chat(body, OPTIONS).choices[0]
    assert choice.tool_calls is None and choice.finish_reason == "stop"


def test_json_object_reply_is_a_small_valid_object() -> None:
    content = text_of(chat(response_format={"type": "json_object"}))
    value = orjson.loads(content)
    assert isinstance(value, dict) and isinstance(value["answer"], str)
    assert len(content) < 600


def test_json_schema_reply_fills_the_schema() -> None:
    schema = {"type": "object", "properties": {"title": {"type": "string"}, "score": {"type": "number"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "r", "schema": schema}}
    value = orjson.loads(text_of(chat(response_format=fmt)))
    assert set(value) == {"title", "score"}
    assert isinstance(value["title"], str) and isinstance(value["score"], float | int)


def test_a_capped_json_reply_is_cut_like_a_real_one() -> None:
    plan = plan_chat(chat(response_format={"type": "json_object"}, max_tokens=3), OPTIONS)
    assert plan.choices[0].finish_reason == "length"
    assert plan.completion_tokens == 3
    with pytest.raises(orjson.JSONDecodeError):
        orjson.loads(plan.choices[0].content or "")


def test_validation_names_the_field() -> None:
    cases = [
        ([], None),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "m", "messages": []}, "messages"),
        ({"model": "m", "messages": ["hi"]}, "messages[0]"),
        ({**chat(), "max_tokens": 0}, "max_tokens"),
        ({**chat(), "max_completion_tokens": "5"}, "max_completion_tokens"),
        ({**chat(), "n": 0}, "n"),
        ({**chat(), "tools": {}}, "tools"),
    ]
    for body, param in cases:
        with pytest.raises(InvalidRequest) as info:
            validate_chat(body)
        assert info.value.param == param


# ------------------------------------------------------------------------------------------ rendering
def test_completion_body_is_an_openai_chat_completion() -> None:
    plan = plan_chat(chat(), OPTIONS)
    body = completion_body(plan, id="chatcmpl-1", created=123, model="deployed")
    assert body["object"] == "chat.completion"
    assert (body["id"], body["created"], body["model"]) == ("chatcmpl-1", 123, "deployed")
    message = body["choices"][0]["message"]
    assert message["role"] == "assistant" and message["content"] == plan.choices[0].content
    assert body["usage"] == plan.usage()


def _assemble(chunks: list[tuple[dict[str, Any], int]]) -> dict[int, dict[str, Any]]:
    out: dict[int, dict[str, Any]] = {}
    for chunk, _ in chunks:
        assert chunk["object"] == "chat.completion.chunk"
        for choice in chunk["choices"]:
            state = out.setdefault(choice["index"], {"content": "", "args": {}, "finish": None, "roles": 0})
            delta = choice["delta"]
            state["roles"] += "role" in delta
            state["content"] += delta.get("content") or ""
            for call in delta.get("tool_calls") or ():
                slot = state["args"].setdefault(call["index"], {"name": None, "arguments": ""})
                fn = call.get("function") or {}
                slot["name"] = fn.get("name") or slot["name"]
                slot["arguments"] += fn.get("arguments") or ""
            state["finish"] = choice["finish_reason"] or state["finish"]
    return out


def test_stream_chunks_add_up_to_the_completion() -> None:
    plan = plan_chat(chat(n=2), OPTIONS)
    chunks = stream_chunks(plan, id="c", created=1, model="m", chunk_tokens=4)
    assembled = _assemble(chunks)
    for choice in plan.choices:
        state = assembled[choice.index]
        assert state["content"] == choice.content
        assert state["finish"] == choice.finish_reason
        assert state["roles"] == 1
    # First a role chunk, last a finish chunk; content chunks carry at most chunk_tokens tokens.
    assert chunks[0][0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-1][0]["choices"][0]["finish_reason"] is not None
    assert max(tokens for _, tokens in chunks) == 4
    assert sum(tokens for _, tokens in chunks) == plan.completion_tokens
    assert all("usage" not in c for c, _ in chunks)
    with_nulls = stream_chunks(plan, id="c", created=1, model="m", chunk_tokens=4, usage_field=True)
    assert all(c["usage"] is None for c, _ in with_nulls)
    last = usage_chunk(plan, id="c", created=1, model="m")
    assert last["choices"] == [] and last["usage"] == plan.usage()


@pytest.mark.parametrize(
    "extra",
    [
        {},
        {"n": 3, "max_tokens": 7},
        {"response_format": {"type": "json_object"}},  # quotes in the content: escaping must match
        {"tools": [WEATHER_TOOL], "n": 2},
    ],
)
@pytest.mark.parametrize("usage_field", [False, True])
def test_stream_events_are_the_stream_chunks_as_sse(extra: dict[str, Any], usage_field: bool) -> None:
    content = "use get_weather" if "tools" in extra else "Tell me about rivers."
    plan = plan_chat(chat(content, **extra), OPTIONS)
    kw: dict[str, Any] = {"id": 'chatcmpl-"x', "created": 7, "model": "m/1", "chunk_tokens": 3}
    chunks = stream_chunks(plan, usage_field=usage_field, **kw)
    events = stream_events(plan, usage_field=usage_field, **kw)
    assert [tokens for _, tokens in events] == [tokens for _, tokens in chunks]
    for (event, _), (chunk, _) in zip(events, chunks, strict=True):
        assert event.startswith(b"data: ") and event.endswith(b"\n\n")
        assert event[6:-2] == orjson.dumps(chunk)  # byte for byte, key order included


def test_streamed_tool_calls_add_up_to_the_call() -> None:
    plan = plan_chat(chat("get_weather", tools=[WEATHER_TOOL]), OPTIONS)
    assembled = _assemble(stream_chunks(plan, id="c", created=1, model="m", chunk_tokens=2))[0]
    call = (plan.choices[0].tool_calls or [])[0]
    assert assembled["args"][0] == {"name": "get_weather", "arguments": call["function"]["arguments"]}
    assert assembled["finish"] == "tool_calls"
