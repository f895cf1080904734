"""Alerts: rules from config, evaluated in the background, announced through the channels in ``notify``.

Three parts, each testable alone:

- ``MetricSource`` reads each rule's value. Windowed metrics come from the request log over the rule's window
  (``alertwindow.AlertWindow``: each evaluation reads only the rows added since the last one, grouped by
  SQLite into per-slot totals kept in memory, so a busy window costs its new rows, not a scan of all of it;
  p95 and p99 from ~2%-wide latency buckets);
  ``breaker_open`` (deployments whose breaker is open) and ``queue_depth`` (requests waiting in limiter queues)
  are read from the live pipeline, now, and ignore the window. A value is None — "cannot judge" — when a rate
  or percentile rests on fewer than ``min_requests`` requests (hit rate: cache lookups), or the log is off.
- ``RuleState`` is the state machine of one rule, without I/O; the time is an argument:

      ok ──breach──> firing: FIRING ──breach, cooldown over──> FIRING again (a reminder)
       ^                │
       └──not breached──┘  RESOLVED, once — only if this episode's FIRING went out

  FIRING goes out at most once per ``cooldown``, reminders and re-fires alike: a rule that resolves and breaches
  again within the cooldown fires silently, and is announced when the cooldown ends if it is still firing (or
  never, with no RESOLVED either, if it recovers first). Receivers thus always see FIRING/RESOLVED pairs. A None
  value holds the state: no traffic is not a recovery.
- ``AlertEvaluator`` is the thin driver: every ``interval`` it reads the values, steps the states and hands the
  notifications to the ``Notifier`` (concurrent sends, each under a timeout, failures logged, never raised). The
  clock and ``sleep`` are injected, so cooldown tests step time instead of waiting for it.

The gateway starts the evaluator in its ASGI lifespan and stops it at shutdown; the SDK starts it on
``__aenter__`` or its first call and stops it in ``aclose``. Current states are served at ``GET /api/alerts``
and as the gauge ``slipstream_alert_firing{rule,severity}``. Processes that share a request log (gateway
workers) all evaluate, but only the holder of a ``SenderLock`` beside the log sends. Live metrics are each
process's own: with several workers, ``breaker_open`` and ``queue_depth`` describe the sender's process.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import operator
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import ALERT_LIVE_METRICS, ALERT_METRICS, AlertRule, AlertsConfig
from ..limits.layer import KeyLimitLayer
from .alertwindow import AlertWindow
from .notify import Delivery, Notification, Notifier, build_channel
from .requestlog import RequestLog

if sys.platform != "win32":
    import fcntl

if TYPE_CHECKING:
    from ..pipeline import Pipeline

__all__ = [
    "COMPARISONS",
    "LIVE_METRICS",
    "LOG_METRICS",
    "AlertEvaluator",
    "MetricSource",
    "RuleState",
    "SenderLock",
    "Transition",
    "build_alerts",
    "value_from_summary",
]

log = logging.getLogger("slipstream.alerts")

COMPARISONS: Mapping[str, Callable[[float, float], bool]] = {
    ">": operator.gt,
    ">=": operator.ge,
    "<": operator.lt,
    "<=": operator.le,
}
# Read from live pipeline state at evaluation time; the others from the request log over the rule's window.
LIVE_METRICS = ALERT_LIVE_METRICS
LOG_METRICS = frozenset(ALERT_METRICS) - LIVE_METRICS
LATENCY_METRICS = frozenset({"p95_latency_ms", "p99_latency_ms"})  # need the window's latency percentiles

Health = Callable[[], Mapping[str, Sequence[Mapping[str, Any]]]]
Sleep = Callable[[float], Awaitable[Any]]


# ------------------------------------------------------------------------------------------------ values
def value_from_summary(rule: AlertRule, summary: Mapping[str, Any]) -> float | None:
    """A log-based rule's value from ``RequestLog.summary`` over its window; None when too few requests."""
    metric = rule.metric
    enough = max(1, rule.min_requests)
    if metric == "cost_per_hour":
        return float(summary["cost_usd"]) / (rule.window / 3600.0)
    if metric == "hit_rate":
        return float(summary["hit_rate"]) if summary["cache_lookups"] >= enough else None
    if summary["count"] < enough:
        return None
    if metric == "error_rate":
        return float(summary["error_rate"])
    p = summary["latency_ms"]["p95" if metric == "p95_latency_ms" else "p99"]
    return None if p is None else float(p)


