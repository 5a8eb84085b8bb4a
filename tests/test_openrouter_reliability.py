"""openai_model against the offline OpenRouter emulator: faults of every kind are survived, fallbacks serve and
show in the records, spent credits stop the run keeping every finished row, and each troubleshooting case of the
seed is one message a person can act on."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from nemo_gym.collection.run import RunStopped, metrics_path
from nemo_gym.config.paths import project_root
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.cluster import openai_model_block, serve_config, simple_weather_blocks
from nemo_gym.testing.emulated import (
    EMULATOR_KEY,
    FAST_RETRY,
    collect_rows,
    emulated_cluster,
    fault_run,
    write_rows,
)

PRIMARY, FALLBACK = "openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet"
SEED_CONFIG_PATHS = (
    "+config_paths=[responses_api_models/openai_model/configs/openai_model.yaml, "
    "resources_servers/simple_weather/configs/simple_weather.yaml]"
)


def records_of(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_a_thousand_rollouts_with_20_percent_faults_of_every_kind_all_complete(tmp_path: Path) -> None:
    figures = fault_run(1000, 0.2, parallel=64, workdir=tmp_path)

    assert figures["records"] == figures["unique_rows"] == 1000
    errors = [r["error"] for r in records_of(tmp_path / "rollouts.jsonl") if r["error"]]
    assert figures["failed"] == 0, errors
    kinds = figures["faults_injected"]
    assert set(kinds) >= {
        "rate_limit",
        "rate_limit_no_retry_after",
        "server_error",
        "bad_gateway",
        "unavailable",
        "timeout",
        "drop_connection",
        "error_in_200",
        "finish_reason_error",
    }
    assert sum(kinds.values()) >= 300 and figures["retries"] >= sum(kinds.values()) * 0.9
    assert figures["upstream_requests"] > 2000


@pytest.fixture
def emulator() -> OpenRouterEmulator:
    return OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], seed=3))


def test_openrouter_native_fallback_serves_and_is_recorded(emulator: OpenRouterEmulator, tmp_path: Path) -> None:
    emulator.inject(PRIMARY, ["unavailable"] * 2)
    rows = write_rows(tmp_path / "rows.jsonl", 3)
    with emulated_cluster(emulator, fallback_models=[FALLBACK], retry=FAST_RETRY) as config:
        collect_rows(config, rows, tmp_path / "out.jsonl", num_samples_in_parallel=1)

    bodies = [r.body for r in emulator.requests if r.path.endswith("/chat/completions")]
    assert all(b["models"] == [FALLBACK] for b in bodies), "fallbacks travel in OpenRouter's native `models`"
    records = records_of(tmp_path / "out.jsonl")
    assert all(r["error"] is None for r in records)
    assert FALLBACK in records[0]["models"]
    first_turn = records[0]["response"]["nemo_gym"]["turns"][0]
    assert first_turn["model"] == FALLBACK and first_turn["attempts"] == 1
    assert emulator.served[FALLBACK] == 2 and emulator.served[PRIMARY] >= 4
    assert {t["model"] for r in records for t in r["response"]["nemo_gym"]["turns"]} == {PRIMARY, FALLBACK}


def test_client_side_fallback_models_and_endpoints(emulator: OpenRouterEmulator, tmp_path: Path) -> None:
    """Not OpenRouter: the unknown primary model fails with 400 and the next model serves, then a dead primary
    endpoint hands over to a fallback endpoint."""
    rows = write_rows(tmp_path / "rows.jsonl", 2)
    with emulated_cluster(
        emulator, model="openai/no-such-model", fallback_models=[FALLBACK], openrouter=False, retry=FAST_RETRY
    ) as config:
        collect_rows(config, rows, tmp_path / "a.jsonl")
    records = records_of(tmp_path / "a.jsonl")
    assert all(r["error"] is None and r["models"] == [FALLBACK] for r in records)
    assert "openai/no-such-model" in records[0]["response"]["nemo_gym"]["turns"][0]["failovers"][0]

    with serve_in_thread(emulator.app()) as url:
        dead = f"http://127.0.0.1:{free_port()}/api/v1"
        fallback = {"base_url": url + "/api/v1", "api_key": EMULATOR_KEY, "model": FALLBACK}
        block = openai_model_block(
            dead,
            api_key=EMULATOR_KEY,
            model=PRIMARY,
            preflight=False,
            fallbacks=[fallback],
            retry={**FAST_RETRY, "max_attempts": 2},
        )
        with serve_config({"policy_model": block, **simple_weather_blocks()}) as (cfg, _):
            agent = cfg.instances["simple_weather_simple_agent"].url()
            row = json.loads(rows.read_text().splitlines()[0])
            answer = httpx.post(agent + "/run", json=row, timeout=60)
    assert answer.status_code == 200, answer.text
    turn = answer.json()["response"]["nemo_gym"]["turns"][0]
    assert turn["model"] == FALLBACK and turn["failovers"] and "connection" in turn["errors"]


def test_spent_credits_stop_the_run_and_keep_every_finished_row(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], credits_usd=0.0004, seed=1))
    rows = write_rows(tmp_path / "rows.jsonl", 200)
    output = tmp_path / "out.jsonl"
    with emulated_cluster(emulator, retry=FAST_RETRY, preflight=False) as config, pytest.raises(RunStopped) as stopped:
        collect_rows(config, rows, output, num_samples_in_parallel=4)

    message = str(stopped.value)
    assert "402" in message and "credits" in message.lower() and "re-run the same command" in message
    records = records_of(output)
    assert 0 < len(records) < 200, "stopped early, kept what finished"
    assert all(r["error"] is None for r in records)
    assert json.loads(metrics_path(output).read_text())["stopped_early"]
    assert EMULATOR_KEY not in output.read_text() + message


def test_a_persistent_429_stops_the_run_resumably_and_records_no_failure(
    emulator: OpenRouterEmulator, tmp_path: Path
) -> None:
    emulator.inject(PRIMARY, ["rate_limit"] * 500)
    rows, output = write_rows(tmp_path / "rows.jsonl", 3), tmp_path / "out.jsonl"
    with (
        emulated_cluster(emulator, retry={**FAST_RETRY, "max_attempts": 3}) as config,
        pytest.raises(RunStopped) as stopped,
    ):
        collect_rows(config, rows, output, outage_timeout_s=2)
    message = str(stopped.value)
    assert "did not answer for" in message and "+outage_timeout_s=2" in message
    assert "HTTP 429" in message and "num_samples_in_parallel" in message, "the upstream's advice is passed on"
    assert "gave up after 3 attempts" in message
    assert "re-run the same command to resume: ng_collect_rollouts" in message
    assert output.read_text() == "", "a rate limit says nothing about the rows: none is recorded as failed"
    metrics = json.loads(metrics_path(output).read_text())
    assert metrics["rollouts"] == 0 and metrics["stopped_early"] and metrics["this_run"]["outages"] == 1
    assert metrics["this_run"]["rollouts_rerun_after_outage"] >= 3


def test_a_model_without_tool_support_is_a_404_naming_the_cause(emulator: OpenRouterEmulator, tmp_path: Path) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", 1)
    with emulated_cluster(emulator, model="mistralai/mixtral-8x7b-instruct", retry=FAST_RETRY) as config:
        collect_rows(config, rows, tmp_path / "out.jsonl")
    (record,) = records_of(tmp_path / "out.jsonl")
    assert "HTTP 404" in record["error"] and "support tool use" in record["error"]


# ------------------------------------------------------------------ ng_run against the emulator, as a user runs it


@pytest.fixture
def emulator_url() -> Iterator[tuple[OpenRouterEmulator, str]]:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], seed=0))
    with serve_in_thread(emulator.app()) as url:
        yield emulator, url + "/api/v1"


def workdir_with_env(tmp_path: Path, base_url: str, **env: object) -> Path:
    values = {
        "policy_base_url": base_url,
        "policy_api_key": EMULATOR_KEY,
        "policy_model_name": "openai/gpt-4-turbo",
        "head_server": {"port": free_port()},
        **env,
    }
    (tmp_path / "env.yaml").write_text(yaml.safe_dump(values))
    for folder in ("responses_api_models", "resources_servers", "responses_api_agents"):
        (tmp_path / folder).symlink_to(project_root() / folder)
    return tmp_path


@pytest.mark.slow
def test_the_seed_quickstart_runs_against_the_emulator(
    emulator_url: tuple[OpenRouterEmulator, str], tmp_path: Path
) -> None:
    emulator, url = emulator_url
    workdir = workdir_with_env(tmp_path, url)
    ng_run = CommandProcess(["ng_run", SEED_CONFIG_PATHS], cwd=workdir)
    try:
        assert ng_run.wait_for("ng_run ready", timeout_s=90), ng_run.output
        assert any(r.path.endswith("/key") for r in emulator.requests), "the preflight checks the key"
        collect = subprocess.run(
            [
                "ng_collect_rollouts",
                "+agent_name=simple_weather_simple_agent",
                "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
                "+output_jsonl_fpath=results/openrouter_rollouts.jsonl",
                "+limit=10",
            ],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert collect.returncode == 0, collect.stderr[-2000:]
        records = records_of(workdir / "results/openrouter_rollouts.jsonl")
        assert len(records) == 10 and all(r["error"] is None for r in records)
        assert all(r["models"] == ["openai/gpt-4-turbo"] and r["cost_usd"] > 0 for r in records)
        assert sum(r["cost_usd"] for r in records) == pytest.approx(emulator.spent_usd, rel=1e-6)
    finally:
        ng_run.close()
    assert EMULATOR_KEY not in ng_run.output


@pytest.mark.slow
@pytest.mark.parametrize(
    ("env", "exit_code", "fragments"),
    [
        ({"policy_api_key": "sk-proj-0123456789abcdef"}, 2, ["should start with `sk-or-`", "OpenRouter dashboard"]),
        ({"policy_model_name": "gpt-4-turbo"}, 2, ["provider/model-name", "catalog"]),
        (
            {"policy_api_key": "sk-or-v1-revoked-key-000000"},
            1,
            ["rejected the API key", "User not found", "starts with `sk-or-`"],
        ),
        ({"policy_model_name": "openai/gpt-4-trubo"}, 1, ["Model not available", "did you mean openai/gpt-4-turbo"]),
    ],
)
def test_troubleshooting_cases_stop_ng_run_with_the_seeds_advice(
    emulator_url: tuple[OpenRouterEmulator, str], tmp_path: Path, env: dict, exit_code: int, fragments: list[str]
) -> None:
    _emulator, url = emulator_url
    workdir = workdir_with_env(tmp_path, url, **env)
    result = subprocess.run(["ng_run", SEED_CONFIG_PATHS], cwd=workdir, capture_output=True, text=True, timeout=90)
    assert result.returncode == exit_code, result.stdout[-2000:] + result.stderr[-2000:]
    text = result.stdout + result.stderr
    for fragment in fragments:
        assert fragment in text
    assert "Traceback" not in text
    assert str(env.get("policy_api_key", EMULATOR_KEY)) not in text


@pytest.mark.slow
def test_a_key_with_no_credits_left_is_caught_before_any_rollout(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], credits_usd=0.0))
    with serve_in_thread(emulator.app()) as url:
        workdir = workdir_with_env(tmp_path, url + "/api/v1")
        result = subprocess.run(["ng_run", SEED_CONFIG_PATHS], cwd=workdir, capture_output=True, text=True, timeout=90)
    assert result.returncode == 1
    assert "no credits left" in result.stdout + result.stderr


def test_a_key_revoked_mid_run_stops_the_run_with_what_to_check(emulator: OpenRouterEmulator, tmp_path: Path) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", 50)
    with emulated_cluster(emulator, retry=FAST_RETRY) as config:
        emulator.config.keys[:] = ["sk-or-v1-someone-else"]  # revoked after the preflight passed
        with pytest.raises(RunStopped) as stopped:
            collect_rows(config, rows, tmp_path / "out.jsonl", num_samples_in_parallel=2)
    message = str(stopped.value)
    assert "401" in message and "User not found" in message and "policy_api_key" in message
    assert EMULATOR_KEY not in message


def test_provider_preferences_and_attribution_headers_reach_openrouter(
    emulator: OpenRouterEmulator, tmp_path: Path
) -> None:
    rows = write_rows(tmp_path / "rows.jsonl", 1)
    with emulated_cluster(
        emulator,
        extra_body={"provider": {"only": ["openai"], "allow_fallbacks": False}},
        headers={"HTTP-Referer": "https://example.org", "X-Title": "weather-evals"},
    ) as config:
        collect_rows(config, rows, tmp_path / "out.jsonl")
    call = next(r for r in emulator.requests if r.path.endswith("/chat/completions"))
    assert call.body["provider"] == {"only": ["openai"], "allow_fallbacks": False}
    assert call.headers["http-referer"] == "https://example.org" and call.headers["x-title"] == "weather-evals"
    assert records_of(tmp_path / "out.jsonl")[0]["response"]["nemo_gym"]["turns"][0]["provider"] == "OpenAI"
