"""`slipstream batch` end to end in this process: rejects, failures, resume, torn lines, dry run, shards."""

from __future__ import annotations

from pathlib import Path

from ..e2e.conftest import Process
from .conftest import (
    batch_line,
    chat_body,
    custom_ids,
    read_jsonl,
    run_batch,
    sim_config_text,
    sim_requests,
    write_jsonl,
)


def test_bad_lines_go_to_the_rejects_file_and_the_rest_run(tmp_path: Path, config_path: Path):
    source = write_jsonl(
        tmp_path / "in.jsonl",
        [
            batch_line("a", chat_body("alpha")),
            '{"custom_id": "broken json",',
            chat_body("bare body"),
            batch_line("a", chat_body("duplicate id")),
            batch_line("e", {"model": "sim", "input": ["embed", "these"]}, url="/v1/embeddings"),
            {"model": "sim", "messages": [{"role": "wizard", "content": "hi"}]},
        ],
    )
    out = tmp_path / "out.jsonl"
    result = run_batch(source, "-o", out, "--config", config_path, "--quiet")
    assert result.exit_code == 1, result.output
    assert f"{source}:2: rejected: not valid JSON" in result.stderr
    assert f"{source}:4: rejected: duplicate custom_id 'a' (first on line 1)" in result.stderr
    assert "3 rejected lines written to" in result.stderr
    rejects = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert [(r["line"], r["custom_id"]) for r in rejects] == [(2, None), (4, "a"), (6, "line-6")]
    assert rejects[2]["error"]["message"].startswith("messages[0].role: unknown role 'wizard'")
    assert sorted(custom_ids(out)) == ["a", "e", "line-3"]
    results = {line["custom_id"]: line for line in read_jsonl(out)}
    assert results["e"]["response"]["body"]["object"] == "list"  # the embeddings line ran as embeddings
    alpha = results["a"]
    assert alpha["error"] is None and alpha["id"].startswith("batch_req_")
    assert alpha["response"]["status_code"] == 200 and alpha["response"]["request_id"].startswith("req_")
    assert alpha["response"]["body"]["choices"][0]["message"]["content"]
    assert not (tmp_path / "out.failures.jsonl").read_text()


def test_failures_go_to_their_own_file_and_are_not_run_again(tmp_path: Path, config_path: Path):
    lines = [batch_line(f"ok-{i}", chat_body(f"fine {i}")) for i in range(6)]
    lines += [batch_line(f"bad-{i}", chat_body(f"fails {i}", model="broken")) for i in range(3)]
    lines += [batch_line("nomodel", chat_body("x", model="not-configured"))]
    source = write_jsonl(tmp_path / "in.jsonl", lines)
    out, failures = tmp_path / "out.jsonl", tmp_path / "failed.jsonl"
    result = run_batch(source, "-o", out, "--failures", failures, "--config", config_path, "-q")
    assert result.exit_code == 1, result.output
    assert "done: 6 results" in result.stderr and "4 failed" in result.stderr
    assert sorted(custom_ids(out)) == [f"ok-{i}" for i in range(6)]
    errors = {line["custom_id"]: line["error"] for line in read_jsonl(failures)}
    assert sorted(errors) == ["bad-0", "bad-1", "bad-2", "nomodel"]
    assert errors["bad-0"]["status"] == 502 and errors["bad-0"]["code"] == "upstream_error"
    assert errors["bad-0"]["message"].startswith("sim: The server had an error")
    assert errors["nomodel"] == {
        "code": "model_not_found",
        "message": "The model 'not-configured' does not exist or is not served here",
        "type": "not_found_error",
        "param": "model",
        "status": 404,
    }
    before = (out.read_bytes(), failures.read_bytes())
    again = run_batch(source, "-o", out, "--failures", failures, "--config", config_path, "-q")
    assert again.exit_code == 1
    assert "resuming: 10 of 10 lines already finished" in again.stderr
    assert (out.read_bytes(), failures.read_bytes()) == before


def test_a_torn_last_line_is_repaired_and_its_request_runs_again(tmp_path: Path, config_path: Path):
    source = write_jsonl(tmp_path / "in.jsonl", [chat_body(f"torn {i}") for i in range(5)])
    out = tmp_path / "out.jsonl"
    assert run_batch(source, "-o", out, "--config", config_path, "-q").exit_code == 0
    whole = out.read_bytes()
    last_start = whole.rstrip(b"\n").rfind(b"\n") + 1
    out.write_bytes(whole[: last_start + 40])  # as if killed inside the last write()
    result = run_batch(source, "-o", out, "--config", config_path, "-q")
    assert result.exit_code == 0, result.output
    assert "cut off a torn last line (40 bytes)" in result.stderr
    assert "resuming: 4 of 5 lines already finished" in result.stderr
    assert sorted(custom_ids(out)) == [f"line-{i}" for i in range(1, 6)]


def test_a_damaged_result_file_is_refused_not_guessed_at(tmp_path: Path, config_path: Path):
    source = write_jsonl(tmp_path / "in.jsonl", [chat_body("x")])
    out = tmp_path / "out.jsonl"
    out.write_text('{"custom_id": "line-1"}\nnot json at all\n')
    result = run_batch(source, "-o", out, "--config", config_path, "-q")
    assert result.exit_code == 2
    assert f"error: {out}:2: not a result line" in result.stderr
    assert "Traceback" not in result.output


