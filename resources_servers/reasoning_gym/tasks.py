"""The reasoning-gym task registry as this environment sees it: names, per-task settings, cached dataset instances.

One `TaskSelection` model (task or tasks, size, seed, task_config) is shared by `ng_prepare_reasoning_gym` and the
server's config block, so a typo in a task name or a task setting fails the same way in both, with close names.
Dataset instances are cached per (task, settings, seed, size): building one can load word lists or puzzle files,
and an entry is generated on demand from its index, so scoring never regenerates a dataset.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import threading
from collections.abc import Mapping
from functools import lru_cache
from typing import Any

import reasoning_gym
from pydantic import BaseModel, ConfigDict, Field, model_validator
from reasoning_gym.dataset import ProceduralDataset
from reasoning_gym.factory import DATASETS

MAX_SIZE = 1_000_000
# `composite` mixes other tasks through its own nested config; `+tasks=[a, b]` does that here, row by row.
EXCLUDED_TASKS = {"composite": "mix tasks with +tasks=[a, b] instead of the library's composite dataset"}
# Keys a task's config dataclass has that this environment sets itself.
RESERVED_CONFIG_KEYS = ("seed", "size")


def task_names() -> list[str]:
    """Every reasoning-gym task this environment can generate and score, sorted."""
    return sorted(name for name in DATASETS if name not in EXCLUDED_TASKS)


def close_task_names(name: str, limit: int = 6) -> list[str]:
    """Known names that look like `name`: spelling neighbours first, then names sharing a word with it."""
    known = task_names()
    near = difflib.get_close_matches(name, known, n=limit, cutoff=0.6)
    words = {w for w in name.lower().replace("-", "_").split("_") if len(w) > 2}
    near += [n for n in known if n not in near and any(w in n for w in words)]
    return near[:limit]


def unknown_task_message(name: str) -> str:
    if name in EXCLUDED_TASKS:
        return f"task '{name}' is not supported here: {EXCLUDED_TASKS[name]}"
    near = close_task_names(name)
    hint = f"did you mean {', '.join(near)}? " if near else ""
    return (
        f"unknown reasoning-gym task '{name}' ({hint}{len(task_names())} tasks exist; list them with "
        "`ng_prepare_reasoning_gym +list_tasks=true`)"
    )


def config_keys(task: str) -> list[str]:
    """The settings a task accepts in `task_config` (its config dataclass's fields, minus seed and size)."""
    return [f.name for f in dataclasses.fields(DATASETS[task][1]) if f.name not in RESERVED_CONFIG_KEYS]


def canonical(config: Mapping[str, Any]) -> str:
    """A task config as a cache key: the same settings give the same string whatever their order."""
    return json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)


_creation_lock = threading.Lock()


@lru_cache(maxsize=256)
def _cached_dataset(task: str, config_key: str, seed: int, size: int) -> ProceduralDataset:
    return reasoning_gym.create_dataset(task, seed=seed, size=size, **json.loads(config_key))


def dataset_for(task: str, config: Mapping[str, Any], seed: int, size: int) -> ProceduralDataset:
    """The (cached) dataset instance for these settings; ValueError with a readable message if they are invalid."""
    if task not in DATASETS or task in EXCLUDED_TASKS:
        raise ValueError(unknown_task_message(task))
    reserved = [k for k in config if k in RESERVED_CONFIG_KEYS]
    if reserved:
        raise ValueError(f"task_config for {task} sets {', '.join(reserved)}; set +seed / +size instead")
    allowed = config_keys(task)
    unknown = [k for k in config if k not in allowed]
    if unknown:
        near = difflib.get_close_matches(unknown[0], allowed, n=1)
        hint = f"did you mean '{near[0]}'? " if near else ""
        raise ValueError(f"task_config for {task}: unknown key '{unknown[0]}' ({hint}its keys: {', '.join(allowed)})")
    try:
        with _creation_lock:  # two verify threads asking at once build it once
            return _cached_dataset(task, canonical(config), seed, size)
    except (AssertionError, TypeError, ValueError) as exc:  # the library's own config checks
        raise ValueError(f"task_config for {task} is rejected by reasoning-gym: {exc or type(exc).__name__}") from None


