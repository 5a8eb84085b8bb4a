"""Exact token ids and real logprobs from llama.cpp's chat server (runs in local_model's child process).

Why not the server's own features: llama-cpp-python's chat completions return logprobs only when the model was
loaded with `logits_all` (a full n_ctx x vocabulary logits buffer, 800 MB for SmolLM2 at n_ctx 4096), never return
token ids, and the `chatml-function-calling` handler that local_model uses leaves logprobs out of every tool-call
turn (it asks for none when it forces a function). Re-tokenising the answer text (`/extras/tokenize`) would not be
exact either: a sampler may pick a split of the text that the tokenizer would not, and grammar-constrained tool
arguments often do. So this module watches the generation itself.

`install()` wraps two methods of `llama_cpp.Llama` (only when local_model records token information; otherwise
the child runs unpatched): `generate`, to note the ids each internal completion is fed and the ids it samples, and
`sample`, to read the raw logits at that moment and keep the sampled token's log-probability (log-softmax of the
model's logits, before temperature, top-k/p or grammar: the policy's own distribution, as vLLM reports it). Both do
nothing unless a request of `POST /v1/chat/completions/token_ids` is running, which is the one route that turns
them on; it answers like `/v1/chat/completions` plus vLLM's token fields (`prompt_token_ids`, the choice's
`token_ids` and `logprobs.content`), so the model server reads it as it reads vLLM.

One chat turn can be several internal completions (the handler first lets the model choose between `message:` and
`functions.<name>:`, then adds text of its own and generates again). The turn's full sequence is what the last
completion was fed plus what it sampled, up to and including the end-of-turn token; its prompt is the part shared
with the first completion's input (the rendered chat prompt, or with a forced tool call the prompt plus the
`functions.<name>:` line the handler writes, which the model did not choose), and the generation is the rest. Each
generated position gets the logprob recorded when it was sampled; a token the handler wrote itself (the newline
after `message:`), or re-tokenised when it fed the model's choice back as text (the model may sample `mess`+`age`
where the handler feeds `message`), was never sampled in that form, and gets its logprob from an extra
single-token forward pass, so every generated id has the model's real logprob for the sequence it really saw.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from fastapi import Request
from fastapi.responses import JSONResponse

ROUTE = "/v1/chat/completions/token_ids"
_state = threading.local()
"""`_state.capture`: the Capture of the request running on this thread (llama.cpp requests run one at a time)."""


@dataclass
class Completion:
    """One internal completion: the ids it was fed, the ids it sampled and their logprobs."""

    prompt: list[int]
    sampled: list[int] = field(default_factory=list)
    logprobs: list[float | None] = field(default_factory=list)


@dataclass
class Capture:
    llama: Any
    completions: list[Completion] = field(default_factory=list)
    pending_logprob: float | None = None


def _active(llama: Any) -> Capture | None:
    capture: Capture | None = getattr(_state, "capture", None)
    return capture if capture is not None and capture.llama is llama else None


@contextlib.contextmanager
def capturing(llama: Any) -> Iterator[Capture]:
    capture = Capture(llama)
    _state.capture = capture
    try:
        yield capture
    finally:
        _state.capture = None


def install() -> None:
    """Wrap `Llama.generate` and `Llama.sample` (idempotent)."""
    from llama_cpp import Llama

    if getattr(Llama, "_nemo_gym_token_capture", False):
        return
    original_generate = Llama.generate
    original_sample = Llama.sample

    def generate(self: Any, tokens: Any, *args: Any, **kwargs: Any) -> Generator[int, Any, None]:
        capture = _active(self)
        inner = original_generate(self, tokens, *args, **kwargs)
        if capture is None:
            return inner
        return _watched(inner, capture, Completion(prompt=list(tokens)))

    def sample(self: Any, *args: Any, **kwargs: Any) -> int:
        capture = _active(self)
        if capture is None:
            unwatched: int = original_sample(self, *args, **kwargs)
            return unwatched
        idx = kwargs.get("idx")
        logits = _logits(self, idx - self.n_tokens if idx is not None else -1)
        token = int(original_sample(self, *args, **kwargs))
        capture.pending_logprob = _log_softmax_at(logits, token)
        return token

    Llama.generate = generate  # type: ignore[method-assign]
    Llama.sample = sample  # type: ignore[method-assign]
    Llama._nemo_gym_token_capture = True  # type: ignore[attr-defined]


def _watched(inner: Generator[int, Any, None], capture: Capture, completion: Completion) -> Generator[int, Any, None]:
    capture.completions.append(completion)
    sent: Any = None
    try:
        while True:
            try:
                token = inner.send(sent)
            except StopIteration:
                return
            completion.sampled.append(int(token))
            completion.logprobs.append(capture.pending_logprob)
            capture.pending_logprob = None
            sent = yield token
    finally:
        inner.close()


def _logits(llama: Any, row: int) -> np.ndarray[Any, np.dtype[np.float32]]:
    """A view of the context's logits row (no copy: sampling reads them into its own buffer, and only the next
    decode rewrites them)."""
    pointer = llama._ctx.get_logits_ith(row)
    return np.ctypeslib.as_array(pointer, shape=(llama.n_vocab(),))


def _log_softmax_at(logits: np.ndarray[Any, Any], token: int) -> float:
    """log softmax(logits)[token], the sum in float64: about 0.1 ms for SmolLM2's 49,152 entries."""
    peak = float(logits.max())
    return float(logits[token]) - peak - float(np.log(np.exp(logits - peak).sum(dtype=np.float64)))


