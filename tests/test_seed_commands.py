"""The seed's commands, verbatim, as subprocesses: ng_run with its config paths (multi-line form included),
ng_collect_rollouts with its arguments and ng_test, against an OpenAI-compatible stub upstream named in env.yaml."""

from __future__ import annotations

import json
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from nemo_gym.config.paths import project_root
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.processes import pid_alive
from nemo_gym.testing.stub_upstream import StubUpstream

pytestmark = pytest.mark.slow

SECRET = "sk-or-v1-seed-e2e-0123456789abcdef"
SEED_NG_RUN = """config_paths="responses_api_models/openai_model/configs/openai_model.yaml, \\
resources_servers/simple_weather/configs/simple_weather.yaml"

ng_run "+config_paths=[${config_paths}]"
"""
SEED_COLLECT = """ng_collect_rollouts \\
  +agent_name=simple_weather_simple_agent \\
  +input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl \\
  +output_jsonl_fpath=results/openrouter_rollouts.jsonl \\
  +limit=10
"""


@pytest.fixture
def stub() -> Iterator[tuple[StubUpstream, str]]:
    upstream = StubUpstream(api_key=SECRET)
    with serve_in_thread(upstream.app()) as url:
        yield upstream, url


@pytest.fixture
def workdir(tmp_path: Path, stub: tuple[StubUpstream, str]) -> Path:
    """A working directory whose env.yaml points the seed's policy_* keys at the stub (head on a free port)."""
    env = {
        "policy_base_url": stub[1] + "/v1",
        "policy_api_key": SECRET,
        "policy_model_name": "meta-llama/llama-3.1-8b-instruct:free",
        "head_server": {"port": free_port()},
    }
    (tmp_path / "env.yaml").write_text(yaml.safe_dump(env))
    # The seed's relative paths name files of the repository; make them resolvable from this directory.
    for folder in ("responses_api_models", "resources_servers", "responses_api_agents"):
        (tmp_path / folder).symlink_to(project_root() / folder)
    return tmp_path


def test_seed_quickstart_runs_verbatim(workdir: Path, stub: tuple[StubUpstream, str]) -> None:
    upstream, _url = stub
    ng_run = CommandProcess(["bash", "-c", SEED_NG_RUN], cwd=workdir)
    try:
        assert ng_run.wait_for("ng_run ready", timeout_s=90), ng_run.output
        head_port = yaml.safe_load((workdir / "env.yaml").read_text())["head_server"]["port"]
        instances = httpx.get(f"http://127.0.0.1:{head_port}/instances", timeout=5).json()["instances"]
        assert set(instances) == {"policy_model", "simple_weather", "simple_weather_simple_agent"}
        assert all(entry["url"].startswith("http://127.0.0.1:") for entry in instances.values())

        collect = subprocess.run(["bash", "-c", SEED_COLLECT], cwd=workdir, capture_output=True, text=True, timeout=180)
        assert collect.returncode == 0, collect.stdout + collect.stderr
        output = workdir / "results" / "openrouter_rollouts.jsonl"
        records = [json.loads(line) for line in output.read_text().splitlines()]
        assert len(records) == 10
        assert all(r["error"] is None and 0.0 <= r["reward"] <= 1.0 for r in records)
        assert len({r["reward"] for r in records}) > 1
        assert "mean_reward" in collect.stdout
        metrics = json.loads((workdir / "results" / "openrouter_rollouts.metrics.json").read_text())
        assert metrics["rollouts"] == 10 and metrics["succeeded"] == 10

        chat_calls = [(h, b) for p, h, b in upstream.requests if p == "/v1/chat/completions"]
        assert chat_calls, "the model server must call the upstream's Chat Completions API"
        assert all(h["authorization"] == f"Bearer {SECRET}" for h, _ in chat_calls)
        assert all(b["model"] == "meta-llama/llama-3.1-8b-instruct:free" for _, b in chat_calls)

        config_dump = httpx.get(f"http://127.0.0.1:{head_port}/config", timeout=5).text
        assert "meta-llama/llama-3.1-8b-instruct:free" in config_dump and SECRET not in config_dump

        ng_run.send(signal.SIGINT, group=True)  # what Ctrl-C in a terminal does
        assert ng_run.wait(timeout_s=30) == 0
        assert not any(pid_alive(entry["pid"]) for entry in instances.values())
        for text in (ng_run.output, collect.stdout, collect.stderr, output.read_text()):
            assert SECRET not in text
    finally:
        ng_run.close()


def test_seed_ng_test_runs_the_model_servers_tests() -> None:
    result = subprocess.run(
        ["ng_test", "+entrypoint=responses_api_models/openai_model"],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert " passed" in result.stdout


def test_ng_test_returns_the_failing_exit_code(tmp_path: Path) -> None:
    server = tmp_path / "my_server"
    (server / "tests").mkdir(parents=True)
    (server / "tests" / "test_fails.py").write_text("def test_fails():\n    assert 1 == 2\n")
    result = subprocess.run(["ng_test", f"+entrypoint={server}"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1, result.stdout + result.stderr


def test_ng_test_without_tests_folder_says_what_to_pass(tmp_path: Path) -> None:
    result = subprocess.run(["ng_test", f"+entrypoint={tmp_path}"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "has no tests/ folder" in result.stderr
