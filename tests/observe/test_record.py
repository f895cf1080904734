from slipstream.call import Call
from slipstream.observe.record import RequestRecord, record_from_call, usage_tokens
from slipstream.providers.base import Price
from slipstream.types import ChatRequest

PRICE = Price(input=1.0, output=2.0, cached_input=0.5)
USAGE = {"prompt_tokens": 1000, "completion_tokens": 500, "prompt_tokens_details": {"cached_tokens": 200}}


def _call(**attrs: object) -> Call:
    call = Call(
        ChatRequest({"model": "fast", "messages": [{"role": "user", "content": "hi"}]}), key_name="k1"
    )
    for name, value in attrs.items():
        setattr(call, name, value)
    return call


def test_record_is_slotted():
    rec = RequestRecord(ts=1.0, group="g", status=200, latency_ms=1.0)
    assert not hasattr(rec, "__dict__")


def test_usage_tokens():
    assert usage_tokens(USAGE) == (1000, 500, 200)
    assert usage_tokens(None) == (0, 0, 0)


def test_upstream_call_costs_and_saves_nothing():
    call = _call(cache_status="miss", deployment="openai/gpt-4o", attempts=2)
    rec = record_from_call(
        call, ts=5.0, status=200, latency_ms=100.0, upstream_ms=90.0, usage=USAGE, price=PRICE
    )
    assert rec.cost_usd == (800 * 1.0 + 200 * 0.5 + 500 * 2.0) / 1e6
    assert rec.saved_usd == 0.0
    assert rec.overhead_ms == 10.0
    assert (rec.group, rec.key_name, rec.deployment, rec.attempts) == ("fast", "k1", "openai/gpt-4o", 2)
    assert rec.ok


def test_cache_hit_and_coalesced_count_as_saved():
    for call in (_call(cache_status="hit"), _call(cache_status="miss", coalesced=True)):
        rec = record_from_call(call, ts=5.0, status=200, latency_ms=1.0, usage=USAGE, price=PRICE)
        assert rec.cost_usd == 0.0
        assert rec.saved_usd > 0


def test_error_is_recorded_by_class_name():
    rec = record_from_call(_call(), ts=1.0, status=504, latency_ms=1.0, error=TimeoutError("x"))
    assert rec.error == "TimeoutError"
    assert not rec.ok


def test_every_field_comes_from_its_own_source():
    # record_from_call passes the fields by position: a field moved in RequestRecord must not shift values.
    call = _call(
        namespace="ns",
        cache_status="miss",
        deployment="openai/gpt-4o",
        similarity=0.93,
        attempts=3,
        hedged=True,
        fallback="static",
        coalesced=False,
    )
    call.request.stream = True
    rec = record_from_call(
        call,
        ts=7.0,
        status=502,
        latency_ms=120.0,
        usage=USAGE,
        price=PRICE,
        error="UpstreamStatusError",
        ttft_ms=30.0,
        upstream_ms=100.0,
        operation="cycle/propose",
        prompt_text="hi",
        reply_text="hello",
    )
    assert {name: getattr(rec, name) for name in RequestRecord.__slots__} == {
        "ts": 7.0,
        "group": "fast",
        "status": 502,
        "latency_ms": 120.0,
        "key_name": "k1",
        "namespace": "ns",
        "deployment": "openai/gpt-4o",
        "error": "UpstreamStatusError",
        "ttft_ms": 30.0,
        "upstream_ms": 100.0,
        "overhead_ms": 20.0,
        "prompt_tokens": 1000,
        "completion_tokens": 500,
        "cached_tokens": 200,
        "cost_usd": PRICE.cost(USAGE),
        "saved_usd": 0.0,
        "cache_status": "miss",
        "similarity": 0.93,
        "coalesced": False,
        "attempts": 3,
        "hedged": True,
        "fallback": "static",
        "stream": True,
        "operation": "cycle/propose",
        "prompt_text": "hi",
        "reply_text": "hello",
    }
