"""`ng_dump_config`: prints the merged, resolved configuration as YAML, with every secret redacted."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from nemo_gym.cli.dump_config import main
from nemo_gym.config.paths import project_root
from nemo_gym.config.secrets import REDACTED

API_KEY = "sk-or-v1-abcdef123456"
BASE_URL = "https://openrouter.ai/api/v1"
MODEL = "meta-llama/llama-3.1-8b-instruct:free"
OPENAI_MODEL_YAML = project_root() / "responses_api_models/openai_model/configs/openai_model.yaml"
SIMPLE_WEATHER_YAML = project_root() / "resources_servers/simple_weather/configs/simple_weather.yaml"
# The seed's form, with the line continuation left inside the quotes.
CONFIG_PATHS = f"+config_paths=[{OPENAI_MODEL_YAML}, \\\n{SIMPLE_WEATHER_YAML}]"


@pytest.fixture
def workdir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "env.yaml").write_text(
        f"policy_base_url: {BASE_URL}\npolicy_api_key: {API_KEY}\npolicy_model_name: {MODEL}\n", encoding="utf-8"
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def dump(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[dict[str, Any], str]:
    main(list(args))
    out = capsys.readouterr().out
    return yaml.safe_load(out), out


def test_prints_the_resolved_config_as_yaml_without_the_key(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = dump(capsys, CONFIG_PATHS)

    model = data["policy_model"]["responses_api_models"]["openai_model"]
    assert model["base_url"] == BASE_URL
    assert model["model"] == MODEL
    assert model["api_key"] == REDACTED
    assert data["policy_api_key"] == REDACTED
    assert API_KEY not in out
    assert "${" not in out  # every interpolation is resolved


def test_prints_every_instance(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, _ = dump(capsys, CONFIG_PATHS)

    assert {"policy_model", "simple_weather", "simple_weather_simple_agent"} <= set(data)
    agent = data["simple_weather_simple_agent"]["responses_api_agents"]["simple_agent"]
    assert agent["model_server"] == {"type": "responses_api_models", "name": "policy_model"}
    assert agent["max_steps"] == 6


def test_command_line_overrides_show_up_and_their_secrets_do_not(
    workdir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    other_key = "sk-or-v1-from-the-command-line-999"

    data, out = dump(capsys, CONFIG_PATHS, "+policy_model_name=openai/gpt-4-turbo", f"+policy_api_key={other_key}")

    model = data["policy_model"]["responses_api_models"]["openai_model"]
    assert model["model"] == "openai/gpt-4-turbo"
    assert model["api_key"] == REDACTED
    assert other_key not in out
    assert API_KEY not in out


def test_secrets_echoed_in_other_values_are_redacted(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, out = dump(capsys, CONFIG_PATHS, "+note=the key is ${policy_api_key}")

    assert data["note"] == f"the key is {REDACTED}"
    assert API_KEY not in out


def test_a_config_error_exits_2_with_the_message_on_stderr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no env.yaml: the seed's ${policy_base_url} cannot resolve

    with pytest.raises(SystemExit) as info:
        main([f"+config_paths=[{OPENAI_MODEL_YAML}]"])

    captured = capsys.readouterr()
    assert info.value.code == 2
    assert captured.out == ""
    assert captured.err.startswith("error: ")
    assert "policy_base_url" in captured.err
    assert "env.yaml" in captured.err


def test_an_unparsable_override_does_not_echo_a_key(workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["+policy_api_key=[sk-or-v1-typed-on-the-command-line"])

    err = capsys.readouterr().err
    assert "error: " in err
    assert "sk-or-v1-typed-on-the-command-line" not in err


def test_the_installed_console_script_works(workdir: Path) -> None:
    script = Path(sys.executable).with_name("ng_dump_config")
    command = str(script) if script.exists() else shutil.which("ng_dump_config")
    assert command, "the ng_dump_config console script is not installed; run pip install -e ."

    result = subprocess.run(
        [command, CONFIG_PATHS, "+head_server.port=12345"],
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if not k.startswith("PYTEST_")},
        check=False,
    )

    assert result.returncode == 0, result.stderr
    data = yaml.safe_load(result.stdout)
    assert data["policy_model"]["responses_api_models"]["openai_model"]["base_url"] == BASE_URL
    assert data["policy_model"]["responses_api_models"]["openai_model"]["model"] == MODEL
    assert data["head_server"] == {"port": 12345}
    assert API_KEY not in result.stdout
    assert API_KEY not in result.stderr
