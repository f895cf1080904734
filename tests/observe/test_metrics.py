from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from slipstream.observe.metrics import Metrics
from slipstream.observe.record import RequestRecord


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body, content_type = metrics.render()
    assert content_type.startswith("text/plain")
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def L(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def known_sequence() -> Metrics:
    m = Metrics(groups=["fast"], deployments=["openai/gpt-4o-mini"])
    dep = "openai/gpt-4o-mini"
    m.observe(
        RequestRecord(
            ts=1.0,
            group="fast",
            status=200,
            latency_ms=300.0,
            deployment=dep,
            upstream_ms=299.0,
            overhead_ms=1.0,
            ttft_ms=80.0,
            stream=True,
            prompt_tokens=100,
            completion_tokens=20,
            cached_tokens=40,
            cost_usd=0.5,
            cache_status="miss",
            attempts=3,
            hedged=True,
        )
    )
    m.observe(
        RequestRecord(ts=2.0, group="fast", status=200, latency_ms=2.0, cache_status="hit", saved_usd=0.25)
    )
    m.observe(
        RequestRecord(
            ts=3.0,
            group="fast",
            status=200,
            latency_ms=40.0,
            deployment=dep,
            cache_status="miss",
            coalesced=True,
            saved_usd=0.5,
        )
    )
    m.observe(
        RequestRecord(
            ts=4.0,
            group="fast",
            status=504,
            latency_ms=60_000.0,
            deployment=dep,
            error="UpstreamTimeout",
            cache_status="miss",
            fallback="static",
        )
    )
    return m


def test_exposition_after_a_known_sequence():
    s = samples(known_sequence())
    dep = "openai/gpt-4o-mini"
    miss = L(model="fast", deployment=dep, cache="miss")
    hit = L(model="fast", deployment="none", cache="hit")
    assert s[("slipstream_request_duration_seconds_count", miss)] == 3
    assert s[("slipstream_request_duration_seconds_sum", miss)] == 0.3 + 0.04 + 60.0
    assert s[("slipstream_request_duration_seconds_bucket", tuple(sorted((*miss, ("le", "0.05")))))] == 1
    assert s[("slipstream_request_duration_seconds_bucket", tuple(sorted((*miss, ("le", "0.5")))))] == 2
    assert s[("slipstream_request_duration_seconds_bucket", tuple(sorted((*miss, ("le", "60.0")))))] == 3
    assert s[("slipstream_request_duration_seconds_count", hit)] == 1
    assert s[("slipstream_time_to_first_token_seconds_count", miss)] == 1
    assert s[("slipstream_upstream_duration_seconds_sum", miss)] == 0.299
    assert s[("slipstream_overhead_seconds_bucket", tuple(sorted((*miss, ("le", "0.001")))))] == 1
    assert s[("slipstream_requests_total", L(model="fast", status="200"))] == 3
    assert s[("slipstream_requests_total", L(model="fast", status="504"))] == 1
    assert s[("slipstream_errors_total", L(model="fast", error="UpstreamTimeout"))] == 1
    assert s[("slipstream_cache_total", L(model="fast", result="hit"))] == 1
    assert s[("slipstream_cache_total", L(model="fast", result="miss"))] == 3
    assert s[("slipstream_coalesced_total", L(model="fast"))] == 1
    assert s[("slipstream_retries_total", L(model="fast"))] == 2
    assert s[("slipstream_hedges_total", L(model="fast"))] == 1
    assert s[("slipstream_fallbacks_total", L(model="fast"))] == 1
    assert s[("slipstream_tokens_total", L(model="fast", deployment=dep, type="prompt"))] == 100
    assert s[("slipstream_tokens_total", L(model="fast", deployment=dep, type="completion"))] == 20
    assert s[("slipstream_tokens_total", L(model="fast", deployment=dep, type="cached"))] == 40
    assert s[("slipstream_cost_usd_total", L(model="fast", deployment=dep))] == 0.5
    assert s[("slipstream_cost_avoided_usd_total", L(model="fast"))] == 0.75
    assert s[("slipstream_in_flight", ())] == 0


def test_label_values_are_restricted():
    m = Metrics(groups=["fast"], deployments=["a"])
    m.observe(
        RequestRecord(
            ts=1.0,
            group="openai/some-adhoc-model",
            status=418,
            latency_ms=1.0,
            deployment="evil\nlabel",
            cache_status="weird",
            error="KeyError",
        )
    )
    s = samples(m)
    labels = {v for (_, ls) in s for (_, v) in ls}
    assert "openai/some-adhoc-model" not in labels and "evil\nlabel" not in labels
    assert "weird" not in labels and "KeyError" not in labels and "418" not in labels
    assert s[("slipstream_requests_total", L(model="other", status="4xx"))] == 1
    assert s[("slipstream_errors_total", L(model="other", error="other"))] == 1
    assert (
        s[("slipstream_request_duration_seconds_count", L(model="other", deployment="other", cache="other"))]
        == 1
    )
    m.set_known(["fast", "openai/some-adhoc-model"], ["a"])  # config reload makes it a known group
    m.observe(RequestRecord(ts=1.0, group="openai/some-adhoc-model", status=200, latency_ms=1.0))
    assert samples(m)[("slipstream_requests_total", L(model="openai/some-adhoc-model", status="200"))] == 1
    m.set_known(["fast"], ["a"])  # and a later reload drops it again
    m.observe(RequestRecord(ts=1.0, group="openai/some-adhoc-model", status=200, latency_ms=1.0))
    assert samples(m)[("slipstream_requests_total", L(model="other", status="200"))] == 1


def test_unknown_names_share_one_series_and_grow_nothing():
    m = Metrics(groups=["fast"], deployments=["a"])
    for i in range(1000):
        m.observe(
            RequestRecord(ts=1.0, group=f"openai/model-{i}", status=200, latency_ms=1.0, deployment="a")
        )
        m.observe(RequestRecord(ts=1.0, group="fast", status=200, latency_ms=1.0, deployment=f"dep-{i}"))
    s = samples(m)
    assert s[("slipstream_requests_total", L(model="other", status="200"))] == 1000
    assert (
        s[("slipstream_request_duration_seconds_count", L(model="fast", deployment="other", cache="off"))]
        == 1000
    )
    # The lookup by raw values remembers known names only: a client's model names cannot grow it.
    assert len(m._series) == 2 and len(m._by_raw) == 0


def test_gauges_are_read_at_scrape_time():
    m = Metrics(groups=["fast"], deployments=["a", "b"])
    state = {"a": "closed", "b": "open"}
    cache = [10, 2048]
    m.add_breaker_gauge(lambda: state)
    m.add_cache_gauges(lambda: (cache[0], cache[1]))
    m.add_queue_gauge(lambda: {"request_log": 7})
    m.in_flight = 3
    s = samples(m)
    assert s[("slipstream_breaker_state", L(deployment="a", state="closed"))] == 1
    assert s[("slipstream_breaker_state", L(deployment="a", state="open"))] == 0
    assert s[("slipstream_breaker_state", L(deployment="b", state="open"))] == 1
    assert s[("slipstream_cache_entries", ())] == 10
    assert s[("slipstream_cache_bytes", ())] == 2048
    assert s[("slipstream_queued", L(queue="request_log"))] == 7
    assert s[("slipstream_in_flight", ())] == 3
    state["b"] = "half_open"
    cache[0] = 11
    s = samples(m)
    assert s[("slipstream_breaker_state", L(deployment="b", state="half_open"))] == 1
    assert s[("slipstream_breaker_state", L(deployment="b", state="open"))] == 0
    assert s[("slipstream_cache_entries", ())] == 11


def test_uses_its_own_registry():
    m = known_sequence()
    assert m.registry is not REGISTRY
    assert REGISTRY.get_sample_value("slipstream_requests_total", {"model": "fast", "status": "200"}) is None
    assert m.registry.get_sample_value("slipstream_requests_total", {"model": "fast", "status": "200"}) == 3
