"""Scoring an extracted answer with the task's own reasoning-gym scorer.

The row names its entry (task, settings, seed, size, index) and carries the entry's metadata as JSON. The scorer
gets the library's own entry when regenerating that one index reproduces the row's question and answer (JSON turns
tuples into lists, and a few scorers compare tuples, e.g. arc_agi's grids), else an entry rebuilt from the row.
A reply that hedges between several answers earns the lowest score among them, so it never beats a clear answer.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from reasoning_gym.factory import DATASETS

from resources_servers.reasoning_gym.answers import Extraction
from resources_servers.reasoning_gym.tasks import EXCLUDED_TASKS, canonical, dataset_for, unknown_task_message

MAX_CANDIDATES = 8
MAX_ANSWER_CHARS = 20_000
SOURCE_REGENERATED, SOURCE_ROW = "regenerated_entry", "row_metadata"


class RowTask(BaseModel):
    """A row's `reasoning_gym` object: which library entry it is, and that entry's metadata."""

    model_config = ConfigDict(extra="allow")
    task: str
    config: dict[str, Any] = Field(default_factory=dict)
    seed: int = 0
    size: int = Field(default=1, ge=1)
    index: int | None = Field(default=None, ge=0)
    metadata: dict[str, Any] = Field(default_factory=dict)
    oracle_answer: bool = True

    @field_validator("task")
    @classmethod
    def _known(cls, task: str) -> str:
        if task not in DATASETS or task in EXCLUDED_TASKS:
            raise ValueError(unknown_task_message(task))
        return task


def row_task(row: Mapping[str, Any]) -> RowTask:
    """The row's `reasoning_gym` object, validated; ValueError with what is wrong and how rows look."""
    spec = row.get("reasoning_gym")
    if not isinstance(spec, dict):
        raise ValueError(
            "This row has no `reasoning_gym` object; every reasoning_gym row needs one, e.g. "
            '{"reasoning_gym": {"task": "basic_arithmetic", "seed": 0, "size": 10, "index": 3, '
            '"metadata": {...}}} (ng_prepare_reasoning_gym writes it)'
        )
    try:
        return RowTask.model_validate(spec)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(('reasoning_gym', *(str(p) for p in e['loc'])))}: {str(e['msg']).removeprefix('Value error, ')}"
            for e in exc.errors()
        )
        raise ValueError(f"Invalid `reasoning_gym` object in the row: {problems}") from None


@lru_cache(maxsize=4096)
def _regenerated(task: str, config_key: str, seed: int, size: int, index: int) -> dict[str, Any]:
    return dict(dataset_for(task, json.loads(config_key), seed, size)[index])


def library_entry(spec: RowTask, question: str, expected_answer: str) -> tuple[dict[str, Any], str]:
    """The entry to score against and where it came from (`regenerated_entry` or `row_metadata`)."""
    if spec.index is not None and spec.index < spec.size:
        try:
            entry = _regenerated(spec.task, canonical(spec.config), spec.seed, spec.size, spec.index)
        except Exception:  # the library cannot rebuild it (other version, settings): the row's metadata will do
            entry = None
        if entry is not None and _same_entry(entry, question, expected_answer, spec.oracle_answer):
            return copy.deepcopy(entry), SOURCE_REGENERATED  # the cached entry stays as the library made it
    answer = expected_answer if spec.oracle_answer else None
    return {"question": question, "answer": answer, "metadata": spec.metadata}, SOURCE_ROW


def _same_entry(entry: Mapping[str, Any], question: str, expected_answer: str, oracle: bool) -> bool:
    if " ".join(str(entry.get("question", "")).split()) != " ".join(question.split()):
        return False
    return str(entry.get("answer")) == expected_answer if oracle else entry.get("answer") is None


NO_ANSWER = "no answer found: expected <answer>...</answer>, \\boxed{...} or a final 'The answer is ...' line"


@dataclass
class Verdict:
    """What the scorer made of a reply: the reward and the per-candidate scores behind it."""

    reward: float
    scores: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)


def no_answer_verdict() -> Verdict:
    return Verdict(0.0, reasons=[NO_ANSWER])


def score_extraction(
    score_fn: Callable[[str, dict[str, Any]], Any], extraction: Extraction, entry: dict[str, Any], task: str
) -> Verdict:
    """reward = the lowest library score among the distinct answers given (0 when there is none)."""
    candidates = extraction.candidates
    if not candidates:
        return no_answer_verdict()
    if len(candidates) > MAX_CANDIDATES:
        return Verdict(
            0.0,
            reasons=[
                f"{len(candidates)} different answers given (more than {MAX_CANDIDATES}); a reply must settle on one"
            ],
        )
    too_long = [c for c in candidates if len(c) > MAX_ANSWER_CHARS]
    if too_long:
        return Verdict(
            0.0,
            reasons=[f"an answer is {len(too_long[0])} characters long (the limit is {MAX_ANSWER_CHARS}); not scored"],
        )
    scores: dict[str, float] = {}
    reasons: list[str] = []
    for candidate in candidates:
        try:
            raw = score_fn(candidate, entry)
            value = float(raw)
        except Exception as exc:  # a library scorer choking on odd input scores that input 0
            value = 0.0
            reasons.append(f"the {task} scorer failed on {candidate[:60]!r} ({type(exc).__name__}); scored 0")
        scores[candidate] = min(1.0, max(0.0, value)) if math.isfinite(value) else 0.0
    reward = min(scores.values())
    where = {"answer_tag": "<answer> tags", "boxed": "\\boxed{}", "answer_line": "an 'answer is' line"}
    if len(candidates) > 1:
        reasons.append(
            f"{len(candidates)} different answers in {where[extraction.format or '']}: scored each with "
            f"the {task} scorer and kept the lowest ({reward:g})"
        )
    else:
        reasons.append(f"answer from {where[extraction.format or '']}; the {task} scorer gave {reward:g}")
    return Verdict(reward, scores, reasons)
