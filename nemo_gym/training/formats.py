"""What every export format shares: the rows it turns a row group into, its Parquet shape, and why it left a
rollout out (counted, with a first example, as a sentence a user can act on)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, Protocol

import orjson

from nemo_gym.protocol.types import JSONObject, RolloutRecord
from nemo_gym.training.messages import Prompt, Unconvertible, prompt_of
from nemo_gym.training.reading import RowGroup

DROP_REASONS: dict[str, str] = {
    "no_prompt": "rollouts whose input row has no `responses_create_params.input` to make a prompt of",
    "no_completion": "rollouts whose trajectory (`response.output`) has no assistant message",
    "non_text_content": "rollouts with images or files in their messages (the export writes text-only messages)",
    "malformed_items": "rollouts whose trajectory items could not be read as chat messages (not written by "
    "a NeMo Gym agent?)",
    "other_fingerprint": "rollouts collected with other settings than +fingerprint",
    "below_min_reward": "rollouts below +min_reward",
    "not_best_of_n": "rollouts that were not the best of their row (+best_of_n=true keeps one per row)",
    "no_pair": "rollouts of rows without two rollouts at least +min_margin apart in reward (a row needs both a "
    "better and a worse rollout to make a DPO pair; collect more repeats, or lower +min_margin)",
    "identical_pair": "pairs whose chosen and rejected were the same conversation (scored differently: is the "
    "verifier random?)",
}
"""Why a rollout (or pair) was left out of an export, for the summary."""


@dataclass
class Dropped:
    """Rollouts an export left out, by reason, with where each reason first struck (`row_hash` and repeat)."""

    counts: Counter[str] = field(default_factory=Counter)
    first_at: dict[str, str] = field(default_factory=dict)

    def add(self, reason: str, record: RolloutRecord | None = None, count: int = 1) -> None:
        self.counts[reason] += count
        if record is not None and reason not in self.first_at:
            self.first_at[reason] = f"row_hash {record['row_hash']} repeat {record.get('repeat_index')}"

    def explained(self) -> list[str]:
        return [
            f"left out {count} {DROP_REASONS[reason]}"
            + (f" (first: {self.first_at[reason]})" if reason in self.first_at else "")
            for reason, count in sorted(self.counts.items())
        ]

    def to_json(self) -> JSONObject:
        return {"counts": dict(sorted(self.counts.items())), "first_at": dict(sorted(self.first_at.items()))}


class ExportFormat(Protocol):
    """One training format: JSON-ready rows from each row group, and how they are laid out in Parquet."""

    name: str
    dropped: Dropped

    def rows(self, group: RowGroup) -> Iterator[JSONObject]:
        """The output rows of one dataset row (none when every rollout was left out)."""
        ...

    def parquet_schema(self, pa: ModuleType) -> Any:
        """A fixed Arrow schema for every row (what varies per row, like tool schemas, goes in as JSON text)."""
        ...

    def for_parquet(self, row: JSONObject) -> JSONObject:
        """The row with what varies per row turned into JSON text, to fit `parquet_schema`."""
        ...


def trace(record: RolloutRecord) -> JSONObject:
    """Where a rollout came from, so a trainer can trace an example back to its record."""
    return {
        "row_hash": record["row_hash"],
        "row_index": record.get("row_index"),
        "repeat_index": record.get("repeat_index"),
        "agent_name": record.get("agent_name"),
        "fingerprint": record.get("fingerprint"),
        "reward": float(record["reward"] or 0.0),
        "models": list(record.get("models") or []),
    }


def trace_fields(pa: ModuleType) -> list[tuple[str, Any]]:
    """The Arrow fields of `trace`."""
    return [
        ("row_hash", pa.string()),
        ("row_index", pa.int64()),
        ("repeat_index", pa.int64()),
        ("agent_name", pa.string()),
        ("fingerprint", pa.string()),
        ("reward", pa.float64()),
        ("models", pa.list_(pa.string())),
    ]


def tools_json(tools: list[JSONObject]) -> str:
    """A row's tools as JSON text for Parquet: their parameter schemas differ from row to row, which no one Arrow
    type holds."""
    return orjson.dumps(tools).decode()


def prompt_or_drop(group: RowGroup, dropped: Dropped) -> Prompt | None:
    """The row's prompt, or None with every rollout of the row counted as dropped, and why."""
    try:
        return prompt_of(group.input)
    except Unconvertible as exc:
        for record in group.records:
            dropped.add(exc.reason, record)
        return None
