"""Rollout files read back as rows: every rollout of a dataset row together, in bounded memory, with what was skipped
and why.

Records are written as rollouts finish, so a row's repeats are scattered through a file and across files (shards,
runs, models). Small inputs are grouped in memory. Larger ones are first dealt into bucket files on disk by row hash
and each bucket is grouped on its own, so memory follows the bucket size, never the input's size.

NeMo Gym's rollout records (its collector's verify responses, and the rows of its `<stem>_failures.jsonl`) are read
too: converted to ours as they are read (`protocol/nemo_gym_records.py`), counted in the report, and from then on
like any record. Our own records never go through the conversion: their `row_hash` is read from the line's bytes
(bucket path) or found on the parsed line; only a line without one is looked at as a NeMo Gym record.
"""

from __future__ import annotations

import contextlib
import math
import tempfile
import zlib
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import orjson

from nemo_gym.protocol.nemo_gym_records import from_nemo_gym_record, is_nemo_gym_record
from nemo_gym.protocol.types import JSONObject, RolloutRecord

IN_MEMORY_BYTES = 32 * 1024 * 1024
"""Inputs up to this size (in file bytes) are grouped in memory; larger ones go through bucket files."""
BUCKET_BYTES = 16 * 1024 * 1024
"""Target size of one bucket file: what is held in memory at once when grouping a large input."""
ROW_HASH_KEY = b'"row_hash":'
Entry = tuple[str, bytes, str]
"""A line dealt into a bucket: where it was read (`file:line`), its bytes, its row hash."""
MAX_OPEN_BUCKETS = 256
"""Bucket files written at once (each an open file): when this many buckets of `BUCKET_BYTES` are too few for an
input, the buckets that come out too large are dealt again into smaller ones."""
MAX_SPLIT_LEVELS = 3
"""How often an oversized bucket is dealt again; a bucket that stays large holds few rows with many rollouts each
(a row's rollouts can never be split), which is grouped as it is."""

SKIP_REASONS: dict[str, str] = {
    "not_json": "lines that are not JSON (torn by a crash mid-write, or not a rollouts file)",
    "dataset_row": "dataset rows (`responses_create_params`, no `row_hash`): the input of a collection, not its "
    "rollouts; pass the file ng_collect_rollouts wrote (its +output_jsonl_fpath)",
    "not_a_record": "JSON lines that are not rollout records (no `row_hash`): is another kind of file mixed in?",
    "failed": "failed rollouts (`error` set): nothing to learn from; ng_viewer shows why they failed, "
    "+retry_failed=true on the collection runs them again",
    "no_reward": "records without a numeric `reward` (and no error): written by something other than a collection?",
    "duplicate": "copies of a rollout already read (same row, repeat, agent and settings): a file given twice or "
    "overlapping shards; each rollout counts once, a success over a failure (for more rollouts per row, collect "
    "more repeats into the same output: +num_repeats=K resumes it with the new repeats)",
    "other_agent": "rollouts of agents not selected (+agent_name)",
}
"""Why a line or record was left out, as a sentence a user can act on."""
CONVERSIONS: dict[str, str] = {
    "nemo_gym_record": "NeMo Gym rollout records (verify responses with `_ng_task_index`, as NeMo Gym's collector "
    "writes them) as ours: the rows of its `_failures.jsonl` and rows with `mask_sample: true` count as failed "
    "rollouts, a task's repeats are one row",
}
"""Lines read as records after a conversion, as a sentence that says what was made of them."""


class TrainingInputError(Exception):
    """Rollout files that cannot be read as asked; the message says what and how to fix it."""


