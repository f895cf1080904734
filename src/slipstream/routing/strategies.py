"""Routing strategies: the order in which one request tries a model group's deployments.

A strategy is a function ``order(candidates, stats, rng) -> list``: the first element is the primary, the rest are
the fallbacks in order. Candidates are whatever the router names deployments by (labels, ``Deployment`` objects),
in config order; ``stats`` holds the router's live ``DeploymentStats`` for each. Strategies are pure: they read
the stats, draw from the injected RNG, and never filter. The router drops the candidates whose breaker refuses
first (``available``), then asks the strategy, then calls ``breaker.allow()`` on each deployment it actually tries.

Priority: a lower number is preferred (0 before 1). Config order breaks ties wherever a strategy says "by priority".
"""

from __future__ import annotations

import random
from collections.abc import Hashable, Mapping, Sequence
from typing import Protocol, TypeVar

from .breaker import CircuitBreaker

__all__ = [
    "DEFAULT_EWMA_ALPHA",
    "DEFAULT_EXPLORE",
    "DEFAULT_LATENCY_PRIOR",
    "STRATEGIES",
    "DeploymentStats",
    "LowestLatency",
    "Strategy",
    "available",
    "failover",
    "get_strategy",
    "least_in_flight",
    "lowest_latency",
    "power_of_two",
    "weighted",
]

DEFAULT_EWMA_ALPHA = 0.3  # weight of the newest sample: about the last 5 calls dominate
DEFAULT_LATENCY_PRIOR = 1.0  # seconds assumed for a deployment never measured
# The share of calls lowest_latency sends to a random deployment, to keep the others' averages up to date.
DEFAULT_EXPLORE = 0.05

K = TypeVar("K", bound=Hashable)


class DeploymentStats:
    """What the router knows about one deployment right now: calls in flight and an EWMA of their latency.

    ``latency`` is None until the first sample; the first sample replaces the prior outright (a measurement beats a
    guess), later ones move the average by ``alpha`` of the difference. Feed ``finish`` the latency of successes
    and of timeouts (a slow failure is slowness) and None for fast failures, which would make a broken deployment
    look quick. Which latency (total or time to first chunk) is the router's choice; keep it the same for all.
    """

    __slots__ = ("alpha", "in_flight", "latency", "prior", "priority", "samples", "weight")

    def __init__(
        self,
        *,
        weight: float = 1.0,
        priority: int = 0,
        alpha: float = DEFAULT_EWMA_ALPHA,
        prior: float = DEFAULT_LATENCY_PRIOR,
    ) -> None:
        if weight < 0:
            raise ValueError(f"weight must not be negative, got {weight}")
        if not 0 < alpha <= 1:
            raise ValueError(f"alpha must be within (0, 1], got {alpha}")
        if prior < 0:
            raise ValueError(f"prior must not be negative, got {prior}")
        self.weight = weight
        self.priority = priority
        self.alpha = alpha
        self.prior = prior
        self.in_flight = 0
        self.latency: float | None = None
        self.samples = 0

    @property
    def measured(self) -> bool:
        return self.latency is not None

    @property
    def expected_latency(self) -> float:
        """The EWMA, or the prior while unmeasured."""
        return self.prior if self.latency is None else self.latency

    def start(self) -> None:
        self.in_flight += 1

    def finish(self, latency: float | None = None) -> None:
        # Never below zero: an unmatched finish is a router bug, but it must not make a deployment look idle forever.
        self.in_flight = max(self.in_flight - 1, 0)
        if latency is None:
            return
        if self.latency is None:
            self.latency = latency
        else:
            self.latency += self.alpha * (latency - self.latency)
        self.samples += 1

    def __repr__(self) -> str:
        return (
            f"DeploymentStats(in_flight={self.in_flight}, latency={self.latency}, weight={self.weight}, "
            f"priority={self.priority})"
        )


_UNKNOWN = DeploymentStats()  # read-only stand-in for a candidate the router has no stats for yet


def _stats(stats: Mapping[K, DeploymentStats], candidate: K) -> DeploymentStats:
    return stats.get(candidate, _UNKNOWN)


class Strategy(Protocol):
    def __call__(
        self, candidates: Sequence[K], stats: Mapping[K, DeploymentStats], rng: random.Random
    ) -> list[K]: ...


def failover(candidates: Sequence[K], stats: Mapping[K, DeploymentStats], rng: random.Random) -> list[K]:
    """By priority, then config order. Deterministic: the same primary until its breaker opens."""
    return _by_priority(candidates, stats)


