"""The rollout record: one JSON line per rollout, built from the row and the agent's answer.

A rollout can have two bills: the policy's model calls (`usage`, from the agent's final response) and, when the
resources server scores with an LLM judge, the judge's (`judge_usage`, from its /verify answer). `cost_usd` is the
whole rollout's, so budgets and cost-per-rollout figures count both; `cost_by_model` names every model that was paid.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from nemo_gym.collection.inputs import row_hash
from nemo_gym.protocol.types import RECORD_KEYS, JSONObject, RolloutMetadata, RolloutRecord, Usage
from nemo_gym.protocol.usage import JUDGE_KEYS, NO_JUDGE, JudgeSpend, judge_spend_of


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
    judge: JudgeSpend = NO_JUDGE,
) -> RolloutRecord:
    """One line of output: position, reward and the verifier's extra fields, usage, models, trajectory, input.
    `spent`: what a failed rollout's model calls had cost (it has no response to carry usage). `judge`: what its judge
    had cost, for a rollout whose /verify failed; a successful one's comes with the verifier's answer in `result`
    (ValueError when that is not of the agreed shape: check it with `judge_spend_of` first)."""
    result = dict(result or {})
    response: JSONObject = result.pop("response", None) or {}
    usage: Usage | None = response.get("usage") or spent or None
    meta: RolloutMetadata = response.get("nemo_gym") or {}
    verified = judge_spend_of(result, where=f"agent '{agent_name}'")
    if not verified.empty:
        judge = verified
    judge_cost = judge.cost_usd
    core = {
        "row_index": row_index,
        "repeat_index": repeat_index,
        "row_hash": digest or row_hash(row),
        "agent_name": agent_name,
        "fingerprint": fingerprint,
        "reward": result.pop("reward", None),
        "error": error,
        "usage": usage,
        "cost_usd": _total(usage["cost"] if usage else None, judge_cost),
        "judge_usage": judge.usage,
        "judge_cost_usd": judge_cost,
        "cost_estimated": bool(usage and usage.get("cost_estimated"))
        or bool(judge.usage and judge.usage.get("cost_estimated")),
        "models": meta.get("models") or ([response["model"]] if response.get("model") else []),
        "cost_by_model": _merged(_cost_by_model(meta), judge.cost_by_model),
        "retries": meta.get("retries", 0),
        "latency_s": round(latency_s, 4),
    }
    extras = {k: v for k, v in result.items() if k not in RECORD_KEYS and k not in JUDGE_KEYS}
    # The verifier's fields go between the record's own and the (large) response, so a line reads top-down.
    return cast(RolloutRecord, {**core, **extras, "response": response or None, "input": row})


def _total(policy: float | None, judge: float | None) -> float | None:
    """The rollout's USD; exactly the policy's when there is no judge cost (records without a judge are unchanged)."""
    if judge is None:
        return policy
    return judge if policy is None else round(policy + judge, 10)


def _cost_by_model(meta: RolloutMetadata) -> dict[str, float] | None:
    """USD per serving model over the rollout's turns (fallbacks may have served some); None if no turn had a cost."""
    totals: dict[str, float] = {}
    for turn in meta.get("turns") or []:
        cost = turn.get("cost")
        if cost is not None:
            model = str(turn.get("model"))
            totals[model] = round(totals.get(model, 0.0) + float(cost), 10)
    return totals or None


def _merged(policy: dict[str, float] | None, judge: Mapping[str, float] | None) -> dict[str, float] | None:
    """The policy's and the judge's USD per model together (one model may have played both)."""
    if not judge:
        return policy
    totals = dict(policy or {})
    for model, cost in judge.items():
        totals[model] = round(totals.get(model, 0.0) + float(cost), 10)
    return totals