@dataclass
class ReadReport:
    """What reading the files met: usable records, and what was skipped, how often, where first and why."""

    files: list[str]
    lines: int = 0
    records: int = 0
    """Usable rollouts: numeric reward, each counted once."""
    rows: int = 0
    """Rows with at least one usable rollout (or, when failures are kept, one rollout at all)."""
    skipped: Counter[str] = field(default_factory=Counter)
    first_at: dict[str, str] = field(default_factory=dict)
    """reason -> `file:line` of its first occurrence."""
    agents: Counter[str] = field(default_factory=Counter)
    fingerprints: Counter[str] = field(default_factory=Counter)
    """Usable rollouts by the fingerprint of the settings that made them (None counted as `unknown`)."""
    converted: Counter[str] = field(default_factory=Counter)
    """Lines read as records after a conversion (`CONVERSIONS`), by kind; they count in the figures above too."""
    converted_first_at: dict[str, str] = field(default_factory=dict)
    _first_position: dict[str, tuple[int, int]] = field(default_factory=dict, repr=False)

    def skip(self, reason: str, where: str) -> None:
        """Count a skip at `where` (`file:line`); `first_at` keeps the earliest in the inputs' order, whichever
        order the rows were grouped in (bucket by bucket for big inputs)."""
        self.skipped[reason] += 1
        position = self._position(where)
        if reason not in self._first_position or position < self._first_position[reason]:
            self._first_position[reason] = position
            self.first_at[reason] = where

    def convert(self, kind: str, where: str) -> None:
        """Count a line converted at `where`; conversions happen in the inputs' order, so the first one seen is the
        earliest."""
        self.converted[kind] += 1
        self.converted_first_at.setdefault(kind, where)

    def _position(self, where: str) -> tuple[int, int]:
        path, _, line = where.rpartition(":")
        try:
            return self.files.index(path), int(line)
        except ValueError:
            return len(self.files), 0

    def explained(self) -> list[str]:
        """One line per reason something was skipped, then per kind of line converted: count, why, where first."""
        return [
            f"skipped {count} {SKIP_REASONS[reason]} (first at {self.first_at[reason]})"
            for reason, count in sorted(self.skipped.items())
        ] + [
            f"read {count} {CONVERSIONS[kind]} (first at {self.converted_first_at[kind]})"
            for kind, count in sorted(self.converted.items())
        ]

    def to_json(self) -> JSONObject:
        return {
            "files": self.files,
            "lines": self.lines,
            "records": self.records,
            "rows": self.rows,
            "skipped": dict(sorted(self.skipped.items())),
            "skipped_first_at": dict(sorted(self.first_at.items())),
            "agents": dict(sorted(self.agents.items())),
            "fingerprints": dict(sorted(self.fingerprints.items())),
            "converted": dict(sorted(self.converted.items())),
            "converted_first_at": dict(sorted(self.converted_first_at.items())),
        }


@dataclass
class RowGroup:
    """Every usable rollout of one dataset row, ordered by agent, settings and repeat."""

    row_hash: str
    records: list[RolloutRecord]
    failed: list[RolloutRecord] = field(default_factory=list)
    """Failed rollouts of the row; filled only when the reader keeps failures."""

    @property
    def input(self) -> JSONObject:
        """The dataset row itself, as the first of its records carries it."""
        first = self.records[0] if self.records else self.failed[0]
        return cast(JSONObject, first.get("input") or {})

    @property
    def rewards(self) -> list[float]:
        return [float(cast(float, record["reward"])) for record in self.records]

    @property
    def agent_name(self) -> str | None:
        first = self.records[0] if self.records else self.failed[0]
        return first.get("agent_name")


