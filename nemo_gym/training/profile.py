"""ng_reward_profile's engine: how hard each dataset row is for the model that collected it, and a new input dataset
of the rows worth training on.

One profile line per row: rollouts, failures, reward statistics, pass@k and majority@k (`passk.py`). One summary over
all rows: mean pass@k, the spread of per-row pass rates, rows always / never / sometimes solved, figures per agent
and per collection settings, and what the reader skipped and why. Rows come from the shared reader in bounded
memory; the profile keeps running totals only and writes each line as its row is read.

What one line pools: a row's rollouts under one agent (another agent is another environment, whose reward measures
something else). `group_by=row` (the default) pools every collection setting of that agent, so the shards and runs of
one model are one sample; a line whose rollouts come from different settings (fingerprints: another model,
temperature, agent setting) describes a mixture, and the summary flags it. `group_by=row_and_settings` writes one
line per row and fingerprint instead, keeping models apart.

A rollout is *correct* when its reward is at least `pass_threshold` (1.0: right for 0/1 rewards; for graded rewards
choose the reward that counts as solved). Rows never collected have no rollouts and are not in the profile, so a
filter never selects them; rows whose every rollout failed are listed with `rollouts: 0` and are never selected
either.
"""

from __future__ import annotations

import contextlib
import math
import mmap
import os
import statistics
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal, cast

import orjson
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from nemo_gym.collection.inputs import row_problem
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.paths import resolve_input_path
from nemo_gym.config.settings import validated_settings
from nemo_gym.protocol.types import JSONObject, RolloutRecord
from nemo_gym.training.passk import AnswerTally, ks_up_to, majority_at_k, pass_at_k
from nemo_gym.training.reading import RolloutFiles, RowGroup, TrainingInputError

DEFAULT_ANSWER_KEY = "extracted_answer"
"""The field in which math_verify, mcqa and reasoning_gym record the answer a rollout gave."""
MAJORITY_MAX_K = 64
"""majority@k is computed for k up to this: its exact computation grows steeply with k (pass@k has no limit)."""
HISTOGRAM_BINS = 10
UNKNOWN_ROW_INDEX = 2**62
"""Where rows without a row index sort: after every row that has one."""
GroupBy = Literal["row", "row_and_settings"]
Keep = Literal["mixed", "unsolved", "solved"]
KEEP_RULES: dict[str, str] = {
    "mixed": "0 < pass_rate < 1 (some rollouts correct, not all: the rows that give GRPO a learning signal)",
    "unsolved": "pass_rate == 0 (no rollout correct)",
    "solved": "pass_rate == 1 (every rollout correct)",
}
BOUNDS: tuple[tuple[str, str, str], ...] = (
    ("min_mean_reward", "mean_reward", ">"),
    ("max_mean_reward", "mean_reward", "<"),
    ("min_pass_rate", "pass_rate", ">"),
    ("max_pass_rate", "pass_rate", "<"),
)
"""Filter bounds: setting, profile field, comparison. Every bound is strict (exclusive)."""


class NoUsableRollouts(TrainingInputError):
    """The inputs were read but hold no rollout to profile; the message says what was skipped and why."""


