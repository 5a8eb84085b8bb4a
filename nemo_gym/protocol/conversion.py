"""Responses API ⇄ Chat Completions, both directions, nothing else.

Agents speak the Responses API; OpenRouter and most OpenAI-compatible servers speak Chat Completions. These pure
functions translate requests and responses so a multi-turn tool-calling trajectory survives the round trip:
roles, function tools, function calls and their outputs, assistant text, reasoning text and usage (with cost).
Inputs are plain dicts as they arrive on the wire. Outputs come as the `openai` SDK's types (`*_response`) or as
the plain dicts those types validate (`*_payload`, the model server's hot path; the SDK is imported only when the
typed form is asked for, which keeps ~15 MB of modules out of every server process).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from nemo_gym.protocol import token_ids
from nemo_gym.protocol.types import JSONObject

if TYPE_CHECKING:
    from openai.types.chat import ChatCompletion
    from openai.types.responses import Response

# Responses request keys that map one-to-one onto Chat Completions request keys.
_SHARED_SAMPLING_KEYS = (
    "temperature",
    "top_p",
    "parallel_tool_calls",
    "user",
    "metadata",
    "seed",
    "stop",
    "frequency_penalty",
    "presence_penalty",
    "logit_bias",
    "top_k",
    "min_p",
    "repetition_penalty",
    "provider",
    "models",
    "route",
    "transforms",
)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex}"


# =========================================================================== Responses request -> Chat request


def responses_to_chat_request(
    params: Mapping[str, Any],
    *,
    model: str | None = None,
    reasoning_field: bool = False,
    assistant_empty_content: str | None = "",
) -> JSONObject:
    """Translate a Responses `create` body into a Chat Completions body.

    `developer` becomes `system` (many chat servers reject `developer`). An assistant message that only carries
    tool calls gets `assistant_empty_content` as its content (`""` by default: several servers reject `null`).
    With `reasoning_field`, reasoning items are sent back as the next assistant message's `reasoning` (OpenRouter).
    """
    messages: list[JSONObject] = []
    instructions = params.get("instructions")
    if isinstance(instructions, str) and instructions:
        messages.append({"role": "system", "content": instructions})
    elif isinstance(instructions, list):
        messages.extend(_input_items_to_messages(instructions, reasoning_field, assistant_empty_content))

    raw_input = params.get("input", [])
    if isinstance(raw_input, str):
        messages.append({"role": "user", "content": raw_input})
    else:
        messages.extend(_input_items_to_messages(raw_input, reasoning_field, assistant_empty_content))

    body: JSONObject = {"model": model or params.get("model"), "messages": messages}
    tools = [_tool_to_chat(t) for t in params.get("tools") or []]
    tools = [t for t in tools if t is not None]
    if tools:
        body["tools"] = tools
        if params.get("tool_choice") is not None:
            body["tool_choice"] = _tool_choice_to_chat(params["tool_choice"])
    for key in _SHARED_SAMPLING_KEYS:
        if params.get(key) is not None:
            body[key] = params[key]
    if "parallel_tool_calls" in body and not tools:
        del body["parallel_tool_calls"]
    if params.get("max_output_tokens") is not None:
        body["max_tokens"] = params["max_output_tokens"]
    text_format = (params.get("text") or {}).get("format")
    if text_format:
        body["response_format"] = _text_format_to_response_format(text_format)
    reasoning = params.get("reasoning")
    if reasoning:
        if reasoning_field:
            unified = {
                k: v
                for k, v in reasoning.items()
                if k in ("effort", "max_tokens", "exclude", "enabled") and v is not None
            }
            if unified:
                body["reasoning"] = unified
        elif reasoning.get("effort"):
            body["reasoning_effort"] = reasoning["effort"]
    return body


def content_text(content: Any) -> str:
    """A message's text whatever its shape: a string, or a list of parts (Chat Completions' `text`, the Responses
    API's `input_text` / `output_text`) whose `text` fields are joined; "" for anything else."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(part.get("text", "")) for part in content if isinstance(part, Mapping))
    return ""