class RolloutFiles:
    """The rollout records of one or more files, grouped by row (`rows()`), skipping with a reason what cannot be
    used. `report` fills in as the rows are read."""

    def __init__(
        self,
        paths: Sequence[Path | str],
        *,
        keep_failed: bool = False,
        agent_names: Iterable[str] | None = None,
        in_memory_bytes: int = IN_MEMORY_BYTES,
        bucket_bytes: int = BUCKET_BYTES,
        spill_dir: Path | None = None,
    ) -> None:
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise TrainingInputError("No rollout files given: name one or more with +input_jsonl_fpath=...")
        for path in self.paths:
            if not path.is_file():
                raise TrainingInputError(
                    f"{path}: no such file. Name a rollouts file that ng_collect_rollouts wrote "
                    '(+input_jsonl_fpath=..., a list for several: "+input_jsonl_fpath=[a.jsonl,b.jsonl]").'
                )
        self.keep_failed = keep_failed
        self.agent_names = set(agent_names) if agent_names is not None else None
        self.in_memory_bytes = in_memory_bytes
        self.bucket_bytes = bucket_bytes
        self.spill_dir = spill_dir
        self.report = ReadReport(files=[str(p) for p in self.paths])

    @property
    def size_bytes(self) -> int:
        return sum(path.stat().st_size for path in self.paths)

    def rows(self) -> Iterator[RowGroup]:
        """Each row's group once. In memory, rows come in the order they first appear; through buckets, bucket by
        bucket."""
        self.report = ReadReport(files=[str(p) for p in self.paths])
        size = self.size_bytes
        if size <= self.in_memory_bytes:
            yield from self._group(self._parsed(self._lines()))
            return
        with tempfile.TemporaryDirectory(prefix="nemo_gym_rows_", dir=self.spill_dir) as tmp:
            yield from self._through_buckets(self._dealt(self._lines()), size, Path(tmp), level=0)

    def _through_buckets(self, entries: Iterator[Entry], size: int, folder: Path, level: int) -> Iterator[RowGroup]:
        """Deal the lines into bucket files by row hash, as they are (so a row's rollouts share a bucket, in the
        order they were read, and each line is parsed once, when its bucket is grouped), then group one bucket at
        a time; a bucket still too large is dealt again, one level down."""
        count = min(MAX_OPEN_BUCKETS, max(2, math.ceil(size / self.bucket_bytes)))
        here = Path(tempfile.mkdtemp(prefix=f"level{level}_", dir=folder))
        paths = [here / f"bucket{i}.jsonl" for i in range(count)]
        with contextlib.ExitStack() as stack:
            handles: list[IO[bytes]] = [stack.enter_context(p.open("wb")) for p in paths]
            for where, line, digest in entries:
                handles[_bucket_of(digest, count, level)].write(_located(where) + line)
        for path in paths:
            bucket_size = path.stat().st_size
            if bucket_size > 2 * self.bucket_bytes and level + 1 < MAX_SPLIT_LEVELS:
                yield from self._through_buckets(_read_bucket(path), bucket_size, here, level + 1)
            else:
                yield from self._group((where, orjson.loads(line)) for where, line in _bucket_lines(path))
            path.unlink()

    def _dealt(self, lines: Iterator[tuple[str, bytes]]) -> Iterator[Entry]:
        """Each line with its row hash, read from its bytes where that is safe, else from the parsed record; what
        is not a record is skipped here, with its reason."""
        for where, line in lines:
            digest = row_hash_of_line(line)
            if digest is None:
                read = self._read(where, line)
                if read is None:
                    continue
                parsed, converted = read
                digest = parsed["row_hash"]
                if converted:  # the bucket holds our record, which the bucket's grouping parses as it is
                    line = orjson.dumps(parsed)
            else:
                self.report.lines += 1
            yield where, line if line.endswith(b"\n") else line + b"\n", digest

    def _lines(self) -> Iterator[tuple[str, bytes]]:
        for path in self.paths:
            with path.open("rb") as handle:
                for number, line in enumerate(handle, start=1):
                    if line.strip():
                        yield f"{path}:{number}", line

    def _parsed(self, lines: Iterator[tuple[str, bytes]]) -> Iterator[tuple[str, JSONObject]]:
        for where, line in lines:
            record = self._record_of(where, line)
            if record is not None:
                yield where, record

    def _record_of(self, where: str, line: bytes) -> JSONObject | None:
        """The line's record, counted; None (and the reason counted) when it is not one."""
        read = self._read(where, line)
        return None if read is None else read[0]

    def _read(self, where: str, line: bytes) -> tuple[JSONObject, bool] | None:
        """The line's record and whether it was converted from NeMo Gym's, counted; None (and the reason counted)
        when it is not one."""
        report = self.report
        report.lines += 1
        try:
            record = orjson.loads(line)
        except orjson.JSONDecodeError:
            report.skip("not_json", where)
            return None
        if not isinstance(record, dict) or not isinstance(record.get("row_hash"), str):
            if is_nemo_gym_record(record):
                report.convert("nemo_gym_record", where)
                return cast(JSONObject, from_nemo_gym_record(record)), True
            is_row = isinstance(record, dict) and "responses_create_params" in record
            report.skip("dataset_row" if is_row else "not_a_record", where)
            return None
        return record, False

    def _group(self, parsed: Iterator[tuple[str, JSONObject]]) -> Iterator[RowGroup]:
        rows: dict[str, dict[tuple[Any, ...], tuple[str, JSONObject]]] = {}
        for where, record in parsed:
            identity = (record.get("agent_name"), record.get("fingerprint"), record.get("repeat_index"))
            rollouts = rows.setdefault(record["row_hash"], {})
            kept = rollouts.get(identity)
            if kept is None:
                rollouts[identity] = (where, record)
            elif kept[1].get("error") is not None and record.get("error") is None:
                rollouts[identity] = (where, record)  # a success over a failure of the same rollout
                self.report.skip("duplicate", kept[0])
            else:
                self.report.skip("duplicate", where)
        for digest, rollouts in rows.items():
            group = self._usable(digest, rollouts.values())
            if group is not None:
                yield group

    def _usable(self, digest: str, rollouts: Iterable[tuple[str, JSONObject]]) -> RowGroup | None:
        report = self.report
        usable: list[RolloutRecord] = []
        failed: list[RolloutRecord] = []
        for where, record in sorted(rollouts, key=lambda item: _order(item[1])):
            if self.agent_names is not None and record.get("agent_name") not in self.agent_names:
                report.skip("other_agent", where)
            elif record.get("error") is not None:
                report.skip("failed", where)
                if self.keep_failed:
                    failed.append(cast(RolloutRecord, record))
            elif not _is_number(record.get("reward")):
                report.skip("no_reward", where)
            else:
                usable.append(cast(RolloutRecord, record))
                report.agents[str(record.get("agent_name"))] += 1
                report.fingerprints[str(record.get("fingerprint") or "unknown")] += 1
        if not usable and not failed:
            return None
        report.records += len(usable)
        report.rows += 1
        return RowGroup(row_hash=digest, records=usable, failed=failed)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _order(record: JSONObject) -> tuple[str, str, int]:
    repeat = record.get("repeat_index")
    return (str(record.get("agent_name")), str(record.get("fingerprint")), repeat if isinstance(repeat, int) else 0)


