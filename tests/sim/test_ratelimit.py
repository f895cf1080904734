"""The sim's own RPM/TPM limits over sliding and fixed windows, with a fake clock, and OpenAI's headers."""

from __future__ import annotations

import pytest

from slipstream.sim.ratelimit import LimitDecision, RateLimiter, go_duration


def header(decision: LimitDecision, name: str) -> str | None:
    return dict(decision.headers).get(name)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0, "0s"),
        (0.0004, "0s"),
        (0.012, "12ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (59.9996, "1m0s"),
        (360, "6m0s"),
        (90.25, "1m30.25s"),
        (3600, "1h0m0s"),
    ],
)
def test_go_durations_like_openai_headers(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_sliding_rpm_refuses_until_the_oldest_request_leaves_the_window() -> None:
    limiter = RateLimiter("sliding")
    for t in (0.0, 10.0, 20.0):
        assert limiter.check(t, rpm=3, tpm=0, tokens=5).allowed
    refused = limiter.check(30.0, rpm=3, tpm=0, tokens=5)
    assert not refused.allowed and refused.exceeded == "requests"
    assert refused.retry_after == pytest.approx(30.0)  # the request at t=0 leaves at t=60
    assert header(refused, "retry-after") == "30"
    assert header(refused, "retry-after-ms") == "30000"
    assert header(refused, "x-ratelimit-remaining-requests") == "0"
    assert "RPM" in refused.message
    assert not limiter.check(59.9, rpm=3, tpm=0, tokens=5).allowed
    assert limiter.check(60.0, rpm=3, tpm=0, tokens=5).allowed


def test_sliding_headers_count_down_and_tell_the_reset() -> None:
    limiter = RateLimiter("sliding")
    first = limiter.check(100.0, rpm=10, tpm=1000, tokens=40)
    assert dict(first.headers) == {
        "x-ratelimit-limit-requests": "10",
        "x-ratelimit-remaining-requests": "9",
        "x-ratelimit-reset-requests": "1m0s",
        "x-ratelimit-limit-tokens": "1000",
        "x-ratelimit-remaining-tokens": "960",
        "x-ratelimit-reset-tokens": "1m0s",
    }
    second = limiter.check(130.0, rpm=10, tpm=1000, tokens=60)
    assert header(second, "x-ratelimit-remaining-requests") == "8"
    assert header(second, "x-ratelimit-remaining-tokens") == "900"
    later = limiter.check(170.0, rpm=10, tpm=1000, tokens=0)  # the first has left; reset: the newest's expiry
    assert header(later, "x-ratelimit-remaining-requests") == "8"
    assert header(later, "x-ratelimit-reset-requests") == "1m0s"


def test_sliding_tpm_waits_for_enough_tokens_to_expire() -> None:
    limiter = RateLimiter("sliding")
    assert limiter.check(0.0, rpm=0, tpm=100, tokens=50).allowed
    assert limiter.check(20.0, rpm=0, tpm=100, tokens=40).allowed
    refused = limiter.check(30.0, rpm=0, tpm=100, tokens=30)
    assert refused.exceeded == "tokens"
    assert refused.retry_after == pytest.approx(30.0)  # 50 tokens free at t=60: enough
    assert header(refused, "x-ratelimit-remaining-tokens") == "10"
    assert "x-ratelimit-limit-requests" not in dict(refused.headers)  # no RPM limit set, no RPM headers
    assert limiter.check(60.0, rpm=0, tpm=100, tokens=30).allowed


def test_a_request_larger_than_the_tpm_never_fits() -> None:
    refused = RateLimiter("sliding").check(0.0, rpm=0, tpm=100, tokens=101)
    assert not refused.allowed and refused.retry_after == 60.0


def test_fixed_window_resets_at_the_boundary() -> None:
    limiter = RateLimiter("fixed")
    assert limiter.check(61.0, rpm=2, tpm=0, tokens=1).allowed
    ok = limiter.check(100.0, rpm=2, tpm=0, tokens=1)
    assert header(ok, "x-ratelimit-remaining-requests") == "0"
    assert header(ok, "x-ratelimit-reset-requests") == "20s"
    refused = limiter.check(110.0, rpm=2, tpm=0, tokens=1)
    assert not refused.allowed and refused.retry_after == pytest.approx(10.0)
    assert header(refused, "retry-after") == "10"
    assert limiter.check(120.0, rpm=2, tpm=0, tokens=1).allowed  # a new window


def test_reset_forgets_everything() -> None:
    for window in ("sliding", "fixed"):
        limiter = RateLimiter(window)
        assert limiter.check(0.0, rpm=1, tpm=0, tokens=1).allowed
        assert not limiter.check(1.0, rpm=1, tpm=0, tokens=1).allowed
        limiter.reset()
        assert limiter.check(2.0, rpm=1, tpm=0, tokens=1).allowed


def test_unknown_window_is_refused() -> None:
    with pytest.raises(ValueError, match="hourly"):
        RateLimiter("hourly")
