"""The ``slipstream`` command: serve, sim, cache, config."""

from __future__ import annotations

import asyncio
import ipaddress
import os
import sys
from typing import Any

import click

from .batch.cli import batch as batch_command
from .config import Config, ConfigError, load_config
from .loadtest.command import loadtest as loadtest_command
from .observe.report_cli import report as report_command
from .semantic.cli import semantic as semantic_command

__all__ = ["main"]

_LOOPBACK_NAMES = {"localhost", "127.0.0.1", "::1"}


def _load(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(2)


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="slipstream")
def main() -> None:
    """Slipstream: a fast LLM request pipeline — exact cache, providers, streaming — as a gateway and an SDK."""


@main.command()
@click.option(
    "-c",
    "--config",
    "config_path",
    metavar="FILE",
    help="YAML config (default: $SLIPSTREAM_CONFIG or built-in defaults).",
)
@click.option("--host", default=None, help="Address to bind (default from config: 127.0.0.1).")
@click.option("--port", type=int, default=None, help="Port to listen on (default from config: 8080).")
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=1,
    show_default=True,
    help="Processes serving the same port. They share the SQLite cache and request log, and with redis.url "
    "also the limits, coalescing and breaker state.",
)
def serve(config_path: str | None, host: str | None, port: int | None, log_level: str, workers: int) -> None:
    """Run the OpenAI-compatible gateway.

    Clients point their OpenAI base URL at http://HOST:PORT/v1. With no API keys in the config the gateway
    serves loopback only.
    """
    import uvicorn

    from .gateway.app import GatewayApp
    from .gateway.gctune import tune_gc
    from .pipeline import Pipeline

    config = _load(config_path)
    host = host or config.server.host
    port = config.server.port if port is None else port
    if not config.keys and not _is_loopback(host):
        raise click.UsageError(
            f"refusing to listen on {host}: no API keys are configured, so the gateway binds to loopback only. "
            "Add keys to the config (keys: - key: ...) to serve other hosts."
        )
    settings: dict[str, Any] = {
        "host": host,
        "port": port,
        "loop": "uvloop" if _has("uvloop") else "asyncio",
        "http": "httptools" if _has("httptools") else "h11",
        "lifespan": "on",
        "access_log": False,
        "proxy_headers": False,
        "server_header": False,
        "date_header": False,
        "log_level": log_level,
    }
    if workers > 1:
        _echo_banner(config, host, port)
        click.echo(
            f"workers: {workers}"
            + ("" if config.redis.url else " (limits and coalescing per worker: no redis.url)")
        )
        sys.stdout.flush()
        # Each worker process builds its own pipeline from the same config file (the factory reads it).
        if config_path is not None:
            os.environ["SLIPSTREAM_CONFIG"] = os.path.abspath(config_path)
        uvicorn.run("slipstream.gateway.app:create_app", factory=True, workers=workers, **settings)
        return
    app = GatewayApp(Pipeline(config))
    server = uvicorn.Server(uvicorn.Config(app, **settings))
    _echo_banner(config, host, port)
    sys.stdout.flush()
    tune_gc()
    server.run()


def _echo_banner(config: Config, host: str, port: int) -> None:
    models = ", ".join(sorted(config.model_groups)) or "(none)"
    extra = ", ".join(f"{p}/<model>" for p in sorted(config.passthrough))
    click.echo(f"slipstream gateway on http://{_url_host(host)}:{port}/v1  (config: {config.source})")
    click.echo(f"models: {models}" + (f"  + {extra}" if extra else ""))
    if config.cache.enabled:
        where = config.cache.sqlite_path if config.cache.sqlite_enabled else "memory only"
        click.echo(f"cache: {where}")


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _has(module: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(module) is not None


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8001, show_default=True)
@click.option("--preset", default=None, help="Latency preset: instant, realistic, heavy_tail.")
@click.option(
    "-o",
    "--option",
    "options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any sim option, e.g. -o rate_429=0.1 -o rpm_limit=600.",
)
def sim(host: str, port: int, preset: str | None, options: tuple[str, ...]) -> None:
    """Serve the simulated LLM as an OpenAI-compatible HTTP server (offline upstream for tests and benchmarks)."""
    import yaml

    from .sim.options import SimOptions
    from .sim.server import serve as serve_sim

    raw: dict[str, Any] = {}
    if preset:
        raw["preset"] = preset
    for item in options:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.BadParameter(f"expected KEY=VALUE, got {item!r}", param_hint="--option")
        raw[key.strip()] = yaml.safe_load(value)
    try:
        sim_options = SimOptions.from_dict(raw)
    except (ValueError, TypeError) as exc:
        raise click.BadParameter(str(exc), param_hint="--option") from None
    serve_sim(host=host, port=port, options=sim_options)


