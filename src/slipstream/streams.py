"""Turning streams into replies and back.

``StreamAssembler`` watches chunks pass (it never holds them back) and builds the complete ``chat.completion``
they add up to — that is what the cache stores, so a streamed answer can later serve a non-streamed request and
the other way round. ``replay_chunks`` turns a stored reply into the chunks of a proper stream.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from .types import Chunk, ChunkStream

__all__ = ["StreamAssembler", "assembled_on_completion", "prepend", "replay_chunks", "replay_stream"]

# Size of the content pieces a replayed stream is cut into: small enough to look like a stream to clients that
# render incrementally, large enough that a long answer stays a handful of events.
_REPLAY_PIECE_CHARS = 256


class _ChoiceState:
    __slots__ = ("content", "finish_reason", "logprobs", "refusal", "role", "tool_calls")

    def __init__(self) -> None:
        self.role = "assistant"
        self.content: list[str] = []
        self.refusal: list[str] = []
        self.tool_calls: dict[int, dict[str, Any]] = {}
        self.finish_reason: str | None = None
        self.logprobs: list[Any] | None = None


class StreamAssembler:
    """Accumulates OpenAI chunks into the ``chat.completion`` they describe."""

    __slots__ = ("_choices", "created", "id", "model", "system_fingerprint", "usage")

    def __init__(self) -> None:
        self._choices: dict[int, _ChoiceState] = {}
        self.id = ""
        self.model = ""
        self.created = 0
        self.system_fingerprint: str | None = None
        self.usage: dict[str, Any] | None = None

    def feed(self, chunk: Chunk) -> None:
        data = chunk.data
        if not self.id:
            self.id = data.get("id") or ""
            self.model = data.get("model") or ""
            self.created = data.get("created") or 0
        if data.get("system_fingerprint"):
            self.system_fingerprint = data["system_fingerprint"]
        usage = data.get("usage")
        if usage:
            self.usage = usage
        for choice in data.get("choices") or ():
            index = choice.get("index", 0)
            state = self._choices.get(index)
            if state is None:
                state = self._choices[index] = _ChoiceState()
            delta = choice.get("delta") or {}
            if delta.get("role"):
                state.role = delta["role"]
            if delta.get("content"):
                state.content.append(delta["content"])
            if delta.get("refusal"):
                state.refusal.append(delta["refusal"])
            for call in delta.get("tool_calls") or ():
                self._feed_tool_call(state, call)
            logprobs = choice.get("logprobs")
            if logprobs and logprobs.get("content"):
                if state.logprobs is None:
                    state.logprobs = []
                state.logprobs.extend(logprobs["content"])
            if choice.get("finish_reason"):
                state.finish_reason = choice["finish_reason"]

    @staticmethod
    def _feed_tool_call(state: _ChoiceState, call: dict[str, Any]) -> None:
        slot = state.tool_calls.get(call.get("index", 0))
        fn = call.get("function") or {}
        if slot is None:
            state.tool_calls[call.get("index", 0)] = {
                "id": call.get("id", ""),
                "type": call.get("type", "function"),
                "function": {"name": fn.get("name", ""), "arguments": fn.get("arguments", "") or ""},
            }
            return
        if call.get("id"):
            slot["id"] = call["id"]
        if fn.get("name"):
            slot["function"]["name"] += fn["name"]
        if fn.get("arguments"):
            slot["function"]["arguments"] += fn["arguments"]

    @property
    def finished(self) -> bool:
        """Every choice seen has a finish reason (the stream ended as a whole answer, not cut off)."""
        return bool(self._choices) and all(s.finish_reason for s in self._choices.values())

    def reply(self) -> dict[str, Any]:
        choices = []
        for index in sorted(self._choices):
            state = self._choices[index]
            message: dict[str, Any] = {"role": state.role, "content": "".join(state.content) or None}
            if state.refusal:
                message["refusal"] = "".join(state.refusal)
            if state.tool_calls:
                message["tool_calls"] = [state.tool_calls[i] for i in sorted(state.tool_calls)]
            elif message["content"] is None:
                message["content"] = ""
            choice: dict[str, Any] = {
                "index": index,
                "message": message,
                "finish_reason": state.finish_reason,
            }
            choice["logprobs"] = {"content": state.logprobs} if state.logprobs is not None else None
            choices.append(choice)
        reply: dict[str, Any] = {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }
        if self.system_fingerprint:
            reply["system_fingerprint"] = self.system_fingerprint
        if self.usage is not None:
            reply["usage"] = self.usage
        return reply


def replay_chunks(reply: dict[str, Any], *, include_usage: bool) -> list[Chunk]:
    """The chunks of a stream that says what ``reply`` says: role, content pieces, tool calls, finish, usage."""
    base = {
        "id": reply.get("id", ""),
        "object": "chat.completion.chunk",
        "created": reply.get("created", 0),
        "model": reply.get("model", ""),
    }
    if reply.get("system_fingerprint"):
        base["system_fingerprint"] = reply["system_fingerprint"]

    def chunk(index: int, delta: dict[str, Any], finish_reason: str | None = None) -> Chunk:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return Chunk({**base, "choices": [choice]})

    chunks: list[Chunk] = []
    for choice in reply.get("choices") or ():
        index = choice.get("index", 0)
        message = choice.get("message") or {}
        chunks.append(chunk(index, {"role": message.get("role", "assistant"), "content": ""}))
        content = message.get("content")
        if isinstance(content, str):
            for start in range(0, len(content), _REPLAY_PIECE_CHARS):
                chunks.append(chunk(index, {"content": content[start : start + _REPLAY_PIECE_CHARS]}))
        if message.get("refusal"):
            chunks.append(chunk(index, {"refusal": message["refusal"]}))
        for position, call in enumerate(message.get("tool_calls") or ()):
            chunks.append(chunk(index, {"tool_calls": [{"index": position, **call}]}))
        chunks.append(chunk(index, {}, choice.get("finish_reason") or "stop"))
    if include_usage and reply.get("usage") is not None:
        chunks.append(Chunk({**base, "choices": [], "usage": reply["usage"]}))
    return chunks


async def replay_stream(reply: dict[str, Any], *, include_usage: bool) -> AsyncIterator[Chunk]:
    """``replay_chunks`` as a stream, for answers that come from somewhere other than an upstream stream."""
    for chunk in replay_chunks(reply, include_usage=include_usage):
        yield chunk


async def prepend(first: Chunk, rest: ChunkStream) -> AsyncIterator[Chunk]:
    """``first``, then the rest of the stream it was read from; closing this closes ``rest``."""
    try:
        yield first
        async for chunk in rest:
            yield chunk
    finally:
        await rest.aclose()  # type: ignore[attr-defined]


async def assembled_on_completion(
    stream: ChunkStream, done: Callable[[dict[str, Any]], Awaitable[None]]
) -> AsyncIterator[Chunk]:
    """Pass ``stream`` through unbuffered and, once it has ended cleanly and been read to the end, await
    ``done`` with the reply its chunks add up to (what a cache stores). A consumer that stops early closes this
    generator, which closes ``stream`` too, and ``done`` is not called; nor is it when ``stream`` raised."""
    assembler = StreamAssembler()
    try:
        async for chunk in stream:
            assembler.feed(chunk)
            yield chunk
    finally:
        aclose = getattr(stream, "aclose", None)
        if aclose is not None:
            await aclose()
    if assembler.finished:
        await done(assembler.reply())
