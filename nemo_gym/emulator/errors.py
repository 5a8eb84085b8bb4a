"""OpenRouter's error envelope and the exact message strings clients match on."""

from __future__ import annotations

from dataclasses import dataclass, field

from nemo_gym.protocol.types import JSONObject

USER_ID = "user_emulator"

NO_AUTH = "No auth credentials found"
UNKNOWN_KEY = "User not found."
NO_CREDITS = "Insufficient credits. Add more using https://openrouter.ai/credits"
TOO_MANY_MODELS = "'models' array must have 3 items or fewer."
NO_TOOL_ENDPOINTS = (
    "No endpoints found that support tool use. To learn more about provider routing, visit: "
    "https://openrouter.ai/docs/provider-routing"
)
PROVIDER_ERROR = "Provider returned error"


def invalid_model(model_id: str) -> str:
    return f"{model_id} is not a valid model ID"


def no_endpoints(model_id: str) -> str:
    return f"No endpoints found for {model_id}."


def error_body(code: int, message: str, metadata: JSONObject | None = None) -> JSONObject:
    """`{"error": {"code", "message", "metadata"?}, "user_id"}`: the shape of every OpenRouter error."""
    error: JSONObject = {"code": code, "message": message}
    if metadata is not None:
        error["metadata"] = metadata
    return {"error": error, "user_id": USER_ID}


@dataclass
class EmulatorError(Exception):
    """An error answer: HTTP status = `code`, plus optional metadata and response headers (Retry-After...)."""

    code: int
    message: str
    metadata: JSONObject | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def __str__(self) -> str:
        return f"{self.code} {self.message}"

    def body(self) -> JSONObject:
        return error_body(self.code, self.message, self.metadata)
