"""Fault decisions: which failure, if any, a request meets. Pure: the options and an injected RNG decide.

One uniform draw per request walks the rates in a fixed order (429, 500, 502/503, hang, malformed, broken,
slow), so the rates add up exactly and a seeded RNG replays the same faults. Nothing is drawn when no rate is
set. ``slow_stream`` only applies to streamed requests; a non-streamed request that draws it is answered normally.
"""

from __future__ import annotations

import random

from .options import SimOptions

__all__ = ["STREAM_ONLY_FAULTS", "decide_fault", "error_status"]

STREAM_ONLY_FAULTS = frozenset({"slow_stream"})

_STATUS = {"429": 429, "500": 500, "502": 502, "503": 503}


def decide_fault(options: SimOptions, rng: random.Random, *, stream: bool) -> str | None:
    """The fault for one request (a ``FAULT_KINDS`` name) or None."""
    forced = options.fault
    if forced is not None:
        return None if forced in STREAM_ONLY_FAULTS and not stream else forced
    if not options.has_fault_rates:
        return None
    u = rng.random()
    edge = options.rate_429
    if u < edge:
        return "429"
    edge += options.error_rate
    if u < edge:
        return "500"
    if u < edge + options.rate_5xx:
        # The first half of the 5xx band is a 502, the second a 503: no second draw needed.
        return "502" if u < edge + options.rate_5xx / 2 else "503"
    edge += options.rate_5xx
    for kind, rate in (
        ("hang", options.hang_rate),
        ("malformed", options.malformed_rate),
        ("broken_stream", options.broken_stream_rate),
        ("slow_stream", options.slow_stream_rate),
    ):
        edge += rate
        if u < edge:
            return None if kind in STREAM_ONLY_FAULTS and not stream else kind
    return None


def error_status(fault: str | None) -> int | None:
    """The HTTP status a fault answers with, or None for the faults that answer 200 (or not at all)."""
    return _STATUS.get(fault) if fault is not None else None
