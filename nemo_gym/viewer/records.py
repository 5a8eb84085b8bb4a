"""An index over a rollouts file: one small summary per record, the full record read back from disk on demand.

A file of 100k rollouts is far too big to hold as parsed records, so the index keeps each line's byte offset plus
the few figures the table and filters need. Lines appended while the viewer runs (a collection in progress) are
picked up by `refresh`; a file that was rewritten is indexed again from the start.
"""

from __future__ import annotations

import hashlib
import math
import os
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import orjson

from nemo_gym.collection.resume import DuplicateKeys
from nemo_gym.protocol.nemo_gym_records import converted_or_none
from nemo_gym.protocol.types import RECORD_KEYS, JSONObject

ErrorFilter = Literal["all", "failed", "succeeded"]
SORT_KEYS = ("index", "row_index", "reward", "cost_usd", "input_tokens", "output_tokens", "latency_s")
SHORT_ERROR_CHARS = 120
QUESTION_CHARS = 160
MAX_LIMIT = 1000


class ViewerInputError(Exception):
    """The rollouts file cannot be shown; the message says why and what to pass instead."""


@dataclass(frozen=True)
class LineWarning:
    """A line that was skipped, and why (its number counts every line of the file, blank ones too)."""

    line: int
    message: str

    def text(self, path: Path) -> str:
        return f"{path}:{self.line}: {self.message}"


@dataclass(slots=True)
class Entry:
    """What the table and the filters need of one record, and where the whole record is in the file."""

    index: int
    line: int
    offset: int
    length: int
    row_index: int | None
    repeat_index: int | None
    reward: float | None
    models: tuple[str, ...]
    error: str | None
    failed: bool
    cost_usd: float | None
    """The whole rollout's: the policy's and its judge's."""
    judge_cost_usd: float | None
    """The LLM judge's part of `cost_usd` (None: no judge)."""
    cost_estimated: bool
    input_tokens: int | None
    output_tokens: int | None
    latency_s: float | None
    question: str
    search: tuple[str, ...]

    def summary(self) -> JSONObject:
        return {
            "index": self.index,
            "line": self.line,
            "row_index": self.row_index,
            "repeat_index": self.repeat_index,
            "reward": self.reward,
            "models": list(self.models),
            "error": self.error,
            "failed": self.failed,
            "cost_usd": self.cost_usd,
            "judge_cost_usd": self.judge_cost_usd,
            "cost_estimated": self.cost_estimated,
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "latency_s": self.latency_s,
            "question": self.question,
        }


@dataclass(frozen=True)
class Query:
    """Filters, order and page of the table; the page's JavaScript applies the same rules to an embedded file."""

    reward_min: float | None = None
    reward_max: float | None = None
    model: str | None = None
    error: ErrorFilter = "all"
    search: str = ""
    sort: str = "index"
    offset: int = 0
    limit: int = 100


# ---------------------------------------------------------------- reading one record


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def content_texts(content: Any) -> Iterator[str]:
    """A message's text: a plain string, or the `text` (or `refusal`) of each content part."""
    if isinstance(content, str):
        yield content
    elif isinstance(content, list):
        for part in content:
            if isinstance(part, Mapping):
                for key in ("text", "refusal"):
                    if isinstance(part.get(key), str):
                        yield part[key]
            elif isinstance(part, str):
                yield part


def item_texts(item: Any) -> Iterator[str]:
    """The searchable text of one input message or trajectory item, whatever its kind."""
    if isinstance(item, str):
        yield item
        return
    if not isinstance(item, Mapping):
        return
    yield from content_texts(item.get("content"))
    for key in ("name", "arguments", "output"):
        value = item.get(key)
        if isinstance(value, str):
            yield value
        elif key == "output" and value is not None:
            yield orjson.dumps(value).decode()
    for part in item.get("summary") or []:
        if isinstance(part, Mapping) and isinstance(part.get("text"), str):
            yield part["text"]


def input_messages(record: Mapping[str, Any]) -> list[Any]:
    """The rollout's prompt, `input.responses_create_params.input`: a string is one user message."""
    row = record.get("input")
    params = row.get("responses_create_params") if isinstance(row, Mapping) else None
    messages = params.get("input") if isinstance(params, Mapping) else None
    if isinstance(messages, str):
        return [{"role": "user", "content": messages}]
    return list(messages) if isinstance(messages, list) else []


