"""Configuration: one YAML file, ``${ENV}`` substitution, ``SLIPSTREAM__A__B`` overrides, errors with line numbers.

The schema (every key optional; ``examples/slipstream.yaml`` shows all of them)::

    server:       host, port, max_body_bytes, admin_key
    keys:         - {key, name, namespace, limits}    virtual API keys; none → loopback only
    cache:        enabled, ttl, normalize_whitespace,
                  memory: {max_entries, max_bytes}, sqlite: {enabled, path, max_bytes},
                  redis: {url, timeout}                 shared tier; replaces SQLite behind the memory tier
    coalescing:   enabled                              identical requests in flight share one upstream call
    redis:        url, timeout, cache, limits, coalescing, breakers
                                                       many instances as one: shared cache tier, global limits
                                                       (limits: open | closed | off — what to do when Redis is
                                                       down), cross-instance coalescing, shared breaker state
    observe:      metrics, request_log: {enabled, path, retention_days, max_bytes, store_text, writer}
    alerts:       interval, channels: {NAME: {type: log | webhook | email, ...}},
                  rules: [{name, metric, window, op, threshold, cooldown, severity, channels,
                           model, key, deployment, min_requests}]     evaluated by observe/alerts.py
    state:        backend: sqlite | redis, path, redis_url, timeout, on_redis_error: fail | local, ttl
                                                       session state (slipstream.state); Redis when a URL is set
                                                       here or in redis.url / cache.redis.url
    model_groups: NAME: {strategy, timeout, retries: {max_attempts, base_delay, max_delay, budget},
                         breaker: {failures, error_rate, min_requests, window, cooldown},
                         hedge: {after}, fallback_reply,
                         semantic: {enabled, threshold, top_k, adaptive, embedder: local | GROUP,
                                    guards: {numbers, dates, entities, negation, comparison,
                                             short_words, short_threshold}},     off by default
                         deployments: [{provider, model, name, base_url, api_key, headers, options,
                                        weight, priority, timeouts: {connect, first_byte, total},
                                        limits: {rpm, tpm, max_concurrent, max_wait, adaptive},
                                        price: {input, output, cached_input}}]}   USD per 1M tokens

With no file at all, ``default_config()`` serves a ``sim`` group, adds OpenAI / Anthropic / Gemini groups when
their key variables are set, and keeps the SQLite cache under ``.slipstream/`` (or ``$SLIPSTREAM_DATA_DIR``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .limits import LimitSpec
from .providers.base import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_FIRST_BYTE_TIMEOUT,
    DEFAULT_TOTAL_TIMEOUT,
    Deployment,
    Price,
    Timeouts,
)
from .routing import STRATEGIES, RetryPolicy
from .semantic.guards import GUARD_NAMES, GuardConfig

__all__ = [
    "AlertRule",
    "AlertsConfig",
    "BreakerConfig",
    "CacheConfig",
    "ChannelConfig",
    "Config",
    "ConfigError",
    "EmailChannelConfig",
    "GroupPolicy",
    "KeyConfig",
    "LogChannelConfig",
    "ModelGroup",
    "ObserveConfig",
    "RedisConfig",
    "SemanticConfig",
    "ServerConfig",
    "StateConfig",
    "WebhookChannelConfig",
    "default_config",
    "load_config",
    "parse_config",
]

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8080
DEFAULT_MAX_BODY_BYTES = 4 * 1024 * 1024
DEFAULT_CACHE_TTL = 24 * 3600.0
DEFAULT_MEMORY_ENTRIES = 10_000
DEFAULT_MEMORY_BYTES = 64 * 1024 * 1024
DEFAULT_SQLITE_BYTES = 1024 * 1024 * 1024
DEFAULT_DATA_DIR = ".slipstream"
DEFAULT_SEMANTIC_THRESHOLD = 0.97
ENV_PREFIX = "SLIPSTREAM__"

# Providers a bare environment enables, with the variables holding their keys and the groups they add.
PROVIDER_ENV_KEYS: dict[str, tuple[str, ...]] = {
    "openai": ("OPENAI_API_KEY",),
    "anthropic": ("ANTHROPIC_API_KEY",),
    "gemini": ("GEMINI_API_KEY", "GOOGLE_API_KEY"),
}
DEFAULT_GROUPS: dict[str, tuple[str, ...]] = {
    "openai": ("gpt-5", "gpt-5-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4o", "gpt-4o-mini", "o4-mini"),
    "anthropic": ("claude-opus-4-1", "claude-sonnet-4-5", "claude-haiku-4-5"),
    "gemini": ("gemini-2.5-pro", "gemini-2.5-flash", "gemini-2.5-flash-lite"),
}


_RETRY_DEFAULTS = RetryPolicy()

# Alert vocabulary; what each metric means and how it is read is in observe/alerts.py.
ALERT_METRICS = (
    "p95_latency_ms",
    "p99_latency_ms",
    "error_rate",
    "hit_rate",
    "cost_per_hour",
    "breaker_open",
    "queue_depth",
)
ALERT_LIVE_METRICS = frozenset({"breaker_open", "queue_depth"})  # live pipeline state; the rest: request log
ALERT_FRACTION_METRICS = frozenset({"error_rate", "hit_rate"})  # thresholds between 0 and 1
ALERT_OPS = (">", ">=", "<", "<=")
ALERT_SEVERITIES = ("info", "warning", "critical")
ALERT_CHANNEL_TYPES = ("log", "webhook", "email")
DEFAULT_ALERT_INTERVAL = 15.0
DEFAULT_ALERT_WINDOW = 300.0
DEFAULT_ALERT_COOLDOWN = 600.0
DEFAULT_ALERT_SEND_TIMEOUT = 10.0
DEFAULT_ALERT_CHANNEL = "log"  # what an alerts section without channels notifies
_REDIS_LIMIT_MODES = ("open", "closed", "off")


class ConfigError(ValueError):
    """One or more problems in a config, each naming the file, the line and the field."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES
    admin_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class KeyConfig:
    key: str = field(repr=False)
    name: str
    namespace: str
    limits: LimitSpec | None = None


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    failures: int = 5
    error_rate: float = 0.5
    min_requests: int = 20
    window: float = 30.0
    cooldown: float = 15.0