@main.group()
def cache() -> None:
    """Inspect or clear the response cache: the tier behind memory the config names (Redis when the cache
    has a Redis URL, otherwise SQLite)."""


# The CLI walks every key (SCAN) and may wait on a busy server: budgets far above the request path's.
_ADMIN_TIMEOUT = 60.0
_CONNECT_TIMEOUT = 5.0


def _persistent_store(config: Config) -> tuple[Any, str]:
    """The store to inspect and a line saying where it is."""
    from .pipeline import shared_cache_url

    url = shared_cache_url(config)
    if url:
        from .stores.redis import RedisStore
        from .stores.redis_connect import redact_url

        store = RedisStore(
            url,
            get_timeout=_CONNECT_TIMEOUT,
            set_timeout=_CONNECT_TIMEOUT,
            admin_timeout=_ADMIN_TIMEOUT,
            stats_ttl=0.0,
        )
        return store, f"redis:     {redact_url(url)}"
    from pathlib import Path

    from .stores.sqlite import SqliteStore

    if not config.cache.sqlite_enabled:
        raise click.UsageError("the config keeps no persistent cache (cache.sqlite.enabled is false)")
    path = config.cache.sqlite_path
    return SqliteStore(Path(path), max_bytes=config.cache.sqlite_max_bytes), f"path:      {path}"


async def _reachable(store: Any, where: str) -> None:
    """A Redis that cannot be reached is an error here (the request path treats it as a miss instead)."""
    client = getattr(store, "client", None)
    if client is None:
        return
    try:
        await asyncio.wait_for(client.ping(), _CONNECT_TIMEOUT)
    except Exception as exc:
        await store.aclose()
        raise click.ClickException(f"cannot reach Redis ({where.split(maxsplit=1)[1]}): {exc}") from None


@cache.command("stats")
@click.option("-c", "--config", "config_path", metavar="FILE")
def cache_stats(config_path: str | None) -> None:
    """Entries, bytes and evictions of the persistent or shared cache."""
    config = _load(config_path)

    async def run() -> tuple[Any, str]:
        store, where = _persistent_store(config)
        await _reachable(store, where)
        try:
            return await store.stats(), where
        finally:
            await store.aclose()

    stats, where = asyncio.run(run())
    click.echo(where)
    click.echo(f"entries:   {stats.entries}")
    click.echo(f"bytes:     {stats.bytes}")
    click.echo(f"evictions: {stats.evictions}")


@cache.command("clear")
@click.option("-c", "--config", "config_path", metavar="FILE")
@click.option("--namespace", default=None, help="Clear only this namespace (tenant).")
def cache_clear(config_path: str | None, namespace: str | None) -> None:
    """Delete cached entries (all, or one namespace's)."""
    config = _load(config_path)

    async def run() -> int:
        store, where = _persistent_store(config)
        await _reachable(store, where)
        try:
            count: int = await store.clear(f"{namespace}:" if namespace else "")
            await store.flush()
            return count
        finally:
            await store.aclose()

    count = asyncio.run(run())
    click.echo(f"cleared {count} entries" + (f" from namespace {namespace}" if namespace else ""))


@main.group("config")
def config_group() -> None:
    """Work with config files."""


@config_group.command("check")
@click.argument("file", type=click.Path(dir_okay=False))
def config_check(file: str) -> None:
    """Validate FILE; print each problem with its line and field."""
    try:
        config = load_config(file)
    except ConfigError as exc:
        for problem in exc.problems:
            click.echo(f"error: {problem}", err=True)
        sys.exit(1)
    groups = ", ".join(f"{g.name} ({len(g.deployments)})" for g in config.model_groups.values())
    click.echo(f"ok: {file}")
    click.echo(f"model groups: {groups}")
    click.echo(f"keys: {len(config.keys)}; cache: {'on' if config.cache.enabled else 'off'}")


main.add_command(batch_command)
main.add_command(report_command)
main.add_command(loadtest_command)
main.add_command(semantic_command)


if __name__ == "__main__":  # pragma: no cover
    main()