def output_items(record: Mapping[str, Any]) -> list[Any]:
    response = record.get("response")
    items = response.get("output") if isinstance(response, Mapping) else None
    return list(items) if isinstance(items, list) else []


def question(messages: list[Any]) -> str:
    """The last user message: what a reader recognises a rollout by."""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return _short(" ".join(content_texts(message.get("content"))), QUESTION_CHARS)
    return ""


def entry_of(record: Mapping[str, Any], *, index: int, line: int, offset: int, length: int) -> Entry:
    messages = input_messages(record)
    usage = record.get("usage")
    if not isinstance(usage, Mapping):
        usage = {}
    error = record.get("error")
    first_line = str(error).splitlines()[0] if error else ""
    models = record.get("models")
    pieces = (piece for item in [*messages, *output_items(record)] for piece in item_texts(item))
    return Entry(
        index=index,
        line=line,
        offset=offset,
        length=length,
        row_index=_count(record.get("row_index")),
        repeat_index=_count(record.get("repeat_index")),
        reward=_number(record.get("reward")),
        models=tuple(str(m) for m in models) if isinstance(models, list) else (),
        error=None if error is None else _short(first_line, SHORT_ERROR_CHARS),
        failed=error is not None,
        cost_usd=_number(record.get("cost_usd")),
        judge_cost_usd=_number(record.get("judge_cost_usd")),
        cost_estimated=bool(record.get("cost_estimated")),
        input_tokens=_count(usage.get("input_tokens")),
        output_tokens=_count(usage.get("output_tokens")),
        latency_s=_number(record.get("latency_s")),
        question=question(messages),
        # Interned: system prompts and tool results repeat across rows, so 100k records share a few copies.
        search=tuple(sys.intern(piece.lower()) for piece in pieces if piece),
    )


# ---------------------------------------------------------------- filtering


def matches(entry: Entry, query: Query, needle: str) -> bool:
    """A reward bound excludes rollouts without a reward (failed ones); the search is a case-insensitive substring
    of any input message or trajectory item."""
    if query.reward_min is not None and (entry.reward is None or entry.reward < query.reward_min):
        return False
    if query.reward_max is not None and (entry.reward is None or entry.reward > query.reward_max):
        return False
    if query.model and query.model not in entry.models:
        return False
    if query.error == "failed" and not entry.failed:
        return False
    if query.error == "succeeded" and entry.failed:
        return False
    return not needle or any(needle in piece for piece in entry.search)


def sort_entries(entries: list[Entry], sort: str) -> list[Entry]:
    """By one column, ascending or with a leading '-' descending; unknown values last either way, ties in file
    order."""
    descending = sort.startswith("-")
    key = sort.removeprefix("-")
    if key not in SORT_KEYS:
        raise ValueError(f"sort must be one of {', '.join(SORT_KEYS)}, optionally with a leading '-'")
    if key == "index":
        return entries[::-1] if descending else list(entries)

    def figure(entry: Entry) -> Any:
        if key == "row_index":
            return None if entry.row_index is None else (entry.row_index, entry.repeat_index or 0)
        return getattr(entry, key)

    known = [e for e in entries if figure(e) is not None]
    return sorted(known, key=figure, reverse=descending) + [e for e in entries if figure(e) is None]


# ---------------------------------------------------------------- the index


def _describe_json_error(raw: bytes, exc: Exception) -> str:
    shown = _short(raw.decode("utf-8", "replace"), 60)
    return f"not valid JSON ({exc}); skipped. The line starts: {shown!r}"


