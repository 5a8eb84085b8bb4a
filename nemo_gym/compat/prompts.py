"""NeMo Gym's `nemo_gym.prompt`: a prompt config (a YAML file with `user` and optional `system` templates) turned into
the input messages of each data row, so a dataset can hold bare fields (`question: ...`) and the prompt live apart."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from nemo_gym.compat.global_keys import RESPONSES_CREATE_PARAMS_KEY_NAME
from nemo_gym.config.paths import project_root


class PromptConfig(BaseModel):
    """`str.format_map` templates filled from a row's top-level fields (`{question}`); literal braces are doubled."""

    user: str
    system: str | None = None


def _resolve(path: str) -> Path:
    """Absolute paths as given; relative ones against the project root, as NeMo Gym resolves them against its own."""
    candidate = Path(path).expanduser()
    return candidate if candidate.is_absolute() else project_root() / candidate


@lru_cache(maxsize=64)
def load_prompt_config(path: str) -> PromptConfig:
    """The prompt config in YAML file `path` (parsed once per path)."""
    resolved = _resolve(str(path))
    if not resolved.is_file():
        raise FileNotFoundError(
            f"Prompt config file {str(resolved)!r} does not exist (given as {str(path)!r}; a relative path is read "
            f"from the project root {str(project_root())!r}). Pass an existing YAML file with a `user` template."
        )
    try:
        data: Any = yaml.safe_load(resolved.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ValueError(f"Prompt config file {str(resolved)!r} is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(
            f"Prompt config file {str(resolved)!r} must be a YAML mapping with a `user` template (and optionally "
            f"`system`), got {type(data).__name__}"
        )
    if "user" not in data:
        raise ValueError(
            f"Prompt config file {str(resolved)!r} has no `user` key; it has {sorted(map(str, data))}. Add "
            "`user: <template with {field} placeholders>`."
        )
    try:
        return PromptConfig.model_validate(data)
    except ValidationError as exc:
        raise ValueError(f"Prompt config file {str(resolved)!r} is not a valid prompt config: {exc}") from None


def fill_prompt(prompt_config: PromptConfig, row: dict[str, Any]) -> list[dict[str, str]]:
    """The messages for one row: the system message (if the config has one), then the user message."""
    try:
        messages: list[dict[str, str]] = []
        if prompt_config.system is not None:
            messages.append({"role": "system", "content": prompt_config.system.format_map(row)})
        messages.append({"role": "user", "content": prompt_config.user.format_map(row)})
    except KeyError as exc:
        raise KeyError(
            f"Prompt template references field {exc} but the data row only has fields: {list(row)}"
        ) from None
    return messages


def validate_prompt_compatibility(rows: list[dict[str, Any]], prompt_config: PromptConfig) -> None:
    """A prompt config builds each row's input, so rows that already carry `responses_create_params.input` conflict:
    all such rows are named in one error."""
    conflicting = [
        index
        for index, row in enumerate(rows)
        if isinstance(row.get(RESPONSES_CREATE_PARAMS_KEY_NAME), dict)
        and row[RESPONSES_CREATE_PARAMS_KEY_NAME].get("input")
    ]
    if conflicting:
        raise ValueError(
            f"Some rows have {RESPONSES_CREATE_PARAMS_KEY_NAME}.input but prompt_config is also specified. These are "
            f"mutually exclusive: remove the input from the rows or drop the prompt config. Violating rows (0-based): "
            f"{conflicting}"
        )


def apply_prompt_to_row(row: dict[str, Any], prompt_config: PromptConfig) -> dict[str, Any]:
    """A copy of `row` whose `responses_create_params.input` is the filled prompt; the row's other create params
    (tools, temperature, ...) are kept and `row` itself is left unchanged."""
    create_params = dict(row.get(RESPONSES_CREATE_PARAMS_KEY_NAME) or {})
    create_params["input"] = fill_prompt(prompt_config, row)
    return {**row, RESPONSES_CREATE_PARAMS_KEY_NAME: create_params}