@dataclass(frozen=True, slots=True)
class GroupPolicy:
    """How a model group routes: strategy, deadline, retries, breakers, hedging and a static fallback."""

    strategy: str = "failover"
    timeout: float | None = None  # one deadline for the whole request, across retries and fallbacks
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    retry_budget: float = 0.2  # retries may not exceed this share of requests (over 10 s)
    breaker: BreakerConfig = BreakerConfig()
    hedge_after: float | None = None  # seconds without a first byte before a second attempt starts
    hedge_p95: bool = False  # ... or the group's observed p95 time to first byte
    fallback_reply: str | None = None
    semantic: SemanticConfig | None = None  # the semantic cache, when turned on for this group


@dataclass(frozen=True, slots=True)
class SemanticConfig:
    """A group's semantic cache: a cosine ``threshold`` (``slipstream semantic calibrate`` picks one), guards,
    and the embedder: ``local`` (the bundled model) or the name of a group whose embeddings API to call."""

    threshold: float = DEFAULT_SEMANTIC_THRESHOLD
    top_k: int = 4
    adaptive: bool = True
    embedder: str = "local"
    guards: GuardConfig = field(default_factory=GuardConfig)


@dataclass(frozen=True, slots=True)
class CacheConfig:
    enabled: bool = True
    ttl: float = DEFAULT_CACHE_TTL
    normalize_whitespace: bool = False
    memory_max_entries: int = DEFAULT_MEMORY_ENTRIES
    memory_max_bytes: int = DEFAULT_MEMORY_BYTES
    sqlite_enabled: bool = True
    sqlite_path: str = f"{DEFAULT_DATA_DIR}/cache.db"
    sqlite_max_bytes: int = DEFAULT_SQLITE_BYTES
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    redis_timeout: float = 0.05


@dataclass(frozen=True, slots=True)
class RedisConfig:
    """Redis as the engine that makes several instances one; ``url`` None = every feature local."""

    url: str | None = field(default=None, repr=False)  # may hold a password
    timeout: float = 0.1  # bound on each Redis call on the request path
    cache: bool = True  # the shared cache tier behind the memory tier (unless cache.redis.url names another)
    limits: str = "open"  # open: local limits while Redis is down | closed: refuse (429) | off: local only
    coalescing: bool = True
    breakers: bool = True


@dataclass(frozen=True, slots=True)
class ObserveConfig:
    metrics: bool = True
    request_log: bool = True
    request_log_path: str = f"{DEFAULT_DATA_DIR}/requests.db"
    retention_days: float = 30.0
    request_log_max_bytes: int = 512 * 1024 * 1024
    store_text: bool = False  # prompt and reply text are kept only when this is on
    # "process": the SQLite inserts run in a child process, off the recording process's GIL; "thread": in a
    # thread of the recording process (no extra process; the inserts share its GIL).
    request_log_writer: str = "process"


REQUEST_LOG_WRITERS = ("process", "thread")
STATE_BACKENDS = ("sqlite", "redis")
STATE_ON_REDIS_ERROR = ("fail", "local")


@dataclass(frozen=True, slots=True)
class StateConfig:
    """Session state: ``backend`` None picks Redis when a URL is known (``redis_url``, else the top-level
    ``redis.url``, else the cache's), SQLite at ``path`` otherwise. ``on_redis_error``: ``fail`` raises
    ``StateUnavailable``, ``local`` carries on with the SQLite file (see ``state/fallback.py``)."""

    backend: str | None = None
    path: str = f"{DEFAULT_DATA_DIR}/state.db"
    redis_url: str | None = field(default=None, repr=False)  # may hold a password
    timeout: float = 0.5
    on_redis_error: str = "fail"
    ttl: float | None = None  # seconds an entry lives when a write names no TTL; None: until deleted


@dataclass(frozen=True, slots=True)
class LogChannelConfig:
    name: str


@dataclass(frozen=True, slots=True)
class WebhookChannelConfig:
    name: str
    url: str = field(repr=False)  # a Slack webhook URL is itself the credential
    timeout: float = DEFAULT_ALERT_SEND_TIMEOUT


@dataclass(frozen=True, slots=True)
class EmailChannelConfig:
    name: str
    host: str
    sender: str  # ``from`` in YAML
    to: tuple[str, ...]
    port: int = 25
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    starttls: bool = False
    timeout: float = DEFAULT_ALERT_SEND_TIMEOUT


ChannelConfig = LogChannelConfig | WebhookChannelConfig | EmailChannelConfig


@dataclass(frozen=True, slots=True)
class AlertRule:
    """Fire when ``metric`` (over ``window`` seconds, for the filters given) compares ``op`` to ``threshold``."""

    name: str
    metric: str
    threshold: float
    op: str = ">"
    window: float = DEFAULT_ALERT_WINDOW
    cooldown: float = DEFAULT_ALERT_COOLDOWN  # at most one FIRING per cooldown
    severity: str = "warning"
    channels: tuple[str, ...] = ()  # resolved by the reader: every channel when the rule names none
    model: str | None = None
    key: str | None = None
    deployment: str | None = None
    min_requests: int = 1  # rates and percentiles over fewer requests are not judged


