"""Servers listen on 127.0.0.1 unless told otherwise; telling them otherwise is allowed but never silent: ng_run and
the emulator print one warning line on stderr per server that other machines can reach."""

from __future__ import annotations

import io
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nemo_gym.config.paths import project_root
from nemo_gym.config.types import GlobalConfig
from nemo_gym.servers.base import BaseServerConfig
from nemo_gym.servers.binding import exposed, is_loopback, warn_if_exposed
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.cluster import openai_model_block, simple_weather_blocks
from nemo_gym.testing.stub_upstream import StubUpstream

CONFIG_PATHS = (
    "+config_paths=[responses_api_models/openai_model/configs/openai_model.yaml, "
    "resources_servers/simple_weather/configs/simple_weather.yaml]"
)
REACHABLE = "reachable from other machines"


def test_servers_bind_loopback_unless_configured_otherwise() -> None:
    assert BaseServerConfig().host == "127.0.0.1"
    assert GlobalConfig(data={}).head_host == "127.0.0.1"


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "localhost", "LOCALHOST", "::1", "[::1]"])
def test_loopback_addresses(host: str) -> None:
    assert is_loopback(host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20", "10.0.0.5", "example.org", "my-laptop"])
def test_addresses_other_machines_can_reach(host: str) -> None:
    assert not is_loopback(host)


def config_with(*, weather_host: str | None = None, head_host: str | None = None) -> GlobalConfig:
    data = {"policy_model": openai_model_block("http://127.0.0.1:1/v1"), **simple_weather_blocks()}
    if weather_host is not None:
        data["simple_weather"]["resources_servers"]["simple_weather"]["host"] = weather_host
    if head_host is not None:
        data["head_server"] = {"host": head_host}
    return GlobalConfig(data=data)


def test_a_default_config_exposes_nothing() -> None:
    assert exposed(config_with()) == []
    assert exposed(config_with(weather_host="localhost", head_host="127.0.0.1")) == []


def test_each_exposed_server_is_named_with_its_host() -> None:
    found = exposed(config_with(weather_host="0.0.0.0", head_host="::"))

    assert found == [
        ("the head server (head_server.host)", "::"),
        ("instance 'simple_weather' (resources_servers/simple_weather)", "0.0.0.0"),
    ]


def test_the_warning_is_one_line_per_exposed_server() -> None:
    stream = io.StringIO()

    warn_if_exposed(config_with(weather_host="0.0.0.0"), stream=stream)

    (line,) = stream.getvalue().splitlines()
    assert line.startswith("ng_run: warning: instance 'simple_weather'")
    assert "binds 0.0.0.0" in line and REACHABLE in line


# ------------------------------------------------------------------ the commands, as a user runs them


@pytest.fixture
def workdir(tmp_path: Path) -> Iterator[Path]:
    upstream = StubUpstream(api_key="sk-test-binding-0001")
    with serve_in_thread(upstream.app()) as url:
        env = {
            "policy_base_url": url + "/v1",
            "policy_api_key": "sk-test-binding-0001",
            "policy_model_name": "stub/weather-model",
            "head_server": {"port": free_port()},
        }
        (tmp_path / "env.yaml").write_text(yaml.safe_dump(env))
        for folder in ("responses_api_models", "resources_servers", "responses_api_agents"):
            (tmp_path / folder).symlink_to(project_root() / folder)
        yield tmp_path


def run_until_ready(command: list[str], workdir: Path, ready: str) -> tuple[str, str]:
    """(stdout, stderr) of `command` from its start until `ready` shows on stdout and Ctrl-C has stopped it."""
    stderr_path = workdir / "stderr.log"
    process = CommandProcess(["bash", "-c", f'exec "$@" 2>{stderr_path}', "bash", *command], cwd=workdir)
    try:
        assert process.wait_for(ready, timeout_s=90), process.output + stderr_path.read_text()
        process.send(signal.SIGINT, group=True)
        assert process.wait(timeout_s=30) == 0
    finally:
        process.close()
    return process.output, stderr_path.read_text()


@pytest.mark.slow
def test_ng_run_warns_on_stderr_about_an_instance_bound_to_all_interfaces(workdir: Path) -> None:
    _stdout, stderr = run_until_ready(
        ["ng_run", CONFIG_PATHS, "+simple_weather.resources_servers.simple_weather.host=0.0.0.0"],
        workdir,
        "ng_run ready",
    )

    warnings = [line for line in stderr.splitlines() if "warning:" in line]
    assert len(warnings) == 1, stderr
    assert "'simple_weather'" in warnings[0] and "0.0.0.0" in warnings[0] and REACHABLE in warnings[0]


@pytest.mark.slow
def test_ng_run_on_loopback_prints_no_warning(workdir: Path) -> None:
    stdout, stderr = run_until_ready(["ng_run", CONFIG_PATHS], workdir, "ng_run ready")

    assert REACHABLE not in stdout + stderr


@pytest.mark.parametrize(("host", "warned"), [("0.0.0.0", True), ("127.0.0.1", False)])
def test_the_emulator_warns_when_it_binds_beyond_loopback(tmp_path: Path, host: str, warned: bool) -> None:
    stdout, stderr = run_until_ready(
        ["ng_openrouter_emulator", f"+host={host}", f"+port={free_port()}"], tmp_path, "ng_openrouter_emulator ready"
    )

    assert (REACHABLE in stderr) is warned
    assert REACHABLE not in stdout
    if warned:
        assert "ng_openrouter_emulator: warning: the emulator binds 0.0.0.0" in stderr
