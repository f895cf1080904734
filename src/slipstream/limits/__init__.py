"""Rate and concurrency limits per deployment and per API key.

- ``tokens``: a fast estimate of the tokens a request counts against TPM, corrected by usage afterwards;
- ``window``: pure RPM/TPM arithmetic (a sliding window) and two-phase acquisition across several limits;
- ``adaptive``: the AIMD rate that follows a provider's 429s and rate-limit headers, and the header parsers;
- ``limiter``: the thin async driver: slots, windows and the adaptive rate behind one fair (FIFO) queue.
"""

from .adaptive import AdaptiveRate, AdaptiveSpec, RateLimitInfo, parse_rate_limit_headers
from .limiter import DEFAULT_MAX_WAIT, Limiter, LimitSpec, Permit
from .tokens import estimate_tokens
from .window import SlidingWindow, acquire_all, wait_all

__all__ = [
    "DEFAULT_MAX_WAIT",
    "AdaptiveRate",
    "AdaptiveSpec",
    "LimitSpec",
    "Limiter",
    "Permit",
    "RateLimitInfo",
    "SlidingWindow",
    "acquire_all",
    "estimate_tokens",
    "parse_rate_limit_headers",
    "wait_all",
]
