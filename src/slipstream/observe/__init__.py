"""Observability: the per-request record, prices, the request log and Prometheus metrics.

Every request produces one ``RequestRecord`` at its end; sinks (``RequestLog``, ``Metrics``) consume it off the
request path.
"""

from .metrics import Metrics
from .prices import price_for
from .record import RequestRecord, record_from_call, usage_tokens
from .requestlog import RequestLog, percentile

__all__ = [
    "Metrics",
    "RequestLog",
    "RequestRecord",
    "percentile",
    "price_for",
    "record_from_call",
    "usage_tokens",
]