class MetricSource:
    """Reads rule values from the request log and from live pipeline state."""

    def __init__(
        self,
        request_log: RequestLog | None,
        *,
        health: Health = dict,
        key_waiting: Callable[[], Mapping[str, int]] = dict,
    ) -> None:
        self.request_log = request_log
        self.health = health  # Pipeline.health(): group -> deployments' breaker and limiter snapshots
        self.key_waiting = key_waiting  # key name -> requests waiting in that key's limiter
        self._failing = False
        self._window = AlertWindow(request_log.clock if request_log is not None else time.time)

    @classmethod
    def for_pipeline(cls, pipeline: Pipeline) -> MetricSource:
        observer = pipeline.observer
        key_layers = [layer for layer in pipeline.layers if isinstance(layer, KeyLimitLayer)]

        def key_waiting() -> dict[str, int]:
            return {name: lim.waiting for layer in key_layers for name, lim in layer.limiters.items()}

        return cls(
            observer.request_log if observer is not None else None,
            health=pipeline.health,
            key_waiting=key_waiting,
        )

    async def read(self, rules: Iterable[AlertRule]) -> dict[str, float | None]:
        """Each rule's current value by rule name; a failed log read gives None (logged once per streak)."""
        rules = list(rules)
        summaries: dict[tuple[float, str | None, str | None, str | None], Mapping[str, Any] | None] = {}
        latency: set[tuple[float, str | None, str | None, str | None]] = set()
        for rule in rules:
            if rule.metric in LOG_METRICS:
                query = (rule.window, rule.model, rule.key, rule.deployment)
                summaries.setdefault(query, None)
                if rule.metric in LATENCY_METRICS:
                    latency.add(query)
        if summaries and self.request_log is not None and await self._refresh(self.request_log, summaries):
            for query in summaries:
                window, model, key, dep = query
                summaries[query] = self._window.figures(
                    window, model=model, key=key, deployment=dep, latency=query in latency
                )
        values: dict[str, float | None] = {}
        for rule in rules:
            if rule.metric == "breaker_open":
                values[rule.name] = float(self._breakers_open(rule))
            elif rule.metric == "queue_depth":
                values[rule.name] = float(self._queue_depth(rule))
            else:
                summary = summaries.get((rule.window, rule.model, rule.key, rule.deployment))
                values[rule.name] = None if summary is None else value_from_summary(rule, summary)
        return values

    async def _refresh(self, request_log: RequestLog, queries: Iterable[tuple[float, Any, Any, Any]]) -> bool:
        """Bring the window's slots up to date with the log; False (logged once per streak) when it fails."""
        longest = max(window for window, *_ in queries)
        try:
            await asyncio.to_thread(self._window.refresh, request_log, longest)
        except Exception as exc:  # a locked or damaged log must not stop the other rules
            if not self._failing:
                self._failing = True
                log.warning("alerts: reading the request log failed (logged once until it works): %s", exc)
            return False
        self._failing = False
        return True

    def _deployments(self, rule: AlertRule) -> Iterable[Mapping[str, Any]]:
        for group, deployments in self.health().items():
            if rule.model is not None and group != rule.model:
                continue
            for dep in deployments:
                if rule.deployment is None or dep.get("deployment") == rule.deployment:
                    yield dep

    def _breakers_open(self, rule: AlertRule) -> int:
        # Each group's deployment entry has a breaker of its own, even when two share a label.
        return sum(1 for d in self._deployments(rule) if d["breaker"]["state"] == "open")

    def _queue_depth(self, rule: AlertRule) -> int:
        """Requests waiting in limiter queues: the key's own queue with a ``key`` filter, the deployments'
        (of the model group / deployment) otherwise, plus every key's when the rule has no filter at all."""
        if rule.key is not None:
            return self.key_waiting().get(rule.key, 0)
        total = sum((d.get("limits") or {}).get("waiting", 0) for d in self._deployments(rule))
        if rule.model is None and rule.deployment is None:
            total += sum(self.key_waiting().values())
        return int(total)


