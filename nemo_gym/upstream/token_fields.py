"""What to ask an upstream for when a model server records token ids and logprobs, and what its answer lacked.

Each kind of upstream has its own fields (`source` names it, and is what the record's `token_info.source` says):

- `chat_logprobs` (OpenRouter, OpenAI, most OpenAI-compatible servers): Chat Completions `logprobs: true` (and the
  request's `top_logprobs`, if it set one). The answer has token strings and logprobs, never ids; OpenRouter passes
  `logprobs` only to providers that support it and silently drops it for the others.
- `vllm`: the same plus vLLM's `return_token_ids` (the answer's `prompt_token_ids` and the choice's `token_ids`:
  exactly the ids the engine used) and `return_tokens_as_token_ids` (each logprob's token as `token_id:<id>`, which
  still yields the generated ids on a vLLM too old for `return_token_ids`). A vLLM that gives no prompt ids is asked
  its `POST /tokenize` with the same messages and tools, which renders them through the same chat template.
- `llama_cpp` (local_model's own llama.cpp server): `return_token_ids` and `logprobs`, answered in vLLM's shape.
- `responses_logprobs` (a Responses API upstream): `include: ["message.output_text.logprobs"]`; no ids.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import orjson

from nemo_gym.http.pool import HttpCaller, TransportError
from nemo_gym.protocol import token_ids
from nemo_gym.protocol.token_ids import TokenInfo
from nemo_gym.protocol.types import JSONObject
from nemo_gym.upstream.endpoint import UpstreamEndpoint

TokenSource = Literal["chat_logprobs", "vllm", "llama_cpp", "responses_logprobs"]
RESPONSES_LOGPROBS_INCLUDE = "message.output_text.logprobs"
EXACT_ID_SOURCES: frozenset[str] = frozenset({"vllm", "llama_cpp"})


def chat_request_fields(source: TokenSource, params: Mapping[str, Any]) -> JSONObject:
    """Fields merged into a Chat Completions body to get what `source` can give."""
    fields: JSONObject = {"logprobs": True}
    top = params.get("top_logprobs")
    if isinstance(top, int) and not isinstance(top, bool):
        fields["top_logprobs"] = top
    if source in EXACT_ID_SOURCES:
        fields["return_token_ids"] = True
    if source == "vllm":
        fields["return_tokens_as_token_ids"] = True
    return fields


def responses_request_fields(params: Mapping[str, Any]) -> JSONObject:
    """Fields merged into a Responses body: ask for the output text's logprobs besides whatever it includes."""
    include = [i for i in params.get("include") or [] if i != RESPONSES_LOGPROBS_INCLUDE]
    return {"include": [*include, RESPONSES_LOGPROBS_INCLUDE]}


def missing_detail(source: TokenSource, info: TokenInfo, provider: str | None) -> str | None:
    """Why some of the three fields are absent, in words a user can act on; None when nothing expected is."""
    has_ids = token_ids.PROMPT_TOKEN_IDS in info and token_ids.GENERATION_TOKEN_IDS in info
    has_logprobs = token_ids.GENERATION_LOG_PROBS in info
    by = f"provider {provider}" if provider else "the upstream"
    if source in EXACT_ID_SOURCES:
        problems = []
        if not has_ids:
            problems.append(
                "no prompt_token_ids/token_ids: the server is not vLLM, or a vLLM without return_token_ids "
                "and /tokenize; set upstream_flavor: openai to record logprobs only"
                if source == "vllm"
                else "no token ids from the llama.cpp child"
            )
        if not has_logprobs:
            problems.append(f"{by} returned no logprobs although asked")
        return "; ".join(problems) or None
    if not has_logprobs:
        return (
            f"{by} returned no logprobs although asked (OpenRouter passes `logprobs` only to providers that "
            "support it: pick one with `extra_body: {provider: {require_parameters: true}}`)"
        )
    return None


def complete(info: TokenInfo) -> bool:
    """Every field an exact-id source should give is there."""
    return all(k in info for k in (token_ids.PROMPT_TOKEN_IDS, token_ids.GENERATION_TOKEN_IDS))


async def vllm_prompt_ids(
    http: HttpCaller, endpoint: UpstreamEndpoint, chat_body: Mapping[str, Any], *, timeout_s: float
) -> list[int] | None:
    """The prompt's ids from vLLM's `POST /tokenize` (at the server root, beside `/v1`), rendering the same
    messages and tools with the generation prompt, as the chat completion did; None if it cannot say."""
    base = endpoint.base_url.rstrip("/")
    root = base[: -len("/v1")] if base.endswith("/v1") else base
    body: JSONObject = {
        "model": chat_body.get("model"),
        "messages": chat_body.get("messages") or [],
        "add_generation_prompt": True,
    }
    if chat_body.get("tools"):
        body["tools"] = chat_body["tools"]
    try:
        response = await http.post(
            root + "/tokenize", content=orjson.dumps(body), headers=endpoint.headers(), timeout=timeout_s
        )
        payload = orjson.loads(response.content) if response.status_code == 200 else None
    except (TransportError, TimeoutError, orjson.JSONDecodeError):
        return None
    tokens = payload.get("tokens") if isinstance(payload, dict) else None
    return list(tokens) if isinstance(tokens, list) and all(isinstance(t, int) for t in tokens) else None
