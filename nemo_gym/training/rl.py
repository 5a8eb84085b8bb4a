"""`rl`: one line per row with every scored rollout, its reward and its group advantage (GRPO's signal).

Advantages are `group_advantages` over the row's rollouts (mean-centred, divided by the group's standard deviation
unless `normalize_std` is off), the same function the trainer-facing API uses, so both give the same numbers. A row
whose rollouts all scored the same gets advantage 0 for each: no learning signal, but still written, so the file
holds every row (filter rows with ng_reward_profile first when only informative ones are wanted).

When the model server recorded token ids and logprobs (NeMo Gym's `prompt_token_ids`, `generation_token_ids`,
`generation_log_probs` on each model call's last output item), each rollout carries them as `turns`, one per model
call, and the record's `response.nemo_gym.token_ids` continuity summary as `token_ids` (JSON text in Parquet); both
are absent (null in Parquet) otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import orjson

from nemo_gym.collection.advantages import group_advantages
from nemo_gym.protocol.types import JSONObject, RolloutRecord
from nemo_gym.training.formats import Dropped, prompt_or_drop, tools_json
from nemo_gym.training.messages import Unconvertible, completion_of, message_type
from nemo_gym.training.reading import RowGroup

TOKEN_FIELDS = ("prompt_token_ids", "generation_token_ids", "generation_log_probs", "generation_tokens")
"""What a model server records on the last output item of each model call (`generation_tokens`, the token strings,
when the upstream gave logprobs but no ids, e.g. OpenRouter)."""


class RlFormat:
    name = "rl"

    def __init__(self, *, keep_reasoning: bool = False, normalize_std: bool = True) -> None:
        self.keep_reasoning = keep_reasoning
        self.normalize_std = normalize_std
        self.dropped = Dropped()

    def rows(self, group: RowGroup) -> Iterator[JSONObject]:
        prompt = prompt_or_drop(group, self.dropped)
        if prompt is None:
            return
        rollouts: list[JSONObject] = []
        for record in group.records:
            try:
                completion = completion_of(record, keep_reasoning=self.keep_reasoning)
            except Unconvertible as exc:
                self.dropped.add(exc.reason, record)
                continue
            rollouts.append(_rollout(record, completion))
        if not rollouts:
            return
        rewards = [float(r["reward"]) for r in rollouts]
        for rollout, advantage in zip(
            rollouts, group_advantages(rewards, normalize_std=self.normalize_std), strict=True
        ):
            rollout["advantage"] = advantage
        mean = math.fsum(rewards) / len(rewards)
        first = group.records[0]
        yield {
            "row_hash": group.row_hash,
            "row_index": first.get("row_index"),
            "agent_name": first.get("agent_name"),
            "prompt": prompt.messages,
            "tools": prompt.tools,
            "reward_mean": mean,
            "reward_std": math.sqrt(math.fsum((r - mean) ** 2 for r in rewards) / len(rewards)),
            "rollouts": rollouts,
        }

    def parquet_schema(self, pa: ModuleType) -> Any:
        messages = pa.list_(message_type(pa, keep_reasoning=self.keep_reasoning))
        turn = pa.struct(
            [
                ("prompt_token_ids", pa.list_(pa.int64())),
                ("generation_token_ids", pa.list_(pa.int64())),
                ("generation_log_probs", pa.list_(pa.float64())),
                ("generation_tokens", pa.list_(pa.string())),
            ]
        )
        rollout = pa.struct(
            [
                ("repeat_index", pa.int64()),
                ("agent_name", pa.string()),
                ("fingerprint", pa.string()),
                ("models", pa.list_(pa.string())),
                ("reward", pa.float64()),
                ("advantage", pa.float64()),
                ("completion", messages),
                ("turns", pa.list_(turn)),
                ("token_ids", pa.string()),
            ]
        )
        return pa.schema(
            [
                ("row_hash", pa.string()),
                ("row_index", pa.int64()),
                ("agent_name", pa.string()),
                ("prompt", messages),
                ("tools", pa.string()),
                ("reward_mean", pa.float64()),
                ("reward_std", pa.float64()),
                ("rollouts", pa.list_(rollout)),
            ]
        )

    def for_parquet(self, row: JSONObject) -> JSONObject:
        rollouts = [
            {**r, "token_ids": orjson.dumps(r["token_ids"]).decode()} if "token_ids" in r else r
            for r in row["rollouts"]
        ]
        return {**row, "tools": tools_json(row["tools"]), "rollouts": rollouts}


def _rollout(record: RolloutRecord, completion: list[JSONObject]) -> JSONObject:
    rollout: JSONObject = {
        "repeat_index": record.get("repeat_index"),
        "agent_name": record.get("agent_name"),
        "fingerprint": record.get("fingerprint"),
        "models": list(record.get("models") or []),
        "reward": float(record["reward"] or 0.0),
        "completion": completion,
    }
    response = record.get("response") or {}
    turns = token_turns(response.get("output") or [])
    if turns:
        rollout["turns"] = turns
    summary = (response.get("nemo_gym") or {}).get("token_ids")
    if summary is not None:
        rollout["token_ids"] = summary
    return rollout


def token_turns(output: list[JSONObject]) -> list[JSONObject]:
    """Each model call's token ids and logprobs, in order: the fields sit on the call's last output item."""
    turns: list[JSONObject] = []
    for item in output:
        if isinstance(item, dict):
            turn = {key: item[key] for key in TOKEN_FIELDS if item.get(key) is not None}
            if turn:
                turns.append(turn)
    return turns
