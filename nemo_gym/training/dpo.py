"""`dpo`: preference pairs from rollouts of the same row, in TRL's conversational form.

`prompt` is the row's prompt messages; `chosen` and `rejected` are two rollouts' trajectories (assistant and tool
messages), the chosen one scoring at least `min_margin` more. The pairing rule: every pair of the row's rollouts
that far apart is a candidate; candidates are taken widest margin first (on a tie, in the rollouts' order: agent,
settings, repeat), up to `max_pairs_per_row`. With the default of 1 that is the row's best rollout against its
worst. A rollout may appear in several pairs when more than one is asked for. Rows whose rollouts all lie closer
than `min_margin` (all solved, all failed, a single rollout) give no pair; their rollouts are counted as dropped.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

from nemo_gym.protocol.types import JSONObject, RolloutRecord
from nemo_gym.training.formats import Dropped, prompt_or_drop, tools_json
from nemo_gym.training.messages import Unconvertible, completion_of, message_type
from nemo_gym.training.reading import RowGroup


class DpoFormat:
    name = "dpo"

    def __init__(self, *, keep_reasoning: bool = False, min_margin: float = 0.5, max_pairs_per_row: int = 1) -> None:
        self.keep_reasoning = keep_reasoning
        self.min_margin = min_margin
        self.max_pairs_per_row = max_pairs_per_row
        self.dropped = Dropped()

    def rows(self, group: RowGroup) -> Iterator[JSONObject]:
        prompt = prompt_or_drop(group, self.dropped)
        if prompt is None:
            return
        rollouts: list[tuple[RolloutRecord, float, list[JSONObject]]] = []
        for record in group.records:
            try:
                completion = completion_of(record, keep_reasoning=self.keep_reasoning)
            except Unconvertible as exc:
                self.dropped.add(exc.reason, record)
                continue
            rollouts.append((record, float(record["reward"] or 0.0), completion))
        pairs = sorted(
            (
                (rollouts[i][1] - rollouts[j][1], i, j)
                for i in range(len(rollouts))
                for j in range(len(rollouts))
                if rollouts[i][1] - rollouts[j][1] >= self.min_margin
            ),
            key=lambda pair: (-pair[0], pair[1], pair[2]),
        )
        written = 0
        for _margin, i, j in pairs:
            if written == self.max_pairs_per_row:
                break
            (chosen, chosen_reward, chosen_messages) = rollouts[i]
            (rejected, rejected_reward, rejected_messages) = rollouts[j]
            if chosen_messages == rejected_messages:
                self.dropped.add("identical_pair", chosen)
                continue
            written += 1
            yield {
                "prompt": prompt.messages,
                "chosen": chosen_messages,
                "rejected": rejected_messages,
                "tools": prompt.tools,
                "row_hash": group.row_hash,
                "row_index": chosen.get("row_index"),
                "agent_name": chosen.get("agent_name"),
                "chosen_reward": chosen_reward,
                "rejected_reward": rejected_reward,
                "chosen_repeat_index": chosen.get("repeat_index"),
                "rejected_repeat_index": rejected.get("repeat_index"),
                "chosen_models": list(chosen.get("models") or []),
                "rejected_models": list(rejected.get("models") or []),
            }
        if not pairs:
            for record, _reward, _messages in rollouts:
                self.dropped.add("no_pair", record)

    def parquet_schema(self, pa: ModuleType) -> Any:
        messages = pa.list_(message_type(pa, keep_reasoning=self.keep_reasoning))
        return pa.schema(
            [
                ("prompt", messages),
                ("chosen", messages),
                ("rejected", messages),
                ("tools", pa.string()),
                ("row_hash", pa.string()),
                ("row_index", pa.int64()),
                ("agent_name", pa.string()),
                ("chosen_reward", pa.float64()),
                ("rejected_reward", pa.float64()),
                ("chosen_repeat_index", pa.int64()),
                ("rejected_repeat_index", pa.int64()),
                ("chosen_models", pa.list_(pa.string())),
                ("rejected_models", pa.list_(pa.string())),
            ]
        )

    def for_parquet(self, row: JSONObject) -> JSONObject:
        return {**row, "tools": tools_json(row["tools"])}
