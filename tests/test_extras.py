"""A slim core install: what only the comparison report and some environments need is an extra, and whatever is
missing is named with the `pip install` line that adds it, before anything starts."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.loading import load_global_config
from nemo_gym.config.paths import project_root
from nemo_gym.extras import (
    EXTRAS,
    MissingExtra,
    folder_requirements_notice,
    folder_requirements_problem,
    import_extra,
    require_extra,
    unmet_requirements,
)
from nemo_gym.servers.loading import prepare

NOT_INSTALLED = "nemo-gym-surely-not-installed-package"
OPTIONAL_MODULES = ("scipy", "matplotlib", "math_verify", "reasoning_gym", "llama_cpp", "ray")


def pyproject() -> dict[str, object]:
    return tomllib.loads((project_root() / "pyproject.toml").read_text())


def test_the_core_dependencies_leave_out_what_only_reports_and_environments_use() -> None:
    project = pyproject()["project"]
    assert isinstance(project, dict)
    core = " ".join(project["dependencies"])
    for heavy in ("scipy", "matplotlib", "math-verify", "reasoning-gym", "llama-cpp-python", "ray"):
        assert heavy not in core
    extras = project["optional-dependencies"]
    assert set(EXTRAS) <= set(extras), "every extra the code names exists in pyproject.toml"
    assert any("scipy" in r for r in extras["compare"]) and any("matplotlib" in r for r in extras["compare"])
    # `.[dev]` still brings everything the tests need, so the README's test command stays what it was
    assert any("compare" in r and "math_verify" in r and "reasoning_gym" in r for r in extras["dev"])


def test_the_core_commands_and_servers_import_none_of_the_optional_libraries() -> None:
    modules = (
        "nemo_gym.cli.run",
        "nemo_gym.cli.collect_rollouts",
        "nemo_gym.cli.compare_models",
        "nemo_gym.cli.test",
        "nemo_gym.cli.models",
        "nemo_gym.cli.viewer",
        "nemo_gym.cli.openrouter_emulator",
        "responses_api_models.openai_model.app",
        "responses_api_agents.simple_agent.app",
        "resources_servers.simple_weather.app",
        "resources_servers.mcqa.app",
        "resources_servers.reasoning_gym.command",
    )
    code = (
        f"import sys; import {', '.join(modules)}; print(sorted(m for m in {OPTIONAL_MODULES!r} if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=project_root()
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_a_missing_extra_is_named_with_its_install_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(EXTRAS, "compare", ("json", NOT_INSTALLED.replace("-", "_")))
    with pytest.raises(MissingExtra) as raised:
        require_extra("compare", needed_for="ng_compare_models")
    message = str(raised.value)
    assert message.startswith("ng_compare_models needs the 'compare' extra")
    assert f"({NOT_INSTALLED.replace('-', '_')} is not installed)" in message
    assert "pip install 'nemo-gym-openrouter[compare]'" in message and 'pip install -e ".[compare]"' in message
    with pytest.raises(MissingExtra, match=r"the chart needs nemo_gym_surely_not_installed_package, which is not"):
        import_extra(NOT_INSTALLED.replace("-", "_"), "compare", needed_for="the chart")
    assert import_extra("json", "compare", needed_for="the chart").dumps([]) == "[]"


def test_ng_compare_models_without_its_extra_stops_before_anything_starts(tmp_path: Path) -> None:
    # scipy made unimportable, as on a core install: the command must say what to install, not print a traceback.
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('scipy', 'matplotlib'):\n"
        "            raise ModuleNotFoundError(f\"No module named '{name}'\", name=name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "from nemo_gym.cli.compare_models import main\n"
        "main(['+models=[a/b]', '+input_jsonl_fpath=rows.jsonl'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 2
    assert "ng_compare_models needs the 'compare' extra (scipy is not installed)" in result.stderr
    assert "pip install 'nemo-gym-openrouter[compare]'" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def write_requirements(folder: Path, *lines: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "requirements.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_requirements_are_met_by_what_is_installed_at_a_fitting_version(tmp_path: Path) -> None:
    path = write_requirements(
        tmp_path,
        "# what this environment needs",
        "pydantic>=2",
        "PyYAML",
        f"{NOT_INSTALLED}>=1.0  # a comment after the requirement",
        "orjson<1",
        f"{NOT_INSTALLED}-for-windows; sys_platform == 'win32'",
        "-r other.txt",
        "",
    )
    assert unmet_requirements(path) == [f"{NOT_INSTALLED}>=1.0", f"orjson<1 (installed: {_version('orjson')})"]


def test_a_nemo_gym_folders_own_line_for_nemo_gym_is_met_by_this_install(tmp_path: Path) -> None:
    path = write_requirements(tmp_path, "-e nemo-gym[dev] @ ../../", "nemo_gym @ ../../", f"{NOT_INSTALLED}==2.0")
    assert unmet_requirements(path) == [f"{NOT_INSTALLED}==2.0"]


def test_a_package_pinned_at_another_version_is_noted_and_run_with_not_refused(tmp_path: Path) -> None:
    write_requirements(tmp_path, "orjson==0.0.1", "pydantic>=2")
    assert folder_requirements_problem(tmp_path, "resources_servers/x") is None
    notice = folder_requirements_notice(tmp_path, "resources_servers/x")
    assert notice is not None and f"orjson==0.0.1 (installed: {_version('orjson')})" in notice
    assert "pip install -r resources_servers/x/requirements.txt" in notice
    write_requirements(tmp_path, "orjson==0.0.1", f"{NOT_INSTALLED}")
    assert folder_requirements_problem(tmp_path, "resources_servers/x") == (
        f"resources_servers/x needs {NOT_INSTALLED}, which this Python environment does not have: "
        "pip install -r resources_servers/x/requirements.txt"
    )


def _version(distribution: str) -> str:
    from importlib.metadata import version

    return version(distribution)


def test_a_folder_without_requirements_or_with_met_ones_has_no_problem(tmp_path: Path) -> None:
    assert folder_requirements_problem(tmp_path, "resources_servers/x") is None
    write_requirements(tmp_path, "pydantic>=2")
    assert folder_requirements_problem(tmp_path, "resources_servers/x") is None
    for shipped in (
        "resources_servers/math_verify",
        "resources_servers/reasoning_gym",
        "responses_api_models/local_model",
    ):
        assert (project_root() / shipped / "requirements.txt").is_file(), shipped


ENVIRONMENT_APP = """
from nemo_gym.servers.resources import BaseResourcesServer, Session, VerifyRequest, VerifyResponse


