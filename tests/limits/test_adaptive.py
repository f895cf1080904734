"""The adaptive rate: header parsing, AIMD steps, and a simulated bulk run against a provider's real limit."""

import heapq
import math
from datetime import UTC, datetime

import pytest

from slipstream.limits.adaptive import (
    AdaptiveRate,
    AdaptiveSpec,
    RateLimitInfo,
    parse_duration,
    parse_rate_limit_headers,
    parse_reset,
    parse_retry_after,
)

WALL = datetime(2025, 1, 15, 14, 23, 0, tzinfo=UTC).timestamp()


# --------------------------------------------------------------------------------------------- parsing
@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("1h2m3.5s", 3723.5),
        ("0s", 0.0),
        ("59.482s", 59.482),
        ("250us", 0.00025),
        ("2", 2.0),
        ("0.5", 0.5),
        (" 7s ", 7.0),
    ],
)
def test_parse_duration_reads_go_durations_and_plain_seconds(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "s", "abc", "-1", "-1s", "5m3", "1x", "1s junk", "inf", "nan"])
def test_parse_duration_refuses_what_it_cannot_read(text):
    assert parse_duration(text) is None


def test_parse_reset_reads_durations_timestamps_and_unix_times():
    assert parse_reset("6m0s", wall_now=WALL) == 360.0
    assert parse_reset("2025-01-15T14:24:00Z", wall_now=WALL) == pytest.approx(60.0)
    assert parse_reset("2025-01-15T15:23:30+01:00", wall_now=WALL) == pytest.approx(30.0)
    assert parse_reset("2025-01-15T14:23:10", wall_now=WALL) == pytest.approx(10.0)  # no zone: UTC
    assert parse_reset(str(WALL + 12), wall_now=WALL) == pytest.approx(12.0)
    assert parse_reset("2025-01-15T14:22:00Z", wall_now=WALL) == 0.0  # already past
    assert parse_reset("soon", wall_now=WALL) is None


def test_parse_retry_after_reads_seconds_and_http_dates():
    assert parse_retry_after("2", wall_now=WALL) == 2.0
    assert parse_retry_after("1.5", wall_now=WALL) == 1.5
    assert parse_retry_after("Wed, 15 Jan 2025 14:23:20 GMT", wall_now=WALL) == pytest.approx(20.0)
    assert parse_retry_after("-3", wall_now=WALL) == 0.0
    assert parse_retry_after("later", wall_now=WALL) is None


def test_openai_headers():
    headers = {
        "x-ratelimit-limit-requests": "5000",
        "x-ratelimit-remaining-requests": "4999",
        "x-ratelimit-reset-requests": "12ms",
        "x-ratelimit-limit-tokens": "160000",
        "x-ratelimit-remaining-tokens": "159976",
        "x-ratelimit-reset-tokens": "6m0s",
    }
    info = parse_rate_limit_headers(headers, wall_now=WALL)
    assert info == RateLimitInfo(5000, 4999, 0.012, 160000, 159976, 360.0, None)


def test_anthropic_headers_with_rfc3339_resets():
    headers = {
        "anthropic-ratelimit-requests-limit": "50",
        "anthropic-ratelimit-requests-remaining": "0",
        "anthropic-ratelimit-requests-reset": "2025-01-15T14:23:02Z",
        "anthropic-ratelimit-tokens-limit": "40000",
        "anthropic-ratelimit-tokens-remaining": "1200",
        "anthropic-ratelimit-tokens-reset": "2025-01-15T14:23:45Z",
        "anthropic-ratelimit-input-tokens-remaining": "9999",
        "retry-after": "2",
    }
    info = parse_rate_limit_headers(headers, wall_now=WALL)
    assert info.requests_limit == 50
    assert info.requests_remaining == 0
    assert info.requests_reset == pytest.approx(2.0)
    assert (info.tokens_limit, info.tokens_remaining) == (40000, 1200)  # tokens-* wins over input-tokens-*
    assert info.tokens_reset == pytest.approx(45.0)
    assert info.retry_after == 2.0


def test_anthropic_input_tokens_stand_in_when_tokens_are_missing():
    headers = {
        "anthropic-ratelimit-input-tokens-limit": "80000",
        "anthropic-ratelimit-input-tokens-remaining": "100",
        "anthropic-ratelimit-input-tokens-reset": "2025-01-15T14:23:30Z",
    }
    info = parse_rate_limit_headers(headers, wall_now=WALL)
    assert (info.tokens_limit, info.tokens_remaining) == (80000, 100)
    assert info.tokens_reset == pytest.approx(30.0)


def test_header_names_are_case_insensitive_and_retry_after_ms_wins():
    headers = {"Retry-After": "7", "Retry-After-Ms": "1500", "X-RateLimit-Remaining-Requests": "3"}
    info = parse_rate_limit_headers(headers, wall_now=WALL)
    assert info.retry_after == 1.5
    assert info.requests_remaining == 3