def _bucket_of(digest: str, buckets: int, level: int = 0) -> int:
    """The bucket of a row hash; each level spreads by another function, so a bucket dealt again splits."""
    if level == 0:
        with contextlib.suppress(ValueError):  # not a hex digest: crc32 still spreads it evenly
            return int(digest[:12], 16) % buckets
    return zlib.crc32(f"{level}:{digest}".encode()) % buckets


def row_hash_of_line(line: bytes) -> str | None:
    """The record's `row_hash`, read from the line's bytes without parsing it: the first `"row_hash":"..."` of the
    top-level object (no `{` before it but the line's own) with no escape in its value. None when that cannot be
    told safely; the caller parses the line then."""
    at = line.find(ROW_HASH_KEY)
    if at <= 0 or line[0:1] != b"{" or line.find(b"{", 1, at) != -1:
        return None
    start = at + len(ROW_HASH_KEY)
    while line[start : start + 1] == b" ":
        start += 1
    if line[start : start + 1] != b'"':
        return None
    end = line.find(b'"', start + 1)
    if end == -1 or line.find(b"\\", start + 1, end) != -1:
        return None
    return line[start + 1 : end].decode("utf-8", "replace")


def _located(where: str) -> bytes:
    """A bucket line's prefix: the location, up to a NUL (which no path holds), on one line."""
    return where.replace("\n", "\\n").encode("utf-8", "backslashreplace") + b"\0"


def _bucket_lines(path: Path) -> Iterator[tuple[str, bytes]]:
    """A bucket's lines with where each was read."""
    with path.open("rb") as handle:
        for entry in handle:
            cut = entry.index(b"\0")
            yield entry[:cut].decode(), entry[cut + 1 :]


def _read_bucket(path: Path) -> Iterator[Entry]:
    """A bucket's lines with their row hashes, to deal them again one level down."""
    for where, line in _bucket_lines(path):
        digest = row_hash_of_line(line)
        if digest is None:  # dealt after a full parse: parse it again
            digest = orjson.loads(line)["row_hash"]
        yield where, line, digest
