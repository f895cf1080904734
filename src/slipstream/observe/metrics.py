"""Prometheus metrics from request records, with bounded label sets, in their own registry.

Why a custom collector instead of prometheus-client's ``Counter``/``Histogram`` objects: each of those
updates takes a lock and a ``labels()`` lookup; 4 histograms + 8 counters measured 14 µs per record
(prometheus-client 0.26, Python 3.11). Here a request's common figures all land in one ``_Series`` (the
accumulator of its model, deployment and cache status, found with one dict lookup on the record's raw values):
a ``bisect`` per histogram and a few additions, no call per figure. The collector sums series into metric
families only when ``/metrics`` is scraped. ``observe``
must be called from one thread (the event loop); a scrape from another thread may see a record half applied,
never a broken exposition.

Cardinality stays bounded because no label value comes from the client unchecked:
- ``model`` is a model group from config (``groups``), ``deployment`` a deployment label from config
  (``deployments``); anything else — ad-hoc ``provider/model`` passthrough names, typos that failed — is
  reported as ``other``. ``set_known()`` replaces the sets on config reload.
- ``cache`` is one of the cache statuses, ``status`` one of a fixed set of HTTP codes (others fold into
  ``2xx``/``4xx``/``5xx``), ``error`` one of slipstream's exception classes or ``other``.
Worst case: groups x deployments x 5 cache statuses series per histogram.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from .. import errors
from .record import RequestRecord

__all__ = ["LATENCY_BUCKETS", "OVERHEAD_BUCKETS", "Metrics"]

OTHER = "other"
NONE = "none"
# Seconds. LLM calls take from ~50 ms (a cache-warm small model) to minutes (long reasoning).
LATENCY_BUCKETS = (
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    20.0,
    30.0,
    60.0,
    120.0,
    300.0,
)
# Seconds. What slipstream adds: tens of µs to a few ms.
OVERHEAD_BUCKETS = (0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25)
CACHE_STATUSES = frozenset({"hit", "semantic-hit", "miss", "refresh", "bypass", "off"})
# Cosine similarity of the semantic cache's best candidate; thresholds live between 0.85 and 1.
SIMILARITY_BUCKETS = (0.5, 0.7, 0.8, 0.85, 0.9, 0.925, 0.95, 0.96, 0.97, 0.98, 0.99, 0.995, 1.0)
STATUSES = frozenset({200, 400, 401, 403, 404, 408, 413, 422, 429, 499, 500, 502, 503, 504})
_STATUS_LABELS = {status: str(status) for status in STATUSES}  # others fold into 2xx/4xx/5xx
ERROR_CLASSES = frozenset(errors.__all__) | {"CancelledError", "TimeoutError"}
BREAKER_STATES = ("closed", "half_open", "open")


class _Histogram:
    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1  # bucket le=b holds values <= b
        self.sum += value

    def buckets(self) -> list[tuple[str, float]]:
        return _cumulative(self.bounds, self.counts)


class _Series:
    """Everything common one (model, deployment, cache) series accumulates: four timing histograms (bucket
    counts and sums, kept flat so that ``observe`` updates them without a call each), requests by HTTP status,
    tokens and cost."""

    __slots__ = (
        "cache",
        "cached",
        "completion",
        "cost",
        "deployment",
        "latency",
        "latency_sum",
        "model",
        "overhead",
        "overhead_sum",
        "prompt",
        "saved",
        "statuses",
        "tokens",
        "ttft",
        "ttft_sum",
        "upstream",
        "upstream_sum",
    )

    def __init__(self, model: str, deployment: str, cache: str) -> None:
        self.model, self.deployment, self.cache = model, deployment, cache
        self.latency = [0] * (len(LATENCY_BUCKETS) + 1)  # the last one is +Inf
        self.ttft = [0] * (len(LATENCY_BUCKETS) + 1)
        self.upstream = [0] * (len(LATENCY_BUCKETS) + 1)
        self.overhead = [0] * (len(OVERHEAD_BUCKETS) + 1)
        self.latency_sum = self.ttft_sum = self.upstream_sum = self.overhead_sum = 0.0
        self.statuses: dict[int, int] = {}
        self.tokens = False  # whether any request of the series reported tokens
        self.prompt = self.completion = self.cached = 0
        self.cost = self.saved = 0.0

    def histogram(self, name: str) -> tuple[list[int], float, Sequence[float]]:
        """(bucket counts, sum, bounds) of one of the four timing histograms."""
        bounds = OVERHEAD_BUCKETS if name == "overhead" else LATENCY_BUCKETS
        counts: list[int] = getattr(self, name)
        total: float = getattr(self, f"{name}_sum")
        return counts, total, bounds


def _cumulative(bounds: Sequence[float], counts: Sequence[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    total = 0
    for bound, count in zip((*map(str, bounds), "+Inf"), counts, strict=True):
        total += count
        out.append((bound, total))
    return out


# Counters summed from the series at scrape time: name (without _total): (help, labels).
_SERIES_COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "requests": ("Requests answered, by final status", ("model", "status")),
    "cache": ("Cache lookups by result (hit, miss, refresh, bypass)", ("model", "result")),
    "tokens": ("Tokens by type (prompt, completion, cached)", ("model", "deployment", "type")),
    "cost_usd": ("Upstream cost in USD", ("model", "deployment")),
    "cost_avoided_usd": ("Cost avoided by cache hits and coalescing, in USD", ("model",)),
}
# Counters of rarer events, kept by label values as they happen.
_COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "semantic_hits": ("Requests answered by the semantic cache (a similar earlier prompt)", ("model",)),
    # name (without _total): (help, labels)
    "errors": ("Failed requests by error class", ("model", "error")),
    "coalesced": ("Requests answered by an identical in-flight request's upstream call", ("model",)),
    "retries": ("Upstream attempts beyond the first (retries and failovers)", ("model",)),
    "fallbacks": ("Requests answered by a group's static fallback", ("model",)),
    "hedges": ("Requests for which a hedging attempt was started", ("model",)),
}


class Metrics:
    """All of slipstream's metrics; ``observe(record)`` per request, ``render()`` per scrape."""

    def __init__(
        self, groups: Iterable[str] = (), deployments: Iterable[str] = (), *, prefix: str = "slipstream"
    ) -> None:
        self.prefix = prefix
        self.groups: frozenset[str] = frozenset()
        self.deployments: frozenset[str] = frozenset()
        self.set_known(groups, deployments)
        self.in_flight = 0  # incremented/decremented by the edge around each request
        # Series by label values; ``_by_raw`` finds them by a record's raw (group, deployment, cache status).
        self._series: dict[tuple[str, str, str], _Series] = {}
        self._by_raw: dict[tuple[str, str | None, str], _Series] = {}
        self._counters: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in _COUNTERS}
        self._similarity: dict[tuple[str, str], _Histogram] = {}  # (model, "hit" | "miss")
        self._gauges: list[
            tuple[str, str, tuple[str, ...], Callable[[], Mapping[tuple[str, ...], float]]]
        ] = []
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(_Collector(self))

    def set_known(self, groups: Iterable[str], deployments: Iterable[str]) -> None:
        """The label values allowed for ``model`` and ``deployment`` (from config); others become ``other``."""
        self.groups = frozenset(groups)
        self.deployments = frozenset(deployments)
        self._by_raw = {}  # a name may have become known, or unknown

    # ------------------------------------------------------------------------------------------ updates
    def observe(self, rec: RequestRecord) -> None:
        """Account one finished request. Cheap (about a µs), but call it after the reply went out.

        Written for the request path: one dict lookup finds the request's series, whose figures are updated
        in place; the rare counters are behind one test each."""
        raw = (rec.group, rec.deployment, rec.cache_status)
        series = self._by_raw.get(raw)
        if series is None:
            series = self._series_of(raw)
        series.statuses[rec.status] = series.statuses.get(rec.status, 0) + 1
        value = rec.latency_ms / 1000.0
        series.latency[bisect_left(LATENCY_BUCKETS, value)] += 1  # bucket le=b holds values <= b
        series.latency_sum += value
        if rec.ttft_ms is not None:
            value = rec.ttft_ms / 1000.0
            series.ttft[bisect_left(LATENCY_BUCKETS, value)] += 1
            series.ttft_sum += value
        if rec.upstream_ms is not None:
            value = rec.upstream_ms / 1000.0
            series.upstream[bisect_left(LATENCY_BUCKETS, value)] += 1
            series.upstream_sum += value
        if rec.overhead_ms is not None:
            value = rec.overhead_ms / 1000.0
            series.overhead[bisect_left(OVERHEAD_BUCKETS, value)] += 1
            series.overhead_sum += value
        if rec.prompt_tokens or rec.completion_tokens:
            series.tokens = True
            series.prompt += rec.prompt_tokens
            series.completion += rec.completion_tokens
            series.cached += rec.cached_tokens
        if rec.cost_usd:
            series.cost += rec.cost_usd
        if rec.saved_usd:
            series.saved += rec.saved_usd
        model = series.model
        c = self._counters
        if rec.error is not None:
            _inc(c["errors"], (model, rec.error if rec.error in ERROR_CLASSES else OTHER))
        if rec.similarity is not None:
            self._observe_similarity(model, series.cache == "semantic-hit", rec.similarity)
        if rec.coalesced:
            _inc(c["coalesced"], (model,))
        if rec.attempts > 1:
            _inc(c["retries"], (model,), rec.attempts - 1)
        if rec.fallback is not None:
            _inc(c["fallbacks"], (model,))
        if rec.hedged:
            _inc(c["hedges"], (model,))

    def _series_of(self, raw: tuple[str, str | None, str]) -> _Series:
        """The series a record's raw values belong to. Raw values are remembered only when each is a known
        label value: ad-hoc model names and unknown deployments fold into ``other`` without growing the map."""
        group, dep, status = raw
        model = group if group in self.groups else OTHER
        deployment = NONE if dep is None else dep if dep in self.deployments else OTHER
        cache = status if status in CACHE_STATUSES else OTHER
        key = (model, deployment, cache)
        series = self._series.get(key)
        if series is None:
            series = self._series[key] = _Series(model, deployment, cache)
        if model != OTHER and deployment != OTHER and cache != OTHER:
            self._by_raw[raw] = series
        return series

    def _observe_similarity(self, model: str, hit: bool, similarity: float) -> None:
        if hit:
            _inc(self._counters["semantic_hits"], (model,))
        key = (model, "hit" if hit else "miss")
        hist = self._similarity.get(key)
        if hist is None:
            hist = self._similarity[key] = _Histogram(SIMILARITY_BUCKETS)
        hist.observe(similarity)

    def add_gauge(
        self,
        name: str,
        documentation: str,
        labelnames: Sequence[str],
        read: Callable[[], Mapping[tuple[str, ...], float]],
    ) -> None:
        """A gauge read at scrape time: ``read()`` maps label values to the current value. The caller keeps
        its label values bounded (deployments from config, fixed states)."""
        self._gauges.append((f"{self.prefix}_{name}", documentation, tuple(labelnames), read))

    def add_queue_gauge(self, read: Callable[[], Mapping[str, float]]) -> None:
        """``slipstream_queued{queue}``: items waiting, e.g. ``{"request_log": log.queued}``."""
        self.add_gauge("queued", "Items waiting in internal queues", ("queue",), _keyed(read))

    def add_breaker_gauge(self, read: Callable[[], Mapping[str, str]]) -> None:
        """``slipstream_breaker_state{deployment,state}`` is 1 for each deployment's current state, 0 for the
        others (the usual enum-as-gauge shape); ``read()`` maps deployment label -> state name."""

        def values() -> dict[tuple[str, ...], float]:
            out: dict[tuple[str, ...], float] = {}
            for dep, state in read().items():
                label = dep if dep in self.deployments else OTHER
                for s in BREAKER_STATES:
                    out[(label, s)] = 1.0 if s == state else out.get((label, s), 0.0)
            return out

        self.add_gauge(
            "breaker_state",
            "Circuit breaker state per deployment (1 = current)",
            ("deployment", "state"),
            values,
        )

    def add_cache_gauges(self, read: Callable[[], tuple[float, float]]) -> None:
        """``slipstream_cache_entries`` and ``slipstream_cache_bytes`` from ``read() -> (entries, bytes)``."""
        self.add_gauge("cache_entries", "Entries in the response cache", (), lambda: {(): read()[0]})
        self.add_gauge("cache_bytes", "Bytes held by the response cache", (), lambda: {(): read()[1]})

    # ------------------------------------------------------------------------------------------ exposition
    def render(self) -> tuple[bytes, str]:
        """The text exposition and its content type, for ``GET /metrics``."""
        return generate_latest(self.registry), CONTENT_TYPE_LATEST

    def collect(self) -> Iterator[Metric]:
        p = self.prefix
        labels = ["model", "deployment", "cache"]
        series = sorted(self._series.items())
        for attr, name, doc in (
            ("latency", "request_duration_seconds", "End-to-end request latency"),
            ("ttft", "time_to_first_token_seconds", "Time to the first streamed token"),
            ("upstream", "upstream_duration_seconds", "Time spent waiting on upstream calls"),
            ("overhead", "overhead_seconds", "Latency added by slipstream (end-to-end minus upstream)"),
        ):
            family = HistogramMetricFamily(f"{p}_{name}", doc, labels=labels)
            for key, one in series:
                counts, total, bounds = one.histogram(attr)
                if any(counts):  # e.g. no TTFT series for non-streamed requests
                    family.add_metric(list(key), _cumulative(bounds, counts), total)
            yield family
        counters = {**self._series_counters(), **self._counters}
        for name, (doc, names) in (*_SERIES_COUNTERS.items(), *_COUNTERS.items()):
            counter = CounterMetricFamily(f"{p}_{name}", doc, labels=list(names))
            for values, value in sorted(counters[name].items()):
                counter.add_metric(list(values), value)
            yield counter
        similarity = HistogramMetricFamily(
            f"{p}_semantic_similarity",
            "Similarity of the semantic cache's best candidate, by whether it was served",
            labels=["model", "result"],
        )
        for skey, shist in sorted(self._similarity.items()):
            similarity.add_metric(list(skey), shist.buckets(), shist.sum)
        yield similarity
        gauge = GaugeMetricFamily(f"{p}_in_flight", "Requests being served now")
        gauge.add_metric([], self.in_flight)
        yield gauge
        for name, doc, names, read in self._gauges:
            family_g = GaugeMetricFamily(name, doc, labels=list(names))
            for values, value in sorted(read().items()):
                family_g.add_metric(list(values), value)
            yield family_g

    def _series_counters(self) -> dict[str, dict[tuple[str, ...], float]]:
        """The counters kept per series, summed over the series that share their label values."""
        out: dict[str, dict[tuple[str, ...], float]] = {name: {} for name in _SERIES_COUNTERS}
        for one in self._series.values():
            model, deployment = one.model, one.deployment
            for status, n in one.statuses.items():
                _inc(out["requests"], (model, _STATUS_LABELS.get(status) or f"{status // 100}xx"), n)
                if one.cache != "off":
                    _inc(out["cache"], (model, one.cache), n)
            if one.tokens:
                _inc(out["tokens"], (model, deployment, "prompt"), one.prompt)
                _inc(out["tokens"], (model, deployment, "completion"), one.completion)
                if one.cached:
                    _inc(out["tokens"], (model, deployment, "cached"), one.cached)
            if one.cost:
                _inc(out["cost_usd"], (model, deployment), one.cost)
            if one.saved:
                _inc(out["cost_avoided_usd"], (model,), one.saved)
        return out


class _Collector(Collector):
    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterable[Metric]:
        return self.metrics.collect()


def _inc(series: dict[tuple[str, ...], float], key: tuple[str, ...], amount: float = 1) -> None:
    series[key] = series.get(key, 0) + amount


def _keyed(read: Callable[[], Mapping[str, float]]) -> Callable[[], dict[tuple[str, ...], float]]:
    return lambda: {(k,): v for k, v in read().items()}
