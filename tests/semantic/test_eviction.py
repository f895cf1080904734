"""The semantic tier shares the exact tier's TTL and eviction: an entry whose reply the exact store no longer
holds is a miss, and is dropped once it is older than the grace period (the exact write may still be on its
way). The exact and semantic layers here are the real ones over a real MemoryStore, with an injected clock."""

from __future__ import annotations

from slipstream.cache.directives import CacheDirectives
from slipstream.cache.layer import CacheLayer
from slipstream.call import Call
from slipstream.schema import validate_chat_request
from slipstream.semantic.embedder import CachedEmbedder
from slipstream.semantic.layer import MISSING_REPLY_GRACE, GroupSemantics, SemanticLayer
from slipstream.semantic.matcher import MatchPolicy
from slipstream.stores.memory import MemoryStore
from slipstream.types import Reply

REPLY = {
    "id": "r1",
    "object": "chat.completion",
    "created": 1,
    "model": "m",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "answer"}, "finish_reason": "stop"}],
}


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def ask(text: str, cache: str | None = None) -> Call:
    body = {"model": "m", "messages": [{"role": "user", "content": text}]}
    return Call(validate_chat_request(body), cache=CacheDirectives.parse(cache))


def layers(store: MemoryStore, clock: Clock, embedder) -> tuple[SemanticLayer, list[int], object]:
    calls = [0]

    async def upstream(call: Call) -> Reply:
        calls[0] += 1
        return Reply(dict(REPLY))

    exact = CacheLayer(store, ttl=100.0, clock=clock)
    semantic = SemanticLayer(
        store,
        {"m": GroupSemantics(MatchPolicy(threshold=0.9), "local")},
        {"local": CachedEmbedder(embedder)},
        ttl=100.0,
        clock=clock,
    )

    async def run(call: Call):
        return await exact(call, lambda c: semantic(c, upstream))

    return semantic, calls, run


async def test_an_evicted_reply_makes_the_entry_a_miss_and_then_removes_it(embedder):
    clock = Clock()
    store = MemoryStore(clock=clock)
    semantic, calls, run = layers(store, clock, embedder)
    first = ask("What are some good tips for self study?")
    await run(first)
    similar = ask("What are the smart tips for self studying?")
    await run(similar)
    assert similar.cache_status == "semantic-hit" and calls[0] == 1

    await store.delete(first.cache_key)  # evicted from the exact tier
    again = ask("What are the smart tips for self studying?", cache="no-store")
    await run(again)
    assert again.cache_status == "miss" and calls[0] == 2
    index = next(iter(semantic.indexes.values()))
    assert (
        index.get(first.cache_key) is not None
    )  # within the grace period: the exact write may be on its way

    clock.now += MISSING_REPLY_GRACE + 1
    later = ask("What are the smart tips for self studying?", cache="no-store")
    await run(later)
    assert later.cache_status == "miss"
    assert index.get(first.cache_key) is None  # older than the grace period: gone


async def test_entries_expire_with_their_replies(embedder):
    clock = Clock()
    store = MemoryStore(clock=clock)
    semantic, calls, run = layers(store, clock, embedder)
    await run(ask("What are some good tips for self study?"))
    clock.now += 101  # past the TTL the entry shares with its reply
    late = ask("What are the smart tips for self studying?")
    await run(late)
    assert late.cache_status == "miss" and calls[0] == 2
    index = next(iter(semantic.indexes.values()))
    assert [e.text for e in index] == [
        "What are the smart tips for self studying?"
    ]  # the expired one dropped
