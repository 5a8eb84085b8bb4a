"""`ng_init_resources_server`: the scaffold it writes works unchanged, through ng_test, ng_run on the OpenRouter
emulator and ng_collect_rollouts, and bad names or an existing folder are refused with a clear message."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from nemo_gym.cli.init_resources_server import main
from nemo_gym.config.paths import project_root
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.scaffold import MAX_NAME_LENGTH, TEMPLATE_DIR, class_name, render
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.emulated import EMULATOR_KEY

NAME = "scaffolded_env"
FILES = ["README.md", "__init__.py", "app.py", f"configs/{NAME}.yaml", "data/example.jsonl", f"tests/test_{NAME}.py"]
# What the emulator's scripted model (one call per capitalised name in the question) earns on each example row.
EMULATOR_REWARDS = {
    "000": 1.0,
    "001": 1.0,
    "002": 1.0,
    "003": 1.0,
    "004": 1.0,
    "005": 1.0,
    "006": 0.0,  # "what is the capital of peru?": no capitalised name, no call, no answer
    "007": 0.5,  # "Is Canberra the capital of australia?": the answer is in the question
    "008": 0.0,  # the country only through its largest city: the wrong lookup
}


def run(argv: list[str], cwd: Path, timeout_s: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=timeout_s, stdin=subprocess.DEVNULL)


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A working directory with a fresh scaffold in resources_servers/<NAME>/, made by the console script."""
    cwd = tmp_path_factory.mktemp("workdir")
    result = run(["ng_init_resources_server", NAME], cwd)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"Created resources_servers/{NAME}/" in result.stdout
    assert f"ng_test +entrypoint=resources_servers/{NAME}" in result.stdout
    return cwd


# ---------------------------------------------------------------------------------------------- what it writes


def test_the_scaffold_has_every_file_with_every_placeholder_filled(workdir: Path) -> None:
    folder = workdir / "resources_servers" / NAME
    assert sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) == sorted(FILES)
    for relative in FILES:
        text = (folder / relative).read_text(encoding="utf-8")
        assert not re.search(r"\{\{\s*\w+\s*\}\}", text), relative
    assert "class ScaffoldedEnvServer(BaseResourcesServer):" in (folder / "app.py").read_text()
    assert not list(workdir.glob("resources_servers/.*")), "no staging folder is left behind"


def test_the_config_defines_the_server_and_its_agent(workdir: Path) -> None:
    config = yaml.safe_load((workdir / "resources_servers" / NAME / "configs" / f"{NAME}.yaml").read_text())
    assert config[NAME] == {"resources_servers": {NAME: {"entrypoint": "app.py"}}}
    agent = config[f"{NAME}_simple_agent"]["responses_api_agents"]["simple_agent"]
    assert agent["resources_server"] == {"type": "resources_servers", "name": NAME}
    assert agent["model_server"] == {"type": "responses_api_models", "name": "policy_model"}


def test_the_example_data_carries_the_expected_fields(workdir: Path) -> None:
    lines = (workdir / "resources_servers" / NAME / "data" / "example.jsonl").read_text().splitlines()
    rows = [json.loads(line) for line in lines]
    assert len(rows) >= 5
    app = (workdir / "resources_servers" / NAME / "app.py").read_text()
    assert 'row_fields: ClassVar[tuple[str, ...]] = ("expected_country", "expected_capital")' in app
    assert all(row["expected_country"] and row["expected_capital"] for row in rows)
    assert [row["id"] for row in rows] == [f"{NAME}-{i:03d}" for i in range(len(rows))]


@pytest.mark.parametrize("check", [["check"], ["format", "--check"]], ids=["lint", "format"])
def test_the_generated_code_passes_the_projects_ruff_checks(workdir: Path, check: list[str]) -> None:
    # The project's settings, as for a folder inside the repository (nemo_gym is first-party there): a scaffold
    # added to the repository passes CI's `ruff check .` and `ruff format --check .` untouched.
    folder = workdir / "resources_servers" / NAME
    config = ["--config", str(project_root() / "pyproject.toml")]
    result = run([sys.executable, "-m", "ruff", *check, "--no-cache", *config, str(folder)], project_root())
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_ng_test_passes_on_the_unchanged_scaffold(workdir: Path) -> None:
    result = run(["ng_test", f"+entrypoint=resources_servers/{NAME}"], workdir)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "data check: 9 rows in 1 file OK" in result.stdout
    assert re.search(r"\b\d+ passed\b", result.stdout)


# ---------------------------------------------------------------------------------------------- served for real


@pytest.fixture
def emulator_url() -> Iterator[str]:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY]))
    with serve_in_thread(emulator.app()) as url:
        yield url


