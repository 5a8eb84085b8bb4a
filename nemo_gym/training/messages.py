"""Rollout records as chat conversations in the OpenAI fine-tuning shape, the one TRL and most SFT/DPO trainers take.

The prompt is the row's Responses request: its `instructions` as a system message, then its input items (or a plain
string as one user message), `developer` read as `system`. The completion is the trajectory in `response.output`:
assistant text and `tool_calls` (arguments kept as the JSON strings the model wrote, as OpenAI does), and one `tool`
message per tool result. The translation is the model server's own (`responses_to_chat_request`), so a trajectory
reads in training exactly as it was sent to the model.

Reasoning items are dropped by default: most chat templates have no place for them and would train the model to
skip them. With `keep_reasoning` they ride on the assistant message that follows them as `reasoning_content`, the
field the chat templates of reasoning models (and vLLM) read.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import Any, TypeVar

from nemo_gym.protocol.conversion import input_items_to_messages, responses_to_chat_request
from nemo_gym.protocol.types import JSONObject, RolloutRecord

T = TypeVar("T")


class Unconvertible(ValueError):
    """A record (or its row) that has no chat form; `reason` is a key of the export's drop reasons."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason


@dataclass(frozen=True)
class Prompt:
    """A row's prompt messages and its tools in the chat `tools` format."""

    messages: list[JSONObject]
    tools: list[JSONObject]


def prompt_of(row: JSONObject) -> Prompt:
    """The chat prompt of a dataset row (its `responses_create_params`)."""
    params = row.get("responses_create_params")
    if not isinstance(params, dict) or "input" not in params:
        raise Unconvertible("no_prompt", "the row has no `responses_create_params.input`")
    body = _as_chat(lambda: responses_to_chat_request(params))
    return Prompt(messages=_checked(body["messages"]), tools=list(body.get("tools") or []))


def completion_of(record: RolloutRecord, *, keep_reasoning: bool) -> list[JSONObject]:
    """The assistant and tool messages of a rollout's trajectory, in order."""
    response = record.get("response")
    output = response.get("output") if isinstance(response, dict) else None
    if not isinstance(output, list) or not output:
        raise Unconvertible("no_completion", "the record's `response.output` is empty")
    messages = _checked(_as_chat(lambda: input_items_to_messages(output, reasoning_field=keep_reasoning)))
    if not any(message["role"] == "assistant" for message in messages):
        raise Unconvertible("no_completion", "the trajectory has no assistant message")
    if keep_reasoning:
        for message in messages:
            if "reasoning" in message:
                message["reasoning_content"] = message.pop("reasoning")
    return messages


def _as_chat(convert: Callable[[], T]) -> T:
    """What `convert` makes of the record's items; an item it cannot read drops the record with the reason."""
    try:
        return convert()
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise Unconvertible("malformed_items", f"an item could not be read as chat ({exc!r})") from None


def _checked(messages: list[JSONObject]) -> list[JSONObject]:
    """Text-only messages: one schema for every row and every output format."""
    for message in messages:
        if not isinstance(message.get("content"), str):
            raise Unconvertible("non_text_content", f"a {message.get('role')} message carries images or files")
    return messages


def message_type(pa: ModuleType, *, keep_reasoning: bool) -> Any:
    """The Arrow type of one chat message: every key any message may have (null where it has none)."""
    tool_call = pa.struct(
        [
            ("id", pa.string()),
            ("type", pa.string()),
            ("function", pa.struct([("name", pa.string()), ("arguments", pa.string())])),
        ]
    )
    fields = [
        ("role", pa.string()),
        ("content", pa.string()),
        ("tool_calls", pa.list_(tool_call)),
        ("tool_call_id", pa.string()),
    ]
    if keep_reasoning:
        fields.append(("reasoning_content", pa.string()))
    return pa.struct(fields)
