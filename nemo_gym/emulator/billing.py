"""Token estimates and OpenRouter-shaped `usage` with `cost`, so cost accounting can be tested offline.

Counts are a deterministic ~4 characters per token (real counts use each model's tokenizer; only their
arithmetic matters here). Cost = prompt_tokens * prompt_price + completion_tokens * completion_price, in USD.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from nemo_gym.emulator.config import EmulatedModel, exact
from nemo_gym.emulator.policy import Turn
from nemo_gym.protocol.conversion import content_text
from nemo_gym.protocol.types import JSONObject

CHARS_PER_TOKEN = 4
TOKENS_PER_MESSAGE = 3


def _tokens(chars: int) -> int:
    return math.ceil(chars / CHARS_PER_TOKEN)


def prompt_tokens(body: Mapping[str, Any]) -> int:
    """Messages (role, text, tool calls) plus the tool schemas, ~4 characters a token, plus a per-message overhead."""
    messages: Sequence[Mapping[str, Any]] = body.get("messages") or []
    chars = 0
    for message in messages:
        chars += len(str(message.get("role", ""))) + len(content_text(message.get("content")))
        if message.get("tool_calls"):
            chars += len(json.dumps(message["tool_calls"], separators=(",", ":")))
    if body.get("tools"):
        chars += len(json.dumps(body["tools"], separators=(",", ":")))
    return _tokens(chars) + TOKENS_PER_MESSAGE * len(messages)


def completion_tokens(turn: Turn) -> int:
    chars = len(turn.content or "") + sum(len(c.name) + len(c.arguments) for c in turn.tool_calls)
    return max(1, _tokens(chars))


def cost_usd(model: EmulatedModel, prompt: int, completion: int) -> float:
    return float(Decimal(prompt) * exact(model.prompt_price) + Decimal(completion) * exact(model.completion_price))


def usage(model: EmulatedModel, prompt: int, completion: int, *, billed: bool = True) -> JSONObject:
    """The `usage` object of a chat completion. Unbilled (failed) generations report cost 0, as OpenRouter does."""
    prompt_cost = float(Decimal(prompt) * exact(model.prompt_price)) if billed else 0.0
    completion_cost = float(Decimal(completion) * exact(model.completion_price)) if billed else 0.0
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "cost": cost_usd(model, prompt, completion) if billed else 0.0,
        "is_byok": False,
        "prompt_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0, "audio_tokens": 0},
        "cost_details": {
            "upstream_inference_cost": None,
            "upstream_inference_prompt_cost": prompt_cost,
            "upstream_inference_completions_cost": completion_cost,
        },
        "completion_tokens_details": {"reasoning_tokens": 0, "image_tokens": 0},
    }
