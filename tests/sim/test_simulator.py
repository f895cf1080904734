"""The simulator's per-request decisions: overrides in the ``sim`` field, limits with a fake clock, counters."""

from __future__ import annotations

from typing import Any

import pytest

from slipstream.errors import InvalidRequest
from slipstream.sim import SimOptionError, SimOptions, Simulator


class FakeClock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def chat(content: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "sim-1", "messages": [{"role": "user", "content": content}], **extra}


def test_a_plain_request_is_answered() -> None:
    sim = Simulator()
    outcome = sim.chat(chat())
    assert (outcome.status, outcome.fault, outcome.error, outcome.headers) == (200, None, None, [])
    assert outcome.timing.instant
    assert outcome.plan is not None and outcome.plan.completion_tokens > 0
    assert outcome.model == "sim-1" and outcome.id.startswith("chatcmpl-")
    assert sim.chat(chat()).id != outcome.id  # ids are per call, the text is per request
    assert sim.stats.prompt_tokens == 2 * outcome.plan.prompt_tokens


def test_the_sim_field_overrides_options_for_one_request() -> None:
    sim = Simulator(SimOptions.from_dict({"reply_tokens_min": 5, "reply_tokens_max": 5}))
    forced = sim.chat(chat(sim={"fault": "503"}))
    assert forced.status == 503 and forced.fault == "503"
    assert forced.error is not None and forced.error["error"]["type"] == "server_error"
    assert sim.chat(chat()).status == 200  # the override lasted one request
    longer = sim.chat(chat(sim={"reply_tokens_min": 100, "reply_tokens_max": 100}))
    assert longer.plan is not None and longer.plan.completion_tokens >= 100
    slow = sim.chat(chat(sim={"ttft": 2.5}))
    assert slow.timing.ttft == 2.5
    assert sim.stats.faults == {"503": 1}


def test_a_bad_override_is_a_400_naming_the_key() -> None:
    sim = Simulator()
    with pytest.raises(SimOptionError) as info:
        sim.chat(chat(sim={"fualt": "500"}))
    assert info.value.status == 400 and info.value.param == "sim.fualt"
    with pytest.raises(InvalidRequest, match="'sim'"):
        sim.chat(chat(sim="500"))


def test_a_seed_in_the_override_replays_the_same_faults() -> None:
    sim = Simulator()
    rates = {"seed": 42, "error_rate": 0.5}
    first = [sim.chat(chat(sim=rates)).fault for _ in range(30)]
    again = [sim.chat(chat(sim=rates)).fault for _ in range(30)]
    assert first == again  # a fresh RNG per seeded request: each draws the same first number
    assert len(set(first)) == 1


def test_seeded_options_replay_after_reset() -> None:
    sim = Simulator(SimOptions.from_dict({"seed": 9, "error_rate": 0.3, "rate_429": 0.2}))
    first = [sim.chat(chat()).fault for _ in range(50)]
    assert {"500", "429", None} <= set(first)
    sim.reset()
    assert [sim.chat(chat()).fault for _ in range(50)] == first
    assert sim.stats.faults == {k: first.count(k) for k in ("500", "429")}


def test_injected_429_carries_retry_after() -> None:
    sim = Simulator(SimOptions.from_dict({"fault": "429", "retry_after": 2.5}))
    outcome = sim.chat(chat())
    assert outcome.status == 429 and outcome.retry_after == 2.5
    assert dict(outcome.headers) == {"retry-after": "2.5", "retry-after-ms": "2500"}
    assert outcome.error is not None and outcome.error["error"]["code"] == "rate_limit_exceeded"
    whole = Simulator(SimOptions.from_dict({"fault": "429", "retry_after": 3})).chat(chat())
    assert dict(whole.headers)["retry-after"] == "3"


def test_rpm_limit_with_a_fake_clock() -> None:
    clock = FakeClock()
    sim = Simulator(SimOptions.from_dict({"rpm_limit": 2}), clock=clock)
    first = sim.chat(chat())
    assert dict(first.headers)["x-ratelimit-remaining-requests"] == "1"
    assert sim.chat(chat()).status == 200
    refused = sim.chat(chat())
    assert refused.status == 429 and refused.fault == "rate_limit"
    assert refused.retry_after == pytest.approx(60.0)
    assert dict(refused.headers)["retry-after"] == "60"
    assert refused.error is not None and refused.error["error"]["type"] == "requests"
    assert sim.stats.faults == {"rate_limit": 1}
    clock.now += 60
    assert sim.chat(chat()).status == 200


def test_tpm_limit_counts_prompt_and_completion_tokens() -> None:
    clock = FakeClock()
    sim = Simulator(SimOptions.from_dict({"tpm_limit": 1000}), clock=clock)
    outcome = sim.chat(chat())
    assert outcome.plan is not None
    left = int(dict(outcome.headers)["x-ratelimit-remaining-tokens"])
    assert left == 1000 - outcome.plan.total_tokens
    while sim.chat(chat()).status == 200:
        pass
    assert sim.stats.faults == {"rate_limit": 1}
    sim.reset()
    assert sim.chat(chat()).status == 200


def test_embeddings_share_limits_and_faults() -> None:
    clock = FakeClock()
    sim = Simulator(SimOptions.from_dict({"rpm_limit": 1}), clock=clock)
    ok = sim.embeddings({"model": "e", "input": "hello"})
    assert ok.status == 200 and ok.plan is not None
    assert sim.embeddings({"model": "e", "input": "hello"}).status == 429
    broken = Simulator().embeddings({"model": "e", "input": "x", "sim": {"fault": "broken_stream"}})
    assert broken.fault is None and broken.status == 200  # a small reply arrives whole or not at all
    failing = Simulator().embeddings({"model": "e", "input": "x", "sim": {"fault": "500"}})
    assert failing.status == 500


def test_streams_and_include_usage_are_noted() -> None:
    sim = Simulator()
    outcome = sim.chat(chat(stream=True, stream_options={"include_usage": True}))
    assert outcome.stream and outcome.include_usage
    assert not sim.chat(chat(stream=True)).include_usage
    assert not sim.chat(chat(), stream=False).stream
    assert sim.stats.streams == 2
