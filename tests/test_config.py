from pathlib import Path

import pytest

from slipstream.config import ConfigError, default_config, load_config, parse_config

GOOD = """
server:
  host: 127.0.0.1
  port: 9000
keys:
  - key: ${TEAM_A_KEY}
    name: team-a
  - key: sk-b
    name: team-b
    namespace: shared-b
cache:
  ttl: 600
  memory: {max_entries: 100}
  sqlite: {path: /tmp/x.db}
model_groups:
  fast:
    deployments:
      - provider: openai
        model: gpt-4o-mini
        base_url: http://127.0.0.1:1/v1
        timeouts: {connect: 1.5, first_byte: 10, total: 30}
      - provider: anthropic
        model: claude-haiku-4-5
"""


def test_good_config_reads_every_section():
    config = parse_config(GOOD, environ={"TEAM_A_KEY": "sk-a", "ANTHROPIC_API_KEY": "sk-ant"})
    assert config.server.port == 9000
    assert [(k.key, k.name, k.namespace) for k in config.keys] == [
        ("sk-a", "team-a", "team-a"),
        ("sk-b", "team-b", "shared-b"),
    ]
    assert config.cache.ttl == 600 and config.cache.memory_max_entries == 100
    assert config.cache.sqlite_path == "/tmp/x.db"
    first, second = config.model_groups["fast"].deployments
    assert first.timeouts.connect == 1.5 and first.timeouts.total == 30
    assert first.api_key is None  # no OPENAI_API_KEY in this environment
    assert second.api_key == "sk-ant"  # taken from the provider's variable
    assert "sk-ant" not in repr(second)  # keys never printed


def test_problems_name_file_line_and_field():
    text = """server:
  port: nine
  bogus: 1
model_groups:
  fast:
    deployments:
      - provider: nope
        model: x
      - provider: openai
        timeouts: {connect: soon}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="gw.yaml", environ={})
    problems = info.value.problems
    assert "gw.yaml:2: server.port: expected int, got a string" in problems
    assert any(p.startswith("gw.yaml:3: server.bogus: unknown field") for p in problems)
    assert any(
        p.startswith("gw.yaml:7: model_groups.fast.deployments[0].provider: unknown provider 'nope'")
        for p in problems
    )
    assert any(
        p.startswith("gw.yaml:9: model_groups.fast.deployments[1].model: is required") for p in problems
    )


def test_missing_env_variable_is_a_problem():
    with pytest.raises(ConfigError) as info:
        parse_config(
            "keys:\n  - key: ${NOPE}\nmodel_groups: {s: {deployments: [{provider: sim, model: s}]}}\n",
            environ={},
        )
    assert any("environment variable NOPE is not set" in p for p in info.value.problems)


def test_env_default_and_overrides():
    text = "server:\n  port: ${PORT:-7000}\nmodel_groups: {s: {deployments: [{provider: sim, model: s}]}}\n"
    assert parse_config(text, environ={}).server.port == 7000
    config = parse_config(
        text, environ={"SLIPSTREAM__SERVER__PORT": "7100", "SLIPSTREAM__CACHE__ENABLED": "false"}
    )
    assert config.server.port == 7100
    assert config.cache.enabled is False


def test_invalid_yaml_names_the_line():
    with pytest.raises(ConfigError) as info:
        parse_config("server:\n  port: [1,\n", source="bad.yaml", environ={})
    assert info.value.problems[0].startswith("bad.yaml:")
    assert "not valid YAML" in info.value.problems[0]


def test_defaults_serve_sim_and_add_providers_with_keys(tmp_path: Path):
    bare = default_config(environ={"SLIPSTREAM_DATA_DIR": str(tmp_path)})
    assert list(bare.model_groups) == ["sim"]
    assert bare.cache.sqlite_path == str(tmp_path / "cache.db")
    with_keys = default_config(environ={"OPENAI_API_KEY": "sk-o", "GEMINI_API_KEY": "g"})
    assert "gpt-4o-mini" in with_keys.model_groups and "gemini-2.5-flash" in with_keys.model_groups
    assert "claude-sonnet-4-5" not in with_keys.model_groups
    assert set(with_keys.passthrough) == {"openai", "gemini"}


def test_load_config_reads_file_and_reports_unreadable(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("model_groups: {s: {deployments: [{provider: sim, model: s}]}}\n")
    assert list(load_config(path, environ={}).model_groups) == ["s"]
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.yaml", environ={})


def test_example_configs_are_valid():
    examples = sorted((Path(__file__).parents[1] / "examples").glob("*.yaml"))
    assert examples, "examples/ should hold config files"
    for path in examples:
        load_config(
            path,
            environ={
                "OPENAI_API_KEY": "x",
                "ANTHROPIC_API_KEY": "x",
                "GEMINI_API_KEY": "x",
                "SLIPSTREAM_KEY_TEAM_A": "a",
                "SLIPSTREAM_KEY_TEAM_B": "b",
            },
        )


def test_provider_options_are_checked_at_load_time():
    text = "model_groups: {s: {deployments: [{provider: sim, model: s, options: {ttft_ms: 3}}]}}\n"
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="o.yaml", environ={})
    assert any("deployments[0].options: unknown sim option 'ttft_ms'" in p for p in info.value.problems)


def test_routing_policy_limits_and_key_limits():
    text = """
keys: [{key: k1, name: a, limits: {rpm: 60, tpm: 1000}}]
model_groups:
  g:
    strategy: weighted
    timeout: 12
    retries: {max_attempts: 4, base_delay: 0.1, budget: 0.3}
    breaker: {failures: 3, cooldown: 5}
    hedge: {after: p95}
    fallback_reply: sorry
    deployments:
      - {provider: sim, model: a, weight: 3, priority: 1, limits: {rpm: 600, max_concurrent: 8, adaptive: true}}
"""
    config = parse_config(text, environ={})
    policy = config.model_groups["g"].policy
    assert (policy.strategy, policy.timeout, policy.fallback_reply) == ("weighted", 12.0, "sorry")
    assert policy.retry.max_attempts == 4 and policy.retry.base_delay == 0.1 and policy.retry_budget == 0.3
    assert policy.breaker.failures == 3 and policy.breaker.cooldown == 5
    assert policy.hedge_p95 and policy.hedge_after is None
    dep = config.model_groups["g"].deployments[0]
    assert (dep.weight, dep.priority) == (3.0, 1)
    assert dep.limits.rpm == 600 and dep.limits.max_concurrent == 8 and dep.limits.adaptive
    assert config.keys[0].limits.rpm == 60 and config.keys[0].limits.tpm == 1000


def test_bad_routing_values_are_reported():
    text = """
model_groups:
  g:
    strategy: fastest
    hedge: {after: -1}
    retries: {max_attempts: 0}
    deployments: [{provider: sim, model: a, limits: {rpm: -5}}]
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="r.yaml", environ={})
    problems = "\n".join(info.value.problems)
    assert "model_groups.g.strategy: unknown strategy 'fastest'" in problems
    assert "model_groups.g.hedge.after" in problems
    assert "model_groups.g.retries.max_attempts: must be at least 1" in problems
    assert "limits.rpm: must be a positive integer" in problems