def _text_of(content: Any) -> str:
    """Concatenate the text parts of a Responses content list (or return a plain string)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(
        str(part.get("text", ""))
        for part in content
        if isinstance(part, Mapping)
        and part.get("type") in ("input_text", "output_text", "text", "refusal", "summary_text", "reasoning_text")
    )


def _content_to_chat(content: Any) -> Any:
    """User/system content: strings stay strings; part lists keep images, text parts become `text`."""
    if isinstance(content, str):
        return content
    parts: list[JSONObject] = []
    for part in content or []:
        kind = part.get("type")
        if kind in ("input_text", "output_text", "text"):
            parts.append({"type": "text", "text": part.get("text", "")})
        elif kind == "input_image":
            url = part.get("image_url") or part.get("file_id")
            parts.append({"type": "image_url", "image_url": {"url": url, "detail": part.get("detail", "auto")}})
        elif kind == "input_file":
            parts.append({"type": "file", "file": {k: v for k, v in part.items() if k != "type"}})
    if all(p["type"] == "text" for p in parts):
        return "".join(p["text"] for p in parts)
    return parts


def input_items_to_messages(
    items: list[Any], *, reasoning_field: bool = False, assistant_empty_content: str | None = ""
) -> list[JSONObject]:
    """Responses input (or output) items as Chat Completions messages, as `responses_to_chat_request` makes them:
    for readers of a trajectory that need its messages alone (training exports), without a request's other keys."""
    return _input_items_to_messages(items, reasoning_field, assistant_empty_content)


def _input_items_to_messages(
    items: list[Any], reasoning_field: bool, assistant_empty_content: str | None
) -> list[JSONObject]:
    messages: list[JSONObject] = []
    pending_reasoning: list[str] = []

    def open_assistant() -> JSONObject:
        """The assistant message that function calls and text attach to (consecutive items merge)."""
        last = messages[-1] if messages else None
        if last is not None and last["role"] == "assistant":
            return last
        message: JSONObject = {"role": "assistant", "content": None}
        if pending_reasoning and reasoning_field:
            message["reasoning"] = "\n".join(pending_reasoning)
        pending_reasoning.clear()
        messages.append(message)
        return message

    for item in items:
        if not isinstance(item, Mapping):
            raise ValueError(f"Responses input items must be objects, got {item!r}")
        kind = item.get("type", "message")
        if kind == "message":
            role = item.get("role", "user")
            if role == "assistant":
                message = open_assistant()
                text = _text_of(item.get("content"))
                message["content"] = (message["content"] or "") + text if text else message["content"]
            else:
                chat_role = "system" if role == "developer" else role
                messages.append({"role": chat_role, "content": _content_to_chat(item.get("content"))})
        elif kind == "function_call":
            message = open_assistant()
            message.setdefault("tool_calls", []).append(
                {
                    "id": item.get("call_id") or item.get("id"),
                    "type": "function",
                    "function": {"name": item["name"], "arguments": item.get("arguments") or ""},
                }
            )
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item["call_id"],
                    "content": output if isinstance(output, str) else _text_of(output) or json.dumps(output),
                }
            )
        elif kind == "reasoning":
            text = _text_of(item.get("content")) or _text_of(item.get("summary"))
            if text:
                pending_reasoning.append(text)
        # Other item types (web search calls, item references, ...) have no Chat Completions form; skip them.

    for message in messages:
        if message["role"] == "assistant" and message["content"] is None:
            message["content"] = assistant_empty_content if message.get("tool_calls") else ""
    return messages


def _tool_to_chat(tool: Mapping[str, Any]) -> JSONObject | None:
    if tool.get("type") != "function":
        return None
    function: JSONObject = {
        "name": tool["name"],
        "parameters": tool.get("parameters") or {"type": "object", "properties": {}},
    }
    if tool.get("description"):
        function["description"] = tool["description"]
    if tool.get("strict") is not None:
        function["strict"] = tool["strict"]
    return {"type": "function", "function": function}