class RolloutIndex:
    """Summaries of every record of one JSONL file, kept in step with the file as it grows."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[Entry] = []
        self.warnings: list[LineWarning] = []
        self.pending: LineWarning | None = None
        """The last line when it has no newline yet and is not JSON: probably still being written."""
        self.models: dict[str, int] = {}
        self.duplicates = DuplicateKeys()
        """Records repeating an earlier record's rollout key with the same settings: the file had two writers."""
        self._indexed_bytes = 0
        self._lines = 0
        self._tail_digest = b""
        self._stamp: tuple[int, int] | None = None
        self.lock = threading.RLock()

    @classmethod
    def load(cls, path: Path) -> RolloutIndex:
        """Index the file, or say clearly why it cannot be shown (missing, a directory, empty, nothing but junk)."""
        if not path.exists():
            raise ViewerInputError(
                f"Rollouts file not found: {path}. Pass the output of ng_collect_rollouts, e.g. "
                "+jsonl_fpath=results/rollouts.jsonl."
            )
        if path.is_dir():
            found = sorted(p.name for p in path.glob("*.jsonl"))[:5]
            hint = f" (it holds {', '.join(found)})" if found else ""
            raise ViewerInputError(
                f"{path} is a directory{hint}; +jsonl_fpath must name a rollouts JSONL file, e.g. "
                f"{path / (found[0] if found else 'rollouts.jsonl')}."
            )
        index = cls(path)
        try:
            index.refresh()
        except OSError as exc:
            raise ViewerInputError(f"Cannot read {path}: {exc.strerror or exc}.") from None
        if not index.entries:
            problems = [*index.warnings, *([index.pending] if index.pending else [])]
            if problems:
                first = problems[0].text(path)
                raise ViewerInputError(
                    f"{path} has no rollout records: none of its {len(problems)} non-blank line(s) "
                    f"is a JSON object (first: {first})."
                )
            raise ViewerInputError(
                f"{path} is empty: it has no rollout records. ng_collect_rollouts writes one JSON "
                "object per line as each rollout finishes."
            )
        return index

    def refresh(self) -> None:
        """Index lines added since the last call; start over if the file was rewritten or truncated."""
        with self.lock:
            stat = self.path.stat()
            stamp = (stat.st_size, stat.st_mtime_ns)
            if stamp == self._stamp:
                return
            if stat.st_size < self._indexed_bytes or not self._prefix_unchanged():
                self._reset()
            self._index_from(self._indexed_bytes)
            self._stamp = stamp

    def _reset(self) -> None:
        self.entries, self.warnings, self.pending, self.models = [], [], None, {}
        self.duplicates = DuplicateKeys()
        self._indexed_bytes, self._lines, self._tail_digest = 0, 0, b""

    def _prefix_unchanged(self) -> bool:
        """Whether the last indexed line still has the same bytes (cheap evidence of an append, not a rewrite)."""
        if not self.entries:
            return self._indexed_bytes == 0 or not self._tail_digest
        last = self.entries[-1]
        with self.path.open("rb") as handle:
            handle.seek(last.offset)
            return hashlib.sha256(handle.read(last.length)).digest() == self._tail_digest

    def _index_from(self, start: int) -> None:
        self.pending = None
        last_body: bytes | None = None
        with self.path.open("rb") as handle:
            handle.seek(start)
            offset = start
            for raw in handle:
                complete = raw.endswith(b"\n")
                number = self._lines + 1
                body = raw.rstrip(b"\r\n")
                if body.strip():
                    try:
                        record = orjson.loads(body)
                    except orjson.JSONDecodeError as exc:
                        if not complete:  # maybe half-written: look at it again next time
                            self.pending = LineWarning(
                                number,
                                "the last line is incomplete (no newline and not valid JSON): still being written?",
                            )
                            break
                        self.warnings.append(LineWarning(number, _describe_json_error(body, exc)))
                    else:
                        if isinstance(record, dict):
                            # A NeMo Gym rollout file is shown as ours (its `_ng_task_index` as the row, ...).
                            shown = cast(JSONObject, converted_or_none(record) or record)
                            self._add(shown, number, offset, len(body))
                            last_body = body
                        else:
                            self.warnings.append(
                                LineWarning(
                                    number,
                                    f"a rollout record must be a JSON object, got {type(record).__name__}; skipped.",
                                )
                            )
                offset += len(raw)
                self._lines = number
                self._indexed_bytes = offset
        if last_body is not None:
            self._tail_digest = hashlib.sha256(last_body).digest()

    def _add(self, record: JSONObject, line: int, offset: int, length: int) -> None:
        entry = entry_of(record, index=len(self.entries), line=line, offset=offset, length=length)
        self.entries.append(entry)
        for model in entry.models:
            self.models[model] = self.models.get(model, 0) + 1
        if "row_hash" in record:
            fingerprint = record.get("fingerprint")
            self.duplicates.see(
                sys.intern(fingerprint) if isinstance(fingerprint, str) else None,
                (str(record["row_hash"]), _count(record.get("repeat_index")) or 0),
                line,
            )

    def duplicate_warning(self) -> LineWarning | None:
        """One warning for every record that repeats an earlier one's rollout key, at the first such line."""
        with self.lock:
            example = self.duplicates.example
            if example is None:
                return None
            return LineWarning(example[1][1], f"{self.duplicates.summary()} Every copy is listed.")

    def all_warnings(self) -> list[LineWarning]:
        """Duplicated rollouts first, then the skipped lines, then a last line still being written."""
        with self.lock:
            duplicate = self.duplicate_warning()
            return [*([duplicate] if duplicate else []), *self.warnings, *([self.pending] if self.pending else [])]

    # ------------------------------------------------------------ what the API serves

    def meta(self, *, max_warnings: int = 100) -> JSONObject:
        with self.lock:
            warnings = self.all_warnings()
            rewards = [e.reward for e in self.entries if e.reward is not None]
            costs = [e.cost_usd for e in self.entries if e.cost_usd is not None]
            judge_costs = [e.judge_cost_usd for e in self.entries if e.judge_cost_usd is not None]
            return {
                "path": str(self.path),
                "name": self.path.name,
                "total": len(self.entries),
                "failed": sum(e.failed for e in self.entries),
                "models": [{"model": m, "rollouts": n} for m, n in sorted(self.models.items())],
                "reward_min": min(rewards) if rewards else None,
                "reward_max": max(rewards) if rewards else None,
                "cost_usd": round(math.fsum(costs), 10) if costs else None,
                "judge_cost_usd": round(math.fsum(judge_costs), 10) if judge_costs else None,
                "warnings": [{"line": w.line, "message": w.message} for w in warnings[:max_warnings]],
                "warnings_total": len(warnings),
                "duplicated_rollouts": len(self.duplicates.repeated),
                "skipped_lines": len(self.warnings) + (1 if self.pending else 0),
                "record_keys": list(RECORD_KEYS),
            }

    def select(self, query: Query) -> JSONObject:
        """One page of the summaries that pass the filters, in the requested order."""
        with self.lock:
            entries = list(self.entries)
        needle = query.search.strip().lower()
        chosen = [e for e in entries if matches(e, query, needle)]
        ordered = sort_entries(chosen, query.sort)
        page = ordered[query.offset : query.offset + query.limit]
        return {
            "total": len(entries),
            "matched": len(chosen),
            "offset": query.offset,
            "limit": query.limit,
            "sort": query.sort,
            "rows": [e.summary() for e in page],
        }

    def record(self, index: int) -> JSONObject:
        """The whole record at `index`, read back from the file."""
        with self.lock:
            if not 0 <= index < len(self.entries):
                raise IndexError(
                    f"There is no rollout {index}: the file has {len(self.entries)} (0 to {len(self.entries) - 1})."
                )
            entry = self.entries[index]
            try:
                with self.path.open("rb") as handle:
                    handle.seek(entry.offset)
                    raw = handle.read(entry.length)
            except OSError as exc:
                raise LookupError(f"Cannot read {self.path} any more: {exc.strerror or exc}.") from None
        try:
            record = orjson.loads(raw)
        except orjson.JSONDecodeError:
            record = None
        if not isinstance(record, dict):
            raise LookupError(
                f"{self.path} changed since it was indexed: line {entry.line} is no longer that "
                "rollout. Reload the page."
            )
        return {"index": index, "line": entry.line, "record": converted_or_none(record) or record}

    def search_texts(self) -> list[str]:
        """Each record's searchable text, for a page that filters without a server."""
        with self.lock:
            return ["\n".join(e.search) for e in self.entries]

    def all_records(self) -> list[JSONObject]:
        with self.lock:
            return [self.record(i)["record"] for i in range(len(self.entries))]


def file_size_label(path: Path) -> str:
    size: float = os.path.getsize(path)
    for unit in ("bytes", "KB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:,.0f} {unit}" if unit == "bytes" else f"{size:,.1f} {unit}"
        size = size / 1024
    return f"{size} bytes"
