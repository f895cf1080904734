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


# ------------------------------------------------------------------------------------------------ alerts
ALERTS = """
model_groups: {g: {deployments: [{provider: sim, model: a}]}}
alerts:
  interval: 15s
  channels:
    ops-log: {type: log}
    slack: {type: webhook, url: "http://127.0.0.1:9999/hook/${HOOK_TOKEN}", timeout: 5}
    mail:
      type: email
      host: 127.0.0.1
      port: 8025
      from: alerts@x.test
      to: ops@x.test
      username: alerts
      password: ${SMTP_PASSWORD}
      starttls: true
  rules:
    - name: slow
      metric: p95_latency_ms
      window: 5m
      op: ">"
      threshold: 2000
      cooldown: 10m
      severity: critical
      channels: [slack, mail]
      model: g
      min_requests: 20
    - name: cold
      metric: hit_rate
      op: "<"
      threshold: 0.2
      window: 1h
    - {name: open, metric: breaker_open, threshold: 0, window: 90}
"""


def test_alerts_section_reads_rules_and_channels():
    from slipstream.config import EmailChannelConfig, LogChannelConfig, WebhookChannelConfig

    config = parse_config(ALERTS, environ={"HOOK_TOKEN": "t0k3n", "SMTP_PASSWORD": "pw-secret"})
    alerts = config.alerts
    assert alerts.interval == 15.0
    assert alerts.channels["ops-log"] == LogChannelConfig("ops-log")
    slack = alerts.channels["slack"]
    assert isinstance(slack, WebhookChannelConfig)
    assert slack.url == "http://127.0.0.1:9999/hook/t0k3n" and slack.timeout == 5.0
    mail = alerts.channels["mail"]
    assert isinstance(mail, EmailChannelConfig)
    assert (mail.host, mail.port, mail.sender, mail.to) == (
        "127.0.0.1",
        8025,
        "alerts@x.test",
        ("ops@x.test",),
    )
    assert (mail.username, mail.password, mail.starttls) == ("alerts", "pw-secret", True)
    assert "pw-secret" not in repr(alerts) and "t0k3n" not in repr(alerts)  # secrets never printed
    slow, cold, open_ = alerts.rules
    assert (slow.metric, slow.op, slow.threshold, slow.window, slow.cooldown) == (
        "p95_latency_ms",
        ">",
        2000,
        300,
        600,
    )
    assert (slow.severity, slow.channels, slow.model, slow.min_requests) == (
        "critical",
        ("slack", "mail"),
        "g",
        20,
    )
    # Defaults: every channel, warning, a 10-minute cooldown, judged from one request.
    assert (cold.op, cold.window, cold.channels) == ("<", 3600.0, ("ops-log", "slack", "mail"))
    assert (cold.severity, cold.cooldown, cold.min_requests) == ("warning", 600.0, 1)
    assert (open_.op, open_.window) == (">", 90.0)


def test_no_alerts_section_means_no_rules_and_no_channels_means_the_log():
    from slipstream.config import LogChannelConfig

    base = "model_groups: {g: {deployments: [{provider: sim, model: a}]}}\n"
    assert parse_config(base, environ={}).alerts.rules == ()
    config = parse_config(
        base + "alerts:\n  rules: [{name: e, metric: error_rate, threshold: 0.1}]\n", environ={}
    )
    assert config.alerts.channels == {"log": LogChannelConfig("log")}
    assert config.alerts.rules[0].channels == ("log",)


def test_bad_alerts_are_reported_with_lines():
    text = """model_groups: {g: {deployments: [{provider: sim, model: a}]}}
alerts:
  interval: soon
  channels:
    pager: {type: pagerduty}
    hook: {type: webhook, url: "ftp://x"}
    mail: {type: email, to: []}
  rules:
    - name: a
      metric: p50_latency
      op: "=>"
      threshold: 1
    - name: b
      metric: error_rate
      threshold: 5
      window: 5 minutes
      channels: [slack]
      severity: page
    - name: a
      metric: queue_depth
    - metric: hit_rate
      op: >
      threshold: 0.5
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="al.yaml", environ={})
    problems = info.value.problems

    def has(prefix: str) -> bool:
        return any(p.startswith(prefix) for p in problems)

    assert "al.yaml:3: alerts.interval: expected duration, got a string" in problems
    assert (
        "al.yaml:5: alerts.channels.pager.type: expected one of log, webhook, email, got 'pagerduty'"
        in problems
    )
    assert "al.yaml:6: alerts.channels.hook.url: expected an http:// or https:// URL" in problems
    assert "al.yaml:7: alerts.channels.mail.from: is required" in problems
    assert has("al.yaml:7: alerts.channels.mail.to: expected an address")
    assert has(
        "al.yaml:10: alerts.rules[0].metric: unknown metric 'p50_latency' (known: p95_latency_ms, p99_"
    )
    assert has("al.yaml:11: alerts.rules[0].op: unknown comparison '=>' (known: > >= < <=")
    assert "al.yaml:15: alerts.rules[1].threshold: error_rate is a fraction: between 0 and 1" in problems
    assert "al.yaml:16: alerts.rules[1].window: expected duration, got a string" in problems
    assert (
        "al.yaml:17: alerts.rules[1].channels: unknown channel 'slack' (known: pager, hook, mail)" in problems
    )
    assert has(
        "al.yaml:18: alerts.rules[1].severity: unknown severity 'page' (known: info, warning, critical)"
    )
    assert "al.yaml:19: alerts.rules[2].threshold: is required" in problems
    assert "al.yaml:21: alerts.rules[3].name: is required" in problems
    # An unquoted ``op: >`` is YAML for an empty folded string: the hint says to quote it.
    assert has(
        "al.yaml:22: alerts.rules[3].op: unknown comparison '' (known: > >= < <=; quote it: op: \">\")"
    )


def test_duplicate_rule_names_and_log_metrics_without_a_log_are_reported():
    text = """model_groups: {g: {deployments: [{provider: sim, model: a}]}}
observe: {request_log: {enabled: false}}
alerts:
  rules:
    - {name: a, metric: breaker_open, threshold: 0}
    - {name: a, metric: queue_depth, threshold: 10}
    - {name: c, metric: cost_per_hour, threshold: 5}
"""
    with pytest.raises(ConfigError) as info:
        parse_config(text, source="d.yaml", environ={})
    assert info.value.problems == [
        "d.yaml:6: alerts.rules[1].name: is the same as an earlier rule's ('a')",
        "d.yaml:7: alerts.rules[2].metric: cost_per_hour is read from the request log, which is off",
    ]


def test_request_log_writer_is_process_by_default_thread_on_request_and_nothing_else():
    base = "model_groups: {g: {deployments: [{provider: sim, model: a}]}}\n"
    assert parse_config(base, environ={}).observe.request_log_writer == "process"
    chosen = parse_config(base + "observe: {request_log: {writer: thread}}\n", environ={})
    assert chosen.observe.request_log_writer == "thread"
    with pytest.raises(ConfigError) as info:
        parse_config(base + "observe: {request_log: {writer: fork}}\n", source="w.yaml", environ={})
    assert info.value.problems == [
        "w.yaml:2: observe.request_log.writer: expected one of process, thread, got 'fork'"
    ]
