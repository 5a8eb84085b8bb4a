"""The data check `ng_test` runs before a resources server's tests: every bad row is reported as
`<file>:<line>: <what is wrong>. <how to fix>`, and the shipped environments' data passes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from nemo_gym.config.paths import project_root
from nemo_gym.servers.datacheck import check_resources_server
from nemo_gym.servers.scaffold import scaffold

NAME = "datacheck_env"
TOOL = {
    "type": "function",
    "name": "get_capital",
    "parameters": {"type": "object", "properties": {"country": {"type": "string"}}, "required": ["country"]},
}
GOOD: dict[str, Any] = {
    "expected_country": "France",
    "expected_capital": "Paris",
    "responses_create_params": {"input": [{"role": "user", "content": "Capital of France?"}], "tools": [TOOL]},
}


def with_params(**params: Any) -> str:
    return json.dumps({**GOOD, "responses_create_params": {**GOOD["responses_create_params"], **params}})


def without(key: str) -> str:
    return json.dumps({k: v for k, v in GOOD.items() if k != key})


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A scaffolded resources server (tools: get_capital; row_fields: expected_country, expected_capital)."""
    return scaffold(NAME, tmp_path_factory.mktemp("work") / "resources_servers")


def write_data(folder: Path, *lines: str) -> Path:
    path = folder / "data" / "example.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# Each bad line goes on line 3, after a good row and a blank line (blank lines are skipped, but counted).
BAD_ROWS = [
    (
        "bad JSON",
        '{"responses_create_params": {"input": "hi"}',
        "not valid JSON (",
        "Write one complete JSON object per line",
    ),
    (
        "not an object",
        "[1, 2]",
        "a row must be a JSON object, got an array",
        'Write each row as {"responses_create_params"',
    ),
    (
        "no responses_create_params",
        without("responses_create_params"),
        "no `responses_create_params`",
        "Add the Responses request the agent sends",
    ),
    (
        "responses_create_params not an object",
        json.dumps({**GOOD, "responses_create_params": "hi"}),
        "`responses_create_params` must be a JSON object, got a string",
        'Write it as {"input": [...]',
    ),
    (
        "no input",
        json.dumps({**GOOD, "responses_create_params": {"tools": [TOOL]}}),
        "`responses_create_params` has no `input`",
        'Add the conversation, e.g. "input": [{"role": "user"',
    ),
    (
        "input of the wrong type",
        with_params(input={"role": "user"}),
        "`responses_create_params.input` must be a list of messages or a string, got an object",
        "Write it as [{",
    ),
    (
        "unknown tool",
        with_params(tools=[{**TOOL, "name": "get_weather"}]),
        "tool 'get_weather' is not a tool of this server (its tools: get_capital)",
        "Rename it in the row, or add it to the server class's `tools`",
    ),
    (
        "tool in the Chat Completions shape",
        with_params(tools=[{"type": "function", "function": {**TOOL}}]),
        "`responses_create_params.tools[0]` is in the Chat Completions shape",
        'Use the Responses shape with the name at the top: {"type": "function", "name": "get_capital"',
    ),
    (
        "tool without a name",
        with_params(tools=[{"type": "function", "parameters": {}}]),
        "`responses_create_params.tools[0]` has no `name`",
        "Name one of the server's tools: get_capital",
    ),
    (
        "tools not a list",
        with_params(tools={"name": "get_capital"}),
        "`responses_create_params.tools` must be a list, got an object",
        'Write it as [{"type": "function"',
    ),
    (
        "missing row field",
        without("expected_capital"),
        "`expected_capital` is missing; the verifier needs it (it is in the server's row_fields)",
        'Add "expected_capital": ... to the row',
    ),
    (
        "null row field",
        json.dumps({**GOOD, "expected_country": None}),
        "`expected_country` is null",
        'Add "expected_country": ... to the row',
    ),
]


@pytest.mark.parametrize(("line", "what", "fix"), [case[1:] for case in BAD_ROWS], ids=[c[0] for c in BAD_ROWS])
def test_a_bad_row_is_reported_with_file_line_and_fix(
    folder: Path, monkeypatch: pytest.MonkeyPatch, line: str, what: str, fix: str
) -> None:
    monkeypatch.chdir(folder.parent.parent)
    write_data(folder, json.dumps(GOOD), "   ", line)
    result = check_resources_server(folder)
    assert not result.ok
    assert (result.rows, result.files) == (2, 1)
    (problem,) = result.problems
    text = str(problem)
    assert text.startswith(f"resources_servers/{NAME}/data/example.jsonl:3: "), text
    assert what in text and fix in text, text
    assert text.index(what) < text.index(fix) and text.endswith(".")