@dataclass(frozen=True, slots=True)
class AlertsConfig:
    interval: float = DEFAULT_ALERT_INTERVAL
    channels: Mapping[str, ChannelConfig] = field(default_factory=dict)
    rules: tuple[AlertRule, ...] = ()


@dataclass(frozen=True, slots=True)
class ModelGroup:
    name: str
    deployments: tuple[Deployment, ...]
    policy: GroupPolicy = GroupPolicy()


@dataclass(frozen=True, slots=True)
class Config:
    server: ServerConfig = ServerConfig()
    keys: tuple[KeyConfig, ...] = ()
    cache: CacheConfig = CacheConfig()
    coalescing: bool = True
    redis: RedisConfig = RedisConfig()
    observe: ObserveConfig = ObserveConfig()
    state: StateConfig = StateConfig()
    alerts: AlertsConfig = AlertsConfig()
    model_groups: Mapping[str, ModelGroup] = field(default_factory=dict)
    # Providers whose keys are known: ``"openai/<any model>"`` resolves to an ad-hoc deployment of them.
    passthrough: Mapping[str, Deployment] = field(default_factory=dict)
    source: str = "<defaults>"


# ------------------------------------------------------------------------------------------------ loading
def load_config(
    path: str | os.PathLike[str] | None = None, *, environ: Mapping[str, str] | None = None
) -> Config:
    """Load ``path`` (or ``$SLIPSTREAM_CONFIG``); with neither, the embedded defaults."""
    env = os.environ if environ is None else environ
    path = path or env.get("SLIPSTREAM_CONFIG") or None
    if path is None:
        return default_config(environ=env)
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{file}: cannot read: {exc.strerror or exc}"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{file}: not UTF-8 text"]) from None
    return parse_config(text, source=str(file), environ=env)


