"""The cache layer with a fake `next` handler and a real MemoryStore."""

import pytest

from slipstream.cache.directives import CacheDirectives
from slipstream.cache.layer import CacheLayer
from slipstream.call import Call
from slipstream.errors import UpstreamProtocolError
from slipstream.schema import validate_chat_request, validate_embeddings_request
from slipstream.stores.memory import MemoryStore
from slipstream.streams import replay_chunks
from slipstream.types import Reply

REPLY = {
    "id": "r1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "answer"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7},
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Upstream:
    """A fake `next`: counts calls, answers REPLY (or a stream of it)."""

    def __init__(self, *, fail_after: int | None = None, unfinished: bool = False) -> None:
        self.calls = 0
        self.fail_after = fail_after
        self.unfinished = unfinished

    async def __call__(self, call: Call):
        self.calls += 1
        if not call.stream:
            return Reply(dict(REPLY))
        return self._stream()

    async def _stream(self):
        chunks = replay_chunks(REPLY, include_usage=True)
        if self.unfinished:
            chunks = chunks[:-2]
        for i, chunk in enumerate(chunks):
            if self.fail_after is not None and i == self.fail_after:
                raise UpstreamProtocolError("broke")
            yield chunk


def _call(stream=False, namespace="default", cache=None, content="q"):
    body = {"model": "m", "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
    return Call(validate_chat_request(body), namespace=namespace, cache=cache or CacheDirectives())


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def layer(clock):
    return CacheLayer(MemoryStore(clock=clock), ttl=60, clock=clock)


async def test_second_identical_call_is_a_hit_with_age(layer, clock):
    up = Upstream()
    first = _call()
    await layer(first, up)
    assert first.cache_status == "miss"
    clock.now += 12
    second = _call()
    reply = await layer(second, up)
    assert up.calls == 1
    assert second.cache_status == "hit" and second.cache_age == pytest.approx(12)
    assert reply.data == REPLY
    assert layer.stats.hits == 1 and layer.stats.misses == 1 and layer.stats.saved_completion_tokens == 2


async def test_ttl_expiry_is_a_miss(layer, clock):
    up = Upstream()
    await layer(_call(), up)
    clock.now += 61
    call = _call()
    await layer(call, up)
    assert call.cache_status == "miss" and up.calls == 2


async def test_namespaces_never_share(layer):
    up = Upstream()
    await layer(_call(namespace="a"), up)
    other = _call(namespace="b")
    await layer(other, up)
    assert other.cache_status == "miss" and up.calls == 2


async def test_directives(layer):
    up = Upstream()
    nostore = _call(cache=CacheDirectives.parse("no-store"))
    await layer(nostore, up)
    again = _call()
    await layer(again, up)
    assert again.cache_status == "miss"  # no-store did not store
    refresh = _call(cache=CacheDirectives.parse("refresh"))
    await layer(refresh, up)
    assert refresh.cache_status == "refresh" and up.calls == 3
    bypass = _call(cache=CacheDirectives.parse("bypass"))
    await layer(bypass, up)
    assert bypass.cache_status == "bypass" and up.calls == 4
    hit = _call()
    await layer(hit, up)
    assert hit.cache_status == "hit" and up.calls == 4


async def test_stream_miss_passes_chunks_and_stores_when_finished(layer):
    up = Upstream()
    call = _call(stream=True)
    stream = await layer(call, up)
    seen = [c.data async for c in stream]
    assert seen == [c.data for c in replay_chunks(REPLY, include_usage=True)]
    # a non-streamed request now hits the entry the stream left
    plain = _call()
    reply = await layer(plain, up)
    assert plain.cache_status == "hit" and reply.text == "answer" and reply.usage["total_tokens"] == 7


async def test_stream_hit_replays_a_stream(layer):
    up = Upstream()
    await layer(_call(), up)
    call = _call(stream=True)
    stream = await layer(call, up)
    chunks = [c async for c in stream]
    assert call.cache_status == "hit" and up.calls == 1
    assert (
        "".join(c.data["choices"][0]["delta"].get("content", "") for c in chunks if c.data["choices"])
        == "answer"
    )
    assert chunks[-1].data["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize("kind", ["error", "unfinished", "abandoned"])
async def test_streams_that_do_not_finish_cleanly_are_not_stored(layer, kind):
    up = Upstream(fail_after=3 if kind == "error" else None, unfinished=kind == "unfinished")
    stream = await layer(_call(stream=True), up)
    if kind == "error":
        with pytest.raises(UpstreamProtocolError):
            async for _ in stream:
                pass
    elif kind == "abandoned":
        await anext(stream)
        await stream.aclose()
    else:
        async for _ in stream:
            pass
    again = _call()
    await layer(again, up)
    assert again.cache_status == "miss"


async def test_corrupt_entry_is_a_miss_and_removed(layer):
    up = Upstream()
    first = _call()
    await layer(first, up)
    await layer.store.set(first.cache_key, b"{not json", 60)
    again = _call()
    reply = await layer(again, up)
    assert again.cache_status == "miss" and reply.text == "answer" and up.calls == 2


async def test_embeddings_are_cached_by_kind(layer):
    calls = 0

    async def embed_next(call):
        nonlocal calls
        calls += 1
        return Reply({"object": "list", "data": [{"object": "embedding", "index": 0, "embedding": [1.0]}]})

    for _ in range(2):
        call = Call(validate_embeddings_request({"model": "e", "input": "x"}))
        await layer(call, embed_next)
    assert calls == 1 and call.cache_status == "hit"


async def test_coalesced_followers_do_not_store_again(layer):
    stores = []
    real_set = layer.store.set

    async def counting_set(key, value, ttl):
        stores.append(key)
        await real_set(key, value, ttl)

    layer.store.set = counting_set
    up = Upstream()
    follower = _call()
    follower.coalesced = True  # as the coalescing layer marks a request answered by another's upstream call
    await layer(follower, up)
    assert stores == []  # the follower's answer is the leader's; the leader's pass stores it
    leader = _call()
    await layer(leader, up)
    assert leader.cache_status == "miss" and stores == [leader.cache_key]
