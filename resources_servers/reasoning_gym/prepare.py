"""`ng_prepare_reasoning_gym`: write reasoning-gym entries as dataset rows for the reasoning_gym environment.

    ng_prepare_reasoning_gym +output_jsonl_fpath=data/train.jsonl [+task=NAME | +tasks=[A, B]] [+size=N] [+seed=S]
        [+task_config.KEY=VALUE | +task_config.TASK.KEY=VALUE] [+config_path=YAML] [+instance=NAME]
    ng_prepare_reasoning_gym +list_tasks=true

What the command line leaves out comes from the environment's config (`configs/reasoning_gym.yaml`, or
`+config_path`): its resources-server block holds `task`/`tasks`, `size`, `seed` and `task_config`, the same keys
the server validates. Naming a task on the command line replaces the config's task selection and its task_config.
The same settings always give the same file (except for the few generators that depend on Python's string hashing;
see README.md).
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, ValidationError

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.paths import resolve_input_path
from nemo_gym.config.yaml_files import load_yaml_file
from nemo_gym.console import fail, overrides_or_fail, print_flushed
from resources_servers.reasoning_gym.tasks import (
    TaskSelection,
    config_keys,
    dataset_for,
    jsonable,
    reference_answer,
    task_names,
)

DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "reasoning_gym.yaml"
SELECTION_KEYS = ("task", "tasks", "size", "seed", "task_config")
DEVELOPER_PROMPT = (
    "Solve the problem below. Reason briefly, in a few short sentences at most, then write only your final answer "
    "inside <answer></answer> tags as the last thing in your reply. Put nothing but the answer between the tags, "
    "in the form the problem asks for."
)


class PrepareSettings(TaskSelection):
    """The command's settings: a task selection plus where the rows go."""

    output_jsonl_fpath: str | None = Field(default=None, min_length=1, description="Where to write the JSONL rows")


def build_rows(selection: TaskSelection) -> list[dict[str, Any]]:
    """One row per entry: index 0 of every task, then index 1 of every task, ... (so any prefix mixes tasks)."""
    configs = selection.configs()
    datasets = {name: dataset_for(name, configs[name], selection.seed, selection.size) for name in selection.names()}
    rows = []
    for index in range(selection.size):
        for name, dataset in datasets.items():
            try:
                entry = dataset[index]
            except Exception as exc:  # a generator failing on one index: say which, so it can be reproduced
                raise ValueError(
                    f"reasoning-gym could not generate {name} entry {index} (seed {selection.seed}): "
                    f"{type(exc).__name__}: {exc}"
                ) from exc
            rows.append(row_for(name, configs[name], selection, index, entry, dataset))
    return rows


def row_for(
    task: str, config: Mapping[str, Any], selection: TaskSelection, index: int, entry: Mapping[str, Any], dataset: Any
) -> dict[str, Any]:
    expected, oracle = reference_answer(dataset, entry)
    return {
        "id": f"{task}-{selection.seed}-{index:05d}",
        "responses_create_params": {
            "input": [
                {"role": "developer", "content": DEVELOPER_PROMPT},
                {"role": "user", "content": str(entry["question"])},
            ]
        },
        "expected_answer": expected,
        "reasoning_gym": {
            "task": task,
            "config": jsonable(dict(config)),
            "seed": selection.seed,
            "size": selection.size,
            "index": index,
            "oracle_answer": oracle,
            "metadata": jsonable(entry.get("metadata") or {}),
        },
    }