def _tool_choice_to_chat(choice: Any) -> Any:
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        return {"type": "function", "function": {"name": choice["name"]}}
    return choice


def _text_format_to_response_format(text_format: Mapping[str, Any]) -> JSONObject:
    if text_format.get("type") == "json_schema":
        schema = {k: v for k, v in text_format.items() if k in ("name", "schema", "strict", "description")}
        return {"type": "json_schema", "json_schema": schema}
    return {"type": text_format.get("type", "text")}


# =========================================================================== Chat response -> Responses response


def chat_usage_to_responses(usage: Mapping[str, Any] | None) -> JSONObject | None:
    if not usage:
        return None
    prompt = int(usage.get("prompt_tokens") or 0)
    completion = int(usage.get("completion_tokens") or 0)
    converted: JSONObject = {
        "input_tokens": prompt,
        "input_tokens_details": {
            "cached_tokens": int((usage.get("prompt_tokens_details") or {}).get("cached_tokens") or 0),
            "cache_write_tokens": int((usage.get("prompt_tokens_details") or {}).get("cache_write_tokens") or 0),
        },
        "output_tokens": completion,
        "output_tokens_details": {
            "reasoning_tokens": int((usage.get("completion_tokens_details") or {}).get("reasoning_tokens") or 0)
        },
        "total_tokens": int(usage.get("total_tokens") or prompt + completion),
    }
    for extra in ("cost", "is_byok", "cost_details"):
        if usage.get(extra) is not None:
            converted[extra] = usage[extra]
    return converted


def chat_to_responses_response(
    chat: Mapping[str, Any], params: Mapping[str, Any], *, token_info: bool = False
) -> Response:
    """Translate a Chat Completions response into a Responses `Response` for the request `params`."""
    from openai.types.responses import Response

    return Response.model_validate(chat_to_responses_payload(chat, params, token_info=token_info))


def chat_to_responses_payload(
    chat: Mapping[str, Any], params: Mapping[str, Any], *, token_info: bool = False
) -> JSONObject:
    """`chat_to_responses_response` as the plain JSON dict, for the model server's hot path: the tests hold it to
    the SDK's `Response` type, so the server need not validate every answer.

    With `token_info`, the choice's logprobs and token ids (vLLM's `prompt_token_ids` and `token_ids`) go on the
    last output item under NeMo Gym's names (`nemo_gym/protocol/token_ids.py`); without it they are dropped, and
    the answer is exactly what it would be had they not been asked for."""
    choices = chat.get("choices") or []
    if not choices:
        raise ValueError("The upstream chat completion has no choices.")
    choice = choices[0]
    message = choice.get("message") or {}
    output: list[JSONObject] = []
    reasoning = message.get("reasoning") or message.get("reasoning_content")
    if reasoning:
        output.append(
            {
                "id": new_id("rs"),
                "type": "reasoning",
                "summary": [],
                "content": [{"type": "reasoning_text", "text": reasoning}],
            }
        )
    text = content_text(message.get("content"))
    if text:
        output.append(_assistant_message(text))
    for call in message.get("tool_calls") or []:
        function = call.get("function") or {}
        output.append(
            {
                "id": new_id("fc"),
                "type": "function_call",
                "status": "completed",
                "call_id": call.get("id") or new_id("call"),
                "name": function.get("name", ""),
                "arguments": function.get("arguments") or "",
            }
        )
    if token_info and (info := token_ids.chat_token_info(chat)):
        if not output:  # the model said nothing (only its end token): the turn still has ids to train on
            output.append(_assistant_message(""))
        token_ids.attach(output, info)
    finish_reason = choice.get("finish_reason")
    status, incomplete = "completed", None
    if finish_reason == "length":
        status, incomplete = "incomplete", {"reason": "max_output_tokens"}
    elif finish_reason == "content_filter":
        status, incomplete = "incomplete", {"reason": "content_filter"}
    error = None
    if finish_reason == "error" or choice.get("error"):
        # OpenRouter: the provider failed mid-generation; the partial output must not pass as a finished turn.
        detail = choice.get("error") if isinstance(choice.get("error"), dict) else {}
        status = "failed"
        error = {"code": "server_error", "message": str(detail.get("message") or "the provider failed mid-answer")}
    response: JSONObject = {
        "id": str(chat.get("id") or new_id("resp")),
        "object": "response",
        "created_at": float(chat.get("created") or time.time()),
        "model": str(chat.get("model") or params.get("model") or ""),
        "status": status,
        "incomplete_details": incomplete,
        "error": error,
        "output": output,
        "instructions": params.get("instructions"),
        "tools": list(params.get("tools") or []),
        "tool_choice": params.get("tool_choice") or "auto",
        "parallel_tool_calls": bool(params.get("parallel_tool_calls", True)),
        "temperature": params.get("temperature"),
        "top_p": params.get("top_p"),
        "max_output_tokens": params.get("max_output_tokens"),
        "metadata": params.get("metadata"),
        "usage": chat_usage_to_responses(chat.get("usage")),
    }
    return response