class NeedyServer(BaseResourcesServer):
    async def verify(self, session: Session, request: VerifyRequest) -> VerifyResponse:
        return VerifyResponse(reward=1.0)
"""


@pytest.fixture
def needy_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """resources_servers/needy_env/ in a working directory: a server whose requirements.txt is not met."""
    folder = tmp_path / "resources_servers" / "needy_env"
    write_requirements(folder, f"{NOT_INSTALLED}>=2.1", "pydantic>=2")
    (folder / "app.py").write_text(ENVIRONMENT_APP)
    (tmp_path / "needy.yaml").write_text("needy_env:\n  resources_servers:\n    needy_env:\n      entrypoint: app.py\n")
    monkeypatch.chdir(tmp_path)
    return folder


def test_ng_run_refuses_an_environment_whose_requirements_are_missing(needy_environment: Path) -> None:
    with pytest.raises(ConfigError) as raised:
        prepare(load_global_config(["+config_paths=[needy.yaml]"]))
    message = str(raised.value)
    assert message.startswith("Instance 'needy_env' (from needy.yaml): resources_servers/needy_env needs ")
    assert f"needs {NOT_INSTALLED}>=2.1, which this Python environment does not have" in message
    assert message.endswith("pip install -r resources_servers/needy_env/requirements.txt")


def test_ng_test_names_the_missing_requirements_instead_of_failing_on_import(needy_environment: Path) -> None:
    (needy_environment / "tests").mkdir()
    (needy_environment / "tests" / "test_needy.py").write_text("def test_nothing_to_see():\n    assert 1 + 1 == 2\n")
    result = subprocess.run(
        ["ng_test", "+entrypoint=resources_servers/needy_env"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=needy_environment.parent.parent,
    )
    assert result.returncode == 2
    assert "pip install -r resources_servers/needy_env/requirements.txt" in result.stderr
    assert "ng_test: " not in result.stdout, "pytest is not started"
