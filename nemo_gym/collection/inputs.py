"""Reading a dataset of rows, with a clear message for every bad line, and the hash that keys a row on resume."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson

from nemo_gym.protocol.types import JSONObject

_LINE_END = re.compile(r"\r\n|\r|\n")


class InputError(Exception):
    """The input file or a row in it is unusable; the message names the file and line."""


def row_hash(row: Mapping[str, Any]) -> str:
    """Stable across key order and input reordering: identifies a row's content, not its position."""
    return hashlib.sha256(orjson.dumps(row, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def read_rows(path: Path, limit: int | None = None) -> list[JSONObject]:
    """Parse and check every row up front, so a bad line fails the run before anything is spent."""
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
