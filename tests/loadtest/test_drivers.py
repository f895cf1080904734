"""Closed and open loops against real servers: counts, schedule, coordinated omission, TTFT, error classes.

Every run is at most a couple of seconds of load. Assertions are counts, or latency *lower* bounds that follow
from what the server was told to do (a slow machine can only make latencies longer), never speed limits.
"""

from __future__ import annotations

from slipstream.loadtest import (
    LoadPlan,
    Profile,
    Stage,
    constant,
    run_load,
)
from tests.e2e.conftest import free_port

from .conftest import Sim, StallServer, ask, mix_for


async def test_closed_loop_sends_exactly_max_requests(sim: Sim) -> None:
    sim.reset()
    target, mix = mix_for(sim.url)
    plan = LoadPlan(target=target, mix=mix, profile=constant(4, 30.0), mode="closed", max_requests=500)
    run = await run_load(plan)
    assert run.started == 500
    assert run.summary.requests == run.summary.ok == 500
    assert run.summary.errors_by_class == {}
    assert run.summary.latency_ms.count == 500
    assert sim.chat_requests() == 500  # the server saw each one, no more
    assert run.summary.elapsed_s < 30  # stopped by the count, not the clock


async def test_closed_loop_follows_a_users_ramp(sim: Sim) -> None:
    sim.reset()
    target, mix = mix_for(sim.url)
    profile = Profile((Stage(0.5, 6.0), Stage(0.5, 6.0)))
    run = await run_load(
        LoadPlan(target=target, mix=mix, profile=profile, mode="closed", max_requests=1_000_000)
    )
    assert run.summary.errors == 0
    assert run.summary.requests == sim.chat_requests() > 0
    assert run.summary.elapsed_s >= 1.0  # ran for its duration


async def test_open_loop_sends_rate_times_duration(sim: Sim) -> None:
    sim.reset()
    target, mix = mix_for(sim.url)
    plan = LoadPlan(target=target, mix=mix, profile=constant(200, 1.5), mode="open", max_requests=1_000_000)
    run = await run_load(plan)
    assert run.started == 300  # the schedule is fixed: rate x duration, whatever the machine's speed
    assert run.summary.ok == 300
    assert sim.chat_requests() == 300
    assert run.summary.elapsed_s >= 1.49  # spread over the duration, not sent in a burst
    assert run.send_lag_ms is not None and run.send_lag_ms.count > 0


async def test_open_loop_stops_at_max_requests(sim: Sim) -> None:
    sim.reset()
    target, mix = mix_for(sim.url)
    plan = LoadPlan(target=target, mix=mix, profile=constant(500, 10.0), mode="open", max_requests=100)
    run = await run_load(plan)
    assert run.started == run.summary.requests == 100
    assert sim.chat_requests() == 100
    assert run.summary.elapsed_s < 10


async def test_open_loop_counts_a_stall_for_every_request_scheduled_during_it() -> None:
    # 200 req/s for 2 s; the 100th request (due at 0.5 s) freezes the server for 0.5 s. Requests due during the
    # freeze wait for it to end: request k (k >= 100) waits at least 0.5 - (k - 100) / 200 s, so 51 of them
    # (k = 100..150) take at least 250 ms and the slowest 1% (4 of 400) take about 500 ms.
    with StallServer(stall_at=100, stall=0.5) as server:
        target, mix = mix_for(server.url)
        plan = LoadPlan(target=target, mix=mix, profile=constant(200, 2.0), mode="open", max_requests=10_000)
        run = await run_load(plan)
    assert run.summary.ok == 400
    assert run.summary.latency_ms.p99 >= 450
    assert run.summary.latency_ms.max >= 500
    slow = sum(1 for seconds in run.latencies if seconds >= 0.25)
    assert slow >= 51


