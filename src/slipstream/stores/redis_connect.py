"""One way to reach Redis: ``connect(url)`` builds the client every Redis component uses (cache, limits, state).

The URL names the deployment shape, so the same config key works for one server, Sentinel and Cluster::

    redis://[[user]:password@]host[:port][/db][?option=value...]            one server
    rediss://...                                                              one server over TLS
    unix:///path/to/redis.sock[?db=N]                                         one server on a local socket
    redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]  the master Sentinel names
    redis+cluster://[[user]:password@]host:port[,host:port...]                Redis Cluster (db is always 0)

``rediss+sentinel://`` and ``rediss+cluster://`` add TLS to the data connections. Query options (checked:
an unknown one is a ``ValueError`` naming it, not a surprise at the first command): ``ssl_cert_reqs``
(``none``/``optional``/``required``), ``ssl_ca_certs``, ``ssl_certfile``, ``ssl_keyfile``,
``ssl_check_hostname``, ``socket_timeout``, ``socket_connect_timeout``, ``max_connections``, and for Sentinel
``sentinel_username``/``sentinel_password`` (when the sentinels themselves require auth; the URL's password
is the master's). Percent-encode a password that holds ``@``, ``:`` or ``,``.

Every client is built for the request path (see ``stores/redis.py``): no retries inside redis-py (the caller's
timeout is the budget), socket timeouts so a command abandoned by its caller cannot hold a connection for
ever, and a bounded pool. For one server and Sentinel the pool *blocks* (up to ``pool_timeout``) for a free
connection instead of opening one per concurrent request; redis-py's Cluster client keeps a pool per node and
fails fast with ``MaxConnectionsError`` (a ``RedisError``) when one is exhausted, so callers see it as a failed
command. Sentinel discovery is redone by redis-py whenever a connection to the master has to be opened, so a
failover is followed without a restart. Closing the client (``aclose()``) closes every connection it opened,
the sentinels' included.

``parse_redis_url`` is the pure half (no I/O, unit-tested on its own); ``redact_url`` hides the password for
logs and error messages.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias
from urllib.parse import parse_qsl, unquote, urlsplit

import redis.asyncio as aioredis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.retry import Retry
from redis.asyncio.sentinel import Sentinel, SentinelConnectionPool
from redis.backoff import NoBackoff

__all__ = [
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_SOCKET_TIMEOUT",
    "RedisClient",
    "RedisTarget",
    "connect",
    "parse_redis_url",
    "redact_url",
]

# A client of either shape: the commands slipstream uses (GET/SET/EVALSHA/SCAN/pipelines) exist on both.
RedisClient: TypeAlias = aioredis.Redis | RedisCluster

Kind = Literal["server", "sentinel", "cluster"]

DEFAULT_MAX_CONNECTIONS = 64
# How long a detached command may keep its connection: the socket read/write timeout of our own clients.
DEFAULT_SOCKET_TIMEOUT = 1.0
DEFAULT_PORT = 6379
DEFAULT_SENTINEL_PORT = 26379

_SCHEMES: dict[str, tuple[Kind, bool]] = {
    "redis": ("server", False),
    "rediss": ("server", True),
    "unix": ("server", False),
    "redis+sentinel": ("sentinel", False),
    "rediss+sentinel": ("sentinel", True),
    "redis+cluster": ("cluster", False),
    "rediss+cluster": ("cluster", True),
}


def _bool(text: str) -> bool:
    lowered = text.lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected a boolean, got {text!r}")


def _cert_reqs(text: str) -> str:
    if text.lower() not in ("none", "optional", "required"):
        raise ValueError(f"expected none, optional or required, got {text!r}")
    return text.lower()


def _positive_float(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise ValueError(f"must be positive, got {text!r}")
    return value


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise ValueError(f"must be at least 1, got {text!r}")
    return value


# Query options we accept, and how each is read. Everything else is refused by name.
_OPTIONS: dict[str, Callable[[str], object]] = {
    "ssl_cert_reqs": _cert_reqs,
    "ssl_ca_certs": str,
    "ssl_certfile": str,
    "ssl_keyfile": str,
    "ssl_check_hostname": _bool,
    "socket_timeout": _positive_float,
    "socket_connect_timeout": _positive_float,
    "max_connections": _positive_int,
    "sentinel_username": str,
    "sentinel_password": str,
    "db": int,  # one server only; for unix:// the only way, as its path is the socket
}
_SSL_OPTIONS = frozenset(name for name in _OPTIONS if name.startswith("ssl_"))
_SENTINEL_OPTIONS = frozenset({"sentinel_username", "sentinel_password"})


@dataclass(frozen=True, slots=True)
class RedisTarget:
    """What a Redis URL says: the shape, where, as whom, and the options. ``repr`` never shows the password."""

    kind: Kind
    tls: bool
    hosts: tuple[tuple[str, int], ...] = ()  # empty for a unix socket
    path: str | None = None  # the unix socket
    db: int = 0
    service: str | None = None  # the Sentinel service (master group) name
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)  # may hold sentinel_password


def parse_redis_url(url: str) -> RedisTarget:
    """Read a Redis URL (see the module docstring); ``ValueError`` says what is wrong, without the password."""
    scheme, sep, rest = url.partition("://")
    scheme = scheme.lower()
    if not sep or scheme not in _SCHEMES:
        known = ", ".join(f"{s}://" for s in _SCHEMES)
        raise ValueError(f"unsupported Redis URL {redact_url(url)!r}: expected one of {known}")
    kind, tls = _SCHEMES[scheme]
    # Credentials first, up to the last "@": a password holding "/", "?" or "#" must never be read as the path,
    # the query or a fragment (nor show up in an error about them).
    userinfo, _, rest = rest.rpartition("@")
    parts = urlsplit("//" + rest)  # the netloc may list several hosts, so ports are read by hand below
    if parts.fragment:
        raise ValueError(f"Redis URL {redact_url(url)!r} has a fragment (#...); percent-encode '#' as %23")
    options = _options(parts.query, url)
    if not tls and options.keys() & _SSL_OPTIONS:
        raise ValueError(f"Redis URL {redact_url(url)!r} has ssl_* options but no TLS (use rediss://)")
    if kind != "sentinel" and options.keys() & _SENTINEL_OPTIONS:
        raise ValueError(f"Redis URL {redact_url(url)!r}: sentinel_* options need redis+sentinel://")
    hostlist = parts.netloc
    username, password = _userinfo(userinfo)
    segments = [unquote(s) for s in parts.path.split("/") if s]
    if scheme == "unix":
        if hostlist:
            raise ValueError(f"unix:// Redis URL {redact_url(url)!r} takes no host: unix:///path/to/socket")
        if not parts.path:
            raise ValueError(f"unix:// Redis URL {redact_url(url)!r} names no socket path")
        db = options.pop("db", 0)
        path = unquote(parts.path)
        return RedisTarget(kind, tls, path=path, db=db, username=username, password=password, options=options)
    query_db = options.pop("db", None)
    if query_db is not None and (kind != "server" or parts.path.strip("/")):
        raise ValueError(f"Redis URL {redact_url(url)!r}: give the database once, as a path segment (/N)")
    default_port = DEFAULT_SENTINEL_PORT if kind == "sentinel" else DEFAULT_PORT
    hosts = tuple(_host_port(item, default_port, url) for item in hostlist.split(","))
    if kind == "server" and len(hosts) != 1:
        raise ValueError(
            f"Redis URL {redact_url(url)!r} lists several hosts: "
            "use redis+sentinel:// or redis+cluster:// for more than one"
        )
    service: str | None = None
    if kind == "sentinel":
        if not segments:
            raise ValueError(f"Sentinel URL {redact_url(url)!r} names no service: .../service_name[/db]")
        service, segments = segments[0], segments[1:]
    if len(segments) > 1:
        raise ValueError(f"Redis URL {redact_url(url)!r} has too many path segments")
    db = _db(segments[0], url) if segments else (query_db or 0)
    if kind == "cluster" and db != 0:
        raise ValueError(f"Redis Cluster URL {redact_url(url)!r}: a cluster has only database 0")
    return RedisTarget(
        kind, tls, hosts=hosts, db=db, service=service, username=username, password=password, options=options
    )


def redact_url(url: str) -> str:
    """The URL with its password and any password-like option replaced by ``***``, for logs and errors.

    The credentials are cut out before anything parses the URL: a password may hold ``/``, ``?`` or ``#``,
    which a URL parser would take for the path, the query or the fragment and so leave in plain sight.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    userinfo, at, after = rest.rpartition("@")
    if at:
        user, colon, _ = userinfo.partition(":")
        rest = (f"{user}:***" if colon else userinfo) + "@" + after
    base, question, query = rest.partition("?")
    if question:
        query = "&".join(
            f"{name}=***" if "password" in name.lower() else f"{name}={value}"
            for name, value in parse_qsl(query, keep_blank_values=True)
        )
        base = f"{base}?{query}"
    return f"{scheme}://{base}"


