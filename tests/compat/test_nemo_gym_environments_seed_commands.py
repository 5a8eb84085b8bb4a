"""The five environments written in NeMo Gym's style, through the seed's own commands as subprocesses: `ng_test` runs
each folder's own tests, one `ng_run` serves them all (with a separate judge model) on the OpenRouter emulator named
in env.yaml, and `ng_collect_rollouts` collects each one."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nemo_gym.config.paths import project_root
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread

pytestmark = pytest.mark.slow

ENVIRONMENTS = ("warehouse_inventory", "unit_conversion_chain", "meeting_scheduler", "mental_math", "rubric_judge")
KEY = "sk-or-v1-nemo-gym-style-seed-0000"
JUDGE_REPLIES = project_root() / "resources_servers/rubric_judge/data/judge_replies.jsonl"


@pytest.mark.parametrize("environment", ENVIRONMENTS)
def test_ng_test_runs_each_folders_own_tests(environment: str) -> None:
    done = subprocess.run(
        ["ng_test", f"+entrypoint=resources_servers/{environment}"],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "data check:" in done.stdout and " OK" in done.stdout
    assert " passed" in done.stdout and " failed" not in done.stdout


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    """env.yaml points the policy and the judge at one emulator, which plays the judge with scripted verdicts."""
    emulator = OpenRouterEmulator(
        EmulatorConfig(
            keys=[KEY],
            scripted_replies=[JUDGE_REPLIES],
            answer_keys=[project_root() / "resources_servers/mental_math/data/example.jsonl"],
        )
    )
    with serve_in_thread(emulator.app()) as url:
        env = {
            "policy_base_url": url + "/api/v1",
            "policy_api_key": KEY,
            "policy_model_name": "openai/gpt-4o-mini",
            "judge_base_url": url + "/api/v1",
            "judge_api_key": KEY,
            "judge_model_name": "meta-llama/llama-3.1-8b-instruct",
            "head_server": {"port": free_port()},
        }
        (tmp_path / "env.yaml").write_text(yaml.safe_dump(env))
        for folder in ("responses_api_models", "resources_servers", "responses_api_agents"):
            (tmp_path / folder).symlink_to(project_root() / folder)
        yield tmp_path


def test_ng_run_serves_them_and_ng_collect_rollouts_collects_each(workdir: Path) -> None:
    configs = [
        "responses_api_models/openai_model/configs/openai_model.yaml",
        "responses_api_models/openai_model/configs/judge_model.yaml",
        *(f"resources_servers/{name}/configs/{name}.yaml" for name in ENVIRONMENTS),
    ]
    ng_run = CommandProcess(["ng_run", f"+config_paths=[{', '.join(configs)}]"], cwd=workdir)
    try:
        assert ng_run.wait_for("ng_run ready", timeout_s=180), ng_run.output
        records: dict[str, list[dict]] = {}
        for name in ENVIRONMENTS:
            collect = subprocess.run(
                [
                    "ng_collect_rollouts",
                    f"+agent_name={name}_simple_agent",
                    f"+input_jsonl_fpath=resources_servers/{name}/data/example.jsonl",
                    f"+output_jsonl_fpath=results/{name}.jsonl",
                    "+limit=5",
                ],
                cwd=workdir,
                capture_output=True,
                text=True,
                timeout=300,
                stdin=subprocess.DEVNULL,
            )
            assert collect.returncode == 0, collect.stdout[-3000:] + collect.stderr[-3000:]
            records[name] = [json.loads(line) for line in (workdir / f"results/{name}.jsonl").read_text().splitlines()]
            assert len(records[name]) == 5
            assert all(r["error"] is None and 0.0 <= r["reward"] <= 1.0 for r in records[name]), name
    finally:
        ng_run.send(signal.SIGINT)
        ng_run.wait(timeout_s=30)

    judged = records["rubric_judge"]
    assert all(r["judge_cost_usd"] > 0 and r["judge_usage"]["calls"] == 1 for r in judged)
    assert all("meta-llama/llama-3.1-8b-instruct" in r["cost_by_model"] for r in judged)
    assert all(abs(r["cost_usd"] - r["usage"]["cost"] - r["judge_cost_usd"]) < 1e-9 for r in judged)
    metrics = json.loads((workdir / "results/rubric_judge.metrics.json").read_text())
    assert metrics["judge_cost_usd"] > 0 and metrics["judge_calls"] == 5

    math_metrics = json.loads((workdir / "results/mental_math.metrics.json").read_text())
    key_metrics = math_metrics["environment_metrics"]["mental_math_simple_agent"]["key_metrics"]
    assert any(name.startswith("pass@1") for name in key_metrics)
    assert records["warehouse_inventory"][0]["final_stock"] is not None
