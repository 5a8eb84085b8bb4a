"""ng_collect_rollouts' engine: records, metrics, resume, overrides, failures and bad input, over real HTTP."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from nemo_gym.collection.inputs import InputError, read_rows
from nemo_gym.collection.run import RunStopped, collect, metrics_path, settings_from
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.paths import project_root
from nemo_gym.config.types import GlobalConfig
from nemo_gym.servers.head import build_head_app
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.cluster import openai_model_block, serve_config, simple_weather_blocks
from nemo_gym.testing.stub_upstream import StubUpstream

EXAMPLES = project_root() / "resources_servers/simple_weather/data/example.jsonl"
API_KEY = "sk-or-v1-rollouts-test-key-98765"


@pytest.fixture
def stub() -> StubUpstream:
    return StubUpstream(api_key=API_KEY)


@pytest.fixture
def running(stub: StubUpstream) -> Iterator[GlobalConfig]:
    """Stub upstream, model server, simple_weather, agent and a head server, all on loopback."""
    with serve_in_thread(stub.app()) as upstream_url:
        data = {"policy_model": openai_model_block(upstream_url + "/v1", api_key=API_KEY), **simple_weather_blocks()}
        with serve_config(data) as (config, _servers):
            head_port = free_port()
            with serve_in_thread(build_head_app(config), port=head_port):
                yield GlobalConfig(data={**config.data, "head_server": {"port": head_port}}, origins={})


def run_collection(config: GlobalConfig, **settings: Any) -> dict[str, Any]:
    data = {**config.data, "agent_name": "simple_weather_simple_agent", "input_jsonl_fpath": str(EXAMPLES), **settings}
    cfg = GlobalConfig(data=data, origins={})
    return asyncio.run(collect(cfg, settings_from(cfg)))


def read_records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_each_rollout_is_one_complete_record_and_metrics_are_written(running: GlobalConfig, tmp_path: Path) -> None:
    output = tmp_path / "out" / "rollouts.jsonl"
    summary = run_collection(running, output_jsonl_fpath=str(output), limit=10, num_repeats=2)

    records = read_records(output)
    assert len(records) == 20
    assert {(r["row_index"], r["repeat_index"]) for r in records} == {(i, k) for i in range(10) for k in range(2)}
    first = next(r for r in records if r["row_index"] == 0)
    assert first["error"] is None and first["reward"] == 1.0
    assert first["expected_cities"] == ["Paris"] and first["called_cities"] == ["Paris"]
    assert first["usage"]["input_tokens"] == 100 and first["usage"]["calls"] == 2
    assert first["cost_usd"] == pytest.approx(0.0002)
    assert first["models"] == ["stub/weather-model"]
    assert first["input"]["expected_cities"] == ["Paris"]
    assert [i["type"] for i in first["response"]["output"]] == ["function_call", "function_call_output", "message"]

    rewards = [r["reward"] for r in records]
    assert summary["rollouts"] == 20 and summary["succeeded"] == 20 and summary["failed"] == 0
    assert summary["mean_reward"] == pytest.approx(sum(rewards) / 20, abs=1e-4)
    assert len(set(rewards)) > 1, "indirect city names must score lower than plain ones"
    assert summary["input_tokens"] == sum(r["usage"]["input_tokens"] for r in records)
    assert summary["model_calls"] == sum(r["usage"]["calls"] for r in records)
    assert summary["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in records))
    assert json.loads(metrics_path(output).read_text())["mean_reward"] == summary["mean_reward"]


def test_rerun_resumes_without_duplicates_and_overwrite_starts_over(running: GlobalConfig, tmp_path: Path) -> None:
    output = tmp_path / "rollouts.jsonl"
    run_collection(running, output_jsonl_fpath=str(output), limit=6)
    lines = output.read_text().splitlines()
    output.write_text("\n".join(lines[:3]) + "\n" + lines[3][: len(lines[3]) // 2])  # lost 2 rows, tore 1
    kept = {json.loads(line)["row_index"] for line in lines[:3]}  # rows finish in any order

    summary = run_collection(running, output_jsonl_fpath=str(output), limit=6)

    assert summary["this_run"]["skipped_already_done"] == 3 and summary["this_run"]["rollouts"] == 3
    assert summary["rollouts"] == 6 and summary["complete"] is True, "the metrics describe the whole file"
    records = read_records(output)  # every line parses: the torn one was moved aside
    keys = [(r["row_hash"], r["repeat_index"]) for r in records]
    assert len(keys) == len(set(keys)) == 6
    assert records[:3] == [json.loads(line) for line in lines[:3]], "finished records are kept as they were"
    assert sorted(r["row_index"] for r in records[3:]) == sorted(set(range(6)) - kept), "only the missing rows ran"
    assert (tmp_path / "rollouts.jsonl.torn").read_text() == lines[3][: len(lines[3]) // 2] + "\n"

    summary = run_collection(running, output_jsonl_fpath=str(output), limit=6, overwrite=True)
    assert summary["this_run"]["skipped_already_done"] == 0 and len(read_records(output)) == 6
    assert summary["rollouts"] == summary["this_run"]["rollouts"] == 6
    assert sorted(r["row_index"] for r in read_records(output)) == list(range(6))


def test_responses_create_params_overrides_reach_the_model(
    running: GlobalConfig, stub: StubUpstream, tmp_path: Path
) -> None:
    run_collection(
        running,
        output_jsonl_fpath=str(tmp_path / "o.jsonl"),
        limit=2,
        responses_create_params={"temperature": 0.25, "max_output_tokens": 64},
    )
    bodies = [body for path, _headers, body in stub.requests if path == "/v1/chat/completions"]
    assert bodies and all(b["temperature"] == 0.25 and b["max_tokens"] == 64 for b in bodies)


def test_an_unknown_agent_is_an_error_listing_the_agents(running: GlobalConfig, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No agent named 'nope'.*simple_weather_simple_agent"):
        run_collection(running, output_jsonl_fpath=str(tmp_path / "o.jsonl"), agent_name="nope")


def test_a_dead_upstream_stops_the_run_instead_of_recording_failed_rollouts(tmp_path: Path) -> None:
    dead_upstream = f"http://127.0.0.1:{free_port()}/v1"
    data = {
        "policy_model": openai_model_block(
            dead_upstream, api_key=API_KEY, retry={"max_attempts": 2, "initial_backoff_s": 0.01}
        ),
        **simple_weather_blocks(),
    }
    with serve_config(data) as (config, _servers):
        head_port = free_port()
        with serve_in_thread(build_head_app(config), port=head_port):
            cfg = GlobalConfig(data={**config.data, "head_server": {"port": head_port}}, origins={})
            output = tmp_path / "o.jsonl"
            with pytest.raises(RunStopped) as stopped:
                run_collection(cfg, output_jsonl_fpath=str(output), limit=3, outage_timeout_s=1)
    assert read_records(output) == [], "an upstream nobody can reach says nothing about the rows"
    message = str(stopped.value)
    assert "Cannot connect" in message and "re-run the same command to resume" in message
    assert API_KEY not in message and API_KEY not in metrics_path(output).read_text()


def test_the_head_server_must_be_running(tmp_path: Path) -> None:
    config = GlobalConfig(data={"head_server": {"port": free_port()}}, origins={})
    with pytest.raises(ConfigError, match="Cannot reach the ng_run head server.*ng_run"):
        run_collection(config, output_jsonl_fpath=str(tmp_path / "o.jsonl"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"responses_create_params": {"input": "hi"}}\n{not json}\n', r"in\.jsonl:2: not valid JSON"),
        ("[1, 2]\n", r"in\.jsonl:1: a row must be a JSON object"),
        ('{"question": "weather?"}\n', r"in\.jsonl:1: the row has no `responses_create_params`"),
        ("\n\n", r"has no rows"),
    ],
)
def test_bad_input_names_the_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_rows(path)


def test_missing_input_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="Input file not found: .*missing.jsonl. Check \\+input_jsonl_fpath"):
        read_rows(tmp_path / "missing.jsonl")


def test_settings_are_validated_with_the_flag_names() -> None:
    config = GlobalConfig(
        data={"agent_name": "a", "input_jsonl_fpath": "x.jsonl", "output_jsonl_fpath": "y.jsonl", "limit": 0},
        origins={},
    )
    with pytest.raises(ConfigError, match=r"\+limit"):
        settings_from(config)
