"""App-level tracking: ``with slipstream.track("question_generation"):`` attributes the LLM calls made inside a
block to a named operation, so reports show per-operation duration, calls, hits, tokens and cost.

    with slipstream.track("cycle"):                  # also `async with`, and `@slipstream.track("cycle")`
        async with slipstream.track("propose") as span:   # nested: the operation "cycle/propose"
            await slip.chat(...)
        span.calls, span.cost_usd                    # the block's totals, nested blocks included

How it works:

- The current block is a ``Span`` in one ``ContextVar``. Entering a block makes a child of the current span
  current (its path is the parent's plus "/name"); leaving restores the parent. asyncio tasks copy the context
  when they are created, so calls made in tasks started inside the block (``gather``, ``TaskGroup``,
  ``create_task``) belong to it, and so do calls handed to ``SlipstreamSync``'s loop thread
  (``run_coroutine_threadsafe`` runs them in a copy of the caller's context).
- ``Pipeline.run`` captures the current span on the ``Call`` when the call enters the pipeline. The observer,
  at the call's end, adds the finished ``RequestRecord`` to the span and to every enclosing span (a parent's
  totals include its children's), and notes the request log the call was written to.
- When the block ends, its ``OperationRecord`` is queued on those request logs: a deque append. The log's one
  writer inserts it into the ``operations`` table of the same SQLite file, in the same batches as the
  requests. So neither a request nor the end of a block waits on disk, one connection writes the file (a
  second writer would contend with the first for SQLite's write lock), retention covers both tables, and
  ``slipstream report`` reads one file. A block none of whose calls reached a request log is written nowhere.
- Cost (``bench/track_bench.py``, CPU on the 2-core development machine): a block is a ``ContextVar`` set and
  reset and one small object, ~3 us; a call made inside one pays ~2-4 us for the lookup and the additions, on
  a ~50 us SDK cache hit. A call outside any block pays one ``ContextVar`` read. Without a request log nothing
  is written, and without an OpenTelemetry tracer provider nothing of OTel runs.
- OpenTelemetry: when ``opentelemetry-api`` is importable and a tracer provider is installed, each block also
  opens an OTel span (a child of the current one) and sets the totals on it as attributes when it ends.

Known limits: a call still running when its block ends (a task nobody awaited) is logged with the operation but
missing from the block's totals; a block that ends after the client closed its request log is dropped (counted
in the log's ``dropped``), so open the client outside the tracked blocks.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any, Protocol, TypeVar, cast

from .record import OperationRecord, RequestRecord

__all__ = ["CACHE_HITS", "SEPARATOR", "OperationSink", "Span", "current_span", "operation_path", "track"]

F = TypeVar("F", bound=Callable[..., Any])

SEPARATOR = "/"
# Cache statuses that count as hits: answered from the cache, exact or semantic.
CACHE_HITS = frozenset({"hit", "semantic-hit"})
MAX_PATH_CHARS = 200  # an operation path from a client header longer than this is refused

_current: ContextVar[Span | None] = ContextVar("slipstream_operation", default=None)


class OperationSink(Protocol):
    """Where finished blocks go: ``RequestLog`` is one (it writes them next to the requests)."""

    def record_operation(self, rec: OperationRecord) -> None: ...


class Span:
    """One run of a tracked block: where it sits in the operation tree, and the totals of the calls made in it
    (nested blocks' included). ``duration_ms`` is None until the block ends."""

    __slots__ = (
        "_otel",
        "_sinks",
        "_token",
        "calls",
        "completion_tokens",
        "cost_usd",
        "duration_ms",
        "errors",
        "hits",
        "name",
        "parent",
        "path",
        "prompt_tokens",
        "saved_usd",
        "started",
        "ts",
    )

    def __init__(self, name: str, parent: Span | None) -> None:
        self.name = name
        self.parent = parent
        self.path: str = name if parent is None else f"{parent.path}{SEPARATOR}{name}"
        self.ts = time.time()
        self.started = time.perf_counter()
        self.duration_ms: float | None = None
        self.calls = 0
        self.hits = 0
        self.errors = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0
        self.saved_usd = 0.0
        self._sinks: list[OperationSink] = []
        self._token: Token[Span | None] | None = None
        self._otel: Any = None  # (OTel span, context token) while the block runs, when OTel is on

    def add(self, record: RequestRecord, sink: OperationSink | None = None) -> None:
        """Count one finished call in this span and every enclosing one; ``sink`` is where it was logged."""
        hit = record.cache_status in CACHE_HITS
        failed = not record.ok
        span: Span | None = self
        while span is not None:
            span.calls += 1
            span.hits += hit
            span.errors += failed
            span.prompt_tokens += record.prompt_tokens
            span.completion_tokens += record.completion_tokens
            span.cost_usd += record.cost_usd
            span.saved_usd += record.saved_usd
            if sink is not None and sink not in span._sinks:
                span._sinks.append(sink)
            span = span.parent

    def record(self, error: BaseException | None = None) -> OperationRecord:
        return OperationRecord(
            ts=self.ts,
            operation=self.path,
            parent=None if self.parent is None else self.parent.path,
            duration_ms=self.duration_ms if self.duration_ms is not None else 0.0,
            calls=self.calls,
            hits=self.hits,
            errors=self.errors,
            prompt_tokens=self.prompt_tokens,
            completion_tokens=self.completion_tokens,
            cost_usd=self.cost_usd,
            saved_usd=self.saved_usd,
            error=None if error is None else type(error).__name__,
        )

    def __repr__(self) -> str:
        return f"Span({self.path!r}, calls={self.calls}, hits={self.hits}, cost_usd={self.cost_usd:.6f})"


def current_span() -> Span | None:
    """The innermost tracked block running in this context, if any."""
    return _current.get()


class track:  # lower case: it reads like a function, `with track("name")`, `@track("name")`
    """Attribute the LLM calls made inside a block (or a function) to the operation ``name``.

    A sync or async context manager (entering returns the ``Span``) and a decorator for sync and async
    functions. The object holds no per-run state, so one instance may be entered by many tasks at once.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        if not isinstance(name, str) or not name.strip() or SEPARATOR in name:
            raise ValueError(f"track() needs a non-empty operation name without {SEPARATOR!r}, got {name!r}")
        self.name = name.strip()

    def __enter__(self) -> Span:
        return _open(self.name)

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span = _current.get()
        if span is not None:
            _close(span, exc)

    async def __aenter__(self) -> Span:
        return _open(self.name)

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        span = _current.get()
        if span is not None:
            _close(span, exc)

    def __call__(self, func: F) -> F:
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            # The block would end when the generator object is made, before any of its work runs.
            raise TypeError("track() cannot decorate a generator function; use `with track(...)` inside it")
        name = self.name
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                span = _open(name)
                try:
                    result = await func(*args, **kwargs)
                except BaseException as exc:
                    _close(span, exc)
                    raise
                _close(span, None)
                return result

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            span = _open(name)
            try:
                result = func(*args, **kwargs)
            except BaseException as exc:
                _close(span, exc)
                raise
            _close(span, None)
            return result

        return cast(F, run)


def operation_path(value: str) -> str:
    """An operation path given by a client (the gateway's ``x-slipstream-operation`` header), normalised:
    names separated by "/", each stripped. Raises ``ValueError`` for an empty, overlong or unprintable path."""
    names = [name.strip() for name in value.split(SEPARATOR)]
    path = SEPARATOR.join(names)
    if not all(names) or len(path) > MAX_PATH_CHARS or not path.isprintable():
        raise ValueError(
            f"an operation is names separated by '{SEPARATOR}', at most {MAX_PATH_CHARS} printable characters"
        )
    return path


def _open(name: str) -> Span:
    span = Span(name, _current.get())
    span._token = _current.set(span)
    tracer = _tracer()
    if tracer is not None:
        span._otel = _otel_start(tracer, span)
    return span


def _close(span: Span, error: BaseException | None) -> None:
    span.duration_ms = (time.perf_counter() - span.started) * 1000
    token = span._token
    span._token = None
    try:
        if token is not None:
            _current.reset(token)
    except ValueError:  # left in another context than the one it was entered in (an async generator's block)
        _current.set(span.parent)
    if span._otel is not None:
        _otel_end(span, error)
    if span._sinks:
        record = span.record(error)
        for sink in span._sinks:
            sink.record_operation(record)


# ---------------------------------------------------------------------------------------------- OpenTelemetry
# Resolved on first use, so `import slipstream` never imports opentelemetry: the module, or False when absent.
_otel_trace: Any = None
_tracers: tuple[Any, Any] | None = None  # (provider, its tracer): a provider hands out a new tracer per call
_MISSING = object()


def _tracer() -> Any:
    """The OTel tracer to use, or None when the API is missing or no real tracer provider is installed (the
    API's default proxy would make non-recording spans: work for nothing)."""
    global _otel_trace, _tracers
    trace: Any = _otel_trace
    if trace is None:
        try:
            trace = importlib.import_module("opentelemetry.trace")
        except ImportError:
            trace = False
        else:
            trace.get_tracer_provider()  # installs the provider named by $OTEL_PYTHON_TRACER_PROVIDER, if any
        _otel_trace = trace
    if trace is False:
        return None
    # The global provider, read from the API module's variable: it is set once (by set_tracer_provider or the
    # environment, handled above) and never changes after. get_tracer_provider() would look the environment up
    # on every block until then, measured at ~2 us: most of what a block costs.
    provider: Any = getattr(trace, "_TRACER_PROVIDER", _MISSING)
    if provider is None:
        return None
    if provider is _MISSING:  # an API version without that variable: ask the public way
        provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    cached = _tracers
    if cached is not None and cached[0] is provider:
        return cached[1]
    tracer = provider.get_tracer("slipstream")
    _tracers = (provider, tracer)
    return tracer


def _otel_start(tracer: Any, span: Span) -> tuple[Any, Any]:
    from opentelemetry import context

    otel_span = tracer.start_span(span.path, attributes={"slipstream.operation": span.path})
    # Made current so that nested blocks (and the application's own spans) become its children.
    token = context.attach(_otel_trace.set_span_in_context(otel_span))
    return otel_span, token


def _otel_end(span: Span, error: BaseException | None) -> None:
    from opentelemetry import context
    from opentelemetry.trace import Status, StatusCode

    otel_span, token = span._otel
    span._otel = None
    otel_span.set_attributes(
        {
            "slipstream.calls": span.calls,
            "slipstream.hits": span.hits,
            "slipstream.errors": span.errors,
            "slipstream.tokens.prompt": span.prompt_tokens,
            "slipstream.tokens.completion": span.completion_tokens,
            "slipstream.cost_usd": span.cost_usd,
            "slipstream.saved_usd": span.saved_usd,
        }
    )
    if error is not None:
        otel_span.record_exception(error)
        otel_span.set_status(Status(StatusCode.ERROR, type(error).__name__))
    context.detach(token)  # left in another context: OTel logs it and carries on
    otel_span.end()