def weighted(candidates: Sequence[K], stats: Mapping[K, DeploymentStats], rng: random.Random) -> list[K]:
    """The primary drawn at random in proportion to ``weight``; the fallbacks by priority, then config order.

    A weight of 0 is never drawn as primary (it stays a fallback); if every weight is 0, plain failover order.
    """
    weights = [_stats(stats, c).weight for c in candidates]
    total = sum(weights)
    if total <= 0:
        return _by_priority(candidates, stats)
    point = rng.random() * total
    # Float rounding can leave the point past the end: then the last candidate that can be drawn at all.
    primary = max(i for i, w in enumerate(weights) if w > 0)
    for i, weight in enumerate(weights):
        if point < weight:
            primary = i
            break
        point -= weight
    rest = _by_priority([c for i, c in enumerate(candidates) if i != primary], stats)
    return [candidates[primary], *rest]


def least_in_flight(
    candidates: Sequence[K], stats: Mapping[K, DeploymentStats], rng: random.Random
) -> list[K]:
    """Fewest calls in flight first; ties in random order, so idle deployments share the load evenly."""
    return sorted(candidates, key=lambda c: (_stats(stats, c).in_flight, rng.random()))


class LowestLatency:
    """Lowest EWMA latency first, with two ways of exploring so the averages stay true:

    - A deployment never measured, with no call in flight, goes first: one call at a time measures it, rather than
      a burst of them all landing on an unknown deployment. While that call runs it ranks by the prior.
    - With probability ``explore`` a random candidate is promoted to primary. Without it a deployment that was
      slow once would never be tried again and its average would never recover.

    Ties are broken at random.
    """

    def __init__(self, explore: float = DEFAULT_EXPLORE) -> None:
        if not 0 <= explore <= 1:
            raise ValueError(f"explore must be within [0, 1], got {explore}")
        self.explore = explore

    def __call__(
        self, candidates: Sequence[K], stats: Mapping[K, DeploymentStats], rng: random.Random
    ) -> list[K]:
        def key(candidate: K) -> tuple[bool, float, float]:
            s = _stats(stats, candidate)
            return (s.measured or s.in_flight > 0, s.expected_latency, rng.random())

        ordered = sorted(candidates, key=key)
        if len(ordered) > 1 and self.explore > 0 and rng.random() < self.explore:
            ordered.insert(0, ordered.pop(rng.randrange(len(ordered))))
        return ordered


lowest_latency = LowestLatency()


def power_of_two(candidates: Sequence[K], stats: Mapping[K, DeploymentStats], rng: random.Random) -> list[K]:
    """Power of two choices: draw two candidates at random, the cheaper one is the primary.

    Cost is ``expected_latency * (in_flight + 1)``: roughly how long a new call waits if calls on that deployment
    queue behind each other. The ``+ 1`` counts the new call, so idle deployments still compare by latency; equal
    costs go to the one with fewer calls in flight. Two random draws avoid the herd that "always the best one"
    causes when many routers act on the same stale numbers, yet keep most calls away from the worst deployments.
    The fallbacks follow by the same cost, ties at random.
    """
    if len(candidates) < 2:
        return list(candidates)

    def cost(candidate: K) -> tuple[float, int]:
        s = _stats(stats, candidate)
        return (s.expected_latency * (s.in_flight + 1), s.in_flight)

    first, second = rng.sample(range(len(candidates)), 2)
    winner = second if cost(candidates[second]) < cost(candidates[first]) else first
    rest = sorted(
        (c for i, c in enumerate(candidates) if i != winner), key=lambda c: (*cost(c), rng.random())
    )
    return [candidates[winner], *rest]


def available(candidates: Sequence[K], breakers: Mapping[K, CircuitBreaker]) -> list[K]:
    """The candidates whose breaker would let a call through now (those without a breaker always would).

    Uses ``would_allow``, which takes no half-open probe slot: only the deployment actually tried should take one.
    """
    return [c for c in candidates if (b := breakers.get(c)) is None or b.would_allow()]


def _by_priority(candidates: Sequence[K], stats: Mapping[K, DeploymentStats]) -> list[K]:
    # sorted() is stable, so equal priorities keep config order.
    return sorted(candidates, key=lambda c: _stats(stats, c).priority)


STRATEGIES: dict[str, Strategy] = {
    "failover": failover,
    "weighted": weighted,
    "least_in_flight": least_in_flight,
    "lowest_latency": lowest_latency,
    "power_of_two": power_of_two,
}


def get_strategy(name: str) -> Strategy:
    """The strategy registered as ``name``; the error lists the known names (for config validation)."""
    try:
        return STRATEGIES[name]
    except KeyError:
        raise ValueError(
            f"unknown routing strategy {name!r}; known: {', '.join(sorted(STRATEGIES))}"
        ) from None
