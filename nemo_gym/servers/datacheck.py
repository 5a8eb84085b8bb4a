"""Static checks of a resources server's `data/*.jsonl`, so a bad row fails in `ng_test` instead of mid-collection.

A row that is not JSON, has no `responses_create_params.input`, offers the model a tool the server does not serve,
or lacks a field the verifier needs (`row_fields`) would otherwise only show up as a failed rollout, after the
servers are up and some model calls are paid for. Every problem is reported as `<file>:<line>: <what is wrong>.
<how to fix>` so an editor can jump to it.
"""

from __future__ import annotations

import fnmatch
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_gym.config.errors import ConfigError
from nemo_gym.servers.loading import import_entrypoint, server_class_of
from nemo_gym.servers.resources import BaseResourcesServer

NOT_DATASETS = ("*replies.jsonl", "*rollouts.jsonl", "*_failures.jsonl", "*_materialized_inputs.jsonl")
"""Files beside the datasets in `data/`: the emulator's scripted replies (e.g. a judge's verdicts), and NeMo Gym's
example rollouts, failures and materialized inputs."""

ROW_EXAMPLE = '{"responses_create_params": {"input": [{"role": "user", "content": "..."}], "tools": [...]}, ...}'


@dataclass(frozen=True)
class Problem:
    """One thing wrong with one line of one file (`line` None: the file or the folder as a whole)."""

    path: Path
    line: int | None
    message: str

    def __str__(self) -> str:
        where = display_path(self.path) + (f":{self.line}" if self.line is not None else "")
        return f"{where}: {self.message.rstrip('.')}."


@dataclass
class DataCheck:
    """What the check read and everything it found wrong."""

    rows: int = 0
    files: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def report(self, max_problems: int = 50) -> str:
        """`data check: N rows in M files OK`, or the problems (the first `max_problems` of them) and a count."""
        if self.ok:
            return f"data check: {_count(self.rows, 'row')} in {_count(self.files, 'file')} OK"
        lines = [str(p) for p in self.problems[:max_problems]]
        if len(self.problems) > max_problems:
            lines.append(f"... and {len(self.problems) - max_problems} more")
        lines.append(
            f"data check: {_count(len(self.problems), 'problem')} in {_count(self.rows, 'row')} of "
            f"{_count(self.files, 'file')}"
        )
        return "\n".join(lines)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def display_path(path: Path) -> str:
    """Relative to the working directory when it is below it (shorter, and what the user typed), else absolute."""
    try:
        return os.path.relpath(path) if path.resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except ValueError:
        return str(path)


def load_resources_server_class(folder: Path) -> type[BaseResourcesServer]:
    """The resources server class `folder/app.py` defines (for a NeMo Gym server, the class hosting it, which says
    its `tools` and `row_fields` the same way); ConfigError if there is none or it cannot be imported."""
    app = folder / "app.py"
    try:
        cls = server_class_of(import_entrypoint(app))
    except ConfigError:
        raise
    except Exception as exc:  # the user's module: any error while importing it is theirs to fix
        raise ConfigError(
            f"cannot import {display_path(app)}: {type(exc).__name__}: {exc}. Fix the error "
            f"(try `python {display_path(app)}`) and run the check again."
        ) from exc
    if not issubclass(cls, BaseResourcesServer) and not hasattr(cls, "row_fields"):
        raise ConfigError(
            f"{display_path(app)} defines {cls.__name__}, which is not a BaseResourcesServer subclass; "
            "a resources server's class derives from nemo_gym.servers.resources.BaseResourcesServer."
        )
    return cls  # type: ignore[return-value]


def is_side_file(path: Path) -> bool:
    return any(fnmatch.fnmatch(path.name, pattern) for pattern in NOT_DATASETS)


def check_resources_server(folder: Path) -> DataCheck:
    """Check `folder/data/*.jsonl` against the tools and `row_fields` of the server class in `folder/app.py`."""
    try:
        server_class = load_resources_server_class(folder)
    except ConfigError as exc:
        return DataCheck(problems=[Problem(folder / "app.py", None, str(exc))])
    files = sorted(p for p in (folder / "data").glob("*.jsonl") if not is_side_file(p))
    if not files:
        return DataCheck(
            problems=[
                Problem(
                    folder / "data",
                    None,
                    "no *.jsonl files. Add example rows to data/example.jsonl, one JSON "
                    f"object per line: {ROW_EXAMPLE}",
                )
            ]
        )
    return check_files(files, tools=server_class.tools, row_fields=server_class.row_fields)