# ------------------------------------------------------------------------------------------------ state
class Transition(enum.Enum):
    FIRED = "fired"
    REMINDED = "reminded"  # still firing when the cooldown ended
    RESOLVED = "resolved"


class RuleState:
    """One rule's state; ``update(value, now)`` is the whole decision, with no I/O."""

    __slots__ = ("announced", "evaluated_at", "firing", "last_fired", "rule", "since", "value")

    def __init__(self, rule: AlertRule) -> None:
        self.rule = rule
        self.firing = False
        self.announced = False  # this firing episode's FIRING went out
        self.since: float | None = None  # when the current episode started
        self.last_fired: float | None = None  # when the last FIRING went out (the cooldown runs from here)
        self.value: float | None = None
        self.evaluated_at: float | None = None

    def breached(self, value: float) -> bool:
        return COMPARISONS[self.rule.op](value, self.rule.threshold)

    def update(self, value: float | None, now: float) -> Transition | None:
        self.value = value
        self.evaluated_at = now
        if value is None:
            return None  # cannot judge: hold the state
        if self.breached(value):
            if not self.firing:
                self.firing, self.announced, self.since = True, False, now
            if self.last_fired is not None and now - self.last_fired < self.rule.cooldown:
                return None
            transition = Transition.REMINDED if self.announced else Transition.FIRED
            self.announced, self.last_fired = True, now
            return transition
        if not self.firing:
            return None
        announced = self.announced
        self.firing, self.announced = False, False
        return Transition.RESOLVED if announced else None

    def notification(self, transition: Transition, now: float) -> Notification:
        rule = self.rule
        assert self.value is not None
        return Notification(
            rule=rule.name,
            metric=rule.metric,
            state="RESOLVED" if transition is Transition.RESOLVED else "FIRING",
            severity=rule.severity,
            value=self.value,
            op=rule.op,
            threshold=rule.threshold,
            window=rule.window,
            at=now,
            since=self.since,
            repeat=transition is Transition.REMINDED,
            filters=rule_filters(rule),
        )

    def snapshot(self) -> dict[str, Any]:
        rule = self.rule
        return {
            "rule": rule.name,
            "metric": rule.metric,
            "op": rule.op,
            "threshold": rule.threshold,
            "window": rule.window,
            "cooldown": rule.cooldown,
            "severity": rule.severity,
            "channels": list(rule.channels),
            "filters": rule_filters(rule),
            "state": "firing" if self.firing else "ok",
            "announced": self.announced,
            "value": self.value,
            "since": self.since if self.firing else None,
            "last_fired": self.last_fired,
            "evaluated_at": self.evaluated_at,
        }


def rule_filters(rule: AlertRule) -> dict[str, str]:
    """The model group / key / deployment a rule watches (only those it names)."""
    named = (("model", rule.model), ("key", rule.key), ("deployment", rule.deployment))
    return {name: value for name, value in named if value is not None}


