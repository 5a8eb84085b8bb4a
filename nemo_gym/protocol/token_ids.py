"""Token ids and logprobs for training: read from an upstream's answer, recorded on output items, checked for
continuity over a rollout.

A model call's token information sits on its *last* output item under NeMo Gym's field names, so NeMo RL (and any
trainer written for NeMo Gym) reads it unchanged: `prompt_token_ids`, `generation_token_ids`, `generation_log_probs`
(one float per generated token). One call is one prompt/generation pair: a trainer walks the output items, takes
each item that carries `generation_token_ids`, and checks that its prompt starts with everything seen so far; the
same ids on several items of one call would break that walk. Upstreams that give logprobs but no ids (OpenRouter's
Chat Completions) add `generation_tokens`, the token strings, so the record still says what each logprob is of;
such an item lacks `prompt_token_ids` and `generation_token_ids`, so it is not training data for a trainer that
needs ids (NeMo Gym holds the three fields all-or-nothing on items it validates), and the call's
`nemo_gym.token_info` says which parts are missing.

Small functions over plain dicts; nothing here runs unless the model server asked for token information, so an
answer without it costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final, TypedDict, TypeGuard

from nemo_gym.protocol.types import JSONObject, TokenIdsSummary, TokenInfoStatus, TokenMismatch, TokenTurnSummary

PROMPT_TOKEN_IDS: Final = "prompt_token_ids"
GENERATION_TOKEN_IDS: Final = "generation_token_ids"
GENERATION_LOG_PROBS: Final = "generation_log_probs"
GENERATION_TOKENS: Final = "generation_tokens"
TOKEN_FIELDS = frozenset({PROMPT_TOKEN_IDS, GENERATION_TOKEN_IDS, GENERATION_LOG_PROBS, GENERATION_TOKENS})
"""What a model server adds to output items; none of it is OpenAI wire format, so it is stripped from input."""

TOKEN_ID_PREFIX = "token_id:"
"""vLLM's `return_tokens_as_token_ids` writes each logprob's token as `token_id:<id>`."""


class TokenInfo(TypedDict, total=False):
    """The fields one model call gave (any subset)."""

    prompt_token_ids: list[int]
    generation_token_ids: list[int]
    generation_log_probs: list[float]
    generation_tokens: list[str]


# =========================================================================== reading an upstream's answer


def chat_token_info(chat: Mapping[str, Any]) -> TokenInfo:
    """Token information in a Chat Completions answer: vLLM's `prompt_token_ids` (top level) and `token_ids` (on
    the choice), and the standard `choices[0].logprobs.content` (token strings and logprobs; with vLLM's
    `return_tokens_as_token_ids` the strings are `token_id:<id>`, which gives the ids on servers too old for
    `return_token_ids`). Lists that disagree in length with the ids are dropped rather than misaligned. Runs on
    every model call when recording, so it reads the lists with comprehensions rather than checking each entry."""
    choices = chat.get("choices") or []
    choice = choices[0] if choices and isinstance(choices[0], Mapping) else {}
    info: TokenInfo = {}
    prompt = chat.get("prompt_token_ids")
    if _is_int_list(prompt):
        info[PROMPT_TOKEN_IDS] = prompt
    logprob_content = choice.get("logprobs")
    content = logprob_content.get("content") if isinstance(logprob_content, Mapping) else None
    entries = content if isinstance(content, list) and content else None
    logprobs = _logprobs(entries)
    ids = choice.get("token_ids")
    if not ids or not _is_int_list(ids):
        ids = _ids_from_token_strings(entries)
    if ids:
        info[GENERATION_TOKEN_IDS] = ids
    if logprobs is not None and (not ids or len(logprobs) == len(ids)):
        info[GENERATION_LOG_PROBS] = logprobs
        if not ids and entries is not None:
            info[GENERATION_TOKENS] = [str(e.get("token", "")) for e in entries]
    return info


def responses_token_info(response: Mapping[str, Any]) -> TokenInfo:
    """Logprobs of a Responses answer (OpenAI's `include: ["message.output_text.logprobs"]`): the `logprobs` lists
    of its `output_text` parts, in order. The Responses API gives no token ids."""
    entries: list[Any] = []
    for item in response.get("output") or []:
        if not isinstance(item, Mapping) or item.get("type") != "message":
            continue
        for part in item.get("content") or []:
            if isinstance(part, Mapping) and isinstance(part.get("logprobs"), list):
                entries += part["logprobs"]
    logprobs = _logprobs(entries or None)
    if not logprobs:
        return {}
    return {GENERATION_LOG_PROBS: logprobs, GENERATION_TOKENS: [str(e.get("token", "")) for e in entries]}


def _logprobs(entries: list[Any] | None) -> list[float] | None:
    """The `logprob` of each `{token, logprob, ...}` entry; None when any entry lacks a number."""
    if entries is None:
        return None
    try:
        values = [entry["logprob"] for entry in entries]
    except (TypeError, KeyError, IndexError):
        return None
    kinds = set(map(type, values))  # in C: a generator over the entries costs more than the rest of the parse
    if kinds <= {float}:
        return values
    if kinds <= {float, int}:  # a JSON `0` parses as an int
        return [float(v) for v in values]
    return None


def _ids_from_token_strings(entries: list[Any] | None) -> list[int] | None:
    if not entries:
        return None
    try:
        tokens = [entry["token"] for entry in entries]
        if not all(type(t) is str and t.startswith(TOKEN_ID_PREFIX) for t in tokens):
            return None
        return [int(t[len(TOKEN_ID_PREFIX) :]) for t in tokens]
    except (TypeError, KeyError, IndexError, ValueError):
        return None


def _is_int_list(value: Any) -> TypeGuard[list[int]]:
    return type(value) is list and set(map(type, value)) <= {int}


def status(info: TokenInfo, source: str, *, detail: str | None = None) -> TokenInfoStatus:
    """What `info` holds, for the call's metadata: says plainly which parts the upstream did not give."""
    has_ids = PROMPT_TOKEN_IDS in info and GENERATION_TOKEN_IDS in info
    found: TokenInfoStatus = {
        "source": source,
        "token_ids": "present" if has_ids else "missing",
        "logprobs": "present" if GENERATION_LOG_PROBS in info else "missing",
    }
    if detail:
        found["detail"] = detail
    return found


# =========================================================================== output items


def attach(output: list[JSONObject], info: TokenInfo) -> None:
    """Put a call's token information on its last output item (see the module docstring for why only there)."""
    if info and output:
        output[-1].update(info)


def on_chat_message(chat: JSONObject, info: TokenInfo) -> None:
    """Put a call's token information on the chat answer's message (NeMo Gym's vllm_model does the same)."""
    choices = chat.get("choices") or []
    if info and choices and isinstance(choices[0].get("message"), dict):
        choices[0]["message"].update(info)


def strip_items(items: Any) -> Any:
    """Input items (or chat messages) without the fields above, which earlier output items carry back as input:
    they are not OpenAI wire format and strict servers reject unknown keys. One pass; the list is copied only when
    some item has one, and only those items are."""
    if not isinstance(items, list):
        return items
    stripped: list[Any] | None = None
    for index, item in enumerate(items):
        if isinstance(item, dict) and not TOKEN_FIELDS.isdisjoint(item):
            if stripped is None:
                stripped = items[:index]
            stripped.append({k: v for k, v in item.items() if k not in TOKEN_FIELDS})
        elif stripped is not None:
            stripped.append(item)
    return items if stripped is None else stripped


def call_info(output: Sequence[Mapping[str, Any]]) -> TokenInfo:
    """The token information one call's output items carry (on the last item that has any)."""
    for item in reversed(output):
        found = {k: item[k] for k in TOKEN_FIELDS if k in item}
        if found:
            return found  # type: ignore[return-value]  # keys and values are TokenInfo's by construction
    return {}


# =========================================================================== a rollout's continuity


def first_mismatch(turns: Sequence[TokenInfo]) -> TokenMismatch | None:
    """Where the ids stop being one stream: each call's prompt must start with the previous call's prompt +
    generation ids. Calls without ids are skipped (a trainer skips them too). None when it holds throughout."""
    seen: list[int] | None = None
    for index, info in enumerate(turns):
        prompt = info.get(PROMPT_TOKEN_IDS)
        generation = info.get(GENERATION_TOKEN_IDS)
        if prompt is None or generation is None:
            continue
        if seen is not None:
            position = _divergence(seen, prompt)
            if position is not None:
                found = prompt[position] if position < len(prompt) else None
                return {"turn": index, "position": position, "expected": seen[position], "found": found}
        seen = [*prompt, *generation]
    return None


def _divergence(seen: list[int], prompt: list[int]) -> int | None:
    """The first index where `prompt` does not continue `seen`, or None when it starts with all of it."""
    if prompt[: len(seen)] == seen:
        return None
    for position, token in enumerate(seen):
        if position >= len(prompt) or prompt[position] != token:
            return position
    return None


def summarize(turns: Sequence[TokenInfo]) -> TokenIdsSummary:
    """The rollout's `token_ids`: per call the lengths of what it recorded, and whether the ids are contiguous."""
    summaries: list[TokenTurnSummary] = [
        {
            "turn": index,
            "prompt_tokens": _length(info.get(PROMPT_TOKEN_IDS)),
            "generation_tokens": _length(info.get(GENERATION_TOKEN_IDS)),
            "generation_log_probs": _length(info.get(GENERATION_LOG_PROBS)),
        }
        for index, info in enumerate(turns)
    ]
    with_ids = sum(1 for info in turns if PROMPT_TOKEN_IDS in info and GENERATION_TOKEN_IDS in info)
    mismatch = first_mismatch(turns)
    return {
        "turns": summaries,
        "contiguous": None if with_ids < 1 else mismatch is None,
        "first_mismatch": mismatch,
    }


def _length(value: Sequence[Any] | None) -> int | None:
    return None if value is None else len(value)
