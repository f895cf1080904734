from slipstream.streams import StreamAssembler, replay_chunks
from slipstream.types import Chunk


def _chunk(delta, finish=None, index=0, **extra):
    return Chunk(
        {
            "id": "c1",
            "object": "chat.completion.chunk",
            "created": 5,
            "model": "m",
            "choices": [{"index": index, "delta": delta, "finish_reason": finish}],
            **extra,
        }
    )


def test_assembles_text_and_usage():
    a = StreamAssembler()
    for c in [
        _chunk({"role": "assistant", "content": ""}),
        _chunk({"content": "Hel"}),
        _chunk({"content": "lo"}),
        _chunk({}, "stop"),
    ]:
        a.feed(c)
    assert not a.usage
    a.feed(
        Chunk(
            {
                "id": "c1",
                "choices": [],
                "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5},
            }
        )
    )
    assert a.finished
    reply = a.reply()
    assert reply["choices"][0]["message"] == {"role": "assistant", "content": "Hello"}
    assert reply["choices"][0]["finish_reason"] == "stop"
    assert reply["usage"]["total_tokens"] == 5
    assert reply["id"] == "c1" and reply["object"] == "chat.completion"


def test_assembles_tool_call_fragments():
    a = StreamAssembler()
    a.feed(
        _chunk(
            {
                "role": "assistant",
                "tool_calls": [
                    {"index": 0, "id": "t1", "type": "function", "function": {"name": "get", "arguments": ""}}
                ],
            }
        )
    )
    a.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]}))
    a.feed(_chunk({"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]}))
    a.feed(_chunk({}, "tool_calls"))
    message = a.reply()["choices"][0]["message"]
    assert message["tool_calls"] == [
        {"id": "t1", "type": "function", "function": {"name": "get", "arguments": '{"a":1}'}}
    ]


def test_unfinished_stream_is_not_finished():
    a = StreamAssembler()
    a.feed(_chunk({"role": "assistant", "content": "partial"}))
    assert not a.finished


def test_replay_round_trips_through_the_assembler():
    reply = {
        "id": "r",
        "object": "chat.completion",
        "created": 1,
        "model": "m",
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "x" * 600}, "finish_reason": "length"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    }
    chunks = replay_chunks(reply, include_usage=True)
    assert chunks[0].data["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert len([c for c in chunks if c.data["choices"] and c.data["choices"][0]["delta"].get("content")]) == 3
    assert chunks[-1].is_usage_only
    a = StreamAssembler()
    for c in chunks:
        a.feed(c)
    again = a.reply()
    assert again["choices"][0]["message"]["content"] == "x" * 600
    assert again["choices"][0]["finish_reason"] == "length"
    assert again["usage"] == reply["usage"]
    assert not replay_chunks(reply, include_usage=False)[-1].is_usage_only
