"""What the model calls a resources server makes for one rollout cost (an LLM judge's while scoring it, a tool's
while it runs), and whether a judge call failed. The server client adds each call's answer to the meter of the
request being served; the host puts the sum into the verify answer (`judge_usage`, `judge_cost_by_model`), or fails
the rollout when a judge call failed.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import orjson

from nemo_gym.protocol.types import Usage
from nemo_gym.protocol.usage import add_usage, empty_usage

MODEL_CALL_PATHS = ("/v1/responses", "/v1/chat/completions")


@dataclass
class JudgeMeter:
    """Usage, USD per served model and failures of the model calls made for one rollout's verification."""

    usage: Usage = field(default_factory=empty_usage)
    cost_by_model: dict[str, float] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    @property
    def calls(self) -> int:
        return int(self.usage["calls"]) + len(self.failures)

    def add_answer(self, status: int, raw: bytes) -> None:
        """One model call's HTTP answer: usage and cost of a success; the error message of a failure."""
        try:
            body = orjson.loads(raw) if raw else None
        except orjson.JSONDecodeError:
            body = None
        if status >= 400 or not isinstance(body, dict):
            self.failures.append(_error_text(status, body, raw))
            return
        usage = _responses_shaped(body.get("usage"))
        self.usage = add_usage(self.usage, usage or {"calls": 1})
        cost = (usage or {}).get("cost")
        if cost is not None:
            served = str(((body.get("nemo_gym") or {}).get("served_model")) or body.get("model") or "unknown")
            self.cost_by_model[served] = round(self.cost_by_model.get(served, 0.0) + float(cost), 10)

    def add_failure(self, message: str) -> None:
        self.failures.append(message)

    def add_usage_of(self, other: JudgeMeter) -> None:
        """`other`'s usage and cost (not its failures) added to this meter's."""
        if other.usage["calls"]:
            self.usage = add_usage(self.usage, other.usage)
        for model, cost in other.cost_by_model.items():
            self.cost_by_model[model] = round(self.cost_by_model.get(model, 0.0) + cost, 10)

    def report(self) -> dict[str, Any]:
        """The fields a verify answer carries about its judge (none when no model was called)."""
        if not self.usage["calls"]:
            return {}
        return {"judge_usage": self.usage, "judge_cost_by_model": dict(self.cost_by_model) or None}


current_meter: ContextVar[JudgeMeter | None] = ContextVar("nemo_gym_judge_meter", default=None)
"""The meter of the verification being served in this task (None outside one: calls are not metered)."""


def _responses_shaped(usage: Any) -> dict[str, Any] | None:
    """A Responses or Chat Completions usage object in the Responses shape `add_usage` sums."""
    if not isinstance(usage, Mapping):
        return None
    if "input_tokens" in usage:
        return dict(usage)
    shaped = {
        "input_tokens": usage.get("prompt_tokens") or 0,
        "output_tokens": usage.get("completion_tokens") or 0,
        "total_tokens": usage.get("total_tokens") or 0,
        "input_tokens_details": {"cached_tokens": (usage.get("prompt_tokens_details") or {}).get("cached_tokens", 0)},
        "output_tokens_details": {
            "reasoning_tokens": (usage.get("completion_tokens_details") or {}).get("reasoning_tokens", 0)
        },
        "cost": usage.get("cost"),
    }
    if usage.get("cost_estimated"):
        shaped["cost_estimated"] = True
    return shaped


def _error_text(status: int, body: Any, raw: bytes) -> str:
    error = body.get("error") if isinstance(body, dict) else None
    message = error.get("message") if isinstance(error, dict) else None
    text = str(message) if message else raw[:500].decode("utf-8", "replace")
    return f"HTTP {status}: {text}" if status >= 400 else f"not a JSON object: {text}"
