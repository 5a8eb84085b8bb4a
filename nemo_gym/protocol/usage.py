"""Token usage and cost in the Responses API shape, summed over the model calls of a rollout or a run.

`cost` is USD as OpenRouter reports it in `usage.cost`; it is None until some call reports a cost, so "free"
and "unknown" stay distinguishable. `cost_estimated` is set (True) once any call's cost was computed from prices
rather than reported.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from nemo_gym.protocol.types import Usage


def empty_usage() -> Usage:
    return {
        "input_tokens": 0,
        "output_tokens": 0,
        "total_tokens": 0,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
        "cost": None,
        "calls": 0,
    }


def add_usage(total: Usage, usage: Mapping[str, Any] | None) -> Usage:
    """`total` plus one call's (or one rollout's) usage, which may come from any endpoint: missing fields count as
    zero, a missing `calls` as one call."""
    result: Usage = {**empty_usage(), **total}
    if not usage:
        return result
    for key in ("input_tokens", "output_tokens", "total_tokens"):
        result[key] = int(result[key]) + int(usage.get(key) or 0)
    result["input_tokens_details"] = {
        "cached_tokens": int(result["input_tokens_details"]["cached_tokens"])
        + _detail(usage, "input_tokens_details", "cached_tokens")
    }
    result["output_tokens_details"] = {
        "reasoning_tokens": int(result["output_tokens_details"]["reasoning_tokens"])
        + _detail(usage, "output_tokens_details", "reasoning_tokens")
    }
    if usage.get("cost") is not None:
        result["cost"] = round(float(result["cost"] or 0.0) + float(usage["cost"]), 10)
    if usage.get("cost_estimated"):
        result["cost_estimated"] = True
    calls = usage.get("calls")  # absent in one upstream call's usage, which is one call; a sum's may be 0
    result["calls"] = int(result["calls"]) + (1 if calls is None else int(calls))
    return result


def _detail(usage: Mapping[str, Any], group: str, key: str) -> int:
    details = usage.get(group) or {}
    return int(details.get(key) or 0) if isinstance(details, Mapping) else 0


JUDGE_USAGE_KEY = "judge_usage"
"""In a `/verify` answer (and in the `error` of a /verify, or a /run, that failed because of its judge): the usage of
the resources server's LLM-judge calls for that rollout, summed, in the shape of a response's `usage`."""
JUDGE_COST_BY_MODEL_KEY = "judge_cost_by_model"
"""Beside `judge_usage`: `{served model id: USD}` of those calls."""
JUDGE_KEYS = (JUDGE_USAGE_KEY, JUDGE_COST_BY_MODEL_KEY)

_COUNTS = ("input_tokens", "output_tokens", "total_tokens", "calls")


@dataclass(frozen=True)
class JudgeSpend:
    """What a rollout's judge took, as a resources server reported it (checked and normalised)."""

    usage: Usage | None = None
    cost_by_model: dict[str, float] | None = None

    @property
    def cost_usd(self) -> float | None:
        """USD: the usage's `cost`, else the sum over `cost_by_model`; None when neither says."""
        if self.usage is not None and self.usage["cost"] is not None:
            return self.usage["cost"]
        return round(sum(self.cost_by_model.values()), 10) if self.cost_by_model else None

    @property
    def empty(self) -> bool:
        return self.usage is None and not self.cost_by_model


NO_JUDGE = JudgeSpend()


def judge_spend_of(source: Mapping[str, Any] | None, *, where: str) -> JudgeSpend:
    """`judge_usage` and `judge_cost_by_model` of a /verify answer (or of an error object); NO_JUDGE when it has
    neither. Raises ValueError naming `where` (who answered it) when one is there but not of the agreed shape, since
    a judge cost that cannot be read cannot be counted against a budget either."""
    if not source:
        return NO_JUDGE
    usage_value = source.get(JUDGE_USAGE_KEY)
    by_model_value = source.get(JUDGE_COST_BY_MODEL_KEY)
    if usage_value is None and by_model_value is None:
        return NO_JUDGE
    usage = None if usage_value is None else _usage_from(usage_value, where)
    by_model = None if by_model_value is None else _cost_by_model_from(by_model_value, where)
    if usage is not None and usage["cost"] is None and by_model:
        usage["cost"] = round(sum(by_model.values()), 10)  # the same dollars, said per model only
    return JudgeSpend(usage, by_model or None)


def _usage_from(value: Any, where: str) -> Usage:
    problem = _usage_problem(value)
    if problem is not None:
        shown = repr(value)
        raise ValueError(
            f"{where}: `{JUDGE_USAGE_KEY}` {problem} (got {shown[:200]}{'...' if len(shown) > 200 else ''}). It must "
            "be a usage object like a response's `usage`: {input_tokens, output_tokens, total_tokens, "
            "input_tokens_details: {cached_tokens}, output_tokens_details: {reasoning_tokens}, cost: USD or null, "
            "calls}, summed over the judge's model calls for the rollout; fix the resources server's /verify."
        )
    usage = add_usage(empty_usage(), value)
    if "total_tokens" not in value:
        usage["total_tokens"] = usage["input_tokens"] + usage["output_tokens"]
    return usage


def _usage_problem(value: Any) -> str | None:
    if not isinstance(value, Mapping):
        return f"is a {type(value).__name__}, not a JSON object"
    for key in _COUNTS:
        count = value.get(key)
        if count is not None and (not _is_number(count) or count < 0 or count != int(count)):
            return f"has `{key}`: {count!r}, which is not a whole number >= 0"
    for group, key in (("input_tokens_details", "cached_tokens"), ("output_tokens_details", "reasoning_tokens")):
        details = value.get(group)
        if details is not None and not isinstance(details, Mapping):
            return f"has `{group}` that is not an object"
        count = (details or {}).get(key)
        if count is not None and (not _is_number(count) or count < 0):
            return f"has `{group}.{key}`: {count!r}, which is not a number >= 0"
    cost = value.get("cost")
    if cost is not None and (not _is_number(cost) or cost < 0):
        return f"has `cost`: {cost!r}, which is neither USD (a number >= 0) nor null"
    return None


def _cost_by_model_from(value: Any, where: str) -> dict[str, float]:
    if not isinstance(value, Mapping) or not all(
        isinstance(model, str) and _is_number(cost) and cost >= 0 for model, cost in value.items()
    ):
        shown = repr(value)
        raise ValueError(
            f"{where}: `{JUDGE_COST_BY_MODEL_KEY}` must be an object of served model id to USD (numbers >= 0), e.g. "
            f'{{"openai/gpt-4o": 0.0012}} (got {shown[:200]}{"..." if len(shown) > 200 else ""}); fix the resources '
            "server's /verify."
        )
    return {model: round(float(cost), 10) for model, cost in value.items()}


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