def check_files(files: Iterable[Path], *, tools: Mapping[str, Any] | None, row_fields: Iterable[str]) -> DataCheck:
    """Check every non-blank line of `files`; `tools` are the tool names the server serves (None: unknown, not
    checked)."""
    result = DataCheck()
    fields = tuple(row_fields)
    for path in files:
        result.files += 1
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            result.problems.append(Problem(path, None, f"cannot be read ({exc}). Save it as UTF-8 text."))
            continue
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            result.rows += 1
            result.problems.extend(
                Problem(path, number, message) for message in check_line(line, tools=tools, row_fields=fields)
            )
    return result


def check_line(line: str, *, tools: Mapping[str, Any] | None, row_fields: tuple[str, ...]) -> list[str]:
    """What is wrong with one JSONL line, each as `<what is wrong>. <how to fix>`."""
    try:
        row = json.loads(line)
    except ValueError as exc:
        return [
            f"not valid JSON ({exc}). Write one complete JSON object per line (no trailing commas, double "
            "quotes around strings, nothing after the closing brace)"
        ]
    if not isinstance(row, dict):
        return [f"a row must be a JSON object, got {_json_type(row)}. Write each row as {ROW_EXAMPLE}"]
    problems = _check_params(row.get("responses_create_params"), tools)
    for name in row_fields:
        if row.get(name) is None:
            state = "is null" if name in row else "is missing"
            problems.append(
                f"`{name}` {state}; the verifier needs it (it is in the server's row_fields). "
                f'Add "{name}": ... to the row'
            )
    return problems


def _check_params(params: Any, tools: Mapping[str, Any] | None) -> list[str]:
    if params is None:
        return [f"no `responses_create_params`. Add the Responses request the agent sends: {ROW_EXAMPLE}"]
    if not isinstance(params, dict):
        return [
            f"`responses_create_params` must be a JSON object, got {_json_type(params)}. Write it as "
            '{"input": [...], "tools": [...]}'
        ]
    problems = []
    if "input" not in params:
        problems.append(
            '`responses_create_params` has no `input`. Add the conversation, e.g. "input": '
            '[{"role": "user", "content": "..."}]'
        )
    elif not isinstance(params["input"], str | list):
        problems.append(
            f"`responses_create_params.input` must be a list of messages or a string, got "
            f'{_json_type(params["input"])}. Write it as [{{"role": "user", "content": "..."}}]'
        )
    offered = params.get("tools")
    if offered is None:
        return problems
    if not isinstance(offered, list):
        return [
            *problems,
            f"`responses_create_params.tools` must be a list, got {_json_type(offered)}. Write it as "
            '[{"type": "function", "name": "...", "parameters": {...}}]',
        ]
    served = ", ".join(sorted(tools or ())) or "none"
    for index, tool in enumerate(offered):
        where = f"`responses_create_params.tools[{index}]`"
        if not isinstance(tool, dict):
            problems.append(
                f"{where} must be a JSON object, got {_json_type(tool)}. Write it as "
                '{"type": "function", "name": "...", "parameters": {...}}'
            )
            continue
        if tool.get("type", "function") != "function":
            continue  # built-in tools (web_search, ...) are the model provider's, not this server's
        name = tool.get("name")
        nested = tool.get("function")
        if name is None and isinstance(nested, dict) and nested.get("name"):
            problems.append(
                f'{where} is in the Chat Completions shape ({{"function": {{"name": ...}}}}). Use the '
                f'Responses shape with the name at the top: {{"type": "function", "name": '
                f'"{nested["name"]}", "parameters": {{...}}}}'
            )
        elif not isinstance(name, str) or not name:
            problems.append(f"{where} has no `name`. Name one of the server's tools: {served}")
        elif tools is not None and name not in tools:
            problems.append(
                f"tool '{name}' is not a tool of this server (its tools: {served}). Rename it in the row, "
                "or add it to the server class's `tools`"
            )
    return problems


def _json_type(value: Any) -> str:
    names = {
        dict: "an object",
        list: "an array",
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        type(None): "null",
    }
    return names.get(type(value), type(value).__name__)