def _assistant_message(text: str) -> JSONObject:
    return {
        "id": new_id("msg"),
        "type": "message",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


# =========================================================================== Chat request -> Responses request


def chat_to_responses_request(body: Mapping[str, Any], *, model: str | None = None) -> JSONObject:
    """Translate a Chat Completions body into a Responses `create` body (for upstreams that speak Responses)."""
    items: list[JSONObject] = []
    for message in body.get("messages") or []:
        role = message.get("role")
        content = message.get("content")
        if role == "tool":
            items.append(
                {
                    "type": "function_call_output",
                    "call_id": message.get("tool_call_id"),
                    "output": content if isinstance(content, str) else json.dumps(content),
                }
            )
            continue
        if role == "assistant":
            # Earlier reasoning text is not sent back: Responses servers only accept their own reasoning items.
            # Plain string content is the one assistant form the API accepts without item ids.
            text = content if isinstance(content, str) else _text_of_chat_parts(content)
            if text:
                items.append({"type": "message", "role": "assistant", "content": text})
            for call in message.get("tool_calls") or []:
                function = call.get("function") or {}
                items.append(
                    {
                        "type": "function_call",
                        "call_id": call.get("id"),
                        "name": function.get("name"),
                        "arguments": function.get("arguments") or "",
                    }
                )
            continue
        items.append({"type": "message", "role": role or "user", "content": _chat_content_to_input(content)})

    params: JSONObject = {"model": model or body.get("model"), "input": items}
    tools = []
    for tool in body.get("tools") or []:
        if tool.get("type") != "function":
            continue
        function = tool.get("function") or {}
        flat = {
            "type": "function",
            "name": function.get("name"),
            "parameters": function.get("parameters") or {"type": "object", "properties": {}},
        }
        for key in ("description", "strict"):
            if function.get(key) is not None:
                flat[key] = function[key]
        tools.append(flat)
    if tools:
        params["tools"] = tools
    choice = body.get("tool_choice")
    if isinstance(choice, Mapping) and choice.get("type") == "function":
        params["tool_choice"] = {"type": "function", "name": (choice.get("function") or {}).get("name")}
    elif choice is not None:
        params["tool_choice"] = choice
    for key in ("temperature", "top_p", "parallel_tool_calls", "user", "metadata"):
        if body.get(key) is not None:
            params[key] = body[key]
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is not None:
        params["max_output_tokens"] = max_tokens
    response_format = body.get("response_format")
    if isinstance(response_format, Mapping) and response_format.get("type") == "json_schema":
        params["text"] = {"format": {"type": "json_schema", **(response_format.get("json_schema") or {})}}
    elif isinstance(response_format, Mapping) and response_format.get("type") == "json_object":
        params["text"] = {"format": {"type": "json_object"}}
    reasoning = body.get("reasoning")  # OpenRouter's unified reasoning object
    if isinstance(reasoning, Mapping) and reasoning.get("effort"):
        params["reasoning"] = {"effort": reasoning["effort"]}
    elif body.get("reasoning_effort"):
        params["reasoning"] = {"effort": body["reasoning_effort"]}
    return params


def _text_of_chat_parts(content: Any) -> str:
    if not content:
        return ""
    return "".join(str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text")


def _chat_content_to_input(content: Any) -> Any:
    if content is None or isinstance(content, str):
        return content or ""
    parts: list[JSONObject] = []
    for part in content:
        if part.get("type") == "text":
            parts.append({"type": "input_text", "text": part.get("text", "")})
        elif part.get("type") == "image_url":
            image = part.get("image_url") or {}
            parts.append({"type": "input_image", "image_url": image.get("url"), "detail": image.get("detail", "auto")})
    return parts


# =========================================================================== Responses response -> Chat response


def responses_usage_to_chat(usage: Mapping[str, Any] | None) -> JSONObject | None:
    if not usage:
        return None
    converted: JSONObject = {
        "prompt_tokens": int(usage.get("input_tokens") or 0),
        "completion_tokens": int(usage.get("output_tokens") or 0),
        "total_tokens": int(usage.get("total_tokens") or 0)
        or int(usage.get("input_tokens") or 0) + int(usage.get("output_tokens") or 0),
        "prompt_tokens_details": {
            "cached_tokens": int((usage.get("input_tokens_details") or {}).get("cached_tokens") or 0),
            "cache_write_tokens": int((usage.get("input_tokens_details") or {}).get("cache_write_tokens") or 0),
        },
        "completion_tokens_details": {
            "reasoning_tokens": int((usage.get("output_tokens_details") or {}).get("reasoning_tokens") or 0)
        },
    }
    for extra in ("cost", "is_byok", "cost_details"):
        if usage.get(extra) is not None:
            converted[extra] = usage[extra]
    return converted


def responses_to_chat_response(response: Mapping[str, Any], *, token_info: bool = False) -> ChatCompletion:
    """Translate a Responses `Response` into a Chat Completions `ChatCompletion`."""
    from openai.types.chat import ChatCompletion

    return ChatCompletion.model_validate(responses_to_chat_payload(response, token_info=token_info))


def responses_to_chat_payload(response: Mapping[str, Any], *, token_info: bool = False) -> JSONObject:
    """`responses_to_chat_response` as the plain JSON dict (see `chat_to_responses_payload`). With `token_info`,
    the token information of the output items goes on the message, as NeMo Gym's chat answers carry it."""
    texts: list[str] = []
    reasoning: list[str] = []
    tool_calls: list[JSONObject] = []
    for item in response.get("output") or []:
        kind = item.get("type")
        if kind == "message":
            texts.append(_text_of(item.get("content")))
        elif kind == "function_call":
            tool_calls.append(
                {
                    "id": item.get("call_id"),
                    "type": "function",
                    "function": {"name": item.get("name"), "arguments": item.get("arguments") or ""},
                }
            )
        elif kind == "reasoning":
            reasoning.append(_text_of(item.get("content")) or _text_of(item.get("summary")))
    message: JSONObject = {"role": "assistant", "content": "".join(texts) or None}
    if tool_calls:
        message["tool_calls"] = tool_calls
    if any(reasoning):
        message["reasoning"] = "\n".join(r for r in reasoning if r)
    incomplete = (response.get("incomplete_details") or {}).get("reason")
    if tool_calls:
        finish_reason = "tool_calls"
    elif incomplete == "max_output_tokens":
        finish_reason = "length"
    elif incomplete == "content_filter":
        finish_reason = "content_filter"
    else:
        finish_reason = "stop"
    chat = {
        "id": str(response.get("id") or new_id("chatcmpl")),
        "object": "chat.completion",
        "created": int(response.get("created_at") or time.time()),
        "model": str(response.get("model") or ""),
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason, "logprobs": None}],
        "usage": responses_usage_to_chat(response.get("usage")),
    }
    if token_info:
        token_ids.on_chat_message(chat, token_ids.call_info(response.get("output") or []))
    return chat
