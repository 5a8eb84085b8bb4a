"""ng_run as a process: config errors before anything starts, a dying child, and stopping on every signal."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import yaml

from nemo_gym.config.paths import project_root
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port
from nemo_gym.testing.processes import pid_alive

pytestmark = pytest.mark.slow

OPENAI_MODEL = str(project_root() / "responses_api_models/openai_model/configs/openai_model.yaml")
SIMPLE_WEATHER = str(project_root() / "resources_servers/simple_weather/configs/simple_weather.yaml")
CONFIG_PATHS = f"+config_paths=[{OPENAI_MODEL}, {SIMPLE_WEATHER}]"
AGENT_KEY = "simple_weather_simple_agent.responses_api_agents.simple_agent"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    env = {
        "policy_base_url": f"http://127.0.0.1:{free_port()}/v1",
        "policy_api_key": "sk-or-v1-ngrun-test-7777",
        "policy_model_name": "openai/gpt-4-turbo",
        "head_server": {"port": free_port()},
    }
    (tmp_path / "env.yaml").write_text(yaml.safe_dump(env))
    return tmp_path


def head_url(workdir: Path) -> str:
    return f"http://127.0.0.1:{yaml.safe_load((workdir / 'env.yaml').read_text())['head_server']['port']}"


def ng_run(workdir: Path, *args: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ng_run", *args], cwd=workdir, capture_output=True, text=True, timeout=60, **kwargs)


@pytest.fixture
def started(workdir: Path) -> Iterator[tuple[CommandProcess, dict[str, dict[str, object]]]]:
    process = CommandProcess(["ng_run", CONFIG_PATHS], cwd=workdir)
    try:
        assert process.wait_for("ng_run ready", timeout_s=90), process.output
        instances = httpx.get(head_url(workdir) + "/instances", timeout=5).json()["instances"]
        yield process, instances
    finally:
        process.close()


def wait_all_dead(pids: list[int], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not any(pid_alive(pid) for pid in pids):
            return True
        time.sleep(0.1)
    return False


def test_ready_prints_a_table_of_instances_and_every_server_is_healthy(started: tuple) -> None:
    process, instances = started
    assert set(instances) == {"policy_model", "simple_weather", "simple_weather_simple_agent"}
    for name, entry in instances.items():
        health = httpx.get(f"{entry['url']}/health", timeout=5).json()
        assert (health["status"], health["name"], health["pid"]) == ("ok", name, entry["pid"])
        assert any(name in line and str(entry["url"]) in line and str(entry["pid"]) in line for line in process.lines)


@pytest.mark.parametrize(("sig", "group"), [(signal.SIGINT, True), (signal.SIGTERM, False), (signal.SIGINT, False)])
def test_a_signal_stops_every_child_within_seconds(started: tuple, sig: signal.Signals, group: bool) -> None:
    process, instances = started
    pids = [int(entry["pid"]) for entry in instances.values()]
    process.send(sig, group=group)
    assert process.wait(timeout_s=20) == 0
    assert wait_all_dead(pids), "children outlived ng_run"
    assert "all servers stopped" in process.output


def test_sigint_stops_ng_run_even_when_started_in_the_background(workdir: Path) -> None:
    # A non-interactive shell starts `cmd &` with SIGINT ignored; ng_run must still stop on it.
    script = f'ng_run \'{CONFIG_PATHS}\' & echo "bgpid=$!"; wait $!; echo "ng_run_exit=$?"'
    process = CommandProcess(["bash", "-c", script], cwd=workdir)
    try:
        assert process.wait_for("ng_run ready", timeout_s=90), process.output
        pid = int(next(line for line in process.lines if line.startswith("bgpid=")).split("=")[1])
        children = [
            int(e["pid"]) for e in httpx.get(head_url(workdir) + "/instances", timeout=5).json()["instances"].values()
        ]
        os.kill(pid, signal.SIGINT)
        assert process.wait_for("ng_run_exit=0", timeout_s=20), process.output
        assert wait_all_dead([pid, *children])
    finally:
        process.close()


def test_killing_ng_run_leaves_no_orphans(started: tuple) -> None:
    process, instances = started
    pids = [int(entry["pid"]) for entry in instances.values()]
    process.send(signal.SIGKILL)
    process.wait(timeout_s=10)
    assert wait_all_dead(pids), "children must die with their parent (PR_SET_PDEATHSIG)"


def test_a_child_that_dies_is_reported_with_its_log_and_a_nonzero_exit(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = ng_run(workdir, CONFIG_PATHS, f"+simple_weather.resources_servers.simple_weather.port={port}")
    assert result.returncode == 1
    assert "server 'simple_weather'" in result.stderr and "exited while starting" in result.stderr
    assert "last" in result.stderr and "log lines of 'simple_weather'" in result.stderr
    assert "address already in use" in result.stderr.lower()


@pytest.mark.parametrize(
    ("extra", "expected"),
    [
        ([f"+{AGENT_KEY}.max_stepz=3"], ["simple_weather_simple_agent", "unknown key 'max_stepz'"]),
        (["+policy_model_name=null"], ["policy_model", "model"]),
        ([f"+{AGENT_KEY}.resources_server.name=weather_typo"], ["weather_typo", "simple_weather"]),
        (["+broken.not_a_server_type.simple_weather.entrypoint=app.py"], ["broken", "not_a_server_type"]),
    ],
)
def test_a_bad_config_fails_before_anything_starts(workdir: Path, extra: list[str], expected: list[str]) -> None:
    result = ng_run(workdir, CONFIG_PATHS, *extra)
    assert result.returncode == 2, result.stdout + result.stderr
    for text in expected:
        assert text in result.stderr
    assert "ready" not in result.stdout


def test_a_missing_env_value_names_the_key_and_how_to_set_it(tmp_path: Path) -> None:
    result = ng_run(tmp_path, CONFIG_PATHS)
    assert result.returncode == 2
    assert "policy_base_url" in result.stderr and "env.yaml" in result.stderr


def test_a_busy_head_port_is_an_actionable_error(workdir: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = ng_run(workdir, CONFIG_PATHS, f"+head_server.port={taken.getsockname()[1]}")
    assert result.returncode == 2
    assert "+head_server.port" in result.stderr