# ------------------------------------------------------------------------------------------------ the turn


def _common_prefix(a: list[int], b: list[int]) -> int:
    n = 0
    for x, y in zip(a, b, strict=False):
        if x != y:
            break
        n += 1
    return n


def turn_tokens(capture: Capture) -> tuple[list[int], list[int], list[float]] | None:
    """(prompt ids, generated ids, their logprobs) of the turn the capture watched; None if nothing was generated.
    Runs under the request's model lock: scoring a token the handler inserted moves the model's state."""
    if not capture.completions:
        return None
    first, last = capture.completions[0], capture.completions[-1]
    full = last.prompt + last.sampled
    split = _common_prefix(first.prompt, full)
    known: dict[int, float] = {}
    for completion in capture.completions:
        seen = completion.prompt + completion.sampled
        for position in range(len(completion.prompt), _common_prefix(seen, full)):
            logprob = completion.logprobs[position - len(completion.prompt)]
            if logprob is not None:
                known[position] = logprob
    for position in range(max(split, 1), len(full)):
        if position not in known:
            known[position] = _score(capture.llama, full, position)
    generated = full[split:]
    return full[:split], generated, [known[p] for p in range(split, len(full))]


def _score(llama: Any, full: list[int], position: int) -> float:
    """The model's logprob of `full[position]` after `full[:position]`: rewind the context to the longest prefix of
    `full` it still holds (at most `position - 1` tokens), evaluate up to `position - 1`, read the last logits."""
    held = _common_prefix([int(t) for t in llama.input_ids[: llama.n_tokens]], full)
    llama.n_tokens = min(held, position - 1)
    llama.eval(full[llama.n_tokens : position])
    return _log_softmax_at(_logits(llama, -1), full[position])


def token_strings(llama: Any, full_prompt: list[int], generated: list[int]) -> list[tuple[str, list[int]]]:
    """Each generated token's text and bytes, decoded in context (a token may be part of a UTF-8 character)."""
    pieces = []
    context = list(full_prompt)
    for token in generated:
        raw = llama.detokenize([token], prev_tokens=context, special=True)
        pieces.append((raw.decode("utf-8", "replace"), list(raw)))
        context.append(token)
    return pieces


# ------------------------------------------------------------------------------------------------ the route


def add_route(app: Any) -> None:
    """`POST /v1/chat/completions/token_ids` on the llama-cpp-python server app (see the module docstring)."""
    from llama_cpp.server.app import get_llama_proxy, prepare_request_resources
    from llama_cpp.server.types import CreateChatCompletionRequest
    from pydantic import ValidationError
    from starlette.concurrency import run_in_threadpool

    async def chat_with_token_ids(request: Request) -> JSONResponse:
        raw = await request.json()
        try:
            body = CreateChatCompletionRequest.model_validate(raw)
        except ValidationError as exc:
            return JSONResponse({"error": {"message": str(exc), "code": 400}}, status_code=400)
        if body.stream:
            return JSONResponse({"error": {"message": "stream is not supported here", "code": 400}}, 400)
        kwargs = body.model_dump(exclude={"n", "logit_bias_type", "user", "min_tokens"})
        kwargs["logprobs"], kwargs["top_logprobs"] = None, None  # they come from the capture instead
        async with contextlib.asynccontextmanager(get_llama_proxy)() as proxy:
            llama = prepare_request_resources(body, proxy, body.model, kwargs)
            try:
                answer = await run_in_threadpool(_answer, llama, kwargs, bool(raw.get("logprobs")))
            except ValueError as exc:
                return JSONResponse({"error": {"message": str(exc), "code": 400}}, status_code=400)
        return JSONResponse(answer)

    app.add_api_route(ROUTE, chat_with_token_ids, methods=["POST"])


def _answer(llama: Any, kwargs: dict[str, Any], with_logprobs: bool) -> dict[str, Any]:
    with capturing(llama) as capture:
        completion: dict[str, Any] = dict(llama.create_chat_completion(**kwargs))
    found = turn_tokens(capture)
    if found is None:
        return completion
    prompt, generated, logprobs = found
    completion["prompt_token_ids"] = prompt
    choice = completion["choices"][0]
    choice["token_ids"] = generated
    if with_logprobs:
        strings = token_strings(llama, prompt, generated)
        choice["logprobs"] = {
            "content": [
                {"token": text, "logprob": logprob, "bytes": raw, "top_logprobs": []}
                for (text, raw), logprob in zip(strings, logprobs, strict=True)
            ]
        }
    return completion