def test_azure_unknown_values_and_garbage_are_absent():
    headers = {
        "x-ratelimit-limit-tokens": "-1",
        "x-ratelimit-remaining-tokens": "-1",
        "x-ratelimit-reset-tokens": "0",
        "x-ratelimit-remaining-requests": "many",
    }
    info = parse_rate_limit_headers(headers, wall_now=WALL)
    assert info.tokens_limit is None and info.tokens_remaining is None
    assert info.tokens_reset == 0.0
    assert info.requests_remaining is None


# ------------------------------------------------------------------------------------------------- AIMD
def _admit(rate: AdaptiveRate, times):
    for t in times:
        assert rate.try_acquire(1, t) == 0.0
        rate.commit(1, t)


def test_unpaced_until_the_first_cut_then_halved_from_the_measured_rate():
    rate = AdaptiveRate()
    _admit(rate, [i / 10 for i in range(100)])  # 10 requests a second for 10 s: never held back
    assert rate.rate == math.inf
    rate.on_rate_limited(10.0, started_at=9.5)
    assert rate.rate == pytest.approx(5.0, rel=0.05)
    assert rate.cuts == 1


def test_a_cut_starts_from_the_ceiling_when_there_is_one():
    rate = AdaptiveRate(AdaptiveSpec(ceiling=4.0))
    rate.on_rate_limited(0.0)
    assert rate.rate == 2.0


def test_retry_after_pauses_and_the_pacer_spaces_what_follows():
    rate = AdaptiveRate(AdaptiveSpec(ceiling=4.0))
    rate.on_rate_limited(100.0, retry_after=3.0, started_at=99.0)
    assert rate.try_acquire(1, 100.0) == pytest.approx(3.0)
    assert rate.try_acquire(1, 101.0) == pytest.approx(2.0)
    rate.commit(1, 103.0)
    # Paced at the cut rate (2/s): the next one half a second later, not a flood at the end of the pause.
    assert rate.try_acquire(1, 103.0) == pytest.approx(0.5)
    rate.commit(1, 103.5)
    assert rate.try_acquire(1, 103.6) == pytest.approx(0.4)


def test_a_burst_of_429s_for_requests_sent_before_the_cut_cuts_once():
    rate = AdaptiveRate(AdaptiveSpec(ceiling=8.0))
    rate.on_rate_limited(10.0, started_at=9.0)
    for started in (9.1, 9.5, 9.9):
        rate.on_rate_limited(10.2, started_at=started)
    assert rate.rate == 4.0
    rate.on_rate_limited(11.0, started_at=10.5)  # sent at the new rate, and still refused: cut again
    assert rate.rate == 2.0
    assert rate.cuts == 2


def test_never_below_the_floor():
    rate = AdaptiveRate(AdaptiveSpec(ceiling=1.0, floor=0.25))
    for i in range(10):
        rate.on_rate_limited(float(i))
    assert rate.rate == 0.25


def test_recovers_additively_one_step_per_quiet_period_up_to_the_ceiling():
    rate = AdaptiveRate(AdaptiveSpec(ceiling=10.0, increase=0.1, period=5.0))
    rate.on_rate_limited(0.0)
    assert rate.rate == 5.0
    rates = []
    for second in range(1, 61):
        rate.on_success(float(second))
        rates.append(rate.rate)
    assert rates[3] == 5.0  # t=4: not a full period since the cut
    assert rates[4] == pytest.approx(6.0)  # t=5: +10% of the ceiling
    assert rates[9] == pytest.approx(7.0)
    assert rates[24] == pytest.approx(10.0)  # t=25: back at the ceiling
    assert max(rates) == 10.0  # and not beyond


def test_recovery_is_sized_by_the_rate_that_drew_the_cut_when_there_is_no_ceiling():
    rate = AdaptiveRate(AdaptiveSpec(increase=0.1, period=1.0))
    _admit(rate, [i / 20 for i in range(200)])  # 20/s
    rate.on_rate_limited(10.0, started_at=10.0)
    assert rate.rate == pytest.approx(10.0, rel=0.05)
    rate.on_success(11.0)
    assert rate.rate == pytest.approx(12.0, rel=0.05)


def test_max_pause_caps_a_bogus_retry_after():
    rate = AdaptiveRate(AdaptiveSpec(max_pause=30.0))
    rate.pause(0.0, 3600.0)
    assert rate.try_acquire(1, 0.0) == 30.0


def test_a_stated_request_limit_caps_the_rate_before_any_429():
    rate = AdaptiveRate()
    rate.observe(RateLimitInfo(requests_limit=600, requests_remaining=599, requests_reset=0.1), 1.0)
    assert rate.provider_ceiling == 10.0
    assert rate.rate == 10.0
    assert rate.cuts == 0