class ProfileSettings(BaseModel):
    """The `+key=value` settings of ng_reward_profile."""

    model_config = ConfigDict(extra="forbid")
    input_jsonl_fpath: list[Path] = Field(description="Rollout files of ng_collect_rollouts (one, or a list)")
    output_jsonl_fpath: Path = Field(description="The profile: one JSON line per row")
    pass_threshold: float = Field(
        1.0, allow_inf_nan=False, description="A rollout is correct when its reward is at least this"
    )
    answer_key: str | None = Field(DEFAULT_ANSWER_KEY, description="The record field holding a rollout's answer")
    group_by: GroupBy = Field("row", description="row: pool a row's rollouts; row_and_settings: per fingerprint")
    agent_name: list[str] | None = Field(None, description="Profile only these agents' rollouts")
    filter_output_jsonl_fpath: Path | None = Field(None, description="Write the selected rows here, as input rows")
    keep: Keep | None = Field(None, description="mixed, unsolved or solved")
    min_mean_reward: float | None = Field(None, description="Keep rows whose mean reward is above this")
    max_mean_reward: float | None = Field(None, description="Keep rows whose mean reward is below this")
    min_pass_rate: float | None = Field(None, description="Keep rows whose pass rate is above this")
    max_pass_rate: float | None = Field(None, description="Keep rows whose pass rate is below this")

    @field_validator("input_jsonl_fpath", "agent_name", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        """One path or name, or a list; a name the command line read as a number is still a name."""
        if isinstance(value, str | Path | int | float) and not isinstance(value, bool):
            value = [value]
        return [str(v) if isinstance(v, int | float) and not isinstance(v, bool) else v for v in value or []] or None

    @field_validator("answer_key", mode="before")
    @classmethod
    def _no_key(cls, value: Any) -> Any:
        return None if value == "" else value

    @model_validator(mode="after")
    def _filter_is_complete(self) -> ProfileSettings:
        conditions = self.filter_conditions
        if conditions and self.filter_output_jsonl_fpath is None:
            raise ValueError(
                f"+{conditions[0]} selects rows for a new input dataset: name the file with "
                "+filter_output_jsonl_fpath=... (e.g. hard.jsonl)"
            )
        if self.filter_output_jsonl_fpath is not None and not conditions:
            raise ValueError(
                "+filter_output_jsonl_fpath needs a rule: +keep=mixed|unsolved|solved, or bounds such as "
                "+min_mean_reward=0 +max_mean_reward=1 or +max_pass_rate=0.5"
            )
        for low, high in (("min_mean_reward", "max_mean_reward"), ("min_pass_rate", "max_pass_rate")):
            low_value, high_value = getattr(self, low), getattr(self, high)
            if low_value is not None and high_value is not None and low_value >= high_value:
                raise ValueError(f"+{low}={low_value} >= +{high}={high_value}: no row can be kept (both are strict)")
        return self

    @property
    def filter_conditions(self) -> list[str]:
        return [key for key in ("keep", *(bound[0] for bound in BOUNDS)) if getattr(self, key) is not None]


HINTS = {
    "input_jsonl_fpath": 'a rollouts file, or several: "+input_jsonl_fpath=[a.jsonl,b.jsonl]"',
    "output_jsonl_fpath": "the profile to write, e.g. +output_jsonl_fpath=profile.jsonl",
    "group_by": "+group_by=row (pool every setting) or +group_by=row_and_settings (one line per fingerprint)",
    "keep": "+keep=mixed, +keep=unsolved or +keep=solved",
    "pass_threshold": "a number, e.g. +pass_threshold=1.0",
}


def settings_from(overrides: JSONObject) -> ProfileSettings:
    """Validated settings with resolved input paths; every problem as `+key: what to pass`."""
    settings = validated_settings(ProfileSettings, overrides, "ng_reward_profile", HINTS)
    settings.input_jsonl_fpath = [resolve_input_path(path) for path in settings.input_jsonl_fpath]
    written = {"output_jsonl_fpath": settings.output_jsonl_fpath, "summary": summary_path(settings.output_jsonl_fpath)}
    if settings.filter_output_jsonl_fpath is not None:
        written["filter_output_jsonl_fpath"] = settings.filter_output_jsonl_fpath
    for name, path in written.items():
        if any(_same_file(path, source) for source in settings.input_jsonl_fpath):
            shown = f"+{name}={path}" if name != "summary" else f"the summary {path}"
            raise ConfigError(f"{shown} is one of the inputs: it would be overwritten. Write it elsewhere.")
    if settings.filter_output_jsonl_fpath is not None and _same_file(
        settings.filter_output_jsonl_fpath, settings.output_jsonl_fpath
    ):
        raise ConfigError("+filter_output_jsonl_fpath and +output_jsonl_fpath name the same file: give two names.")
    return settings


def summary_path(output: Path) -> Path:
    return output.with_name(output.stem + ".summary.json")


def _same_file(a: Path, b: Path) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


# ----------------------------------------------------------------------------------------------- one row


def profile_line(
    records: Sequence[RolloutRecord], failed: Sequence[RolloutRecord], *, threshold: float, answer_key: str | None
) -> JSONObject:
    """The profile of one row's rollouts (those of one agent, and of one fingerprint when kept apart)."""
    first = records[0] if records else failed[0]
    rewards = [_reward(record) for record in records]
    n = len(rewards)
    correct = sum(reward >= threshold for reward in rewards)
    both = [*records, *failed]
    line: JSONObject = {
        "row_hash": first["row_hash"],
        "row_index": first.get("row_index"),
        "agent_name": first.get("agent_name"),
        "fingerprints": sorted({str(r.get("fingerprint") or "unknown") for r in both}),
        "models": sorted({str(model) for r in both for model in (r.get("models") or [])}),
        "rollouts": n,
        "failed": len(failed),
        "correct": correct,
        "pass_rate": correct / n if n else None,
        "mean_reward": statistics.fmean(rewards) if n else None,
        "std_reward": _std(rewards) if n else None,
        "min_reward": min(rewards) if n else None,
        "max_reward": max(rewards) if n else None,
        "pass_at_k": {str(k): pass_at_k(n, correct, k) for k in ks_up_to(n)},
        "answered": None,
        "majority_at_k": None,
    }
    if answer_key is not None and n and any(answer_key in record for record in records):
        tally = AnswerTally.of(
            (_answer(record.get(answer_key)), reward >= threshold)
            for record, reward in zip(records, rewards, strict=True)
        )
        line["answered"] = n - tally.abstained
        line["majority_at_k"] = {str(k): majority_at_k(tally, k) for k in ks_up_to(min(n, MAJORITY_MAX_K))}
    return line


def _std(rewards: list[float]) -> float:
    """The population standard deviation (what GRPO divides advantages by); plain floats, unlike `statistics`."""
    mean = math.fsum(rewards) / len(rewards)
    return math.sqrt(math.fsum((reward - mean) ** 2 for reward in rewards) / len(rewards))


def _reward(record: RolloutRecord) -> float:
    return float(cast(float, record["reward"]))  # the reader keeps only records with a numeric reward


def _answer(value: Any) -> str | bytes | None:
    """A comparable form of an answer: text as given (outer whitespace aside), anything else as canonical JSON;
    None or empty when the rollout gave no answer."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS)


def units_of(group: RowGroup, group_by: GroupBy) -> list[tuple[list[RolloutRecord], list[RolloutRecord]]]:
    """A row's rollouts split into what one profile line describes: per agent (another environment scores another
    task), and per fingerprint when settings are kept apart. (usable, failed) each, in a stable order."""
    units: dict[tuple[str, str], tuple[list[RolloutRecord], list[RolloutRecord]]] = {}
    for failed, records in ((False, group.records), (True, group.failed)):
        for record in records:
            key = (
                str(record.get("agent_name")),
                str(record.get("fingerprint") or "unknown") if group_by == "row_and_settings" else "",
            )
            units.setdefault(key, ([], []))[failed].append(record)
    return [units[key] for key in sorted(units)]


# ----------------------------------------------------------------------------------------------- all rows


@dataclass
class Running:
    total: float = 0.0
    count: int = 0

    def add(self, value: float) -> None:
        self.total += value
        self.count += 1

    def to_json(self) -> JSONObject:
        return {"mean": self.total / self.count if self.count else None, "rows": self.count}


@dataclass
class Figures:
    """Running totals over profile lines: what the summary says of all rows, or of one agent's."""

    rows: int = 0
    rows_only_failed: int = 0
    rollouts: int = 0
    failed: int = 0
    mean_reward: Running = field(default_factory=Running)
    always_solved: int = 0
    never_solved: int = 0
    mixed: int = 0
    reward_spread: int = 0
    histogram: list[int] = field(default_factory=lambda: [0] * HISTOGRAM_BINS)
    pass_at_k: dict[int, Running] = field(default_factory=dict)
    majority_at_k: dict[int, Running] = field(default_factory=dict)

    def add(self, line: JSONObject) -> None:
        self.rows += 1
        n, correct = int(line["rollouts"]), int(line["correct"])
        self.rollouts += n
        self.failed += int(line["failed"])
        if not n:
            self.rows_only_failed += 1
            return
        self.mean_reward.add(float(line["mean_reward"]))
        if correct == n:
            self.always_solved += 1
        elif correct == 0:
            self.never_solved += 1
        else:
            self.mixed += 1
        self.reward_spread += line["std_reward"] > 0
        self.histogram[min(HISTOGRAM_BINS - 1, correct * HISTOGRAM_BINS // n)] += 1  # exact: no float edges
        for k, value in line["pass_at_k"].items():
            self.pass_at_k.setdefault(int(k), Running()).add(value)
        for k, value in (line["majority_at_k"] or {}).items():
            self.majority_at_k.setdefault(int(k), Running()).add(value)

    def to_json(self) -> JSONObject:
        return {
            "rows": self.rows,
            "rollouts": self.rollouts,
            "failed": self.failed,
            "rows_only_failed": self.rows_only_failed,
            "mean_reward": self.mean_reward.to_json()["mean"],
            "always_solved": self.always_solved,
            "never_solved": self.never_solved,
            "mixed": self.mixed,
            "rows_with_reward_spread": self.reward_spread,
            "pass_at_k": {str(k): self.pass_at_k[k].to_json() for k in sorted(self.pass_at_k)},
            "majority_at_k": {str(k): self.majority_at_k[k].to_json() for k in sorted(self.majority_at_k)},
            "pass_rate_histogram": [
                {"from": i / HISTOGRAM_BINS, "to": (i + 1) / HISTOGRAM_BINS, "rows": count}
                for i, count in enumerate(self.histogram)
            ],
        }


@dataclass
class SettingsFigures:
    """One fingerprint's rollouts (the settings of one collection: agent, model server, sampling parameters)."""

    agent_name: str
    models: set[str] = field(default_factory=set)
    rows: int = 0
    rollouts: int = 0
    failed: int = 0
    reward_total: float = 0.0
    correct: int = 0

    def to_json(self) -> JSONObject:
        return {
            "agent_name": self.agent_name,
            "models": sorted(self.models),
            "rows": self.rows,
            "rollouts": self.rollouts,
            "failed": self.failed,
            "mean_reward": self.reward_total / self.rollouts if self.rollouts else None,
            "pass_rate": self.correct / self.rollouts if self.rollouts else None,
        }


@dataclass
class Totals:
    """Everything the summary needs, kept while the rows stream past."""

    threshold: float
    overall: Figures = field(default_factory=Figures)
    agents: dict[str, Figures] = field(default_factory=dict)
    settings: dict[str, SettingsFigures] = field(default_factory=dict)
    pooled_rows: int = 0
    answers_seen: bool = False

    def add_line(self, line: JSONObject) -> None:
        self.overall.add(line)
        self.agents.setdefault(str(line["agent_name"]), Figures()).add(line)
        self.pooled_rows += len(line["fingerprints"]) > 1
        self.answers_seen = self.answers_seen or line["majority_at_k"] is not None

    def add_group(self, group: RowGroup) -> None:
        seen: set[str] = set()
        for failed, records in ((False, group.records), (True, group.failed)):
            for record in records:
                key = str(record.get("fingerprint") or "unknown")
                figures = self.settings.setdefault(key, SettingsFigures(str(record.get("agent_name"))))
                figures.models.update(str(m) for m in record.get("models") or [])
                if key not in seen:
                    seen.add(key)
                    figures.rows += 1
                if failed:
                    figures.failed += 1
                    continue
                reward = _reward(record)
                figures.rollouts += 1
                figures.reward_total += reward
                figures.correct += reward >= self.threshold


# ----------------------------------------------------------------------------------------------- the run


@dataclass
class Selection:
    """The rows a filter wrote, and those it selected but could not write."""

    rule: str
    path: Path
    rows_written: int = 0
    not_writable: Counter[str] = field(default_factory=Counter)
    first_not_writable: str | None = None

    def to_json(self) -> JSONObject:
        return {
            "filter_output_jsonl_fpath": str(self.path),
            "rule": self.rule,
            "rows_written": self.rows_written,
            "rows_not_writable": sum(self.not_writable.values()),
            "first_not_writable": self.first_not_writable,
        }


def filter_rule(settings: ProfileSettings) -> str:
    """The filter as a sentence: every condition must hold; bounds are strict."""
    parts = [KEEP_RULES[settings.keep]] if settings.keep else []
    for measure in ("mean_reward", "pass_rate"):
        low, high = getattr(settings, f"min_{measure}"), getattr(settings, f"max_{measure}")
        if low is not None and high is not None:
            parts.append(f"{low:g} < {measure} < {high:g}")
        elif low is not None:
            parts.append(f"{measure} > {low:g}")
        elif high is not None:
            parts.append(f"{measure} < {high:g}")
    return " and ".join(parts)


def keeps(settings: ProfileSettings, line: JSONObject) -> bool:
    """Whether the filter selects a profile line (a row without a usable rollout never is)."""
    if not line["rollouts"]:
        return False
    rate = float(line["pass_rate"])
    if settings.keep == "mixed" and not 0 < rate < 1:
        return False
    if settings.keep == "unsolved" and rate != 0:
        return False
    if settings.keep == "solved" and rate != 1:
        return False
    for name, measure, sign in BOUNDS:
        bound = getattr(settings, name)
        if bound is None:
            continue
        value = float(line[measure])
        if (sign == ">" and not value > bound) or (sign == "<" and not value < bound):
            return False
    return True


class OrderedOutput:
    """A JSONL output in dataset order, in bounded memory. Rows arrive in the reader's order (bucket by bucket for a
    big input), so lines go to `<path>.partial` as they come, with 24 bytes per line kept (row index, offset,
    length); `commit` then copies them into `<path>` sorted by row index (a row's lines stay together, in the order
    they were written). Until then, `<path>` is untouched: an interrupted run leaves no half-written output."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self.handle: IO[bytes] = self.partial.open("w+b")
        except OSError as exc:
            raise TrainingInputError(f"Cannot write {path}: {exc.strerror or exc}. Choose a writable path.") from None
        self.keys = array("q")
        self.offsets = array("q")
        self.lengths = array("q")
        self.size = 0

    def write(self, row_index: Any, line: bytes) -> None:
        self.keys.append(
            row_index if isinstance(row_index, int) and 0 <= row_index < UNKNOWN_ROW_INDEX else UNKNOWN_ROW_INDEX
        )
        self.offsets.append(self.size)
        self.lengths.append(len(line))
        self.handle.write(line)
        self.size += len(line)

    def commit(self) -> None:
        """Write `<path>` in row-index order (stable), then drop the partial file."""
        self.handle.flush()
        order = sorted(range(len(self.keys)), key=self.keys.__getitem__)
        sorting = self.path.with_name(self.path.name + ".sorting")
        try:
            with sorting.open("wb") as out:
                if self.size:
                    with mmap.mmap(self.handle.fileno(), 0, access=mmap.ACCESS_READ) as data:
                        for i in order:
                            start = self.offsets[i]
                            out.write(data[start : start + self.lengths[i]])
            os.replace(sorting, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                sorting.unlink()
            raise TrainingInputError(f"Cannot write {self.path}: {exc.strerror or exc}.") from None
        finally:
            self.discard()

    def discard(self) -> None:
        self.handle.close()
        with contextlib.suppress(OSError):
            self.partial.unlink()


def profile(settings: ProfileSettings, *, progress: Callable[[str], None] | None = None) -> JSONObject:
    """Write the profile, its summary (`<output stem>.summary.json`) and, when asked, the filtered input rows; return
    the summary. TrainingInputError when an input cannot be read or an output written, NoUsableRollouts when the
    inputs hold no usable rollout; either way nothing is written."""
    files = RolloutFiles(settings.input_jsonl_fpath, keep_failed=True, agent_names=settings.agent_name)
    if progress is not None:
        progress(f"reading {len(files.paths)} file(s), {files.size_bytes / 1e6:,.1f} MB")
    totals = Totals(threshold=settings.pass_threshold)
    selection = None
    if settings.filter_output_jsonl_fpath is not None:
        selection = Selection(filter_rule(settings), settings.filter_output_jsonl_fpath)
    outputs = [OrderedOutput(settings.output_jsonl_fpath)]
    try:
        if selection is not None:
            outputs.append(OrderedOutput(selection.path))
        for group in files.rows():
            totals.add_group(group)
            selected = False
            for records, failed in units_of(group, settings.group_by):
                line = profile_line(records, failed, threshold=settings.pass_threshold, answer_key=settings.answer_key)
                outputs[0].write(line["row_index"], orjson.dumps(line) + b"\n")
                totals.add_line(line)
                selected = selected or (selection is not None and keeps(settings, line))
            if selected and selection is not None:
                _write_row(group, outputs[1], selection)
        if not totals.overall.rows:
            raise NoUsableRollouts(_nothing_usable(files))
        for output in outputs:
            output.commit()
    finally:
        for output in outputs:
            output.discard()
    summary = _summary(settings, files, totals, selection)
    path = summary_path(settings.output_jsonl_fpath)
    try:
        path.write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2 | orjson.OPT_APPEND_NEWLINE))
    except OSError as exc:
        raise TrainingInputError(f"Cannot write the summary {path}: {exc.strerror or exc}.") from None
    return summary


def _write_row(group: RowGroup, output: OrderedOutput, selection: Selection) -> None:
    """The row as it was collected (the records' `input`), once, however many profile lines selected it."""
    row = group.input
    problem = row_problem(row) if row else "the records carry no `input` row."
    if problem is not None:
        selection.not_writable[problem] += 1
        selection.first_not_writable = selection.first_not_writable or f"row {group.row_hash}: {problem}"
        return
    output.write(_row_index(group), orjson.dumps(row) + b"\n")
    selection.rows_written += 1


def _row_index(group: RowGroup) -> Any:
    first = group.records[0] if group.records else group.failed[0]
    return first.get("row_index")


def _nothing_usable(files: RolloutFiles) -> str:
    report = files.report
    why = report.explained()
    return (
        f"no usable rollout in {', '.join(report.files)}: {report.lines:,} lines read"
        + (": " + "; ".join(why) if why else "")
        + ". Name files that ng_collect_rollouts wrote (+input_jsonl_fpath=...)"
        + (" and check +agent_name." if report.skipped.get("other_agent") else ".")
    )


def _summary(settings: ProfileSettings, files: RolloutFiles, totals: Totals, selection: Selection | None) -> JSONObject:
    warnings: list[str] = []
    if totals.pooled_rows:
        listed = "; ".join(
            f"{fp} ({figures.agent_name}: {', '.join(sorted(figures.models)) or 'models unknown'})"
            for fp, figures in sorted(totals.settings.items())
        )
        warnings.append(
            f"{totals.pooled_rows:,} rows pool rollouts collected with different settings ({listed}): their pass@k "
            "mixes models or sampling settings. Pass +group_by=row_and_settings to profile each setting apart."
        )
    if totals.overall.rows_only_failed:
        warnings.append(
            f"{totals.overall.rows_only_failed:,} rows have only failed rollouts: listed with rollouts 0, no figures, "
            "never selected by a filter (+retry_failed=true on their collection runs them again)."
        )
    if selection is not None and selection.not_writable:
        warnings.append(
            f"{sum(selection.not_writable.values()):,} selected rows could not be written as input rows (first: "
            f"{selection.first_not_writable})."
        )
    if selection is not None and not selection.rows_written:
        warnings.append(
            f"no row matched the filter ({selection.rule}): {selection.path} is empty. The pass-rate histogram "
            "shows how the rows are spread."
        )
    notes = [
        "Rows that were never collected have no rollouts and are not in the profile.",
    ]
    if settings.answer_key is not None and not totals.answers_seen:
        notes.append(
            f"majority@k: no rollout records `{settings.answer_key}`, so which answer a rollout gave is unknown; "
            "name the verifier's answer field with +answer_key=... (math_verify, mcqa and reasoning_gym record "
            f"`{DEFAULT_ANSWER_KEY}`)."
        )
    return {
        "inputs": [str(path) for path in settings.input_jsonl_fpath],
        "output_jsonl_fpath": str(settings.output_jsonl_fpath),
        "group_by": settings.group_by,
        "pass_threshold": settings.pass_threshold,
        "answer_key": settings.answer_key,
        "dataset_rows": files.report.rows,
        **totals.overall.to_json(),
        "agents": {name: figures.to_json() for name, figures in sorted(totals.agents.items())},
        "settings": {fp: figures.to_json() for fp, figures in sorted(totals.settings.items())},
        "rows_pooling_settings": totals.pooled_rows,
        "filter": selection.to_json() if selection is not None else None,
        "skipped": files.report.explained(),
        "read": files.report.to_json(),
        "warnings": warnings,
        "notes": notes,
    }
