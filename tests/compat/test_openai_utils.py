"""NeMo Gym's Responses types: our model servers' answers validate as they are, items of every kind are told apart
(built as dicts or as models, with or without their defaults), and request parameters refuse unknown keys."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from nemo_gym.openai_utils import (
    NeMoGymEasyInputMessage,
    NeMoGymFunctionCallOutput,
    NeMoGymOtherItem,
    NeMoGymResponse,
    NeMoGymResponseCreateParamsNonStreaming,
    NeMoGymResponseFunctionToolCall,
    NeMoGymResponseFunctionToolCallForTraining,
    NeMoGymResponseOutputMessage,
    NeMoGymResponseOutputText,
    NeMoGymResponseReasoningItem,
)


def response(output: list[Any], **extra: Any) -> NeMoGymResponse:
    return NeMoGymResponse(
        id="resp_1",
        created_at=0,
        model="m",
        object="response",
        output=output,
        parallel_tool_calls=True,
        tool_choice="auto",
        tools=[],
        **extra,
    )


def test_items_given_as_dicts_are_parsed_into_their_own_types() -> None:
    parsed = response(
        [
            {"type": "reasoning", "id": "r1", "summary": []},
            {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
            {"type": "function_call_output", "call_id": "c1", "output": "sunny"},
            {
                "type": "message",
                "id": "m1",
                "role": "assistant",
                "content": [{"type": "output_text", "text": "Sunny."}],
            },
            {"role": "user", "content": "thanks"},
            {"type": "web_search_call", "id": "w1", "status": "completed"},
            {
                "type": "function_call",
                "call_id": "c2",
                "name": "f",
                "arguments": "{}",
                "prompt_token_ids": [1, 2],
                "generation_token_ids": [3],
                "generation_log_probs": [-0.1],
            },
        ]
    )
    assert [type(item) for item in parsed.output] == [
        NeMoGymResponseReasoningItem,
        NeMoGymResponseFunctionToolCall,
        NeMoGymFunctionCallOutput,
        NeMoGymResponseOutputMessage,
        NeMoGymEasyInputMessage,
        NeMoGymOtherItem,
        NeMoGymResponseFunctionToolCallForTraining,
    ]
    assert parsed.output_text == "Sunny."


def test_items_built_as_models_keep_their_type_without_naming_it() -> None:
    parsed = response(
        [
            NeMoGymResponseFunctionToolCall(call_id="c", name="f", arguments="{}"),
            NeMoGymResponseOutputMessage(id="m", content=[NeMoGymResponseOutputText(text="done")]),
        ]
    )
    assert isinstance(parsed.output[0], NeMoGymResponseFunctionToolCall)
    assert isinstance(parsed.output[1], NeMoGymResponseOutputMessage) and parsed.output_text == "done"


def test_our_responses_extra_fields_and_usage_cost_are_kept() -> None:
    usage = {
        "input_tokens": 10,
        "output_tokens": 5,
        "total_tokens": 15,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
        "cost": 0.00012,
        "calls": 2,
    }
    parsed = response([], usage=usage, nemo_gym={"models": ["openai/gpt-4o-mini"]})
    assert parsed.usage is not None and parsed.usage.input_tokens == 10
    assert parsed.usage.model_extra == {"cost": 0.00012, "calls": 2}
    assert parsed.model_extra == {"nemo_gym": {"models": ["openai/gpt-4o-mini"]}}


def test_request_parameters_refuse_unknown_keys_and_send_only_what_was_set() -> None:
    params = NeMoGymResponseCreateParamsNonStreaming(input=[NeMoGymEasyInputMessage(role="user", content="hi")])
    assert params.model_dump(exclude_unset=True) == {"input": [{"role": "user", "content": "hi"}]}
    assert params.tools == [] and params.parallel_tool_calls is True
    with pytest.raises(ValidationError, match="max_tokens"):
        NeMoGymResponseCreateParamsNonStreaming(input="hi", max_tokens=10)