# ------------------------------------------------------------------------------------------------ driver
class SenderLock:
    """Who sends: one process per data folder. Gateway workers (and SDK processes) sharing a request log all
    evaluate — so each answers ``/api/alerts`` and the gauge correctly — but only the holder of this lock
    sends, or every alert would arrive once per worker. A non-blocking ``flock`` on a file beside the log;
    the OS drops it when its holder exits, and another process takes over at its next evaluation."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> bool:
        if self._fd is not None:
            return True
        if sys.platform == "win32":  # no flock: every process sends
            return True
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            log.warning("alerts: cannot open %s (%s): sending from this process anyway", self.path, exc)
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor drops the flock


class AlertEvaluator:
    """Evaluates every rule each ``interval`` in a background task and sends what changed."""

    def __init__(
        self,
        config: AlertsConfig,
        source: MetricSource,
        notifier: Notifier,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Sleep = asyncio.sleep,
        lock: SenderLock | None = None,
    ) -> None:
        self.interval = config.interval
        self.lock = lock  # None: this evaluator always sends
        self.source = source
        self.notifier = notifier
        self.clock = clock
        self.sleep = sleep
        self.states = [RuleState(rule) for rule in config.rules]
        self.evaluations = 0
        self.deliveries: list[Delivery] = []  # the last evaluation's sends
        self.withheld = 0  # notifications left to the process holding the lock
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        """Start the background loop (idempotent; a closed evaluator stays closed). Needs a running loop."""
        if self._task is None and not self._closed:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="slipstream-alerts")

    async def evaluate(self) -> list[Notification]:
        """Evaluate every rule once, now; return the notifications that came out of it, sent unless another
        process holds the sender lock."""
        now = self.clock()
        values = await self.source.read(state.rule for state in self.states)
        batch: list[tuple[Notification, Sequence[str]]] = []
        for state in self.states:
            transition = state.update(values.get(state.rule.name), now)
            if transition is not None:
                batch.append((state.notification(transition, now), state.rule.channels))
        self.evaluations += 1
        if batch and self.lock is not None and not self.lock.acquire():
            self.withheld += len(batch)
            self.deliveries = []
        else:
            self.deliveries = await self.notifier.deliver(batch)
        return [notification for notification, _ in batch]

    async def _run(self) -> None:
        failing = False
        while True:
            await self.sleep(self.interval)
            try:
                await self.evaluate()
            except Exception:  # the loop outlives any one evaluation
                if not failing:
                    log.exception("alerts: evaluation failed (logged once until it works again)")
                failing = True
            else:
                failing = False

    async def aclose(self) -> None:
        self._closed = True
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self.notifier.aclose()
        if self.lock is not None:
            self.lock.release()

    # ------------------------------------------------------------------------------------------ reading
    def snapshot(self) -> dict[str, Any]:
        """For ``GET /api/alerts``: every rule with its state and last value."""
        return {
            "interval": self.interval,
            "evaluations": self.evaluations,
            "sender": self.lock is None or self.lock.held,
            "firing": sum(state.firing for state in self.states),
            "failing_channels": sorted(self.notifier.failing),
            "alerts": [state.snapshot() for state in self.states],
        }

    def firing_gauge(self) -> dict[tuple[str, ...], float]:
        """``slipstream_alert_firing{rule,severity}``: 1 while a rule fires (label values come from config)."""
        return {(s.rule.name, s.rule.severity): 1.0 if s.firing else 0.0 for s in self.states}


def build_alerts(pipeline: Pipeline) -> AlertEvaluator | None:
    """The evaluator the pipeline's config asks for, or None without rules. Not started: the owner starts it
    inside its event loop (the gateway's lifespan, the SDK's first use)."""
    config = pipeline.config.alerts
    if not config.rules:
        return None
    source = MetricSource.for_pipeline(pipeline)
    blind = [rule.name for rule in config.rules if rule.metric in LOG_METRICS]
    if source.request_log is None and blind:
        log.warning("alerts: %s read the request log, which is off: they will never fire", ", ".join(blind))
    notifier = Notifier({name: build_channel(channel) for name, channel in config.channels.items()})
    # The lock sits beside the request log: processes sharing the log share one sender.
    lock = SenderLock(source.request_log.path.with_name("alerts.lock")) if source.request_log else None
    evaluator = AlertEvaluator(config, source, notifier, lock=lock)
    observer = pipeline.observer
    if observer is not None and pipeline.config.observe.metrics:
        observer.metrics.add_gauge(
            "alert_firing",
            "Alert rules firing now (1) or not (0)",
            ("rule", "severity"),
            evaluator.firing_gauge,
        )
    return evaluator
