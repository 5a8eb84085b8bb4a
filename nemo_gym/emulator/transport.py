"""Byte-level answers ordinary JSON responses cannot express: keep-alive padding before a body, server-sent
events, and a connection dropped halfway through a body (the client must see a protocol error, not a status)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from nemo_gym.protocol.types import JSONObject

logger = logging.getLogger(__name__)

DROP = b"\x00<drop the connection here>"
PADDING_CHUNKS = 3
PADDING_INTERVAL_S = 0.02


class RawResponse(Response):
    """Sends `chunks` as they come. A `DROP` chunk ends the exchange without completing the body, so the server
    closes the connection (uvicorn logs "ASGI callable returned without completing response")."""

    def __init__(
        self,
        chunks: AsyncIterator[bytes],
        *,
        status_code: int = 200,
        media_type: str = "application/json",
        headers: Mapping[str, str] | None = None,
        content_length: int | None = None,
    ) -> None:
        super().__init__(status_code=status_code, media_type=media_type, headers=dict(headers or {}))
        self.chunks = chunks
        self.raw_headers = [(k, v) for k, v in self.raw_headers if k != b"content-length"]
        if content_length is not None:
            self.raw_headers.append((b"content-length", str(content_length).encode()))

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        async for chunk in self.chunks:
            if chunk is DROP:
                logger.warning("drop_connection fault: closing the connection before the body is complete")
                return
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _yield(*chunks: bytes, pause_s: float = 0.0) -> AsyncIterator[bytes]:
    for chunk in chunks:
        yield chunk
        if pause_s:
            await asyncio.sleep(pause_s)


def dropped_json(payload: Mapping[str, Any], headers: Mapping[str, str]) -> RawResponse:
    """200 with a Content-Length for the whole JSON body, then the connection closes after half of it."""
    body = json.dumps(payload).encode()
    return RawResponse(_yield(body[: len(body) // 2], DROP), headers=headers, content_length=len(body))


def padded_json(payload: Mapping[str, Any], headers: Mapping[str, str]) -> RawResponse:
    """200 committed early, whitespace keep-alive padding, then the JSON (OpenRouter's non-streaming style)."""
    padding = [b"\n"] * PADDING_CHUNKS
    return RawResponse(_yield(*padding, json.dumps(payload).encode(), pause_s=PADDING_INTERVAL_S), headers=headers)


async def sleep_unless_disconnected(request: Request, seconds: float) -> bool:
    """Sleep `seconds`; False as soon as the client hangs up (so a hung request does not outlive its client)."""
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        if await request.is_disconnected():
            return False
        await asyncio.sleep(min(0.05, left))
    return True


def _sse(payload: Mapping[str, Any] | str) -> bytes:
    return f"data: {payload if isinstance(payload, str) else json.dumps(payload)}\n\n".encode()


async def chat_stream(
    completion: Mapping[str, Any], *, fault: str | None, usage_chunk: str, error: Mapping[str, Any] | None = None
) -> AsyncIterator[bytes]:
    """A chat completion as OpenRouter streams it: a processing comment, content and tool-call deltas (role on
    every delta), the finish chunk, a separate usage chunk, `[DONE]`. Faults end the stream early, with no
    `[DONE]`: `error_in_200` sends an error chunk with empty choices first thing, `finish_reason_error` one with
    `finish_reason: "error"` after partial content, `drop_connection` cuts the connection mid-stream."""
    head = {k: completion[k] for k in ("id", "provider", "model", "created")} | {"object": "chat.completion.chunk"}
    choice = completion["choices"][0]
    message = choice["message"]

    def chunk(delta: JSONObject, finish: str | None = None, native: str | None = None) -> bytes:
        return _sse(
            {
                **head,
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", **delta},
                        "finish_reason": finish,
                        "native_finish_reason": native,
                        "logprobs": None,
                    }
                ],
            }
        )

    yield b": OPENROUTER PROCESSING\n\n"
    if fault == "error_in_200":
        yield _sse({**head, "error": dict(error or {}), "choices": []})
        return
    content = message.get("content") or ""
    third = max(1, len(content) // 3)
    pieces = [content[i : i + third] for i in range(0, len(content), third)]
    for index, piece in enumerate(pieces):
        yield chunk({"content": piece})
        if fault == "drop_connection" and index == len(pieces) // 2:
            yield DROP
            return
    for index, call in enumerate(message.get("tool_calls") or []):
        opening = {
            "index": index,
            "id": call["id"],
            "type": "function",
            "function": {"name": call["function"]["name"], "arguments": ""},
        }
        yield chunk({"content": "", "tool_calls": [opening]})
        yield chunk(
            {"content": "", "tool_calls": [{"index": index, "function": {"arguments": call["function"]["arguments"]}}]}
        )
    if fault == "drop_connection":
        yield DROP
        return
    if choice.get("error"):
        yield _sse(
            {
                **head,
                "error": choice["error"],
                "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
            }
        )
        return
    yield chunk({"content": ""}, choice["finish_reason"], choice.get("native_finish_reason"))
    usage_choices: list[JSONObject] = []
    if usage_chunk == "dummy_choice":
        usage_choices = [
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "finish_reason": None,
                "native_finish_reason": None,
                "logprobs": None,
            }
        ]
    yield _sse({**head, "choices": usage_choices, "usage": completion["usage"]})
    yield _sse("[DONE]")
