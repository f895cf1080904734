"""Configuration: one YAML file, ``${ENV}`` substitution, ``SLIPSTREAM__A__B`` overrides, errors with line numbers.

The schema (every key optional; ``examples/slipstream.yaml`` shows all of them)::

    server:       host, port, max_body_bytes, admin_key
    keys:         - {key, name, namespace, limits}    virtual API keys; none → loopback only
    cache:        enabled, ttl, normalize_whitespace,
                  memory: {max_entries, max_bytes}, sqlite: {enabled, path, max_bytes},
                  redis: {url, timeout}                 shared tier; replaces SQLite behind the memory tier
    coalescing:   enabled                              identical requests in flight share one upstream call
    observe:      metrics, request_log: {enabled, path, retention_days, max_bytes, store_text}
    model_groups: NAME: {strategy, timeout, retries: {max_attempts, base_delay, max_delay, budget},
                         breaker: {failures, error_rate, min_requests, window, cooldown},
                         hedge: {after}, fallback_reply,
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

__all__ = [
    "BreakerConfig",
    "CacheConfig",
    "Config",
    "ConfigError",
    "GroupPolicy",
    "KeyConfig",
    "ModelGroup",
    "ObserveConfig",
    "ServerConfig",
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
class ObserveConfig:
    metrics: bool = True
    request_log: bool = True
    request_log_path: str = f"{DEFAULT_DATA_DIR}/requests.db"
    retention_days: float = 30.0
    request_log_max_bytes: int = 512 * 1024 * 1024
    store_text: bool = False  # prompt and reply text are kept only when this is on


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
    observe: ObserveConfig = ObserveConfig()
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
    return Config(
        cache=cache, observe=observe, model_groups=groups, passthrough=passthrough, source="<defaults>"
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
        top = self.mapping(data, "", {"server", "keys", "cache", "coalescing", "observe", "model_groups"})
        server = self.server(top.get("server"))
        keys = self.keys(top.get("keys"))
        cache = self.cache(top.get("cache"))
        coalescing = self.mapping(top.get("coalescing"), "coalescing", {"enabled"})
        groups = self.groups(top.get("model_groups"))
        if not groups:
            self.problem("model_groups", "at least one model group is required")
        return Config(
            server=server,
            keys=keys,
            cache=cache,
            coalescing=self.get(coalescing, "enabled", "coalescing", _bool, True),
            observe=self.observe(top.get("observe"), Path(cache.sqlite_path).parent / "requests.db"),
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
                {"deployments", "strategy", "timeout", "retries", "breaker", "hedge", "fallback_reply"},
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
        return groups

    def observe(self, value: Any, default_log_path: Path) -> ObserveConfig:
        """The request log lives beside the cache (the same data folder) unless its path is given."""
        d = self.mapping(value, "observe", {"metrics", "request_log"})
        log = self.mapping(
            d.get("request_log"),
            "observe.request_log",
            {"enabled", "path", "retention_days", "max_bytes", "store_text"},
        )
        lp, default = "observe.request_log", ObserveConfig()
        return ObserveConfig(
            metrics=self.get(d, "metrics", "observe", _bool, True),
            request_log=self.get(log, "enabled", lp, _bool, True),
            request_log_path=self.get(log, "path", lp, _str, str(default_log_path)),
            retention_days=self.get(log, "retention_days", lp, _float, default.retention_days),
            request_log_max_bytes=self.get(log, "max_bytes", lp, _int, default.request_log_max_bytes),
            store_text=self.get(log, "store_text", lp, _bool, False),
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


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false", "yes", "no", "1", "0", "on", "off"):
        return value.lower() in ("true", "yes", "1", "on")
    return None
