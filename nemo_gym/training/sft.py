"""`sft`: one chat conversation per kept rollout, prompt and trajectory as `messages`, with the row's `tools`.

Failed rollouts never reach here (the reader drops them). `min_reward` keeps rollouts scoring at least that much;
`best_of_n` keeps one rollout per row, the highest reward, the first of them on a tie (rollouts are ordered by agent,
settings and repeat). Both apply together: the best of the rollouts at or above `min_reward`.
"""

from __future__ import annotations

from collections.abc import Iterator
from types import ModuleType
from typing import Any

from nemo_gym.protocol.types import JSONObject, RolloutRecord
from nemo_gym.training.formats import Dropped, prompt_or_drop, tools_json, trace, trace_fields
from nemo_gym.training.messages import Unconvertible, completion_of, message_type
from nemo_gym.training.reading import RowGroup


class SftFormat:
    name = "sft"

    def __init__(
        self, *, keep_reasoning: bool = False, min_reward: float | None = None, best_of_n: bool = False
    ) -> None:
        self.keep_reasoning = keep_reasoning
        self.min_reward = min_reward
        self.best_of_n = best_of_n
        self.dropped = Dropped()

    def rows(self, group: RowGroup) -> Iterator[JSONObject]:
        prompt = prompt_or_drop(group, self.dropped)
        if prompt is None:
            return
        kept: list[tuple[RolloutRecord, list[JSONObject]]] = []
        for record in group.records:
            if self.min_reward is not None and float(record["reward"] or 0.0) < self.min_reward:
                self.dropped.add("below_min_reward", record)
                continue
            try:
                kept.append((record, completion_of(record, keep_reasoning=self.keep_reasoning)))
            except Unconvertible as exc:
                self.dropped.add(exc.reason, record)
        if self.best_of_n and len(kept) > 1:
            best = max(range(len(kept)), key=lambda i: (float(kept[i][0]["reward"] or 0.0), -i))
            for i, (record, _) in enumerate(kept):
                if i != best:
                    self.dropped.add("not_best_of_n", record)
            kept = [kept[best]]
        for record, completion in kept:
            yield {"messages": prompt.messages + completion, "tools": prompt.tools, **trace(record)}

    def parquet_schema(self, pa: ModuleType) -> Any:
        return pa.schema(
            [
                ("messages", pa.list_(message_type(pa, keep_reasoning=self.keep_reasoning))),
                ("tools", pa.string()),
                *trace_fields(pa),
            ]
        )

    def for_parquet(self, row: JSONObject) -> JSONObject:
        return {**row, "tools": tools_json(row["tools"])}