class TaskSelection(BaseModel):
    """Which tasks, how many entries of each and from which seed. With several tasks, `task_config` is keyed by task
    name (`{basic_arithmetic: {max_terms: 3}}`); with one task it holds that task's settings directly."""

    model_config = ConfigDict(extra="forbid")
    task: str | None = Field(default=None, description="One reasoning-gym task name, e.g. basic_arithmetic")
    tasks: list[str] | None = Field(default=None, description="Several task names; rows are interleaved")
    size: int = Field(default=100, ge=1, le=MAX_SIZE, description="Entries per task")
    seed: int = Field(default=0, ge=0, lt=2**32, description="The library's dataset seed")
    task_config: dict[str, Any] = Field(default_factory=dict, description="Settings of the task's config dataclass")

    @model_validator(mode="after")
    def _check_tasks_and_settings(self) -> TaskSelection:
        if self.task is not None and self.tasks is not None:
            raise ValueError("set either `task` (one name) or `tasks` (a list), not both")
        if self.tasks is not None and not self.tasks:
            raise ValueError("`tasks` is empty: name at least one task, e.g. tasks: [basic_arithmetic]")
        names = self.names()
        if len(set(names)) != len(names):
            raise ValueError(f"`tasks` names a task twice: {', '.join(names)}")
        for name in names:
            if name not in DATASETS or name in EXCLUDED_TASKS:
                raise ValueError(unknown_task_message(name))
        configs = self.configs()  # raises on a malformed task_config
        for name in names:
            dataset_for(name, configs[name], self.seed, self.size)
        return self

    def names(self) -> list[str]:
        if self.task is not None:
            return [self.task]
        return list(self.tasks or [])

    def configs(self) -> dict[str, dict[str, Any]]:
        """Each selected task's own settings."""
        names = self.names()
        config = self.task_config
        if len(names) == 1 and set(config) == {names[0]} and isinstance(config[names[0]], dict):
            return {names[0]: dict(config[names[0]])}  # keyed by the task's name is fine too
        if len(names) <= 1:
            return {name: dict(config) for name in names}
        strays = [k for k in config if k not in names]
        if strays:
            raise ValueError(
                f"with several tasks, task_config is keyed by task name (e.g. task_config.{names[0]}."
                f"<key>=value); '{strays[0]}' is not one of the tasks ({', '.join(names)})"
            )
        bad = [k for k, v in config.items() if not isinstance(v, dict)]
        if bad:
            raise ValueError(
                f"task_config.{bad[0]} must be a mapping of that task's settings, e.g. task_config.{bad[0]}.<key>=value"
            )
        return {name: dict(config.get(name) or {}) for name in names}


def jsonable(value: Any) -> Any:
    """Library metadata as plain JSON: tuples and sets become lists, keys strings, other objects their text."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted((jsonable(v) for v in value), key=repr)
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if value is None or isinstance(value, str | int | float | bool):
        return value
    if hasattr(value, "item"):  # numpy scalars
        return jsonable(value.item())
    return str(value)


def reference_answer(dataset: ProceduralDataset, entry: Mapping[str, Any]) -> tuple[str, bool]:
    """(expected answer text, whether it is the library's own oracle answer).

    Tasks that accept many answers (graph colouring, Rubik's cube, ...) have no oracle `answer`; for them the
    metadata's example solution is used when the task's own scorer gives it full marks, else the empty string."""
    if entry.get("answer") is not None:
        return str(entry["answer"]), True
    metadata = entry.get("metadata") or {}
    for key, value in metadata.items():
        if value is None or not any(word in key for word in ("answer", "solution")):
            continue
        text = value if isinstance(value, str) else json.dumps(jsonable(value), ensure_ascii=False)
        try:
            if dataset.score_answer(text, dict(entry)) == 1.0:
                return text, False
        except Exception:  # a library scorer failing on its own example: just not a reference
            continue
    return "", False
