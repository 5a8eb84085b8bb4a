"""A small, deterministic OpenAI-compatible upstream for tests: Chat Completions, Responses and /models.

Its "model" calls `get_weather` once for every known city named in the last user message, then answers with the
tool outputs. Cities described indirectly ("the capital of Japan") are not recognised, so rewards vary the way
they do with a real weak model. It behaves like strict real servers: an assistant message with tool calls and
`content: null` is rejected, a wrong bearer key gets 401, and every request is recorded for assertions.
"""

from __future__ import annotations

import itertools
import json
import re
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from nemo_gym.protocol.conversion import content_text
from nemo_gym.protocol.types import JSONObject

KNOWN_CITIES = (
    "Paris",
    "London",
    "Tokyo",
    "Berlin",
    "Madrid",
    "Rome",
    "Sydney",
    "Cairo",
    "Toronto",
    "Mumbai",
    "Lagos",
    "Lima",
    "Oslo",
    "Seoul",
    "Nairobi",
    "Chicago",
    "Vienna",
    "Dublin",
    "Bangkok",
    "Lisbon",
)
PROMPT_TOKENS_PER_CALL = 50
COMPLETION_TOKENS_PER_CALL = 12
COST_PER_CALL_USD = 0.0001


@dataclass
class StubUpstream:
    """Configure, then `app()`; `requests` records (path, headers, body) of every call."""

    api_key: str | None = None
    model_label: str = "stub/weather-model"
    requests: list[tuple[str, dict[str, str], JSONObject]] = field(default_factory=list)
    _ids: Any = field(default_factory=lambda: itertools.count(1))

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.get("/v1/models")
        async def models() -> JSONObject:
            return {"object": "list", "data": [{"id": self.model_label, "object": "model"}]}

        @app.post("/v1/chat/completions")
        async def chat(request: Request) -> JSONResponse:
            body, refusal = await self._admit(request)
            if refusal is not None:
                return refusal
            for message in body.get("messages", []):
                if (
                    message.get("role") == "assistant"
                    and message.get("tool_calls")
                    and message.get("content", "") is None
                ):
                    return _error(400, "messages: assistant content must be a string, got null")
            return JSONResponse(self._chat_answer(body))

        @app.post("/v1/responses")
        async def responses(request: Request) -> JSONResponse:
            body, refusal = await self._admit(request)
            if refusal is not None:
                return refusal
            return JSONResponse(self._responses_answer(body))

        return app

    async def _admit(self, request: Request) -> tuple[JSONObject, JSONResponse | None]:
        body = await request.json()
        self.requests.append((request.url.path, dict(request.headers), body))
        if self.api_key is not None and request.headers.get("authorization") != f"Bearer {self.api_key}":
            return body, _error(401, "No auth credentials found")
        return body, None

    # ------------------------------------------------------------------ the "model"

    def _decide(self, user_text: str, tool_outputs: list[str], has_tools: bool) -> tuple[list[str], str]:
        """(cities to call get_weather for, final text): tools first, then an answer from their outputs."""
        if has_tools and not tool_outputs:
            cities = [c for c in KNOWN_CITIES if re.search(rf"\b{c}\b", user_text, re.IGNORECASE)]
            if cities:
                return cities, ""
        if tool_outputs:
            return [], "Here is the weather: " + " ".join(tool_outputs)
        return [], "I am not sure which city you mean."

    def _usage_chat(self) -> JSONObject:
        return {
            "prompt_tokens": PROMPT_TOKENS_PER_CALL,
            "completion_tokens": COMPLETION_TOKENS_PER_CALL,
            "total_tokens": PROMPT_TOKENS_PER_CALL + COMPLETION_TOKENS_PER_CALL,
            "cost": COST_PER_CALL_USD,
        }

    def _chat_answer(self, body: JSONObject) -> JSONObject:
        messages = body.get("messages", [])
        user_text = next((content_text(m.get("content")) for m in reversed(messages) if m.get("role") == "user"), "")
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        outputs = [content_text(m.get("content")) for m in messages[last_user + 1 :] if m.get("role") == "tool"]
        cities, text = self._decide(user_text, outputs, bool(body.get("tools")))
        n = next(self._ids)
        message: JSONObject = {"role": "assistant", "content": text or None}
        if cities:
            message["tool_calls"] = [
                {
                    "id": f"call_{n}_{i}",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": json.dumps({"city": c})},
                }
                for i, c in enumerate(cities)
            ]
        return {
            "id": f"chatcmpl-{n}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": self.model_label,
            "provider": "StubProvider",
            "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if cities else "stop"}],
            "usage": self._usage_chat(),
        }

    def _responses_answer(self, body: JSONObject) -> JSONObject:
        items = body.get("input", [])
        if isinstance(items, str):
            items = [{"role": "user", "content": items}]
        user_text = next((content_text(i.get("content")) for i in reversed(items) if i.get("role") == "user"), "")
        last_user = max((k for k, i in enumerate(items) if i.get("role") == "user"), default=-1)
        outputs = [str(i.get("output")) for i in items[last_user + 1 :] if i.get("type") == "function_call_output"]
        cities, text = self._decide(user_text, outputs, bool(body.get("tools")))
        n = next(self._ids)
        output: list[JSONObject] = [
            {
                "type": "function_call",
                "id": f"fc_{n}_{i}",
                "call_id": f"call_{n}_{i}",
                "name": "get_weather",
                "arguments": json.dumps({"city": c}),
                "status": "completed",
            }
            for i, c in enumerate(cities)
        ]
        if text:
            output.append(
                {
                    "type": "message",
                    "id": f"msg_{n}",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            )
        return {
            "id": f"resp_{n}",
            "object": "response",
            "created_at": time.time(),
            "model": self.model_label,
            "status": "completed",
            "output": output,
            "parallel_tool_calls": True,
            "tool_choice": "auto",
            "tools": body.get("tools", []),
            "usage": {
                "input_tokens": PROMPT_TOKENS_PER_CALL,
                "output_tokens": COMPLETION_TOKENS_PER_CALL,
                "total_tokens": PROMPT_TOKENS_PER_CALL + COMPLETION_TOKENS_PER_CALL,
                "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                "output_tokens_details": {"reasoning_tokens": 0},
            },
        }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "code": status}}, status_code=status)
