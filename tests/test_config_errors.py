"""Nothing silently ignored, nothing leaked, nothing as a traceback: misspelled top-level keys are refused with
did-you-mean, YAML syntax errors quote their line without its secret, and files that are not UTF-8 (config or
input) are reported with file:line and the fix.

Each test writes its own files under `tmp_path` (its working directory: no developer's env.yaml is read) and runs the
real loader, `read_rows`, or the installed command as a subprocess on this checkout's code.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
from pathlib import Path

import pytest

from nemo_gym.collection.collector import CollectionSettings
from nemo_gym.collection.inputs import InputError, read_rows, row_hash
from nemo_gym.compare.plan import ComparisonSettings
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.loading import load_global_config
from nemo_gym.config.paths import project_root
from nemo_gym.config.secrets import REDACTED
from nemo_gym.servers.processes import free_port
from nemo_gym.upstream.model_listing import ModelsSettings

OPENAI_MODEL_YAML = str(project_root() / "responses_api_models/openai_model/configs/openai_model.yaml")
SIMPLE_WEATHER_YAML = str(project_root() / "resources_servers/simple_weather/configs/simple_weather.yaml")
CONFIG_PATHS = f"+config_paths=[{OPENAI_MODEL_YAML}, {SIMPLE_WEATHER_YAML}]"
HEX = secrets.token_hex(6)
HF_TOKEN = f"hf_LEAKCANARY{HEX}"
PASSWORD = "plainpassword123"
GOOD_ROW = {"responses_create_params": {"input": "What's the weather in Paris?"}}


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load_error(tmp_path: Path, *args: str) -> str:
    with pytest.raises(ConfigError) as info:
        load_global_config(list(args), cwd=tmp_path)
    return str(info.value)


def command(cwd: Path, *argv: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    """The installed command as a subprocess, running this checkout's code."""
    paths = [str(project_root()), os.environ.get("PYTHONPATH", "")]
    environ = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
    return subprocess.run(list(argv), cwd=cwd, env=environ, capture_output=True, text=True, timeout=timeout_s)


def seed_env_yaml(tmp_path: Path, extra: str = "") -> None:
    """env.yaml for the seed configs, with a head port of its own and an endpoint nothing listens on."""
    write(
        tmp_path / "env.yaml",
        f"policy_base_url: http://127.0.0.1:{free_port()}/v1\npolicy_api_key: sk-test-config-errors\n"
        f"policy_model_name: openai/gpt-4-turbo\nhead_server: {{port: {free_port()}}}\n" + extra,
    )


# --------------------------------------------------------------------------- misspelled top-level keys


@pytest.mark.parametrize(
    ("override", "key", "fix"),
    [
        ("+head_servr.port=12000", "'head_servr'", "did you mean +head_server.port=12000?"),
        ("+headserver.host=127.0.0.2", "'headserver'", "did you mean +head_server.host=127.0.0.2?"),
        ("+Head_Server.port=12000", "'Head_Server'", "did you mean +head_server.port=12000?"),
        ("+startup_timout_s=5", "'startup_timout_s'", "did you mean +startup_timeout_s=5?"),
        ("+startup_timeout=5", "'startup_timeout'", "did you mean +startup_timeout_s=5?"),
        ("+ray_adress=local", "'ray_adress'", "did you mean +ray_address=local?"),
        ("+config_path=[conf.yaml]", "'config_path'", "did you mean +config_paths=[conf.yaml]?"),
        ("+head_server.prot=12000", "'head_server.prot'", "did you mean +head_server.port=12000?"),
        ("+head_server.hots=127.0.0.1", "'head_server.hots'", "did you mean +head_server.host=127.0.0.1?"),
        ("+head_server.workers=2", "'head_server.workers'", "head_server takes only host and port"),
    ],
)
def test_a_misspelled_top_level_key_on_the_command_line_is_refused(
    tmp_path: Path, override: str, key: str, fix: str
) -> None:
    message = load_error(tmp_path, override)

    assert f"Unknown top-level key {key}" in message or f"Unknown key {key}" in message, message
    assert f"(from the command line: {override})" in message
    assert fix in message


