"""Token usage and cost in the Responses API shape, summed over the model calls of a rollout or a run.

`cost` is USD as OpenRouter reports it in `usage.cost`; it is None until some call reports a cost, so "free"
and "unknown" stay distinguishable. `cost_estimated` is set (True) once any call's cost was computed from prices
rather than reported.
"""

from __future__ import annotations

from collections.abc import Mapping
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
    zero."""
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
    result["calls"] = int(result["calls"]) + int(usage.get("calls") or 1)
    return result


def _detail(usage: Mapping[str, Any], group: str, key: str) -> int:
    details = usage.get(group) or {}
    return int(details.get(key) or 0) if isinstance(details, Mapping) else 0
