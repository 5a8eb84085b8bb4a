"""A stand-in for a vLLM server's OpenAI-compatible API, for tests and benchmarks (vLLM itself needs a GPU).

It speaks the token fields vLLM documents for `POST /v1/chat/completions`: with `return_token_ids` the answer
carries `prompt_token_ids` (top level) and the choice's `token_ids`; with `logprobs` the choice's
`logprobs.content` lists `{token, logprob, bytes, top_logprobs}` per generated token, the token written as
`token_id:<id>` under `return_tokens_as_token_ids`; and `POST /tokenize` (at the server root) turns messages (with
the generation prompt) or a prompt string into ids. The "model" is StubUpstream's weather model; the tokenizer is
a toy (words, digits, single characters and two special tokens, ids from a checksum) over a ChatML-like template,
so ids are deterministic and a conversation's later prompts start with the earlier prompt + generation ids.

Two switches make it misbehave the way real servers do: `return_token_ids=False` is a vLLM too old for that field
(ids only through `return_tokens_as_token_ids` and `/tokenize`), and `retokenize_history=True` renders earlier tool
calls' arguments re-serialised (`{"city":"Paris"}` where the model generated `{"city": "Paris"}`), the classic
train/inference mismatch.

    python -m nemo_gym.testing.vllm_stub --port 18000 [--no-return-token-ids] [--retokenize-history] [--latency-ms 200]
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import json
import re
import zlib
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from nemo_gym.protocol.conversion import content_text
from nemo_gym.protocol.types import JSONObject
from nemo_gym.testing.fast_upstream import answer_lifespan, read_body, respond, serve_fast
from nemo_gym.testing.stub_upstream import StubUpstream

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

IM_START, IM_END = "<|im_start|>", "<|im_end|>"
SPECIAL_IDS = {IM_START: 1, IM_END: 2}
FIRST_ORDINARY_ID = 100
VOCAB_SIZE = 49_152
MAX_MODEL_LEN = 8192
_PIECE = re.compile(r"<\|im_(?:start|end)\|>| ?[A-Za-z]+| ?\d|\s|[^\sA-Za-z\d]")
"""Pieces never merge a newline into the next word, so a prompt ending in `\\n` tokenises the same alone as it does
inside a longer conversation (as real chat templates are designed to)."""


def pieces(text: str) -> list[str]:
    return _PIECE.findall(text)


@functools.lru_cache(maxsize=65536)
def piece_id(piece: str) -> int:
    if piece in SPECIAL_IDS:
        return SPECIAL_IDS[piece]
    return FIRST_ORDINARY_ID + zlib.crc32(piece.encode()) % (VOCAB_SIZE - FIRST_ORDINARY_ID)


def tokenize(text: str) -> list[int]:
    return list(_tokenized(text))


@functools.lru_cache(maxsize=4096)
def _tokenized(text: str) -> tuple[int, ...]:
    """Benchmarks send the same prompts again and again; a real vLLM has the ids anyway, so the stub's own
    tokenising must not be what a benchmark of recording them measures."""
    return tuple(piece_id(p) for p in pieces(text))


@functools.lru_cache(maxsize=65536)
def piece_logprob(piece: str, position: int) -> float:
    """A deterministic logprob in (-2, 0) for the piece generated at `position`."""
    return -((zlib.crc32(f"{position}:{piece}".encode()) % 2000) + 1) / 1000.0


@dataclass
class VLLMStub:
    """Configure, then serve (it is an ASGI app); `requests` records the body of every chat completion."""

    return_token_ids: bool = True
    retokenize_history: bool = False
    model_label: str = "stub/vllm-policy"
    record: bool = True
    latency_s: float = 0.0
    """How long each chat completion takes, as a real model's generation would."""
    requests: list[JSONObject] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.model = StubUpstream(model_label=self.model_label)

    # ------------------------------------------------------------------ the template

    def render_message(self, message: Mapping[str, Any], *, in_history: bool) -> str:
        """One message's text between its role line and `<|im_end|>`."""
        body = content_text(message.get("content"))
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            arguments = str(function.get("arguments") or "{}")
            if in_history and self.retokenize_history:
                arguments = json.dumps(json.loads(arguments), separators=(",", ":"))
            body += f'<tool_call>{{"name": "{function.get("name")}", "arguments": {arguments}}}</tool_call>'
        return body

    def render_prompt(self, messages: Sequence[Mapping[str, Any]], tools: Sequence[Any] | None) -> str:
        text = ""
        if tools:
            names = ", ".join(str((t.get("function") or {}).get("name")) for t in tools)
            text += f"{IM_START}system\nTools: {names}{IM_END}\n"
        for message in messages:
            role = message.get("role", "user")
            text += f"{IM_START}{role}\n{self.render_message(message, in_history=True)}{IM_END}\n"
        return text + f"{IM_START}assistant\n"

    # ------------------------------------------------------------------ the answers

    def chat_answer(self, body: JSONObject) -> JSONObject:
        if self.record:
            self.requests.append(body)
        answer = self.model._chat_answer(body)
        answer["model"] = self.model_label
        answer.pop("provider", None)
        choice = answer["choices"][0]
        choice["stop_reason"] = None
        messages = body.get("messages") or []
        prompt_ids = tokenize(self.render_prompt(messages, body.get("tools")))
        generated = [*pieces(self.render_message(choice["message"], in_history=False)), IM_END]
        generated_ids = [piece_id(p) for p in generated]
        answer["usage"] = {
            "prompt_tokens": len(prompt_ids),
            "completion_tokens": len(generated_ids),
            "total_tokens": len(prompt_ids) + len(generated_ids),
        }
        choice["logprobs"] = self._logprobs(body, generated, generated_ids, start=len(prompt_ids))
        if body.get("return_token_ids") and self.return_token_ids:
            answer["prompt_token_ids"] = prompt_ids
            choice["token_ids"] = generated_ids
        return answer

    def _logprobs(
        self, body: Mapping[str, Any], generated: list[str], ids: list[int], *, start: int
    ) -> JSONObject | None:
        if not body.get("logprobs"):
            return None
        as_ids = bool(body.get("return_tokens_as_token_ids"))
        content = []
        for offset, (piece, token_id) in enumerate(zip(generated, ids, strict=True)):
            token = f"token_id:{token_id}" if as_ids else piece
            content.append(
                {
                    "token": token,
                    "logprob": piece_logprob(piece, start + offset),
                    "bytes": list(piece.encode()),
                    "top_logprobs": [],
                }
            )
        return {"content": content}

    def tokenize_answer(self, body: Mapping[str, Any]) -> JSONObject:
        if "messages" in body:
            text = self.render_prompt(body.get("messages") or [], body.get("tools"))
            if not body.get("add_generation_prompt", True):
                text = text.removesuffix(f"{IM_START}assistant\n")
        else:
            text = str(body.get("prompt", ""))
        tokens = tokenize(text)
        return {"count": len(tokens), "max_model_len": MAX_MODEL_LEN, "tokens": tokens}

    # ------------------------------------------------------------------ ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await answer_lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        path, method = scope["path"], scope["method"]
        if method == "POST" and path.endswith("/chat/completions"):
            body = orjson.loads(await read_body(receive))
            if self.latency_s:
                await asyncio.sleep(self.latency_s)
            await _respond(send, 200, self.chat_answer(body))
        elif method == "POST" and path == "/tokenize":
            await _respond(send, 200, self.tokenize_answer(orjson.loads(await read_body(receive))))
        elif method == "GET" and path.endswith("/models"):
            await _respond(send, 200, {"object": "list", "data": [{"id": self.model_label, "object": "model"}]})
        else:
            await _respond(send, 404, {"error": {"message": f"{method} {path} not found", "code": 404}})


async def _respond(send: Send, status: int, payload: JSONObject) -> None:
    await respond(send, status, orjson.dumps(payload))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--no-return-token-ids", action="store_true", help="act like a vLLM older than the field")
    parser.add_argument("--retokenize-history", action="store_true", help="re-serialise earlier tool calls")
    parser.add_argument("--latency-ms", type=float, default=0.0, help="time each chat completion takes")
    args = parser.parse_args()
    stub = VLLMStub(
        return_token_ids=not args.no_return_token_ids,
        retokenize_history=args.retokenize_history,
        record=False,
        latency_s=args.latency_ms / 1000,
    )
    serve_fast(stub, args.port)


if __name__ == "__main__":
    main()
