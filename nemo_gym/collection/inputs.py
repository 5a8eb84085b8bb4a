"""Reading a dataset of rows, with a clear message for every bad line, and the hash that keys a row on resume."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from nemo_gym.protocol.types import JSONObject


class InputError(Exception):
    """The input file or a row in it is unusable; the message names the file and line."""


def row_hash(row: Mapping[str, Any]) -> str:
    """Stable across key order and input reordering: identifies a row's content, not its position."""
    return hashlib.sha256(orjson.dumps(row, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def read_rows(path: Path, limit: int | None = None) -> list[JSONObject]:
    """Parse and check every row up front, so a bad line fails the run before anything is spent."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
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
    rows: list[JSONObject] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if limit is not None and len(rows) >= limit:
            break
        try:
            row = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise InputError(f"{path}:{number}: not valid JSON ({exc}). Each line must be one JSON object.") from None
        if not isinstance(row, dict):
            raise InputError(f"{path}:{number}: a row must be a JSON object, got {type(row).__name__}.")
        params = row.get("responses_create_params")
        if not isinstance(params, dict) or "input" not in params:
            raise InputError(
                f"{path}:{number}: the row has no `responses_create_params` object with an `input` "
                '(e.g. {"responses_create_params": {"input": [{"role": "user", '
                '"content": "..."}]}}).'
            )
        rows.append(row)
    if not rows:
        raise InputError(
            f"{path} has no rows (it is empty or blank). Write one JSON object per line, each with "
            "responses_create_params.input."
        )
    return rows
