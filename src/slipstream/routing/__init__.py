"""Routing decisions: retry policy and budget, circuit breakers, and the strategies that order deployments.

Everything here is pure decision logic over an injected clock and RNG (no sleeping, no I/O); the router layer
that carries the decisions out lives next to it.
"""

from .breaker import BreakerState, CircuitBreaker, counts_as_failure
from .retry import GiveUp, Retry, RetryBudget, RetryPolicy
from .strategies import (
    STRATEGIES,
    DeploymentStats,
    LowestLatency,
    Strategy,
    available,
    failover,
    get_strategy,
    least_in_flight,
    lowest_latency,
    power_of_two,
    weighted,
)

__all__ = [
    "STRATEGIES",
    "BreakerState",
    "CircuitBreaker",
    "DeploymentStats",
    "GiveUp",
    "LowestLatency",
    "Retry",
    "RetryBudget",
    "RetryPolicy",
    "Strategy",
    "available",
    "counts_as_failure",
    "failover",
    "get_strategy",
    "least_in_flight",
    "lowest_latency",
    "power_of_two",
    "weighted",
]
