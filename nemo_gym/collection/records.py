"""The rollout record: one JSON line per rollout, built from the row and the agent's answer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from nemo_gym.collection.inputs import row_hash
from nemo_gym.protocol.types import RECORD_KEYS, JSONObject, RolloutMetadata, RolloutRecord, Usage


def build_record(
    *,
    row: JSONObject,
    row_index: int,
    repeat_index: int,
    agent_name: str,
    result: Mapping[str, Any] | None,
    error: str | None,
    latency_s: float,
    fingerprint: str | None = None,
    digest: str | None = None,
    spent: Usage | None = None,
) -> RolloutRecord:
    """One line of output: position, reward and the verifier's extra fields, usage, models, trajectory, input.
    `spent`: what a failed rollout's model calls had cost (it has no response to carry usage)."""
    result = dict(result or {})
    response: JSONObject = result.pop("response", None) or {}
    usage: Usage | None = response.get("usage") or spent or None
    meta: RolloutMetadata = response.get("nemo_gym") or {}
    core = {
        "row_index": row_index,
        "repeat_index": repeat_index,
        "row_hash": digest or row_hash(row),
        "agent_name": agent_name,
        "fingerprint": fingerprint,
        "reward": result.pop("reward", None),
        "error": error,
        "usage": usage,
        "cost_usd": usage["cost"] if usage else None,
        "cost_estimated": bool(usage and usage.get("cost_estimated")),
        "models": meta.get("models") or ([response["model"]] if response.get("model") else []),
        "cost_by_model": _cost_by_model(meta),
        "retries": meta.get("retries", 0),
        "latency_s": round(latency_s, 4),
    }
    extras = {k: v for k, v in result.items() if k not in RECORD_KEYS}
    # The verifier's fields go between the record's own and the (large) response, so a line reads top-down.
    return cast(RolloutRecord, {**core, **extras, "response": response or None, "input": row})


def _cost_by_model(meta: RolloutMetadata) -> dict[str, float] | None:
    """USD per serving model over the rollout's turns (fallbacks may have served some); None if no turn had a cost."""
    totals: dict[str, float] = {}
    for turn in meta.get("turns") or []:
        cost = turn.get("cost")
        if cost is not None:
            model = str(turn.get("model"))
            totals[model] = round(totals.get(model, 0.0) + float(cost), 10)
    return totals or None