def parse_config(text: str, *, source: str = "<string>", environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        raise ConfigError([f"{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}"]) from None
    lines: dict[str, int] = {}
    if node is not None:
        _index_lines(node, "", lines)
    if data is None:
        data = {}
    data = _apply_env_overrides(data, env)
    reader = _Reader(source, lines, env)
    config = reader.config(data)
    if reader.problems:
        raise ConfigError(reader.problems)
    return config


def default_config(*, environ: Mapping[str, str] | None = None) -> Config:
    env = os.environ if environ is None else environ
    data_dir = env.get("SLIPSTREAM_DATA_DIR", DEFAULT_DATA_DIR)
    groups = {"sim": ModelGroup("sim", (Deployment(provider="sim", model="sim-1", name="sim"),))}
    passthrough: dict[str, Deployment] = {}
    for provider, variables in PROVIDER_ENV_KEYS.items():
        key = next((env[v] for v in variables if env.get(v)), None)
        if key is None:
            continue
        passthrough[provider] = Deployment(provider=provider, model="", api_key=key)
        for model in DEFAULT_GROUPS[provider]:
            groups[model] = ModelGroup(
                model, (Deployment(provider=provider, model=model, name=f"{provider}/{model}", api_key=key),)
            )
    cache = CacheConfig(sqlite_path=str(Path(data_dir) / "cache.db"))
    observe = ObserveConfig(request_log_path=str(Path(data_dir) / "requests.db"))
    state = StateConfig(path=str(Path(data_dir) / "state.db"))
    return Config(
        cache=cache,
        observe=observe,
        state=state,
        model_groups=groups,
        passthrough=passthrough,
        source="<defaults>",
    )


def _index_lines(node: yaml.Node, path: str, lines: dict[str, int]) -> None:
    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = str(key_node.value)
            child = f"{path}.{key}" if path else key
            lines[child] = key_node.start_mark.line + 1
            _index_lines(value_node, child, lines)
            lines[child] = key_node.start_mark.line + 1
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _index_lines(item, f"{path}[{i}]", lines)


def _apply_env_overrides(data: Any, env: Mapping[str, str]) -> Any:
    """``SLIPSTREAM__SERVER__PORT=9000`` sets ``server.port``; values are parsed as YAML scalars."""
    if not isinstance(data, dict):
        return data
    for name, value in env.items():
        if not name.startswith(ENV_PREFIX):
            continue
        parts = [p.lower() for p in name[len(ENV_PREFIX) :].split("__") if p]
        if not parts:
            continue
        target = data
        for part in parts[:-1]:
            nxt = target.get(part)
            if not isinstance(nxt, dict):
                nxt = target[part] = {}
            target = nxt
        try:
            target[parts[-1]] = yaml.safe_load(value)
        except yaml.YAMLError:
            target[parts[-1]] = value
    return data


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
T = TypeVar("T")


class _Reader:
    """Reads the raw YAML data into config objects, collecting every problem with its line."""

    def __init__(self, source: str, lines: dict[str, int], env: Mapping[str, str]) -> None:
        self.source = source
        self.lines = lines
        self.env = env
        self.problems: list[str] = []

    def problem(self, path: str, message: str) -> None:
        probe = path
        while probe and probe not in self.lines:
            probe = probe.rsplit(".", 1)[0] if "." in probe else ""
        line = self.lines.get(probe)
        where = f"{self.source}:{line}" if line else self.source
        self.problems.append(f"{where}: {path}: {message}")

    def mapping(self, value: Any, path: str, known: set[str]) -> dict[str, Any]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping, got {_kind(value)}")
            return {}
        for key in value:
            if key not in known:
                self.problem(
                    f"{path}.{key}" if path else str(key),
                    f"unknown field (known: {', '.join(sorted(known))})",
                )
        return value

    def get(
        self, data: dict[str, Any], key: str, path: str, kind: Callable[[Any], T | None], default: T
    ) -> T:
        if key not in data or data[key] is None:
            return default
        value = data[key]
        if isinstance(value, str):
            value = self.substitute(value, f"{path}.{key}")
        result = kind(value)
        if result is None:
            self.problem(
                f"{path}.{key}" if path else key, f"expected {kind.__name__.strip('_')}, got {_kind(value)}"
            )
            return default
        return result

    def substitute(self, value: str, path: str) -> str:
        def repl(match: re.Match[str]) -> str:
            name, fallback = match.group(1), match.group(2)
            if name in self.env:
                return self.env[name]
            if fallback is not None:
                return fallback
            self.problem(path, f"environment variable {name} is not set")
            return ""

        return _ENV_REF.sub(repl, value)

    # --- sections
    def config(self, data: Any) -> Config:
        top = self.mapping(
            data,
            "",
            {"server", "keys", "cache", "coalescing", "redis", "observe", "alerts", "state", "model_groups"},
        )
        server = self.server(top.get("server"))
        keys = self.keys(top.get("keys"))
        cache = self.cache(top.get("cache"))
        coalescing = self.mapping(top.get("coalescing"), "coalescing", {"enabled"})
        groups = self.groups(top.get("model_groups"))
        if not groups:
            self.problem("model_groups", "at least one model group is required")
        if not cache.enabled and any(g.policy.semantic for g in groups.values()):
            self.problem("cache.enabled", "the semantic cache of a model group needs the exact cache on")
        observe = self.observe(top.get("observe"), Path(cache.sqlite_path).parent / "requests.db")
        return Config(
            server=server,
            keys=keys,
            cache=cache,
            coalescing=self.get(coalescing, "enabled", "coalescing", _bool, True),
            redis=self.redis(top.get("redis")),
            observe=observe,
            alerts=self.alerts(top.get("alerts"), observe),
            state=self.state(top.get("state"), cache, top.get("redis")),
            model_groups=groups,
            source=self.source,
        )

    def server(self, value: Any) -> ServerConfig:
        d = self.mapping(value, "server", {"host", "port", "max_body_bytes", "admin_key"})
        port = self.get(d, "port", "server", _int, DEFAULT_PORT)
        if not 0 <= port <= 65535:
            self.problem("server.port", "must be between 0 and 65535")
        max_body = self.get(d, "max_body_bytes", "server", _int, DEFAULT_MAX_BODY_BYTES)
        if max_body < 1024:
            self.problem("server.max_body_bytes", "must be at least 1024")
        return ServerConfig(
            host=self.get(d, "host", "server", _str, DEFAULT_HOST),
            port=port,
            max_body_bytes=max_body,
            admin_key=self.get(d, "admin_key", "server", _str, None) or None,
        )

    def keys(self, value: Any) -> tuple[KeyConfig, ...]:
        if value is None:
            return ()
        if not isinstance(value, list):
            self.problem("keys", f"expected a list, got {_kind(value)}")
            return ()
        keys = []
        seen: set[str] = set()
        for i, item in enumerate(value):
            path = f"keys[{i}]"
            d = self.mapping(item, path, {"key", "name", "namespace", "limits"})
            key = self.get(d, "key", path, _str, "")
            if not key:
                self.problem(f"{path}.key", "is required")
                continue
            if key in seen:
                self.problem(f"{path}.key", "is the same as an earlier key")
            seen.add(key)
            name = self.get(d, "name", path, _str, f"key-{i}")
            namespace = self.get(d, "namespace", path, _str, name)
            keys.append(KeyConfig(key=key, name=name, namespace=namespace, limits=self.limits(d, path)))
        return tuple(keys)

    def cache(self, value: Any) -> CacheConfig:
        d = self.mapping(
            value, "cache", {"enabled", "ttl", "normalize_whitespace", "memory", "sqlite", "redis"}
        )
        red = self.mapping(d.get("redis"), "cache.redis", {"url", "timeout"})
        mem = self.mapping(d.get("memory"), "cache.memory", {"max_entries", "max_bytes"})
        sql = self.mapping(d.get("sqlite"), "cache.sqlite", {"enabled", "path", "max_bytes"})
        ttl = self.get(d, "ttl", "cache", _float, DEFAULT_CACHE_TTL)
        if ttl <= 0:
            self.problem("cache.ttl", "must be positive")
        return CacheConfig(
            enabled=self.get(d, "enabled", "cache", _bool, True),
            ttl=ttl,
            normalize_whitespace=self.get(d, "normalize_whitespace", "cache", _bool, False),
            memory_max_entries=self.get(mem, "max_entries", "cache.memory", _int, DEFAULT_MEMORY_ENTRIES),
            memory_max_bytes=self.get(mem, "max_bytes", "cache.memory", _int, DEFAULT_MEMORY_BYTES),
            sqlite_enabled=self.get(sql, "enabled", "cache.sqlite", _bool, True),
            sqlite_path=self.get(sql, "path", "cache.sqlite", _str, f"{DEFAULT_DATA_DIR}/cache.db"),
            sqlite_max_bytes=self.get(sql, "max_bytes", "cache.sqlite", _int, DEFAULT_SQLITE_BYTES),
            redis_url=self.get(red, "url", "cache.redis", _str, None) or None,
            redis_timeout=self.get(red, "timeout", "cache.redis", _float, 0.05),
        )

    def redis(self, value: Any) -> RedisConfig:
        d = self.mapping(value, "redis", {"url", "timeout", "cache", "limits", "coalescing", "breakers"})
        default = RedisConfig()
        timeout = self.get(d, "timeout", "redis", _float, default.timeout)
        if not timeout > 0:
            self.problem("redis.timeout", "must be positive")
        if isinstance(d.get("limits"), bool):  # YAML reads a bare `off`/`on` as a boolean
            d = {**d, "limits": "open" if d["limits"] else "off"}
        limits = self.get(d, "limits", "redis", _str, default.limits)
        if limits not in _REDIS_LIMIT_MODES:
            self.problem("redis.limits", f"expected one of {', '.join(_REDIS_LIMIT_MODES)}, got {limits!r}")
        return RedisConfig(
            url=self.get(d, "url", "redis", _str, None) or None,
            timeout=timeout,
            cache=self.get(d, "cache", "redis", _bool, True),
            limits=limits,
            coalescing=self.get(d, "coalescing", "redis", _bool, True),
            breakers=self.get(d, "breakers", "redis", _bool, True),
        )

    def groups(self, value: Any) -> dict[str, ModelGroup]:
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problem("model_groups", f"expected a mapping of group names, got {_kind(value)}")
            return {}
        groups = {}
        for name, spec in value.items():
            path = f"model_groups.{name}"
            d = self.mapping(
                spec,
                path,
                {
                    "deployments",
                    "strategy",
                    "timeout",
                    "retries",
                    "breaker",
                    "hedge",
                    "fallback_reply",
                    "semantic",
                },
            )
            raw = d.get("deployments")
            if not isinstance(raw, list) or not raw:
                self.problem(f"{path}.deployments", "expected a non-empty list of deployments")
                continue
            deployments = tuple(
                dep
                for i, item in enumerate(raw)
                if (dep := self.deployment(item, f"{path}.deployments[{i}]", i))
            )
            groups[str(name)] = ModelGroup(str(name), deployments, self.policy(d, path))
        for name, group in groups.items():
            semantic = group.policy.semantic
            if semantic is not None and semantic.embedder != "local" and semantic.embedder not in groups:
                self.problem(
                    f"model_groups.{name}.semantic.embedder", "expected 'local' or the name of a model group"
                )
        return groups

    def observe(self, value: Any, default_log_path: Path) -> ObserveConfig:
        """The request log lives beside the cache (the same data folder) unless its path is given."""
        d = self.mapping(value, "observe", {"metrics", "request_log"})
        log = self.mapping(
            d.get("request_log"),
            "observe.request_log",
            {"enabled", "path", "retention_days", "max_bytes", "store_text", "writer"},
        )
        lp, default = "observe.request_log", ObserveConfig()
        writer = self.get(log, "writer", lp, _str, default.request_log_writer)
        if writer not in REQUEST_LOG_WRITERS:
            self.problem(f"{lp}.writer", f"expected one of {', '.join(REQUEST_LOG_WRITERS)}, got {writer!r}")
            writer = default.request_log_writer
        return ObserveConfig(
            metrics=self.get(d, "metrics", "observe", _bool, True),
            request_log=self.get(log, "enabled", lp, _bool, True),
            request_log_path=self.get(log, "path", lp, _str, str(default_log_path)),
            retention_days=self.get(log, "retention_days", lp, _float, default.retention_days),
            request_log_max_bytes=self.get(log, "max_bytes", lp, _int, default.request_log_max_bytes),
            store_text=self.get(log, "store_text", lp, _bool, False),
            request_log_writer=writer,
        )

    def alerts(self, value: Any, observe: ObserveConfig) -> AlertsConfig:
        """Rules and channels; a section that names no channels logs its alerts."""
        if value is None:
            return AlertsConfig()
        d = self.mapping(value, "alerts", {"interval", "channels", "rules"})
        interval = self.get(d, "interval", "alerts", _duration, DEFAULT_ALERT_INTERVAL)
        if interval <= 0:
            self.problem("alerts.interval", "must be positive")
        raw = d.get("channels")
        channels: dict[str, ChannelConfig] = {}
        if raw is not None and not isinstance(raw, dict):
            self.problem("alerts.channels", f"expected a mapping of channel names, got {_kind(raw)}")
        elif raw:
            for name, spec in raw.items():
                if channel := self.alert_channel(str(name), spec, f"alerts.channels.{name}"):
                    channels[channel.name] = channel
        else:
            channels[DEFAULT_ALERT_CHANNEL] = LogChannelConfig(DEFAULT_ALERT_CHANNEL)
        # Rules may name a channel that failed its own checks without a second, confusing problem.
        known = tuple(str(n) for n in raw) if isinstance(raw, dict) and raw else tuple(channels)
        rules: list[AlertRule] = []
        items = d.get("rules")
        if items is not None and not isinstance(items, list):
            self.problem("alerts.rules", f"expected a list, got {_kind(items)}")
            items = None
        for i, item in enumerate(items or ()):
            path = f"alerts.rules[{i}]"
            rule = self.alert_rule(item, path, known, observe)
            if rule is not None and any(r.name == rule.name for r in rules):
                self.problem(f"{path}.name", f"is the same as an earlier rule's ({rule.name!r})")
            elif rule is not None:
                rules.append(rule)
        return AlertsConfig(interval=interval, channels=channels, rules=tuple(rules))

    def alert_channel(self, name: str, value: Any, path: str) -> ChannelConfig | None:
        if not isinstance(value, dict):
            self.problem(path, f"expected a mapping with a type, got {_kind(value)}")
            return None
        kind = value.get("type")
        if kind not in ALERT_CHANNEL_TYPES:
            self.problem(f"{path}.type", f"expected one of {', '.join(ALERT_CHANNEL_TYPES)}, got {kind!r}")
            return None
        if kind == "log":
            self.mapping(value, path, {"type"})
            return LogChannelConfig(name)
        if kind == "webhook":
            d = self.mapping(value, path, {"type", "url", "timeout"})
            url = self.get(d, "url", path, _str, "")
            if not url.startswith(("http://", "https://")):
                self.problem(f"{path}.url", "expected an http:// or https:// URL")
                return None
            return WebhookChannelConfig(name, url=url, timeout=self.send_timeout(d, path))
        d = self.mapping(
            value,
            path,
            {"type", "host", "port", "from", "to", "username", "password", "starttls", "timeout"},
        )
        sender = self.get(d, "from", path, _str, "")
        to = d.get("to")
        addresses = [to] if isinstance(to, str) else to if isinstance(to, list) else []
        recipients = tuple(self.substitute(str(a), f"{path}.to") for a in addresses if a)
        port = self.get(d, "port", path, _int, 25)
        if not sender:
            self.problem(f"{path}.from", "is required")
        if not recipients:
            self.problem(f"{path}.to", "expected an address or a list of addresses")
        if not 0 < port <= 65535:
            self.problem(f"{path}.port", "must be between 1 and 65535")
        if not sender or not recipients:
            return None
        return EmailChannelConfig(
            name,
            host=self.get(d, "host", path, _str, "localhost"),
            sender=sender,
            to=recipients,
            port=port,
            username=self.get(d, "username", path, _str, None) or None,
            password=self.get(d, "password", path, _str, None) or None,
            starttls=self.get(d, "starttls", path, _bool, False),
            timeout=self.send_timeout(d, path),
        )

    def send_timeout(self, d: dict[str, Any], path: str) -> float:
        timeout = self.get(d, "timeout", path, _duration, DEFAULT_ALERT_SEND_TIMEOUT)
        if timeout <= 0:
            self.problem(f"{path}.timeout", "must be positive")
            return DEFAULT_ALERT_SEND_TIMEOUT
        return timeout

    def alert_rule(
        self, value: Any, path: str, channels: tuple[str, ...], observe: ObserveConfig
    ) -> AlertRule | None:
        known = {"name", "metric", "window", "op", "threshold", "cooldown", "severity", "channels"}
        d = self.mapping(value, path, known | {"model", "key", "deployment", "min_requests"})
        before = len(self.problems)
        name = self.get(d, "name", path, _str, "")
        if not name:
            self.problem(f"{path}.name", "is required")
        metric = self.get(d, "metric", path, _str, "")
        if metric not in ALERT_METRICS:
            what = f"unknown metric {metric!r}" if metric else "is required"
            self.problem(f"{path}.metric", f"{what} (known: {', '.join(ALERT_METRICS)})")
        elif metric not in ALERT_LIVE_METRICS and not observe.request_log:
            self.problem(f"{path}.metric", f"{metric} is read from the request log, which is off")
        op = self.get(d, "op", path, _str, ">")
        if op not in ALERT_OPS:
            self.problem(
                f"{path}.op", f'unknown comparison {op!r} (known: {" ".join(ALERT_OPS)}; quote it: op: ">")'
            )
        if d.get("threshold") is None:
            self.problem(f"{path}.threshold", "is required")
        threshold = self.get(d, "threshold", path, _float, 0.0)
        if metric in ALERT_FRACTION_METRICS and not 0.0 <= threshold <= 1.0:
            self.problem(f"{path}.threshold", f"{metric} is a fraction: between 0 and 1")
        window = self.get(d, "window", path, _duration, DEFAULT_ALERT_WINDOW)
        if window <= 0:
            self.problem(f"{path}.window", "must be positive")
        cooldown = self.get(d, "cooldown", path, _duration, DEFAULT_ALERT_COOLDOWN)
        if cooldown < 0:
            self.problem(f"{path}.cooldown", "must not be negative")
        severity = self.get(d, "severity", path, _str, "warning")
        if severity not in ALERT_SEVERITIES:
            self.problem(
                f"{path}.severity", f"unknown severity {severity!r} (known: {', '.join(ALERT_SEVERITIES)})"
            )
        chosen = d.get("channels")
        names = [chosen] if isinstance(chosen, str) else chosen if isinstance(chosen, list) else None
        if chosen is not None and names is None:
            self.problem(f"{path}.channels", f"expected a list of channel names, got {_kind(chosen)}")
        for unknown in [str(n) for n in names or () if str(n) not in channels]:
            self.problem(f"{path}.channels", f"unknown channel {unknown!r} (known: {', '.join(channels)})")
        min_requests = self.get(d, "min_requests", path, _int, 1)
        if min_requests < 0:
            self.problem(f"{path}.min_requests", "must not be negative")
        if len(self.problems) > before:
            return None
        return AlertRule(
            name=name,
            metric=metric,
            threshold=threshold,
            op=op,
            window=window,
            cooldown=cooldown,
            severity=severity,
            channels=tuple(str(n) for n in names) if names else channels,
            model=self.get(d, "model", path, _str, None),
            key=self.get(d, "key", path, _str, None),
            deployment=self.get(d, "deployment", path, _str, None),
            min_requests=min_requests,
        )

    def state(self, value: Any, cache: CacheConfig, shared_redis: Any) -> StateConfig:
        """The state file lives beside the cache (the same data folder) unless its path is given."""
        d = self.mapping(value, "state", {"backend", "path", "redis_url", "timeout", "on_redis_error", "ttl"})
        default = StateConfig()
        backend = self.get(d, "backend", "state", _str, "") or None
        if backend is not None and backend not in STATE_BACKENDS:
            self.problem("state.backend", f"expected one of {', '.join(STATE_BACKENDS)}, got {backend!r}")
            backend = None
        redis_url = self.get(d, "redis_url", "state", _str, None) or None
        elsewhere = cache.redis_url or (isinstance(shared_redis, dict) and shared_redis.get("url"))
        if backend == "redis" and not redis_url and not elsewhere:
            self.problem("state.backend", "is redis, but no Redis URL is set (state.redis_url or redis.url)")
        on_error = self.get(d, "on_redis_error", "state", _str, default.on_redis_error)
        if on_error not in STATE_ON_REDIS_ERROR:
            self.problem(
                "state.on_redis_error", f"expected one of {', '.join(STATE_ON_REDIS_ERROR)}, got {on_error!r}"
            )
            on_error = default.on_redis_error
        timeout = self.get(d, "timeout", "state", _float, default.timeout)
        if not timeout > 0:
            self.problem("state.timeout", "must be positive")
            timeout = default.timeout
        ttl = self.get(d, "ttl", "state", _float, 0.0)
        if ttl < 0:
            self.problem("state.ttl", "must be a positive number of seconds")
        return StateConfig(
            backend=backend,
            path=self.get(d, "path", "state", _str, str(Path(cache.sqlite_path).parent / "state.db")),
            redis_url=redis_url,
            timeout=timeout,
            on_redis_error=on_error,
            ttl=ttl if ttl > 0 else None,
        )

    def policy(self, d: dict[str, Any], path: str) -> GroupPolicy:
        strategy = self.get(d, "strategy", path, _str, "failover")
        if strategy not in STRATEGIES:
            self.problem(
                f"{path}.strategy", f"unknown strategy {strategy!r} (known: {', '.join(sorted(STRATEGIES))})"
            )
            strategy = "failover"
        timeout = self.get(d, "timeout", path, _float, -1.0)
        r = self.mapping(
            d.get("retries"), f"{path}.retries", {"max_attempts", "base_delay", "max_delay", "budget"}
        )
        rp = f"{path}.retries"
        attempts = self.get(r, "max_attempts", rp, _int, _RETRY_DEFAULTS.max_attempts)
        if attempts < 1:
            self.problem(f"{rp}.max_attempts", "must be at least 1")
            attempts = 1
        retry = RetryPolicy(
            max_attempts=attempts,
            base_delay=self.get(r, "base_delay", rp, _float, _RETRY_DEFAULTS.base_delay),
            max_delay=self.get(r, "max_delay", rp, _float, _RETRY_DEFAULTS.max_delay),
        )
        b = self.mapping(
            d.get("breaker"),
            f"{path}.breaker",
            {"failures", "error_rate", "min_requests", "window", "cooldown"},
        )
        bp, bd = f"{path}.breaker", BreakerConfig()
        breaker = BreakerConfig(
            failures=self.get(b, "failures", bp, _int, bd.failures),
            error_rate=self.get(b, "error_rate", bp, _float, bd.error_rate),
            min_requests=self.get(b, "min_requests", bp, _int, bd.min_requests),
            window=self.get(b, "window", bp, _float, bd.window),
            cooldown=self.get(b, "cooldown", bp, _float, bd.cooldown),
        )
        h = self.mapping(d.get("hedge"), f"{path}.hedge", {"after"})
        hedge_after, hedge_p95 = None, False
        if h.get("after") is not None:
            if h["after"] == "p95":
                hedge_p95 = True
            else:
                hedge_after = self.get(h, "after", f"{path}.hedge", _float, 0.0)
                if hedge_after <= 0:
                    self.problem(f"{path}.hedge.after", "must be a positive number of seconds or 'p95'")
                    hedge_after = None
        return GroupPolicy(
            strategy=strategy,
            timeout=None if timeout <= 0 else timeout,
            retry=retry,
            retry_budget=self.get(r, "budget", rp, _float, 0.2),
            breaker=breaker,
            hedge_after=hedge_after,
            hedge_p95=hedge_p95,
            fallback_reply=self.get(d, "fallback_reply", path, _str, None),
            semantic=self.semantic(d.get("semantic"), f"{path}.semantic"),
        )

    def semantic(self, value: Any, path: str) -> SemanticConfig | None:
        known = {"enabled", "threshold", "top_k", "adaptive", "embedder", "guards"}
        d = self.mapping(value, path, known)
        if not self.get(d, "enabled", path, _bool, False):
            return None
        threshold = self.get(d, "threshold", path, _float, DEFAULT_SEMANTIC_THRESHOLD)
        if not 0 < threshold <= 1:
            self.problem(f"{path}.threshold", "must be a cosine similarity in (0, 1]")
        top_k = self.get(d, "top_k", path, _int, 4)
        if not 1 <= top_k <= 100:
            self.problem(f"{path}.top_k", "must be between 1 and 100")
        gp, base = f"{path}.guards", GuardConfig()
        g = self.mapping(d.get("guards"), gp, {*GUARD_NAMES, "short_words", "short_threshold"})
        guards = GuardConfig(
            **{name: self.get(g, name, gp, _bool, getattr(base, name)) for name in GUARD_NAMES},
            short_words=self.get(g, "short_words", gp, _int, base.short_words),
            short_threshold=self.get(g, "short_threshold", gp, _float, base.short_threshold),
        )
        embedder = self.get(d, "embedder", path, _str, "local")
        from .semantic.embedder import EXTRA_HINT, missing_packages

        missing = missing_packages(local=embedder == "local")
        if missing:
            self.problem(f"{path}.enabled", f"the semantic cache needs {', '.join(missing)}: {EXTRA_HINT}")
        return SemanticConfig(
            threshold=threshold,
            top_k=top_k,
            adaptive=self.get(d, "adaptive", path, _bool, True),
            embedder=embedder,
            guards=guards,
        )

    def limits(self, d: dict[str, Any], path: str) -> LimitSpec | None:
        if d.get("limits") is None:
            return None
        lp = f"{path}.limits"
        m = self.mapping(d["limits"], lp, {"rpm", "tpm", "max_concurrent", "max_wait", "adaptive"})
        values = {k: self.get(m, k, lp, _int, 0) or None for k in ("rpm", "tpm", "max_concurrent")}
        for k, v in values.items():
            if v is not None and v < 1:
                self.problem(f"{lp}.{k}", "must be a positive integer")
                values[k] = None
        return LimitSpec(
            rpm=values["rpm"],
            tpm=values["tpm"],
            max_concurrent=values["max_concurrent"],
            max_wait=max(0.0, self.get(m, "max_wait", lp, _float, 30.0)),
            adaptive=self.get(m, "adaptive", lp, _bool, False),
        )

    def deployment(self, value: Any, path: str, index: int) -> Deployment | None:
        from .errors import InvalidRequest
        from .providers import get_provider_class

        known = {
            "provider",
            "model",
            "name",
            "base_url",
            "api_key",
            "headers",
            "options",
            "timeouts",
            "price",
            "weight",
            "priority",
            "limits",
        }
        d = self.mapping(value, path, known)
        provider = self.get(d, "provider", path, _str, "")
        model = self.get(d, "model", path, _str, "")
        if not provider:
            self.problem(f"{path}.provider", "is required")
            return None
        try:
            provider_class = get_provider_class(provider)
        except InvalidRequest as exc:
            self.problem(f"{path}.provider", exc.message)
            return None
        if not model:
            self.problem(f"{path}.model", "is required")
            return None
        t = self.mapping(d.get("timeouts"), f"{path}.timeouts", {"connect", "first_byte", "total"})
        timeouts = Timeouts(
            connect=self.get(t, "connect", f"{path}.timeouts", _float, DEFAULT_CONNECT_TIMEOUT),
            first_byte=self.get(t, "first_byte", f"{path}.timeouts", _float, DEFAULT_FIRST_BYTE_TIMEOUT),
            total=self.get(t, "total", f"{path}.timeouts", _float, DEFAULT_TOTAL_TIMEOUT),
        )
        headers = d.get("headers") or {}
        if not isinstance(headers, dict):
            self.problem(f"{path}.headers", "expected a mapping of header names to values")
            headers = {}
        options = d.get("options") or {}
        if not isinstance(options, dict):
            self.problem(f"{path}.options", "expected a mapping")
            options = {}
        try:
            provider_class.check_options(options)
        except ValueError as exc:
            self.problem(f"{path}.options", str(exc))
        price = None
        if d.get("price") is not None:
            p = self.mapping(d.get("price"), f"{path}.price", {"input", "output", "cached_input"})
            if "input" not in p or "output" not in p:
                self.problem(f"{path}.price", "needs input and output (USD per 1M tokens)")
            cached = self.get(p, "cached_input", f"{path}.price", _float, -1.0)
            price = Price(
                input=self.get(p, "input", f"{path}.price", _float, 0.0),
                output=self.get(p, "output", f"{path}.price", _float, 0.0),
                cached_input=None if cached < 0 else cached,
            )
        api_key = self.get(d, "api_key", path, _str, None) or None
        if api_key is None and provider in PROVIDER_ENV_KEYS:
            api_key = next((self.env[v] for v in PROVIDER_ENV_KEYS[provider] if self.env.get(v)), None)
        return Deployment(
            provider=provider,
            model=model,
            name=self.get(d, "name", path, _str, "") or f"{provider}/{model}",
            base_url=self.get(d, "base_url", path, _str, None) or None,
            api_key=api_key,
            timeouts=timeouts,
            headers={str(k): self.substitute(str(v), f"{path}.headers.{k}") for k, v in headers.items()},
            options=options,
            price=price,
            weight=self.get(d, "weight", path, _float, 1.0),
            priority=self.get(d, "priority", path, _int, 0),
            limits=self.limits(d, path),
        )


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", type(None): "nothing"}.get(
        type(value), type(value).__name__
    )


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else (str(value) if isinstance(value, int | float) else None)


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        try:
            return int(value.replace("_", ""))
        except ValueError:
            return None
    return None


def _float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?")
_DURATION_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


def _duration(value: Any) -> float | None:
    """Seconds, from a number or a string such as ``"15s"``, ``"5m"``, ``"1h"``, ``"500ms"``."""
    if isinstance(value, str):
        match = _DURATION.fullmatch(value.strip())
        if match is None:
            return None
        return float(match.group(1)) * _DURATION_SECONDS[match.group(2) or "s"]
    return _float(value)


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
        return value.lower() in ("true", "yes", "1", "on")
    return None
