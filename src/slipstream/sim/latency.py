"""The latency model: how long until the first token, and how fast tokens follow.

Pure functions of the options and an injected ``random.Random``: the drivers (the in-process provider, the HTTP
server) carry the plan out with their own ``sleep``. With no TTFT and unpaced tokens the plan is ``INSTANT``,
drawn without touching the RNG, and the drivers never sleep at all.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from .options import SimOptions

__all__ = ["INSTANT", "Timing", "plan_timing", "sample"]

# A sampled tokens/s never drops below this share of the median: a normal draw near zero would otherwise
# turn one request into a near-endless stream.
_MIN_TPS_SHARE = 0.05


@dataclass(frozen=True, slots=True)
class Timing:
    """One request's latency: ``ttft`` seconds before the first token, ``per_token`` seconds for each next one."""

    ttft: float = 0.0
    per_token: float = 0.0

    @property
    def instant(self) -> bool:
        return self.ttft == 0 and self.per_token == 0

    def total(self, tokens: int) -> float:
        """The time a non-streamed reply of ``tokens`` completion tokens takes."""
        return self.ttft + tokens * self.per_token


INSTANT = Timing()


def sample(dist: str, median: float, spread: float, rng: random.Random) -> float:
    """One draw: ``fixed`` is ``median``; ``normal`` has standard deviation ``spread`` (clamped at 0);
    ``lognormal`` has shape ``spread`` (its median stays ``median``)."""
    if median == 0 or spread == 0 or dist == "fixed":
        return median
    if dist == "normal":
        return max(0.0, rng.gauss(median, spread))
    if dist == "lognormal":
        return median * math.exp(rng.gauss(0.0, spread))
    raise ValueError(f"unknown distribution {dist!r}")


def plan_timing(options: SimOptions, rng: random.Random) -> Timing:
    if options.instant:
        return INSTANT
    ttft = sample(options.ttft_dist, options.ttft, options.ttft_sigma, rng)
    if options.tail_prob > 0 and ttft > 0 and rng.random() < options.tail_prob:
        ttft *= options.tail_factor
        if options.tail_dist == "pareto":
            ttft *= rng.paretovariate(options.tail_alpha)
    per_token = 0.0
    if options.tokens_per_s > 0:
        tps = sample(options.tps_dist, options.tokens_per_s, options.tps_sigma, rng)
        per_token = 1.0 / max(tps, options.tokens_per_s * _MIN_TPS_SHARE)
    return Timing(ttft, per_token)