@pytest.mark.slow
def test_ng_run_serves_it_and_ng_collect_rollouts_scores_every_row(workdir: Path, emulator_url: str) -> None:
    head = f"+head_server.port={free_port()}"
    ng_run = CommandProcess(
        [
            "ng_run",
            f"+config_paths=[responses_api_models/openai_model/configs/openai_model.yaml, "
            f"resources_servers/{NAME}/configs/{NAME}.yaml]",
            f"+policy_base_url={emulator_url}/api/v1",
            f"+policy_api_key={EMULATOR_KEY}",
            "+policy_model_name=openai/gpt-4o-mini",
            head,
        ],
        cwd=workdir,
    )
    try:
        assert ng_run.wait_for("ng_run ready", timeout_s=120), ng_run.output
        collect = run(
            [
                "ng_collect_rollouts",
                f"+agent_name={NAME}_simple_agent",
                f"+input_jsonl_fpath=resources_servers/{NAME}/data/example.jsonl",
                "+output_jsonl_fpath=results/rollouts.jsonl",
                head,
            ],
            workdir,
        )
        assert collect.returncode == 0, collect.stdout[-3000:] + collect.stderr[-3000:]
        records = [json.loads(line) for line in (workdir / "results" / "rollouts.jsonl").read_text().splitlines()]
        assert all(r["error"] is None for r in records), records
        rewards = {r["input"]["id"].removeprefix(f"{NAME}-"): r["reward"] for r in records}
        assert len(records) == len(rewards) == len(EMULATOR_REWARDS)
        assert rewards == EMULATOR_REWARDS
        ng_run.send(signal.SIGINT, group=True)
        assert ng_run.wait(timeout_s=30) == 0, ng_run.output
    finally:
        ng_run.close()


# ---------------------------------------------------------------------------------------------- refusals


def scaffold_in(
    cwd: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], *args: str
) -> tuple[int, str, str]:
    """Run the command's main in `cwd`: its exit status (0 if it returned), stdout and stderr."""
    monkeypatch.chdir(cwd)
    try:
        main(list(args))
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("MyEnv", "'MyEnv' is not a valid environment name: it must be a lowercase Python identifier"),
        ("my-env", "Use a name such as 'my_env'"),
        ("1env", "starting with a letter"),
        ("class", "not a keyword"),
        ("my env", "Use a name such as 'my_env'"),
        ("json", "'json' is already an importable Python module"),
        ("n" * (MAX_NAME_LENGTH + 1), f"is {MAX_NAME_LENGTH + 1} characters long; use at most {MAX_NAME_LENGTH}"),
    ],
)
def test_a_bad_name_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, message: str
) -> None:
    code, _out, err = scaffold_in(tmp_path, monkeypatch, capsys, name)
    assert code == 2
    assert err.startswith("error: ") and message in err
    assert not (tmp_path / "resources_servers" / name).exists()


def test_an_existing_folder_is_refused_and_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "resources_servers" / "my_env"
    existing.mkdir(parents=True)
    (existing / "app.py").write_text("# mine\n")
    code, _out, err = scaffold_in(tmp_path, monkeypatch, capsys, "my_env")
    assert code == 2
    assert f"{existing} already exists; the scaffold never overwrites files" in err
    assert [p.name for p in existing.iterdir()] == ["app.py"] and (existing / "app.py").read_text() == "# mine\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((), "pass the new environment's name"),
        (("a_env", "b_env"), "expected one environment name, got 2"),
        (("a_env", "+name=b_env"), "two different names given"),
        (("a_env", "+outdir=x"), "unknown option(s) +outdir"),
    ],
)
def test_bad_arguments_are_refused(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    args: tuple[str, ...],
    message: str,
) -> None:
    code, _out, err = scaffold_in(tmp_path, monkeypatch, capsys, *args)
    assert code == 2 and message in err
    assert not (tmp_path / "resources_servers").exists()


def test_name_and_output_dir_as_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _err = scaffold_in(tmp_path, monkeypatch, capsys, "+name=other_env", "+output_dir=envs")
    assert code == 0
    assert (tmp_path / "envs" / "other_env" / "configs" / "other_env.yaml").is_file()
    assert "Created envs/other_env/:" in out
    assert "ng_run finds servers in resources_servers/<name>/" in out  # envs/ is not where ng_run looks


def test_class_names_and_template_files() -> None:
    assert class_name("my_env") == "MyEnv" and class_name("env2_b") == "Env2B"
    templates = sorted(str(p.relative_to(TEMPLATE_DIR)) for p in TEMPLATE_DIR.rglob("*") if p.is_file())
    assert templates == sorted(f.replace(NAME, "{{name}}") + ".tmpl" for f in FILES)


def test_the_longest_name_keeps_generated_lines_within_ruffs_limit() -> None:
    for template in TEMPLATE_DIR.rglob("*.py.tmpl"):
        rendered = render(template.read_text(encoding="utf-8"), "n" * MAX_NAME_LENGTH)
        for number, line in enumerate(rendered.splitlines(), start=1):
            assert len(line) <= 120, f"{template}:{number}"