@pytest.mark.parametrize(
    ("text", "where", "fix"),
    [
        (
            "head_servr: {port: 12000}\n",
            "Unknown top-level key 'head_servr' (from {file})",
            "did you mean 'head_server'?",
        ),
        ("startup_timout_s: 5\n", "Unknown top-level key 'startup_timout_s' (from {file})", "did you mean"),
        ("head_server: {port: 12000, hots: 127.0.0.1}\n", "Unknown key 'head_server.hots' (from {file})", "`host:`"),
    ],
)
@pytest.mark.parametrize("file", ["env.yaml", "conf.yaml", "included.yaml"])
def test_a_misspelled_top_level_key_in_a_file_names_that_file(
    tmp_path: Path, text: str, where: str, fix: str, file: str
) -> None:
    write(tmp_path / file, text)
    if file != "conf.yaml":
        write(tmp_path / "conf.yaml", "config_paths: [included.yaml]\n" if file == "included.yaml" else "a: 1\n")

    message = load_error(tmp_path, "+config_paths=[conf.yaml]")

    assert where.format(file=file) in message, message
    assert fix in message
    if "top-level" in where:
        bad = text.split(":", 1)[0]
        assert f"Rename `{bad}:` to `" in message and f"in {file}." in message


def test_every_misspelled_key_is_named_with_its_own_source(tmp_path: Path) -> None:
    write(tmp_path / "env.yaml", "ray_adress: local\n")

    message = load_error(tmp_path, "+head_servr.port=12000")

    assert "Unknown top-level key 'ray_adress' (from env.yaml)" in message
    assert "Unknown top-level key 'head_servr' (from the command line: +head_servr.port=12000)" in message


def test_a_secret_under_a_misspelled_key_is_not_shown(tmp_path: Path) -> None:
    message = load_error(tmp_path, f"+head_servr.api_key={HF_TOKEN}")

    assert "did you mean +head_server.api_key=...?" in message
    assert HF_TOKEN not in message


NOT_TYPOS = (
    # An instance may have any name.
    "head_servers:\n  resources_servers:\n    simple_weather: {entrypoint: app.py}\n"
    # Values of the user's own, used by interpolations.
    "ray_addresses: [a, b]\nconfig_path: /data\nnotes: {clusters: '${ray_addresses}', where: '${config_path}/x'}\n"
    # Names not that close to an own key, or an own key's last words.
    "timeout_s: 30\nserver: x\nhead: 1\naddress: 127.0.0.1\nconfig_files: []\npaths: []\n"
)


def test_only_the_typo_is_refused_among_names_close_to_own_keys(tmp_path: Path) -> None:
    write(tmp_path / "conf.yaml", NOT_TYPOS)

    message = load_error(tmp_path, "+config_paths=[conf.yaml]", "+startup_timout_s=5")

    assert message.count("Unknown") == 1 and "'startup_timout_s'" in message, message
    data = load_global_config(["+config_paths=[conf.yaml]"], cwd=tmp_path).data
    assert set(data) >= {line.split(":")[0] for line in NOT_TYPOS.splitlines() if not line.startswith(" ")}


def test_the_settings_of_the_commands_that_load_the_config_are_not_taken_for_typos(tmp_path: Path) -> None:
    names = (
        set(CollectionSettings.model_fields) | set(ComparisonSettings.model_fields) | set(ModelsSettings.model_fields)
    )

    message = load_error(tmp_path, *(f"+{name}=1" for name in sorted(names)), "+ray_adress=local")

    assert message.count("Unknown") == 1 and "'ray_adress'" in message, message


def test_no_repository_config_is_taken_for_a_typo(tmp_path: Path) -> None:
    files = sorted(
        path
        for folder in ("responses_api_models", "resources_servers", "responses_api_agents")
        for path in (project_root() / folder).glob("*/configs/*.yaml")
    )
    assert len(files) >= 3
    for path in files:
        message = load_error(tmp_path, f"+config_paths=[{path}]", "+head_servr.port=12000")

        assert message.count("Unknown") == 1 and "'head_servr'" in message, f"{path}: {message}"


