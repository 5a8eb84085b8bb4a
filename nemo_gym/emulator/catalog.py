"""The read-only account endpoints' bodies: the model catalog (`/models`) and key status (`/key`)."""

from __future__ import annotations

from nemo_gym.emulator.config import EmulatedModel, price_string
from nemo_gym.protocol.types import JSONObject

_BASE_PARAMETERS = [
    "max_tokens",
    "temperature",
    "top_p",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "response_format",
]
_TOOL_PARAMETERS = ["tools", "tool_choice", "parallel_tool_calls"]
_LOGPROB_PARAMETERS = ["logprobs", "top_logprobs"]
_TOKENIZERS = {
    "openai": "GPT",
    "anthropic": "Claude",
    "google": "Gemini",
    "meta-llama": "Llama3",
    "mistralai": "Mistral",
}


def model_entry(model: EmulatedModel) -> JSONObject:
    """One `data[]` item of GET /models, with prices as decimal strings in USD per token."""
    author = model.id.split("/")[0]
    return {
        "id": model.id,
        "canonical_slug": model.id,
        "hugging_face_id": None,
        "name": model.name,
        "created": model.created,
        "description": model.description or f"{model.name}, emulated offline (no real model behind it).",
        "context_length": model.context_length,
        "architecture": {
            "modality": "text->text",
            "input_modalities": ["text"],
            "output_modalities": ["text"],
            "tokenizer": _TOKENIZERS.get(author, "Other"),
            "instruct_type": None,
        },
        "pricing": {
            "prompt": price_string(model.prompt_price),
            "completion": price_string(model.completion_price),
            "request": "0",
            "image": "0",
            "web_search": "0",
            "internal_reasoning": "0",
        },
        "top_provider": {
            "context_length": model.context_length,
            "max_completion_tokens": model.max_completion_tokens,
            "is_moderated": author == "openai",
        },
        "per_request_limits": None,
        "supported_parameters": _BASE_PARAMETERS
        + (_TOOL_PARAMETERS if model.supports_tools else [])
        + (_LOGPROB_PARAMETERS if model.supports_logprobs else []),
        "default_parameters": None,
    }


def mask_key(key: str) -> str:
    """`sk-or-v1-0123...cdef` style label: never the whole key, enough to tell keys apart."""
    prefix = "sk-or-v1-" if key.startswith("sk-or-v1-") else key[:6]
    secret = key[len(prefix) :]
    if len(secret) <= 6:
        return prefix + "..."
    return f"{prefix}{secret[:3]}...{secret[-3:]}"


def key_status(key: str, credits_usd: float | None, spent_usd: float) -> JSONObject:
    """The `data` of GET /key: USD limit, what is left of it, and what was used."""
    remaining = None if credits_usd is None else max(0.0, credits_usd - spent_usd)
    return {
        "label": mask_key(key),
        "limit": credits_usd,
        "limit_remaining": remaining,
        "limit_reset": None,
        "include_byok_in_limit": False,
        "usage": spent_usd,
        "usage_daily": spent_usd,
        "usage_weekly": spent_usd,
        "usage_monthly": spent_usd,
        "byok_usage": 0.0,
        "byok_usage_daily": 0.0,
        "byok_usage_weekly": 0.0,
        "byok_usage_monthly": 0.0,
        "is_free_tier": False,
        "is_provisioning_key": False,
        "expires_at": None,
        "rate_limit": {"requests": -1, "interval": "10s", "note": "This field is deprecated and safe to ignore."},
    }