def test_a_spent_request_budget_pauses_for_one_refill_and_cuts():
    rate = AdaptiveRate(AdaptiveSpec(ceiling=10.0))
    info = RateLimitInfo(requests_limit=600, requests_remaining=0, requests_reset=60.0)
    rate.observe(info, 5.0, started_at=4.0)
    assert rate.try_acquire(1, 5.0) == pytest.approx(0.1)  # one request refills in 60/600 s
    assert rate.rate == 5.0


def test_a_token_budget_below_the_reserve_pauses_until_it_refills():
    rate = AdaptiveRate(AdaptiveSpec(token_reserve=0.02))
    info = RateLimitInfo(tokens_limit=100_000, tokens_remaining=500, tokens_reset=30.0)
    rate.observe(info, 0.0)
    # 2,000 tokens wanted, 500 there: 1,500 of the 99,500 missing, at 99,500 per 30 s.
    assert rate.try_acquire(1, 0.0) == pytest.approx(30.0 * 1500 / 99_500)


def test_healthy_headers_count_as_success():
    rate = AdaptiveRate(AdaptiveSpec(ceiling=10.0, period=1.0))
    rate.on_rate_limited(0.0)
    healthy = RateLimitInfo(requests_limit=6000, requests_remaining=5000, requests_reset=5.0)
    rate.observe(healthy, 2.0, started_at=1.0)
    assert rate.rate == pytest.approx(6.0)
    assert rate.cuts == 1


def test_spec_validation():
    for bad in (
        {"decrease": 1.0},
        {"decrease": 0.0},
        {"increase": 0.0},
        {"floor": 0.0},
        {"ceiling": 0.001},
        {"burst": 0},
        {"token_reserve": 1.0},
    ):
        with pytest.raises(ValueError):
            AdaptiveSpec(**bad)


# ------------------------------------------------------------------------------------ a simulated bulk run
class ProviderBucket:
    """A provider's real limit: a token bucket refilling at ``rate`` per second up to ``capacity``."""

    def __init__(self, rate: float, capacity: float) -> None:
        self.rate, self.capacity, self.level, self.t = rate, capacity, capacity, 0.0

    def _refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.t) * self.rate)
        self.t = now

    def take(self, now: float) -> bool:
        self._refill(now)
        if self.level >= 1.0:
            self.level -= 1.0
            return True
        return False

    def headers(self, now: float, limit_per_minute: int) -> RateLimitInfo:
        self._refill(now)
        reset = (self.capacity - self.level) / self.rate
        return RateLimitInfo(
            requests_limit=limit_per_minute, requests_remaining=int(self.level), requests_reset=reset
        )


def _bulk_run(*, with_headers: bool, minutes: int = 4, real_rps: float = 10.0, capacity: float = 10.0):
    """A batch job with 50 workers and 1 s latency against a provider allowing 10 requests a second.

    Returns per-minute [successes, 429s] by the minute the request was sent."""
    provider = ProviderBucket(real_rps, capacity)
    rate = AdaptiveRate()
    in_flight: list[tuple[float, float, bool]] = []  # (answered at, sent at, accepted)
    per_minute = [[0, 0] for _ in range(minutes)]
    now = 0.0
    while now < minutes * 60:
        while in_flight and in_flight[0][0] <= now:
            _, sent, ok = heapq.heappop(in_flight)
            per_minute[int(sent // 60)][0 if ok else 1] += 1
            if not ok:
                rate.on_rate_limited(now, retry_after=(1.0 - provider.level) / real_rps, started_at=sent)
            elif with_headers:
                rate.observe(provider.headers(now, int(real_rps * 60)), now, started_at=sent)
            else:
                rate.on_success(now)
        while len(in_flight) < 50 and rate.try_acquire(1, now) == 0.0:
            rate.commit(1, now)
            heapq.heappush(in_flight, (now + 1.0, now, provider.take(now)))
        next_event = in_flight[0][0] if in_flight else math.inf
        if len(in_flight) < 50:
            next_event = min(next_event, now + rate.try_acquire(1, now))
        now = next_event
    return per_minute


def test_a_bulk_run_settles_near_the_real_limit_without_a_storm_of_429s():
    per_minute = _bulk_run(with_headers=False)
    for ok, refused in per_minute[1:]:  # after the first minute's discovery
        assert ok >= 0.8 * 600
        assert refused <= 0.02 * (ok + refused)
    # The first minute finds the limit the hard way, but the cut-once rule keeps it from a collapse.
    assert per_minute[0][0] >= 0.5 * 600


def test_with_headers_the_run_paces_at_the_stated_limit_and_stops_hitting_429s():
    per_minute = _bulk_run(with_headers=True)
    for ok, refused in per_minute[1:]:
        assert ok >= 0.95 * 600
        assert refused == 0
