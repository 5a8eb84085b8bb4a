"""Reading a dataset of rows, with a clear message for every bad line; the hash that keys a row on resume; and the
agent that runs a row (its `agent_ref`, NeMo Gym's field, else the collection's `agent_name`)."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from nemo_gym.protocol.types import JSONObject

_LINE_END = re.compile(r"\r\n|\r|\n")
AGENT_REF = "agent_ref"
AGENT_SERVER_TYPE = "responses_api_agents"
AGENT_REF_EXAMPLE = f'{{"{AGENT_REF}": {{"type": "{AGENT_SERVER_TYPE}", "name": "<agent instance>"}}}}'
EXAMPLE_ROWS = 5


class InputError(Exception):
    """The input file or a row in it is unusable; the message names the file and line."""


def row_hash(row: Mapping[str, Any]) -> str:
    """Stable across key order and input reordering: identifies a row's content, not its position."""
    return hashlib.sha256(orjson.dumps(row, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


@dataclass(frozen=True)
class Dataset:
    """The rows of an input file and the line each came from, for messages that point at a row."""

    path: Path
    rows: list[JSONObject]
    lines: list[int]

    def where(self, index: int) -> str:
        return f"{self.path}:{self.lines[index]}"


def read_rows(path: Path, limit: int | None = None) -> list[JSONObject]:
    """Parse and check every row up front, so a bad line fails the run before anything is spent."""
    return read_dataset(path, limit).rows


def read_dataset(path: Path, limit: int | None = None) -> Dataset:
    """`read_rows`, keeping each row's line number."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(
            f"Input file not found: {path}. Check +input_jsonl_fpath (a relative path is tried against "
            "the working directory, then the repository)."
        ) from None
    except IsADirectoryError:
        raise InputError(
            f"{path} is a directory; +input_jsonl_fpath must name a JSONL file, e.g. {path}/example.jsonl."
        ) from None
    except OSError as exc:
        raise InputError(f"Cannot read input file {path}: {exc.strerror or exc}.") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(_not_utf8_message(path, data, exc)) from None
    # Lines end at \n, \r\n or \r, which JSON never holds raw: str.splitlines() would also cut a row at a raw
    # U+2028, U+2029 or U+0085 inside a string (valid JSON), and number the lines unlike an editor.
    lines = _LINE_END.split(text)
    rows: list[JSONObject] = []
    numbers: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if limit is not None and len(rows) >= limit:
            break
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not valid JSON ({exc}). Each line must be one JSON object.") from None
        if (problem := row_problem(row)) is not None:
            raise InputError(f"{path}:{number}: {problem}")
        rows.append(row)
        numbers.append(number)
    if not rows:
        raise InputError(
            f"{path} has no rows (it is empty or blank). Write one JSON object per line, each with "
            "responses_create_params.input."
        )
    return Dataset(path, rows, numbers)


def row_problem(row: Any) -> str | None:
    """What makes `row` unusable as a dataset row (and how to fix it), or None."""
    if not isinstance(row, dict):
        return f"a row must be a JSON object, got {type(row).__name__}."
    params = row.get("responses_create_params")
    if not isinstance(params, dict) or "input" not in params:
        return (
            "the row has no `responses_create_params` object with an `input` "
            '(e.g. {"responses_create_params": {"input": [{"role": "user", '
            '"content": "..."}]}}).'
        )
    try:
        row_agent(row)
    except ValueError as exc:
        return str(exc)
    return None


# ------------------------------------------------------------------ which agent runs a row


def row_agent(row: Mapping[str, Any]) -> str | None:
    """The agent instance a row names in `agent_ref`: NeMo Gym's `{"type": "responses_api_agents", "name": ...}`,
    or the name alone; None when it names none. ValueError (saying what is wrong and how to write it) otherwise."""
    ref = row.get(AGENT_REF)
    if ref is None:
        return None
    if isinstance(ref, str) and ref.strip():
        return ref
    if isinstance(ref, Mapping):
        name, kind = ref.get("name"), ref.get("type", AGENT_SERVER_TYPE)
        if isinstance(name, str) and name.strip() and kind == AGENT_SERVER_TYPE:
            return name
    raise ValueError(
        f"`{AGENT_REF}` must name an agent instance, as {AGENT_REF_EXAMPLE} or just "
        f'{{"{AGENT_REF}": "<agent instance>"}}; got {json.dumps(ref)[:200]}.'
    )


def assign_agents(
    rows: Sequence[Mapping[str, Any]], default: str | None, *, where: Callable[[int], str], setting: str
) -> list[str]:
    """The agent of each row: its `agent_ref`, else `default`. InputError naming the rows when some name no agent
    and there is no default (`setting`: how the caller spells the default, e.g. `+agent_name`)."""
    named = [row_agent(row) for row in rows]
    unnamed = [i for i, name in enumerate(named) if name is None]
    if unnamed and default is None:
        shown = ", ".join(where(i) for i in unnamed[:EXAMPLE_ROWS]) + (" ..." if len(unnamed) > EXAMPLE_ROWS else "")
        raise InputError(
            f"{len(unnamed)} of {len(rows)} rows name no agent (no `{AGENT_REF}`) and no {setting} was given: "
            f"{shown}. Required: {setting}=... (the agent that runs rows without an `{AGENT_REF}`), or an "
            f"`{AGENT_REF}` on every row: {AGENT_REF_EXAMPLE}."
        )
    return [name if name is not None else str(default) for name in named]


def unknown_agents(
    agents: Sequence[str],
    running: Collection[str],
    *,
    rows: Sequence[Mapping[str, Any]],
    where: Callable[[int], str],
    setting: str,
) -> str | None:
    """A message naming each agent that rows are assigned (`agents[i]` for row i) but no running server is, with
    the rows and the agents that exist; None when all are running."""
    missing: dict[str, list[int]] = {}
    for index, name in enumerate(agents):
        if name not in running:
            missing.setdefault(name, []).append(index)
    if not missing:
        return None
    existing = ", ".join(sorted(running)) or "none"
    problems = []
    for name, indices in missing.items():
        from_ref = [i for i in indices if row_agent(rows[i]) is not None]
        if len(from_ref) < len(indices):  # rows without an agent_ref fall back to it
            problems.append(
                f"No agent named '{name}' is running. Agents: {existing}. Pass one of them as {setting}=..."
            )
        if not from_ref:
            continue
        shown = ", ".join(where(i) for i in from_ref[:EXAMPLE_ROWS]) + (" ..." if len(from_ref) > EXAMPLE_ROWS else "")
        problems.append(
            f"{len(from_ref)} row(s) name agent '{name}' in `{AGENT_REF}`, which is not running: {shown}. "
            f"Agents: {existing}. Fix those rows' `{AGENT_REF}`, or start the servers with a config that has an agent "
            f"instance '{name}'."
        )
    return "\n".join(problems)


def _not_utf8_message(path: Path, data: bytes, exc: UnicodeDecodeError) -> str:
    """Where the bytes that are not UTF-8 are, and how to convert the file without losing a row: decoding with
    replacement characters would change the rows (and their resume hashes) silently."""
    line = data.count(b"\n", 0, exc.start) + 1
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    raw_lines = data.split(b"\n")
    bad = [number for number, raw in enumerate(raw_lines, start=1) if not _is_utf8(raw)]
    shown = ", ".join(map(str, bad[:5])) + (f" ... ({len(bad)} lines)" if len(bad) > 5 else "")
    converted = path.with_name(path.stem + ".utf8" + path.suffix)
    message = (
        f"{path}:{line}: not UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} (column {column} of "
        f"the line) cannot be decoded; lines that are not UTF-8: {shown}. JSONL input must be UTF-8. Re-encode "
        f"the file from the encoding it was written in, e.g. for Latin-1: iconv -f latin1 -t utf-8 {path} > "
        f"{converted} (cp1252 for Windows files), then pass +input_jsonl_fpath={converted}."
    )
    mixed = sum(1 for raw in raw_lines if not raw.isascii() and _is_utf8(raw))
    if mixed:
        message += (
            f" Careful: {mixed} other line{' is' if mixed == 1 else 's are'} already UTF-8 with non-ASCII text, "
            "which converting the whole file would garble; convert only the lines listed."
        )
    return message


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