def connect(
    url: str,
    *,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
    socket_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    pool_timeout: float = DEFAULT_SOCKET_TIMEOUT,
    **options: Any,
) -> RedisClient:
    """A client for ``url``, ready for the request path (see the module docstring). Opens no connection yet.

    ``options`` are passed to redis-py's connections (e.g. ``decode_responses``); options in the URL's query
    win over the keyword arguments, so an operator can tune a deployment from its config alone.
    """
    target = parse_redis_url(url)
    common: dict[str, Any] = {
        "socket_timeout": socket_timeout,
        "socket_connect_timeout": socket_timeout,
        "health_check_interval": 0,
        **options,
    }
    url_options = dict(target.options)
    max_connections = url_options.pop("max_connections", max_connections)
    sentinel_auth = {
        key: url_options.pop(f"sentinel_{key}")
        for key in ("username", "password")
        if f"sentinel_{key}" in url_options
    }
    common.update(url_options)
    if target.username is not None:
        common["username"] = target.username
    if target.password is not None:
        common["password"] = target.password
    if target.kind == "cluster":
        return _cluster(target, common, max_connections)
    if target.kind == "sentinel":
        return _sentinel(target, common, sentinel_auth, max_connections, pool_timeout)
    return _server(target, common, max_connections, pool_timeout)