async def test_closed_loop_hides_the_same_stall_in_one_sample() -> None:
    # Coordinated omission, shown: the one user waits out the freeze and sends nothing meanwhile, so the
    # 0.5 s stall is a single slow sample among hundreds and the percentiles look healthy.
    with StallServer(stall_at=100, stall=0.5) as server:
        target, mix = mix_for(server.url)
        plan = LoadPlan(target=target, mix=mix, profile=constant(1, 30.0), mode="closed", max_requests=400)
        run = await run_load(plan)
    assert run.summary.ok == 400
    assert run.summary.latency_ms.max >= 500
    assert sum(1 for seconds in run.latencies if seconds >= 0.4) <= 3  # the stall, and room for a GC pause


async def test_streamed_requests_report_ttft_from_the_first_chunk(sim: Sim) -> None:
    sim.reset()
    # Every reply: first chunk after 200 ms, then 20 tokens at 100 tokens/s (another ~200 ms).
    paced = ask(ttft=0.2, tokens_per_s=100, reply_tokens_min=20, reply_tokens_max=20, chunk_tokens=2)
    target, mix = mix_for(sim.url, [paced], stream_share=0.5)
    plan = LoadPlan(target=target, mix=mix, profile=constant(10, 1.0), mode="open", max_requests=1000)
    run = await run_load(plan)
    s = run.summary
    assert s.ok == 10
    assert s.streamed == s.ttft_ms.count == 5
    assert sim.stats()["streams"] == 5
    assert s.ttft_ms.min >= 200
    assert s.latency_ms.min >= 380  # TTFT plus the paced tokens
    assert s.ttft_ms.max < s.latency_ms.max


async def test_errors_are_counted_by_http_status(sim: Sim) -> None:
    sim.reset()
    target, mix = mix_for(sim.url, [ask("fine"), ask(fault="500"), ask(fault="429"), ask("fine again")])
    run = await run_load(
        LoadPlan(target=target, mix=mix, profile=constant(2, 10.0), mode="closed", max_requests=200)
    )
    s = run.summary
    assert s.errors_by_class == {"http_429": 50, "http_500": 50}  # round-robin: each body 50 times
    assert s.ok == 100 and s.error_rate == 0.5
    assert s.latency_ms.count == 100  # errors stay out of the latency percentiles


async def test_a_refused_connection_is_a_connect_error() -> None:
    target, mix = mix_for(f"http://127.0.0.1:{free_port()}/v1")
    closed = await run_load(
        LoadPlan(target=target, mix=mix, profile=constant(2, 5.0), mode="closed", max_requests=20)
    )
    assert closed.summary.errors_by_class == {"connect": 20}
    assert closed.summary.ok == 0
    opened = await run_load(
        LoadPlan(target=target, mix=mix, profile=constant(50, 0.4), mode="open", max_requests=1000)
    )
    assert opened.summary.errors_by_class == {"connect": 20}


async def test_requests_that_hang_time_out(sim: Sim) -> None:
    sim.reset()
    for mode, level in (("closed", 2.0), ("open", 10.0)):
        target, mix = mix_for(sim.url, [ask(fault="hang")])
        plan = LoadPlan(
            target=target,
            mix=mix,
            profile=constant(level, 5.0),
            mode=mode,  # type: ignore[arg-type]
            max_requests=5,
            timeout=0.3,
        )
        run = await run_load(plan)
        assert run.summary.errors_by_class == {"timeout": 5}, mode
        assert run.summary.ok == 0


async def test_a_dropped_stream_is_a_connection_error(sim: Sim) -> None:
    sim.reset()
    target, mix = mix_for(sim.url, [ask(fault="broken_stream")], stream_share=1.0)
    run = await run_load(
        LoadPlan(target=target, mix=mix, profile=constant(2, 5.0), mode="closed", max_requests=10)
    )
    assert run.summary.errors_by_class == {"connection": 10}


async def test_a_run_result_repr_leaves_out_the_raw_samples(sim: Sim) -> None:
    # asyncio formats a finished task's result with repr(): with the samples in it, that is megabytes of floats.
    target, mix = mix_for(sim.url)
    run = await run_load(
        LoadPlan(target=target, mix=mix, profile=constant(2, 30.0), mode="closed", max_requests=50)
    )
    assert len(run.latencies) == 50
    assert "latencies" not in repr(run) and "array(" not in repr(run)
