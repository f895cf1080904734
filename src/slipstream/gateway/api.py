"""The operator API behind the admin key: ``/api/metrics/*``, ``POST /api/cache/clear``, and the dashboard's files.

The edge authenticates the caller and hands the path and raw query string here. Every metrics endpoint takes
``window`` (whole minutes, 1-1440, default 60) and the exact-match filters ``model``, ``key`` (the virtual key's
name) and ``deployment``; a filter value nothing matches gives empty figures, not an error, while a bad window
or an unknown parameter is a 400 naming the parameter, in OpenAI's error shape.

    GET  /api/metrics/summary       counts, rates, errors by class, exact latency/TTFT percentiles, hit rate,
                                    tokens, cost and savings (``RequestLog.summary`` plus request rates)
    GET  /api/metrics/performance   timing percentiles, per model and per deployment, and a time series
    GET  /api/metrics/costs         spend and savings, per hour, per model and per key
    GET  /api/metrics/cache         cache outcomes from the log, with the live store's size
    GET  /api/metrics/health        per deployment: breaker (state, recent failure rate), in-flight, and
                                    the requests it answered over the window
    GET  /api/metrics/export        all of the above as one JSON document, or the breakdowns as CSV
    POST /api/cache/clear           empties the response cache (all of it, or ``{"namespace": ...}``)

The request log is read off the event loop (``asyncio.to_thread``), after a flush of what is queued (waited for
at most ``FLUSH_TIMEOUT``), so a figure includes every request answered before the call. Nothing here runs per
proxied request: the figures are computed when asked for, from the log's rows (see ``observe.query``).

The dashboard (``/dashboard``) is three static files shipped as package data, read once and served with
``cache-control: no-cache``; the page loads without a key and asks for the admin key when the API answers 401.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import time
from collections.abc import Awaitable, Callable
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl

import orjson

from ..errors import InvalidRequest, SlipstreamError
from ..observe.query import Window, breakdown, cache_outcomes, costs, percentiles, request_rate, timeseries
from ..observe.requestlog import RequestLog
from ..pipeline import Pipeline
from .edge import JSON_HEADERS, EdgeResponse, not_found

log = logging.getLogger("slipstream.gateway.api")

__all__ = ["DEFAULT_WINDOW_MINUTES", "MAX_WINDOW_MINUTES", "MetricsApi", "dashboard_asset"]

DEFAULT_WINDOW_MINUTES = 60
MAX_WINDOW_MINUTES = 1440
FLUSH_TIMEOUT = 2.0  # seconds to wait for the request log to commit what is queued before reading
_FILTERS = ("model", "key", "deployment")
_WINDOW_PARAMS = frozenset({"window", *_FILTERS})
# What health shows of a deployment's window. The request log files a failed request under no deployment (the
# router names only the one that answered), so failures per deployment come from its breaker, not from here.
_DEPLOYMENT_WINDOW_FIELDS = ("count", "errors", "error_rate", "latency_ms")
_CSV_COLUMNS = (
    "dimension",
    "name",
    "requests",
    "errors",
    "error_rate",
    "hit_rate",
    "latency_p50_ms",
    "latency_p95_ms",
    "latency_p99_ms",
    "ttft_p50_ms",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "saved_usd",
)

Document = dict[str, Any]


class MetricsApi:
    """The /api/metrics/* handlers and the cache-clear action for one pipeline."""

    def __init__(self, pipeline: Pipeline, *, clock: Callable[[], float] = time.time) -> None:
        self.pipeline = pipeline
        self.clock = clock
        self.started = clock()
        self._reports: dict[str, Callable[[Window], Awaitable[Document]]] = {
            "summary": self.summary,
            "performance": self.performance,
            "costs": self.costs,
            "cache": self.cache,
            "health": self.health,
        }

    async def handle(self, method: str, path: str, query: bytes, body: bytes) -> EdgeResponse:
        """Answer an authenticated request for ``/api/metrics/<name>`` or ``/api/cache/clear``."""
        if path == "/api/cache/clear":
            if method != "POST":
                raise _method_not_allowed("POST")
            return _json(await self.clear_cache(body))
        name = path.removeprefix("/api/metrics/")
        report = self._reports.get(name)
        if report is None and name != "export":
            raise not_found(path)
        if method != "GET":
            raise _method_not_allowed("GET")
        params = _parse_query(query, _WINDOW_PARAMS | ({"format"} if name == "export" else set()))
        window = _window(params)
        if report is not None:
            return _json(await report(window))
        return await self.export(window, params.get("format", "json"))

    # ------------------------------------------------------------------------------------------ reports
    async def summary(self, window: Window) -> Document:
        log = await self._required_log()

        def read() -> Document:
            summary = window.summary(log)
            return {
                **summary,
                "filters": _filters(window),
                "requests_per_second": summary["count"] / window.seconds,
                "requests_per_second_1m": request_rate(log, window, 60.0),
            }

        return await asyncio.to_thread(read)

    async def performance(self, window: Window) -> Document:
        log = await self._required_log()

        def read() -> Document:
            return {
                "window_minutes": window.minutes,
                "filters": _filters(window),
                "timings": percentiles(log, window),
                "by_model": breakdown(log, window, "model"),
                "by_deployment": breakdown(log, window, "deployment"),
                "timeseries": timeseries(log, window),
            }

        return await asyncio.to_thread(read)

    async def costs(self, window: Window) -> Document:
        log = await self._required_log()
        figures = await asyncio.to_thread(costs, log, window)
        return {"window_minutes": window.minutes, "filters": _filters(window), **figures}

    async def cache(self, window: Window) -> Document:
        """The log's view of the window (null without a request log) and the live store's size."""
        log = await self._flushed_log()
        outcomes = await asyncio.to_thread(cache_outcomes, log, window) if log is not None else None
        return {
            "window_minutes": window.minutes,
            "filters": _filters(window),
            "enabled": self.pipeline.cache is not None,
            "window": outcomes,
            "store": await self._flushed_cache_stats(),
        }

    async def _flushed_cache_stats(self) -> Document | None:
        """The store's size once the writes queued so far have landed (waited for at most ``FLUSH_TIMEOUT``),
        like the log's figures: an answer given before the call is counted."""
        layer = self.pipeline.cache
        if layer is not None:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(layer.store.flush(), FLUSH_TIMEOUT)
        return await self.pipeline.cache_stats()

    async def health(self, window: Window) -> Document:
        """Live breaker state per deployment, with the requests it answered over the window (from the log)."""
        log = await self._flushed_log()
        recent: dict[str | None, Document] = {}
        if log is not None:
            recent = {
                row["name"]: row for row in await asyncio.to_thread(breakdown, log, window, "deployment")
            }
        groups = []
        for group, deployments in self.pipeline.health().items():
            if window.model is not None and group != window.model:
                continue
            rows = []
            for snapshot in deployments:
                label = snapshot["deployment"]
                if window.deployment is not None and label != window.deployment:
                    continue
                seen = recent.get(label)
                answered = None if seen is None else {k: seen[k] for k in _DEPLOYMENT_WINDOW_FIELDS}
                rows.append({**snapshot, "window": answered})
            states = [row["breaker"]["state"] for row in rows]
            status = "down" if states and all(s == "open" for s in states) else "ok"
            if status == "ok" and any(s != "closed" for s in states):
                status = "degraded"
            groups.append({"name": group, "status": status, "deployments": rows})
        statuses = {g["status"] for g in groups}
        overall = "down" if "down" in statuses else "degraded" if "degraded" in statuses else "ok"
        return {
            "window_minutes": window.minutes,
            "filters": _filters(window),
            "status": overall,
            "uptime_seconds": self.clock() - self.started,
            "groups": groups,
            "request_log": _log_counters(log),
        }

    async def export(self, window: Window, fmt: str) -> EdgeResponse:
        """Everything as one JSON document, or the breakdowns (total, per model, deployment, key) as CSV."""
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime(self.clock()))
        if fmt == "json":
            document: Document = {"exported_at": self.clock(), "window_minutes": window.minutes}
            for name, report in self._reports.items():
                document[name] = await report(window)
            return _attachment(orjson.dumps(document), "application/json", f"slipstream-metrics-{stamp}.json")
        if fmt == "csv":
            log = await self._required_log()
            text = await asyncio.to_thread(_csv_breakdowns, log, window)
            return _attachment(text.encode(), "text/csv; charset=utf-8", f"slipstream-metrics-{stamp}.csv")
        raise InvalidRequest("format must be 'json' or 'csv'", param="format")

    def dashboard(self, method: str, path: str) -> EdgeResponse:
        """The dashboard's files (no key needed: the page asks for one when the API answers 401)."""
        return dashboard_asset(method, path)

    # ------------------------------------------------------------------------------------------ actions
    async def clear_cache(self, body: bytes) -> Document:
        """Empty the response cache (every tier of the store), or only one namespace's entries."""
        namespace = _namespace(body)
        layer = self.pipeline.cache
        if layer is None:
            raise _not_available("The response cache is off (cache.enabled: false)", "cache_disabled")
        try:
            cleared = await layer.store.clear(f"{namespace}:" if namespace else "")
            await layer.store.flush()
        except Exception as exc:  # a shared tier that is down or slow: say so, as a 503 (no stack trace)
            log.warning("clearing the response cache failed: %s", exc)
            unavailable = SlipstreamError(
                f"The cache store could not be cleared ({type(exc).__name__}); try again",
                code="cache_unavailable",
            )
            unavailable.status, unavailable.type = 503, "service_unavailable"
            raise unavailable from None
        return {"cleared": cleared, "namespace": namespace}

    # ------------------------------------------------------------------------------------------ helpers
    async def _flushed_log(self) -> RequestLog | None:
        """The request log once the records queued so far are committed; None when the log is off."""
        observer = self.pipeline.observer
        log = observer.request_log if observer is not None else None
        if log is not None:
            # A stalled writer (a slow disk, another process's lock) must not hang the API: past the timeout
            # the figures are read from what is committed, missing at most the last moments' requests.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_TIMEOUT):
                    await log.aflush()
        return log

    async def _required_log(self) -> RequestLog:
        log = await self._flushed_log()
        if log is None:
            raise _not_available(
                "The request log is off (observe.request_log.enabled: false); the metrics API reads it",
                "request_log_disabled",
            )
        return log


def _parse_query(query: bytes, allowed: frozenset[str] | set[str]) -> dict[str, str]:
    """The query string's parameters; an unknown or repeated one is a 400 naming it. Blank values are absent."""
    params: dict[str, str] = {}
    for name, value in parse_qsl(query.decode("latin-1"), keep_blank_values=True):
        if name not in allowed:
            raise InvalidRequest(
                f"Unknown query parameter '{name}'; expected one of: {', '.join(sorted(allowed))}", param=name
            )
        if name in params:
            raise InvalidRequest(f"Query parameter '{name}' is given more than once", param=name)
        if value.strip():
            params[name] = value.strip()
    return params


def _window(params: dict[str, str]) -> Window:
    raw = params.get("window")
    minutes = DEFAULT_WINDOW_MINUTES
    if raw is not None:
        if not (raw.isascii() and raw.isdigit()) or not 1 <= int(raw) <= MAX_WINDOW_MINUTES:
            raise InvalidRequest(
                f"window must be a whole number of minutes from 1 to {MAX_WINDOW_MINUTES}, got '{raw}'",
                param="window",
            )
        minutes = int(raw)
    return Window(
        minutes, model=params.get("model"), key=params.get("key"), deployment=params.get("deployment")
    )


def _filters(window: Window) -> dict[str, str | None]:
    return {"model": window.model, "key": window.key, "deployment": window.deployment}


def _namespace(body: bytes) -> str | None:
    if not body.strip():
        return None
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError:
        raise InvalidRequest('The body must be a JSON object, e.g. {"namespace": "team-a"}') from None
    if not isinstance(data, dict) or set(data) - {"namespace"}:
        raise InvalidRequest("The body may only name a 'namespace' to clear", param="namespace")
    namespace = data.get("namespace")
    if namespace is not None and (not isinstance(namespace, str) or not namespace):
        raise InvalidRequest("namespace must be a non-empty string", param="namespace")
    return namespace


def _log_counters(log: RequestLog | None) -> dict[str, int] | None:
    if log is None:
        return None
    return {"written": log.written, "queued": log.queued, "dropped": log.dropped, "failed": log.failed}


def _csv_breakdowns(log: RequestLog, window: Window) -> str:
    """One CSV table: the window's total, then one row per model, deployment and key."""
    summary = window.summary(log)
    total = {
        "name": None,
        "count": summary["count"],
        "errors": summary["errors"],
        "error_rate": summary["error_rate"],
        "hit_rate": summary["hit_rate"],
        "latency_ms": summary["latency_ms"],
        "ttft_ms": summary["ttft_ms"],
        "tokens": summary["tokens"],
        "cost_usd": summary["cost_usd"],
        "saved_usd": summary["saved_usd"],
    }
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(_CSV_COLUMNS)
    sections = [("total", [total])] + [
        (by, breakdown(log, window, by)) for by in ("model", "deployment", "key")
    ]
    for dimension, rows in sections:
        for row in rows:
            writer.writerow(
                [
                    dimension,
                    "" if row["name"] is None else row["name"],
                    row["count"],
                    row["errors"],
                    _num(row["error_rate"]),
                    _num(row["hit_rate"]),
                    _num(row["latency_ms"]["p50"]),
                    _num(row["latency_ms"]["p95"]),
                    _num(row["latency_ms"]["p99"]),
                    _num(row["ttft_ms"]["p50"]),
                    row["tokens"]["prompt"],
                    row["tokens"]["completion"],
                    _num(row["cost_usd"]),
                    _num(row["saved_usd"]),
                ]
            )
    return out.getvalue()


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.6g}"


def _json(document: Document) -> EdgeResponse:
    return EdgeResponse(200, [*JSON_HEADERS, (b"cache-control", b"no-store")], orjson.dumps(document))


def _attachment(body: bytes, content_type: str, filename: str) -> EdgeResponse:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-disposition", f'attachment; filename="{filename}"'.encode()),
        (b"cache-control", b"no-store"),
    ]
    return EdgeResponse(200, headers, body)


def _method_not_allowed(allowed: str) -> SlipstreamError:
    exc = InvalidRequest(f"Method not allowed; use {allowed}")
    exc.status = 405
    return exc


def _not_available(message: str, code: str) -> SlipstreamError:
    exc = SlipstreamError(message, code=code)
    exc.status, exc.type = 404, "not_found_error"
    return exc


# ---------------------------------------------------------------------------------------------- dashboard

_ASSET_TYPES = {
    "index.html": b"text/html; charset=utf-8",
    "app.js": b"text/javascript; charset=utf-8",
    "style.css": b"text/css; charset=utf-8",
}
# The page loads only its own files and talks only to this gateway.
_CSP = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)
_assets: dict[str, bytes] = {}


def dashboard_asset(method: str, path: str) -> EdgeResponse:
    """``/dashboard`` (the page) and ``/dashboard/<file>``, read from the package once and kept."""
    if method != "GET":
        raise _method_not_allowed("GET")
    name = path.removeprefix("/dashboard").lstrip("/") or "index.html"
    content_type = _ASSET_TYPES.get(name)
    if content_type is None:
        raise not_found(path)
    body = _assets.get(name)
    if body is None:
        body = _assets[name] = resources.files("slipstream.gateway").joinpath("dashboard", name).read_bytes()
    headers = [
        (b"content-type", content_type),
        (b"cache-control", b"no-cache"),
        (b"x-content-type-options", b"nosniff"),
        (b"content-security-policy", _CSP),
    ]
    return EdgeResponse(200, headers, body)
