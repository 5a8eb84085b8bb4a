"""NeMo Gym's `nemo_gym.prompt`, imported as environments import it: a YAML prompt config (`user`, optional `system`)
filled from each data row's fields into `responses_create_params.input`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from nemo_gym.config.paths import project_root
from nemo_gym.prompt import (
    PromptConfig,
    apply_prompt_to_row,
    fill_prompt,
    load_prompt_config,
    validate_prompt_compatibility,
)

MATH = PromptConfig(
    system="You are a careful {domain} tutor.", user="Solve: {question}\nPut the answer in \\boxed{{}}."
)


def test_the_system_and_user_templates_are_filled_from_the_rows_fields() -> None:
    row = {"question": "2+2?", "domain": "math", "expected_answer": "4"}

    assert fill_prompt(MATH, row) == [
        {"role": "system", "content": "You are a careful math tutor."},
        {"role": "user", "content": "Solve: 2+2?\nPut the answer in \\boxed{}."},
    ]


def test_without_a_system_template_there_is_only_the_user_message() -> None:
    assert fill_prompt(PromptConfig(user="{question}"), {"question": "Hi"}) == [{"role": "user", "content": "Hi"}]


def test_doubled_braces_are_literal_braces() -> None:
    config = PromptConfig(user='Reply as JSON: {{"answer": "{field}"}}')

    assert fill_prompt(config, {"field": "x"})[0]["content"] == 'Reply as JSON: {"answer": "x"}'


def test_a_field_the_row_lacks_names_the_field_and_the_rows_fields() -> None:
    with pytest.raises(KeyError) as raised:
        fill_prompt(MATH, {"question": "2+2?", "expected_answer": "4"})

    message = str(raised.value)
    assert "Prompt template references field 'domain'" in message
    assert "the data row only has fields: ['question', 'expected_answer']" in message


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_a_prompt_config_file_is_loaded_once_per_path(tmp_path: Path) -> None:
    path = write(tmp_path / "prompt.yaml", "system: Be brief.\nuser: 'Q: {question}'\n")

    config = load_prompt_config(str(path))

    assert config == PromptConfig(system="Be brief.", user="Q: {question}")
    assert load_prompt_config(str(path)) is config


def test_a_relative_path_is_read_from_the_project_root_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path / "prompts" / "relative.yaml", "user: '{question}'\n")
    write(tmp_path / "cwd" / os.path.relpath(path, project_root()), "user: wrong file\n")
    monkeypatch.chdir(tmp_path / "cwd")

    assert load_prompt_config(os.path.relpath(path, project_root())).user == "{question}"


def test_a_missing_file_is_named_in_the_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"

    with pytest.raises(FileNotFoundError, match="nope.yaml.*does not exist"):
        load_prompt_config(str(missing))


def test_a_file_without_a_user_template_is_named_in_the_error(tmp_path: Path) -> None:
    path = write(tmp_path / "system_only.yaml", "system: Be brief.\n")

    with pytest.raises(ValueError, match="system_only.yaml.* has no `user` key; it has \\['system'\\]"):
        load_prompt_config(str(path))


def test_a_file_that_is_not_a_mapping_is_named_in_the_error(tmp_path: Path) -> None:
    path = write(tmp_path / "list.yaml", "- user\n")

    with pytest.raises(ValueError, match="list.yaml.* must be a YAML mapping"):
        load_prompt_config(str(path))


def test_rows_that_already_have_an_input_conflict_with_a_prompt_config_and_are_all_listed() -> None:
    rows: list[dict[str, Any]] = [
        {"question": "a"},
        {"question": "b", "responses_create_params": {"input": [{"role": "user", "content": "b"}]}},
        {"question": "c", "responses_create_params": {"input": []}},  # empty: nothing to conflict with
        {"question": "d", "responses_create_params": {"input": "d"}},
    ]

    with pytest.raises(ValueError, match="mutually exclusive.*Violating rows \\(0-based\\): \\[1, 3\\]"):
        validate_prompt_compatibility(rows, MATH)
    validate_prompt_compatibility([rows[0], rows[2]], MATH)


def test_applying_the_prompt_sets_the_input_keeps_other_create_params_and_leaves_the_row_alone() -> None:
    row = {
        "question": "2+2?",
        "domain": "math",
        "responses_create_params": {"temperature": 0.2, "tools": [{"type": "function", "name": "calc"}]},
    }

    applied = apply_prompt_to_row(row, MATH)

    assert applied["responses_create_params"] == {
        "temperature": 0.2,
        "tools": [{"type": "function", "name": "calc"}],
        "input": fill_prompt(MATH, row),
    }
    assert applied["question"] == "2+2?"
    assert "input" not in row["responses_create_params"]


def test_applying_the_prompt_to_a_row_without_create_params_creates_them() -> None:
    applied = apply_prompt_to_row({"question": "Hi"}, PromptConfig(user="{question}"))

    assert applied == {"question": "Hi", "responses_create_params": {"input": [{"role": "user", "content": "Hi"}]}}
