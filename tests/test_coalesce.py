"""Single-flight coalescing with a controllable fake upstream (`next`)."""

from __future__ import annotations

import asyncio

import pytest

from slipstream.call import Call
from slipstream.coalesce import CoalescingLayer
from slipstream.errors import UpstreamStatusError
from slipstream.schema import validate_chat_request
from slipstream.streams import replay_chunks
from slipstream.types import Reply

REPLY = {
    "id": "r",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "x" * 1000}, "finish_reason": "stop"}
    ],
    "usage": {"prompt_tokens": 1, "completion_tokens": 9, "total_tokens": 10},
}
CHUNKS = replay_chunks(REPLY, include_usage=True)


class Upstream:
    """Counts calls; streams CHUNKS one per `step` event so tests decide when each chunk arrives."""

    def __init__(self, *, fail: bool = False, fail_mid_stream: bool = False) -> None:
        self.calls = 0
        self.cancelled = False
        self.release = asyncio.Event()
        self.step = asyncio.Semaphore(0)
        self.fail = fail
        self.fail_mid_stream = fail_mid_stream

    async def __call__(self, call: Call):
        self.calls += 1
        try:
            await self.release.wait()
        except asyncio.CancelledError:
            self.cancelled = True
            raise
        if self.fail:
            raise UpstreamStatusError("boom", upstream_status=503)
        if not call.stream:
            return Reply(dict(REPLY))
        return self._stream()

    async def _stream(self):
        try:
            for i, chunk in enumerate(CHUNKS):
                await self.step.acquire()
                if self.fail_mid_stream and i == 3:
                    raise UpstreamStatusError("mid-stream", upstream_status=502)
                yield chunk
        except asyncio.CancelledError:
            self.cancelled = True
            raise

    def flow(self) -> None:
        """Let every chunk through."""
        self.release.set()
        for _ in CHUNKS:
            self.step.release()


def _call(stream: bool = False) -> Call:
    body = {"model": "m", "messages": [{"role": "user", "content": "same"}], "stream": stream}
    return Call(validate_chat_request(body))


async def _text(result) -> str:
    if isinstance(result, Reply):
        return result.text
    return "".join(
        [c.data["choices"][0]["delta"].get("content") or "" async for c in result if c.data["choices"]]
    )


@pytest.mark.parametrize("stream", [False, True])
async def test_100_identical_requests_make_one_upstream_call(stream: bool):
    layer, up = CoalescingLayer(), Upstream()
    tasks = [asyncio.create_task(layer(_call(stream), up)) for _ in range(100)]
    await asyncio.sleep(0)
    up.flow()
    texts = [await _text(await t) for t in tasks]
    assert up.calls == 1
    assert texts == ["x" * 1000] * 100
    assert layer.coalesced == 99 and layer.in_flight == 0


async def test_late_streamed_follower_gets_what_was_already_sent():
    layer, up = CoalescingLayer(), Upstream()
    up.release.set()
    leader = await layer(_call(True), up)
    for _ in range(3):
        up.step.release()
    first = [await anext(leader) for _ in range(3)]
    follower = await layer(_call(True), up)
    for _ in CHUNKS[3:]:
        up.step.release()
    follower_chunks = [c async for c in follower]
    rest = [c async for c in leader]
    assert [c.data for c in follower_chunks] == [c.data for c in CHUNKS]
    assert [c.data for c in first + rest] == [c.data for c in CHUNKS]
    assert up.calls == 1


async def test_non_streamed_follower_of_a_streamed_leader_gets_the_assembled_reply():
    layer, up = CoalescingLayer(), Upstream()
    leader = asyncio.create_task(layer(_call(True), up))
    follower = asyncio.create_task(layer(_call(False), up))
    await asyncio.sleep(0)
    up.flow()
    reply = await follower
    assert isinstance(reply, Reply) and reply.text == "x" * 1000 and reply.usage["total_tokens"] == 10
    assert await _text(await leader) == "x" * 1000
    assert up.calls == 1


async def test_cancelling_one_waiter_does_not_disturb_the_others():
    layer, up = CoalescingLayer(), Upstream()
    tasks = [asyncio.create_task(layer(_call(), up)) for _ in range(5)]
    await asyncio.sleep(0)
    tasks[0].cancel()
    await asyncio.sleep(0)
    up.flow()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert isinstance(results[0], asyncio.CancelledError)
    assert all(isinstance(r, Reply) and r.text == "x" * 1000 for r in results[1:])
    assert not up.cancelled and up.calls == 1


async def test_streamed_waiter_that_stops_reading_does_not_disturb_the_others():
    layer, up = CoalescingLayer(), Upstream()
    up.release.set()
    a = await layer(_call(True), up)
    b = await layer(_call(True), up)
    up.step.release()
    await anext(a)
    await a.aclose()  # a's client went away
    for _ in CHUNKS[1:]:
        up.step.release()
    assert len([c async for c in b]) == len(CHUNKS)
    assert not up.cancelled


async def test_upstream_is_cancelled_when_every_waiter_has_gone():
    layer, up = CoalescingLayer(), Upstream()
    tasks = [asyncio.create_task(layer(_call(), up)) for _ in range(3)]
    await asyncio.sleep(0)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await asyncio.sleep(0)
    assert up.cancelled and layer.in_flight == 0


async def test_streamed_upstream_is_cancelled_when_the_last_reader_leaves():
    layer, up = CoalescingLayer(), Upstream()
    up.release.set()
    a = await layer(_call(True), up)
    up.step.release()
    await anext(a)
    await a.aclose()
    await asyncio.sleep(0)
    assert up.cancelled


@pytest.mark.parametrize("stream", [False, True])
async def test_an_upstream_error_reaches_every_waiter(stream: bool):
    layer, up = CoalescingLayer(), Upstream(fail=True)
    tasks = [asyncio.create_task(layer(_call(stream), up)) for _ in range(4)]
    await asyncio.sleep(0)
    up.flow()
    results = await asyncio.gather(*tasks, return_exceptions=True)
    assert all(isinstance(r, UpstreamStatusError) and r.message == "boom" for r in results)
    assert len({id(r) for r in results}) == 4  # each waiter raises its own exception object


async def test_an_error_mid_stream_reaches_every_streamed_waiter_after_the_chunks_before_it():
    layer, up = CoalescingLayer(), Upstream(fail_mid_stream=True)
    up.release.set()
    streams = [await layer(_call(True), up) for _ in range(3)]
    up.flow()
    for stream in streams:
        got = []
        with pytest.raises(UpstreamStatusError, match="mid-stream"):
            async for chunk in stream:
                got.append(chunk)
        assert len(got) == 3


async def test_after_a_flight_lands_a_new_request_starts_a_new_one():
    layer, up = CoalescingLayer(), Upstream()
    up.flow()
    await layer(_call(), up)
    await layer(_call(), up)
    assert up.calls == 2 and layer.coalesced == 0