def test_unusable_arguments_are_one_error_line(tmp_path: Path, config_path: Path):
    missing = run_batch(tmp_path / "nope.jsonl", "-o", tmp_path / "o.jsonl", "--config", config_path)
    assert missing.exit_code == 2 and "nope.jsonl: cannot read" in missing.stderr
    source = write_jsonl(tmp_path / "in.jsonl", [chat_body("x")])
    same = run_batch(source, "-o", source)
    assert same.exit_code == 2 and "must be four different files" in same.stderr
    bad_config = tmp_path / "bad.yaml"
    bad_config.write_text("model_groups: 3\n")
    config = run_batch(source, "-o", tmp_path / "o.jsonl", "--config", bad_config)
    assert config.exit_code == 2 and "error: " in config.stderr and "model_groups" in config.stderr
    shard = run_batch(source, "-o", tmp_path / "o.jsonl", "--shard", "3/2")
    assert shard.exit_code == 2 and "expected i/n" in shard.output


def test_dry_run_estimates_and_calls_nothing(tmp_path: Path, slow_sim: Process):
    priced = f"""
  gpt-4o-mini:
    deployments: [{{provider: openai, model: gpt-4o-mini, base_url: '{slow_sim.url}/v1', api_key: unused}}]
"""
    config = tmp_path / "c.yaml"
    config.write_text(sim_config_text(tmp_path, upstream=slow_sim.url, extra=priced))
    lines = [chat_body(f"estimate me {i}", model="gpt-4o-mini") for i in range(8)]
    lines += [chat_body("an unpriced model"), chat_body("unknown", model="mystery"), '{"bad"']
    source = write_jsonl(tmp_path / "in.jsonl", lines)
    out = tmp_path / "out.jsonl"
    before = sim_requests(slow_sim)
    result = run_batch(source, "-o", out, "--config", config, "--dry-run")
    assert result.exit_code == 0, result.output
    assert sim_requests(slow_sim) == before
    assert not out.exists() and not (tmp_path / "out.rejects.jsonl").exists()
    assert "dry run: 10 requests would be sent (0 already finished, 1 rejected lines)" in result.stdout
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:5]}
    _, requests, prompt, completion, cost = rows["gpt-4o-mini"]
    assert (requests, completion) == ("8", "160")  # max_tokens 20 each: the completion allowance
    # gpt-4o-mini from the bundled price table: $0.15 in, $0.60 out per 1M tokens
    assert cost == f"${(int(prompt) * 0.15 + 160 * 0.60) / 1e6:,.4f}"
    assert rows["sim"][-2:] == ["no", "price"] and rows["mystery"][-2:] == ["unknown", "model"]
    assert "not served by this config (these requests would fail): mystery" in result.stdout


def test_shards_split_one_file_with_no_overlap(tmp_path: Path, config_path: Path):
    lines = [batch_line(f"id-{i}", chat_body(f"shard me {i}")) for i in range(60)]
    lines += ['{"nope', '{"also": "nope"']
    source = write_jsonl(tmp_path / "in.jsonl", lines)
    outs = [tmp_path / f"out-{i}.jsonl" for i in (1, 2, 3)]
    for i, out in enumerate(outs, 1):
        result = run_batch(source, "-o", out, "--config", config_path, "--shard", f"{i}/3", "-q")
        assert result.exit_code in (0, 1), result.output
    per_shard = [custom_ids(out) for out in outs]
    assert all(per_shard), "every shard got some lines"
    assert sorted(i for ids in per_shard for i in ids) == sorted(f"id-{i}" for i in range(60))
    rejected = [r["line"] for i in (1, 2, 3) for r in read_jsonl(tmp_path / f"out-{i}.rejects.jsonl")]
    assert sorted(rejected) == [61, 62]


def test_shards_share_the_cache_through_redis(tmp_path: Path, slow_sim: Process, redis_url: str):
    # 10 distinct questions, each asked by 4 lines that land in different shards
    lines = [batch_line(f"q{q}-{n}", chat_body(f"shared question {q}")) for q in range(10) for n in range(4)]
    source = write_jsonl(tmp_path / "in.jsonl", lines)

    def run_shards(redis: str) -> int:
        """Both shards as if on two machines (each its own data directory); upstream calls they made."""
        before = sim_requests(slow_sim)
        for i in (1, 2):
            machine = tmp_path / f"{redis[:5]}-machine-{i}"
            machine.mkdir()
            config = machine / "c.yaml"
            config.write_text(sim_config_text(machine, upstream=slow_sim.url, extra=redis))
            out = machine / "out.jsonl"
            result = run_batch(source, "-o", out, "--config", config, "--shard", f"{i}/2", "-q")
            assert result.exit_code == 0, result.output
            assert len(custom_ids(out)) in range(5, 36)
        return sim_requests(slow_sim) - before

    assert run_shards(f"redis: {{url: '{redis_url}'}}") == 10  # each question reached the upstream once
    assert run_shards("") > 10  # control: without Redis each machine asks the questions it holds