def write_rows(rows: Sequence[Mapping[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)
    path.write_text(text, encoding="utf-8")


def config_defaults(config_path: str | None, instance: str | None) -> dict[str, Any]:
    """The task selection in a config file's reasoning_gym resources-server block (the bundled config by default)."""
    path = resolve_input_path(config_path) if config_path else DEFAULT_CONFIG
    data = load_yaml_file(path)
    blocks = {
        name: value["resources_servers"]["reasoning_gym"]
        for name, value in data.items()
        if isinstance(value, dict)
        and isinstance(value.get("resources_servers"), dict)
        and isinstance(value["resources_servers"].get("reasoning_gym"), dict)
    }
    if instance is not None:
        if instance not in blocks:
            raise ConfigError(
                f"{path} has no reasoning_gym instance '{instance}' (it has: {', '.join(blocks) or 'none'})"
            )
        block = blocks[instance]
    elif len(blocks) == 1:
        (block,) = blocks.values()
    elif not blocks:
        raise ConfigError(
            f"{path} has no `<name>: {{resources_servers: {{reasoning_gym: {{...}}}}}}` block to read "
            "task, size and seed from; name them on the command line (+task=... +size=... +seed=...)"
        )
    else:
        raise ConfigError(
            f"{path} has several reasoning_gym instances ({', '.join(blocks)}); pick one with +instance=<name>"
        )
    return {key: block[key] for key in SELECTION_KEYS if block.get(key) is not None}


def merged_settings(overrides: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """Command line over config. A task named on the command line replaces the config's tasks and task_config."""
    settings = dict(defaults)
    if "task" in overrides or "tasks" in overrides:
        for key in ("task", "tasks", "task_config"):
            settings.pop(key, None)
    base, layer = settings.get("task_config"), overrides.get("task_config")
    settings.update(overrides)
    if isinstance(base, Mapping) and isinstance(layer, Mapping):
        settings["task_config"] = _deep_merge(base, layer)
    return settings


def _deep_merge(base: Mapping[str, Any], layer: Mapping[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in layer.items():
        merged[key] = (
            _deep_merge(merged[key], value)
            if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping)
            else value
        )
    return merged


def describe(exc: ValidationError) -> str:
    problems = []
    allowed = sorted(PrepareSettings.model_fields)
    for err in exc.errors():
        message = str(err["msg"]).removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            key = str(err["loc"][-1])
            near = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean +{near[0]}? " if near else ""
            problems.append(
                f"unknown setting +{key} ({hint}settings: {', '.join(allowed)}, config_path, instance, list_tasks)"
            )
        elif err["loc"]:
            key = ".".join(str(p) for p in err["loc"])
            problems.append(f"+{key}: {message}" + (f" (got {err['input']!r})" if err["type"] != "missing" else ""))
        else:
            problems.append(message)
    return "; ".join(problems)


def list_tasks() -> None:
    print_flushed(
        "\n".join(f"{name}  (task_config keys: {', '.join(config_keys(name)) or 'none'})" for name in task_names())
    )


def main(argv: Sequence[str] | None = None) -> None:
    overrides = overrides_or_fail(argv)
    if overrides.pop("list_tasks", False):
        list_tasks()
        return
    try:
        defaults = config_defaults(overrides.pop("config_path", None), overrides.pop("instance", None))
    except ConfigError as exc:
        fail(str(exc))
    settings = merged_settings(overrides, defaults)
    if "task" not in settings and "tasks" not in settings:
        fail(
            "name a task: +task=basic_arithmetic (or +tasks=[basic_arithmetic, leg_counting]); "
            "`ng_prepare_reasoning_gym +list_tasks=true` lists them"
        )
    try:
        prepared = PrepareSettings.model_validate(settings)
    except ValidationError as exc:
        fail(describe(exc))
    if prepared.output_jsonl_fpath is None:
        fail("+output_jsonl_fpath=<file.jsonl> is required: where to write the rows")
    try:
        rows = build_rows(prepared)
    except ValueError as exc:
        fail(str(exc))
    output = Path(prepared.output_jsonl_fpath)
    write_rows(rows, output)
    counts = ", ".join(f"{name}: {prepared.size}" for name in prepared.names())
    print_flushed(f"wrote {len(rows)} rows ({counts}; seed {prepared.seed}) to {output}")


if __name__ == "__main__":
    main()