# ----------------------------------------------------------------------------------------------- builders
def _server(
    target: RedisTarget, common: dict[str, Any], max_connections: int, pool_timeout: float
) -> aioredis.Redis:
    kwargs: dict[str, Any] = {**common, "db": target.db, "retry": Retry(NoBackoff(), 0)}
    if target.path is not None:
        kwargs.pop("socket_connect_timeout", None)  # a unix socket connects at once or not at all
        kwargs.update(path=target.path, connection_class=aioredis.UnixDomainSocketConnection)
    else:
        host, port = target.hosts[0]
        kwargs.update(host=host, port=port)
        if target.tls:
            kwargs["connection_class"] = aioredis.SSLConnection
    pool = aioredis.BlockingConnectionPool(max_connections=max_connections, timeout=pool_timeout, **kwargs)
    return aioredis.Redis.from_pool(pool)  # the client owns the pool: aclose() closes its connections


def _cluster(target: RedisTarget, common: dict[str, Any], max_connections: int) -> RedisCluster:
    return RedisCluster(
        startup_nodes=[ClusterNode(host, port) for host, port in target.hosts],
        ssl=target.tls,
        max_connections=max_connections,  # per node
        # The caller's timeout is the budget: no retry loop inside redis-py. (MOVED/ASK redirections are
        # followed regardless: they are not retries.)
        retry=Retry(NoBackoff(), 0),
        **common,
    )


def _sentinel(
    target: RedisTarget,
    common: dict[str, Any],
    sentinel_auth: dict[str, Any],
    max_connections: int,
    pool_timeout: float,
) -> aioredis.Redis:
    assert target.service is not None  # parse_redis_url requires it
    sentinel_kwargs = {
        "socket_timeout": common["socket_timeout"],
        "socket_connect_timeout": common["socket_connect_timeout"],
        "retry": Retry(NoBackoff(), 0),
        **sentinel_auth,
    }
    sentinel = Sentinel(list(target.hosts), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call, unused-ignore]
    client: aioredis.Redis = sentinel.master_for(
        target.service,
        connection_pool_class=_BlockingSentinelPool,
        ssl=target.tls,
        db=target.db,
        max_connections=max_connections,
        timeout=pool_timeout,
        retry=Retry(NoBackoff(), 0),
        **common,
    )
    return client


class _BlockingSentinelPool(SentinelConnectionPool, aioredis.BlockingConnectionPool):
    """redis-py's Sentinel pool, made to wait for a free connection like our other pools (its own base raises
    at once), and to close the sentinels' connections along with its own."""

    async def aclose(self) -> None:
        await super().aclose()
        await self.sentinel_manager.aclose()


# ------------------------------------------------------------------------------------------------ parsing
def _options(query: str, url: str) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        reader = _OPTIONS.get(name)
        if reader is None:
            known = ", ".join(sorted(_OPTIONS))
            raise ValueError(f"Redis URL {redact_url(url)!r}: unknown option {name!r} (known: {known})")
        try:
            options[name] = reader(value)
        except ValueError as exc:
            shown = "***" if name == "sentinel_password" else repr(value)
            raise ValueError(f"Redis URL {redact_url(url)!r}: option {name}={shown}: {exc}") from None
    if options.get("ssl_cert_reqs") == "none":
        options.setdefault("ssl_check_hostname", False)  # there is no certificate to check a name against
    return options


def _userinfo(userinfo: str) -> tuple[str | None, str | None]:
    if not userinfo:
        return None, None
    user, colon, password = userinfo.partition(":")
    return (unquote(user) or None), (unquote(password) if colon else None)


def _host_port(item: str, default_port: int, url: str) -> tuple[str, int]:
    item = item.strip()
    if item.startswith("["):  # [IPv6]:port
        host, bracket, tail = item[1:].partition("]")
        if not bracket or (tail and not tail.startswith(":")):
            raise ValueError(f"Redis URL {redact_url(url)!r}: bad host {item!r}")
        port_text = tail[1:]
    else:
        host, _, port_text = item.partition(":")
    if not host:
        raise ValueError(f"Redis URL {redact_url(url)!r} names no host")
    if not port_text:
        return unquote(host), default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"Redis URL {redact_url(url)!r}: bad port {port_text!r}")
    return unquote(host), int(port_text)


def _db(segment: str, url: str) -> int:
    if not segment.isdigit():
        raise ValueError(f"Redis URL {redact_url(url)!r}: the database must be a number, got {segment!r}")
    return int(segment)