def test_every_problem_of_every_file_is_reported(folder: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(folder.parent.parent)
    write_data(folder, "[]", without("expected_country"))
    (folder / "data" / "more.jsonl").write_text(json.dumps({"expected_country": "X"}) + "\n")
    try:
        result = check_resources_server(folder)
    finally:
        (folder / "data" / "more.jsonl").unlink()
    where = [str(p).split(": ", 1)[0] for p in result.problems]
    data = f"resources_servers/{NAME}/data"
    assert where == [
        f"{data}/example.jsonl:1",
        f"{data}/example.jsonl:2",
        f"{data}/more.jsonl:1",
        f"{data}/more.jsonl:1",
    ]
    report = result.report()
    assert report.splitlines()[-1] == "data check: 4 problems in 3 rows of 2 files"


def test_good_data_passes(folder: Path) -> None:
    write_data(folder, json.dumps(GOOD), json.dumps({**GOOD, "responses_create_params": {"input": "no tools"}}))
    result = check_resources_server(folder)
    assert result.ok, result.report()
    assert result.report() == "data check: 2 rows in 1 file OK"


@pytest.mark.parametrize(
    ("folder_name", "rows"), [("simple_weather", 24), ("mcqa", 32), ("math_verify", 36), ("reasoning_gym", 24)]
)
def test_the_shipped_environments_data_passes(folder_name: str, rows: int) -> None:
    result = check_resources_server(project_root() / "resources_servers" / folder_name)
    assert result.ok, result.report()
    assert (result.rows, result.files) == (rows, 1)


def test_the_scaffolds_own_data_passes(tmp_path: Path) -> None:
    result = check_resources_server(scaffold("fresh_datacheck_env", tmp_path / "resources_servers"))
    assert result.ok, result.report()
    assert result.report() == "data check: 9 rows in 1 file OK"


def test_a_folder_without_data_or_a_working_app_is_a_problem(tmp_path: Path) -> None:
    folder = scaffold("broken_datacheck_env", tmp_path / "resources_servers")
    (folder / "data" / "example.jsonl").unlink()
    (problem,) = check_resources_server(folder).problems
    assert str(problem).endswith(
        "data: no *.jsonl files. Add example rows to data/example.jsonl, one JSON object "
        'per line: {"responses_create_params": {"input": [{"role": "user", "content": '
        '"..."}], "tools": [...]}, ...}.'
    )

    other = tmp_path / "resources_servers" / "not_importable"
    other.mkdir()
    (other / "app.py").write_text("import no_such_module_for_datacheck\n")
    (problem,) = check_resources_server(other).problems
    assert "app.py:1 imports no_such_module_for_datacheck, which is not installed" in str(problem)
    assert "pip install" in str(problem)


@pytest.mark.slow
def test_ng_test_fails_on_bad_data_even_when_the_tests_pass(tmp_path: Path) -> None:
    folder = scaffold("ngtest_datacheck_env", tmp_path / "resources_servers")
    rows = (folder / "data" / "example.jsonl").read_text().splitlines()
    rows[2] = rows[2].replace('"expected_capital"', '"capital"')
    (folder / "data" / "example.jsonl").write_text("\n".join(rows) + "\n")
    result = subprocess.run(
        ["ng_test", "+entrypoint=resources_servers/ngtest_datacheck_env", "+pytest_args=[-k, served_tool]"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "resources_servers/ngtest_datacheck_env/data/example.jsonl:3: `expected_capital` is missing" in result.stderr
    assert "data check: 1 problem in 9 rows of 1 file" in result.stderr
    assert " passed" in result.stdout  # pytest still ran


def test_files_beside_the_datasets_are_not_checked_as_rows(tmp_path: Path) -> None:
    folder = scaffold("side_files_env", tmp_path / "resources_servers")
    before = check_resources_server(folder)
    (folder / "data" / "judge_replies.jsonl").write_text('{"when_all": ["Task id: 1"], "reply": "[[YES]]"}\n')
    (folder / "data" / "example_rollouts.jsonl").write_text('{"reward": 1.0}\n')
    (folder / "data" / "more.jsonl").write_text('{"reward": 1.0}\n')  # a dataset name: checked, and wrong
    after = check_resources_server(folder)
    assert after.files == before.files + 1
    assert {p.path.name for p in after.problems} == {"more.jsonl"}