def test_ng_run_refuses_a_misspelled_head_server_before_starting_anything(tmp_path: Path) -> None:
    seed_env_yaml(tmp_path)
    port = free_port()

    result = command(tmp_path, "ng_run", CONFIG_PATHS, f"+head_servr.port={port}", timeout_s=60)

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"did you mean +head_server.port={port}?" in result.stderr
    assert "Traceback" not in result.stderr and "ready" not in result.stdout


def test_ng_collect_rollouts_refuses_a_misspelled_head_server(tmp_path: Path) -> None:
    write(tmp_path / "in.jsonl", json.dumps(GOOD_ROW) + "\n")

    result = command(
        tmp_path,
        "ng_collect_rollouts",
        "+agent_name=simple_weather_simple_agent",
        "+input_jsonl_fpath=in.jsonl",
        "+output_jsonl_fpath=out.jsonl",
        "+head_sever.port=12000",
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert "Unknown top-level key 'head_sever' (from the command line: +head_sever.port=12000)" in result.stderr
    assert "did you mean +head_server.port=12000?" in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


# --------------------------------------------------------------------------- YAML syntax errors never quote a secret

BROKEN_ENV_YAMLS = [
    pytest.param(
        f"policy_base_url: http://127.0.0.1:9/v1\npolicy_api_key: {HF_TOKEN}: extra\n",
        "env.yaml:2:",
        "policy_api_key: " + REDACTED,
        id="the broken line holds the secret",
    ),
    pytest.param(
        f"policy_model_name: m\n\tdb_password: {PASSWORD}\n",
        "env.yaml:2:1:",
        "db_password: " + REDACTED,
        id="a secret on a tab-indented line",
    ),
    pytest.param(
        f"db_password: {PASSWORD}\nnotes: [a, b\nmotto: {PASSWORD} again\n",
        "env.yaml:3:",
        f"motto: {REDACTED} again",
        id="a secret read by value, quoted on another key's broken line",
    ),
    pytest.param(
        f"API_KEYS:\n  - {HF_TOKEN}\n  - {HF_TOKEN}b: extra: x\n",
        "env.yaml:3:",
        f"  {REDACTED}",
        id="a line continuing a list of secrets",
    ),
    pytest.param(
        f"policy_model: {{Token: '{PASSWORD}': x}}\n",
        "env.yaml:1:",
        f"policy_model: {{Token: {REDACTED}",
        id="a secret in a flow mapping",
    ),
    pytest.param(
        f"policy_model_name: m\nhf_token: {HF_TOKEN}\x07\n",
        "env.yaml:2:",
        f"hf_token: {REDACTED}",
        id="a control character after the secret",
    ),
]


@pytest.mark.parametrize(("text", "where", "shown"), BROKEN_ENV_YAMLS)
def test_a_yaml_syntax_error_points_at_the_line_without_its_secret(
    tmp_path: Path, text: str, where: str, shown: str
) -> None:
    write(tmp_path / "env.yaml", text)

    message = load_error(tmp_path)

    assert where in message and "not valid YAML" in message, message
    assert shown in message
    quoted, caret = message.split("\n")[1:3]
    assert caret.strip() == "^" and quoted.strip()
    assert "LEAKCANARY" not in message and HEX not in message and PASSWORD not in message


@pytest.mark.parametrize("cli", ["ng_dump_config", "ng_run"])
def test_the_commands_show_a_broken_env_yaml_without_its_secret(tmp_path: Path, cli: str) -> None:
    write(tmp_path / "env.yaml", f"db_password: {PASSWORD}\npolicy_api_key:\t{HF_TOKEN}: x\n")

    result = command(tmp_path, cli, CONFIG_PATHS)

    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "env.yaml:2:" in result.stderr and "^" in result.stderr and REDACTED in result.stderr
    assert "LEAKCANARY" not in output and HEX not in output and PASSWORD not in output
    assert "Traceback" not in output


def test_an_env_yaml_that_is_not_utf8_is_reported_without_a_traceback(tmp_path: Path) -> None:
    write(tmp_path / "env.yaml", b"policy_model_name: m\ndb_password: caf\xe9" + PASSWORD.encode() + b"\n")

    result = command(tmp_path, "ng_dump_config", CONFIG_PATHS)

    assert result.returncode == 2, result.stdout + result.stderr
    assert "env.yaml:2:17: not UTF-8: byte 0xe9 at byte offset 37" in result.stderr
    assert "iconv -f latin1 -t utf-8" in result.stderr
    assert PASSWORD not in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- input rows that are not UTF-8


def latin1_rows(tmp_path: Path) -> tuple[Path, int]:
    """in.jsonl: a UTF-8 row, then two rows written as Latin-1; and the byte offset of the first bad byte."""
    good = (json.dumps(GOOD_ROW) + "\n").encode()
    bad = '{"responses_create_params": {"input": "Météo à Zürich ?"}}\n'.encode("latin-1")
    path = write(tmp_path / "in.jsonl", good + bad + bad)
    return path, len(good) + bad.index(b"\xe9")


def test_read_rows_reports_bytes_that_are_not_utf8_with_line_offset_and_fix(tmp_path: Path) -> None:
    path, offset = latin1_rows(tmp_path)

    with pytest.raises(InputError) as info:
        read_rows(path)

    message = str(info.value)
    assert f"{path}:2: not UTF-8: byte 0xe9 at byte offset {offset}" in message
    assert "lines that are not UTF-8: 2, 3" in message
    assert f"iconv -f latin1 -t utf-8 {path} > {tmp_path / 'in.utf8.jsonl'}" in message
    assert f"+input_jsonl_fpath={tmp_path / 'in.utf8.jsonl'}" in message
    converted = tmp_path / "in.utf8.jsonl"  # what the iconv line writes
    converted.write_text(path.read_bytes().decode("latin-1"), encoding="utf-8")
    inputs = [row["responses_create_params"]["input"] for row in read_rows(converted)]
    assert inputs == ["What's the weather in Paris?", "Météo à Zürich ?", "Météo à Zürich ?"]


def test_a_file_mixing_utf8_and_latin1_warns_against_converting_it_whole(tmp_path: Path) -> None:
    utf8 = '{"responses_create_params": {"input": "Zürich"}}\n'.encode()
    latin1 = '{"responses_create_params": {"input": "Zürich"}}\n'.encode("latin-1")
    path = write(tmp_path / "in.jsonl", utf8 + latin1)

    with pytest.raises(InputError, match=r"1 other line is already UTF-8 .* convert only the lines listed"):
        read_rows(path)


def test_ng_collect_rollouts_reports_a_non_utf8_input_without_a_traceback(tmp_path: Path) -> None:
    _, offset = latin1_rows(tmp_path)

    result = command(
        tmp_path,
        "ng_collect_rollouts",
        "+agent_name=simple_weather_simple_agent",
        "+input_jsonl_fpath=in.jsonl",
        "+output_jsonl_fpath=out.jsonl",
        f"+head_server.port={free_port()}",
    )

    assert result.returncode == 2, result.stdout + result.stderr
    assert f"in.jsonl:2: not UTF-8: byte 0xe9 at byte offset {offset}" in result.stderr
    assert "iconv -f latin1 -t utf-8" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out.jsonl").exists()


@pytest.mark.parametrize("separator", ["\u2028", "\u2029", "\u0085"])
def test_a_row_holding_a_unicode_line_separator_is_one_row(tmp_path: Path, separator: str) -> None:
    row = {"responses_create_params": {"input": f"Weather in Paris?{separator}And in Lyon?"}}
    text = json.dumps(row, ensure_ascii=False) + "\r\n" + json.dumps(GOOD_ROW) + "\n"
    path = write(tmp_path / "in.jsonl", text)

    rows = read_rows(path)

    assert rows == [row, GOOD_ROW]
    assert row_hash(rows[0]) == row_hash(row)
