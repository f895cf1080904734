"""The `slipstream` command's subcommands that do not start servers (those run in tests/e2e)."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from slipstream.cli import main
from tests.redis_server import redis_server, redis_url  # noqa: F401 - fixtures for the shared-tier test


def test_help_lists_the_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("serve", "sim", "cache", "config"):
        assert command in result.output


def test_config_check_ok_and_problems(tmp_path: Path):
    good = tmp_path / "good.yaml"
    good.write_text("model_groups:\n  s:\n    deployments: [{provider: sim, model: s}]\n")
    result = CliRunner().invoke(main, ["config", "check", str(good)])
    assert result.exit_code == 0 and "ok:" in result.output and "s (1)" in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("server:\n  port: high\nmodel_groups:\n  s:\n    deployments: [{provider: sim}]\n")
    result = CliRunner().invoke(main, ["config", "check", str(bad)])
    assert result.exit_code == 1
    assert f"{bad}:2: server.port" in result.output
    assert "deployments[0].model: is required" in result.output


def test_serve_refuses_public_host_without_keys(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("model_groups:\n  s:\n    deployments: [{provider: sim, model: s}]\n")
    result = CliRunner().invoke(main, ["serve", "--config", str(cfg), "--host", "0.0.0.0"])
    assert result.exit_code != 0 and "loopback only" in result.output


def test_cache_stats_and_clear(tmp_path: Path):
    import asyncio

    from slipstream.stores.sqlite import SqliteStore

    db = tmp_path / "c.db"

    async def fill() -> None:
        store = SqliteStore(db)
        for key in ("a:chat:1", "a:chat:2", "b:chat:1", "ab:chat:1"):
            await store.set(key, b"{}", 60)
        await store.aclose()

    asyncio.run(fill())
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        f"cache:\n  sqlite: {{path: {db}}}\nmodel_groups:\n  s:\n    deployments: [{{provider: sim, model: s}}]\n"
    )
    stats = CliRunner().invoke(main, ["cache", "stats", "--config", str(cfg)])
    assert stats.exit_code == 0 and "entries:   4" in stats.output
    cleared = CliRunner().invoke(main, ["cache", "clear", "--config", str(cfg), "--namespace", "a"])
    assert cleared.exit_code == 0 and "cleared 2 entries" in cleared.output
    stats = CliRunner().invoke(main, ["cache", "stats", "--config", str(cfg)])
    assert "entries:   2" in stats.output


def test_cache_stats_and_clear_report_the_shared_redis_tier(tmp_path: Path, redis_url: str):  # noqa: F811
    import asyncio

    from slipstream.stores.redis import RedisStore

    async def fill() -> None:
        store = RedisStore(redis_url)
        for key in ("a:chat:1", "a:chat:2", "b:chat:1"):
            await store.set(key, b'{"x": 1}', 60)
        await store.aclose()

    asyncio.run(fill())
    cfg = tmp_path / "c.yaml"
    sqlite = tmp_path / "never.db"
    cfg.write_text(
        f"redis: {{url: '{redis_url}'}}\ncache:\n  sqlite: {{path: {sqlite}}}\n"
        "model_groups:\n  s:\n    deployments: [{provider: sim, model: s}]\n"
    )
    stats = CliRunner().invoke(main, ["cache", "stats", "--config", str(cfg)])
    assert stats.exit_code == 0, stats.output
    assert "redis:" in stats.output and "entries:   3" in stats.output
    cleared = CliRunner().invoke(main, ["cache", "clear", "--config", str(cfg), "--namespace", "a"])
    assert cleared.exit_code == 0 and "cleared 2 entries" in cleared.output
    assert "entries:   1" in CliRunner().invoke(main, ["cache", "stats", "--config", str(cfg)]).output
    assert not sqlite.exists()  # the shared tier replaces SQLite: the CLI never looked there


def test_cache_stats_says_when_redis_cannot_be_reached(tmp_path: Path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(
        "redis: {url: 'redis://:secret@127.0.0.1:1/0'}\n"
        "model_groups:\n  s:\n    deployments: [{provider: sim, model: s}]\n"
    )
    result = CliRunner().invoke(main, ["cache", "stats", "--config", str(cfg)])
    assert result.exit_code == 1
    assert "cannot reach Redis" in result.output and "secret" not in result.output
