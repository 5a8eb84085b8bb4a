"""Responses API ⇄ Chat Completions conversion (nemo_gym.protocol.conversion), both directions.

Agents speak Responses; OpenRouter speaks Chat Completions. These tests pin down what must survive the trip:
roles, function tools, function calls and their outputs, assistant text, reasoning, limits, structured output,
usage with OpenRouter's cost, and finish reasons. Converted bodies are checked against the openai SDK's own types.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionMessageParam, ChatCompletionToolUnionParam
from openai.types.responses import Response, ResponseInputParam, ToolParam
from pydantic import TypeAdapter

from nemo_gym.protocol.conversion import (
    chat_to_responses_payload,
    chat_to_responses_request,
    chat_to_responses_response,
    chat_usage_to_responses,
    responses_to_chat_payload,
    responses_to_chat_request,
    responses_to_chat_response,
    responses_usage_to_chat,
)

WEATHER_PARAMETERS = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "City name"}},
    "required": ["city"],
    "additionalProperties": False,
}
RESPONSES_WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": WEATHER_PARAMETERS,
    "strict": True,
}
CHAT_WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather of a city",
        "parameters": WEATHER_PARAMETERS,
        "strict": True,
    },
}

# A complete two-turn tool conversation as an agent sends it back on its third call.
MULTI_TURN_INPUT: list[dict[str, Any]] = [
    {"type": "message", "role": "developer", "content": "Answer in one sentence."},
    {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Weather in Paris and Tokyo?"}]},
    {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_paris",
        "name": "get_weather",
        "arguments": '{"city": "Paris"}',
        "status": "completed",
    },
    {
        "type": "function_call",
        "id": "fc_2",
        "call_id": "call_tokyo",
        "name": "get_weather",
        "arguments": '{"city": "Tokyo"}',
        "status": "completed",
    },
    {"type": "function_call_output", "call_id": "call_paris", "output": '{"city": "Paris", "weather": "sunny"}'},
    {"type": "function_call_output", "call_id": "call_tokyo", "output": '{"city": "Tokyo", "weather": "rain"}'},
    {
        "type": "message",
        "role": "assistant",
        "id": "msg_1",
        "status": "completed",
        "content": [{"type": "output_text", "text": "Paris is sunny; Tokyo is rainy.", "annotations": []}],
    },
    {"type": "message", "role": "user", "content": "And in Berlin?"},
]

CHAT_MESSAGES = TypeAdapter(list[ChatCompletionMessageParam])
CHAT_TOOLS = TypeAdapter(list[ChatCompletionToolUnionParam])
RESPONSES_INPUT = TypeAdapter(ResponseInputParam)
RESPONSES_TOOLS = TypeAdapter(list[ToolParam])


def _validated(adapter: TypeAdapter[Any], value: Any) -> Any:
    """Validate against an openai SDK TypedDict (dumping forces lazily validated iterables such as tool_calls)."""
    return adapter.dump_python(adapter.validate_python(value), mode="json")


def _chat_completion(
    message: dict[str, Any], *, finish_reason: str = "stop", usage: dict[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """A Chat Completions response as OpenRouter sends it (provider and native_finish_reason included)."""
    return {
        "id": "gen-1756743299-abc",
        "object": "chat.completion",
        "created": 1756743300,
        "model": "openai/gpt-4o-mini",
        "provider": "OpenAI",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": finish_reason,
                "native_finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage or {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
        **extra,
    }


OPENROUTER_USAGE = {
    "prompt_tokens": 1200,
    "completion_tokens": 300,
    "total_tokens": 1500,
    "cost": 0.00123,
    "is_byok": False,
    "prompt_tokens_details": {"cached_tokens": 1024, "audio_tokens": 0},
    "cost_details": {
        "upstream_inference_cost": None,
        "upstream_inference_prompt_cost": 0.0009,
        "upstream_inference_completions_cost": 0.00033,
    },
    "completion_tokens_details": {"reasoning_tokens": 120, "image_tokens": 0},
}


# =========================================================================== Responses request -> Chat request


def test_instructions_become_a_leading_system_message_and_string_input_a_user_message() -> None:
    body = responses_to_chat_request({"model": "m", "instructions": "Be brief.", "input": "Hi there"})

    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there"}]
    assert body["model"] == "m"


def test_model_argument_overrides_the_requested_model() -> None:
    body = responses_to_chat_request({"model": "agent-asked-for-this", "input": "Hi"}, model="configured/model")

    assert body["model"] == "configured/model"


def test_developer_role_becomes_system_and_text_parts_flatten_to_a_string() -> None:
    body = responses_to_chat_request(
        {
            "input": [
                {
                    "role": "developer",
                    "content": [
                        {"type": "input_text", "text": "Rule one. "},
                        {"type": "input_text", "text": "Rule two."},
                    ],
                },
                {"role": "user", "content": [{"type": "input_text", "text": "Hello"}]},
            ]
        }
    )

    assert body["messages"] == [
        {"role": "system", "content": "Rule one. Rule two."},
        {"role": "user", "content": "Hello"},
    ]


def test_user_images_stay_content_parts() -> None:
    body = responses_to_chat_request(
        {
            "input": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is this?"},
                        {"type": "input_image", "image_url": "https://example.invalid/cat.png", "detail": "low"},
                    ],
                }
            ]
        }
    )

    assert body["messages"][0]["content"] == [
        {"type": "text", "text": "What is this?"},
        {"type": "image_url", "image_url": {"url": "https://example.invalid/cat.png", "detail": "low"}},
    ]
    _validated(CHAT_MESSAGES, body["messages"])


def test_function_tools_are_nested_under_function_and_other_tools_are_dropped() -> None:
    body = responses_to_chat_request(
        {
            "input": "Weather in Paris?",
            "tools": [
                RESPONSES_WEATHER_TOOL,
                {"type": "function", "name": "no_args"},
                {"type": "web_search"},
            ],
        }
    )

    assert body["tools"] == [
        CHAT_WEATHER_TOOL,
        {"type": "function", "function": {"name": "no_args", "parameters": {"type": "object", "properties": {}}}},
    ]
    _validated(CHAT_TOOLS, body["tools"])


def test_multi_turn_tool_conversation_becomes_chat_messages() -> None:
    body = responses_to_chat_request(
        {
            "model": "m",
            "instructions": "You are a weather bot.",
            "input": MULTI_TURN_INPUT,
            "tools": [RESPONSES_WEATHER_TOOL],
        }
    )

    assert body["messages"] == [
        {"role": "system", "content": "You are a weather bot."},
        {"role": "system", "content": "Answer in one sentence."},
        {"role": "user", "content": "Weather in Paris and Tokyo?"},
        # Both function calls of one turn are one assistant message; its content is "" (never null).
        {
            "role": "assistant",
            "content": "",
            "tool_calls": [
                {
                    "id": "call_paris",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_tokyo",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Tokyo"}'},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_paris", "content": '{"city": "Paris", "weather": "sunny"}'},
        {"role": "tool", "tool_call_id": "call_tokyo", "content": '{"city": "Tokyo", "weather": "rain"}'},
        {"role": "assistant", "content": "Paris is sunny; Tokyo is rainy."},
        {"role": "user", "content": "And in Berlin?"},
    ]
    _validated(CHAT_MESSAGES, body["messages"])


def test_tool_call_only_assistant_message_never_has_null_content() -> None:
    body = responses_to_chat_request(
        {
            "input": [
                {"role": "user", "content": "Weather in Oslo?"},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Oslo"}'},
                {"type": "function_call_output", "call_id": "c1", "output": "cold"},
            ]
        }
    )

    assistant = body["messages"][1]
    assert assistant["role"] == "assistant"
    assert assistant["content"] == ""


def test_assistant_text_and_the_function_call_after_it_share_one_message() -> None:
    body = responses_to_chat_request(
        {
            "input": [
                {"role": "user", "content": "Weather in Rome?"},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": "Let me check."}]},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Rome"}'},
                {"type": "function_call_output", "call_id": "c1", "output": "warm"},
            ]
        }
    )

    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "tool"]
    assert body["messages"][1]["content"] == "Let me check."
    assert body["messages"][1]["tool_calls"][0]["id"] == "c1"


def test_function_call_outputs_that_are_not_strings_become_text() -> None:
    body = responses_to_chat_request(
        {
            "input": [
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "c1", "output": [{"type": "input_text", "text": "sunny"}]},
            ]
        }
    )

    assert body["messages"][-1] == {"role": "tool", "tool_call_id": "c1", "content": "sunny"}


def test_limits_and_sampling_parameters_are_translated() -> None:
    body = responses_to_chat_request(
        {
            "input": "Hi",
            "max_output_tokens": 256,
            "temperature": 0.3,
            "top_p": 0.9,
            "parallel_tool_calls": False,
            "tools": [RESPONSES_WEATHER_TOOL],
            "provider": {"sort": "price"},
        }
    )

    assert body["max_tokens"] == 256
    assert "max_output_tokens" not in body
    assert (body["temperature"], body["top_p"], body["parallel_tool_calls"]) == (0.3, 0.9, False)
    assert body["provider"] == {"sort": "price"}  # OpenRouter routing passes through


def test_tool_settings_are_dropped_when_there_are_no_tools() -> None:
    body = responses_to_chat_request({"input": "Hi", "tool_choice": "required", "parallel_tool_calls": True})

    assert "tools" not in body
    assert "tool_choice" not in body
    assert "parallel_tool_calls" not in body


@pytest.mark.parametrize(
    ("responses_choice", "chat_choice"),
    [
        ("auto", "auto"),
        ("none", "none"),
        ("required", "required"),
        ({"type": "function", "name": "get_weather"}, {"type": "function", "function": {"name": "get_weather"}}),
    ],
)
def test_tool_choice_forms_convert_both_ways(responses_choice: Any, chat_choice: Any) -> None:
    chat = responses_to_chat_request(
        {"input": "Hi", "tools": [RESPONSES_WEATHER_TOOL], "tool_choice": responses_choice}
    )
    assert chat["tool_choice"] == chat_choice

    back = chat_to_responses_request(
        {"messages": [{"role": "user", "content": "Hi"}], "tools": [CHAT_WEATHER_TOOL], "tool_choice": chat_choice}
    )
    assert back["tool_choice"] == responses_choice


def test_json_schema_text_format_becomes_response_format_and_back() -> None:
    text_format = {"type": "json_schema", "name": "weather", "schema": WEATHER_PARAMETERS, "strict": True}
    chat = responses_to_chat_request({"input": "Hi", "text": {"format": text_format}})

    assert chat["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "weather", "schema": WEATHER_PARAMETERS, "strict": True},
    }
    back = chat_to_responses_request({"messages": [], "response_format": chat["response_format"]})
    assert back["text"] == {"format": text_format}


def test_json_object_text_format_becomes_response_format_and_back() -> None:
    chat = responses_to_chat_request({"input": "Hi", "text": {"format": {"type": "json_object"}}})

    assert chat["response_format"] == {"type": "json_object"}
    assert chat_to_responses_request({"messages": [], **chat})["text"] == {"format": {"type": "json_object"}}


REASONING_TURN = [
    {"role": "user", "content": "Weather in Lima?"},
    {
        "type": "reasoning",
        "id": "rs_1",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": "I should call the tool."}],
    },
    {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": '{"city": "Lima"}'},
    {"type": "function_call_output", "call_id": "c1", "output": "mild"},
]


def test_reasoning_goes_to_openrouter_reasoning_fields() -> None:
    body = responses_to_chat_request(
        {"input": REASONING_TURN, "reasoning": {"effort": "high", "summary": "auto"}}, reasoning_field=True
    )

    assert body["reasoning"] == {"effort": "high"}
    assert "reasoning_effort" not in body
    assert body["messages"][1]["reasoning"] == "I should call the tool."
    assert body["messages"][1]["tool_calls"][0]["id"] == "c1"


def test_reasoning_for_plain_chat_servers_is_reasoning_effort_only() -> None:
    body = responses_to_chat_request({"input": REASONING_TURN, "reasoning": {"effort": "low"}})

    assert body["reasoning_effort"] == "low"
    assert "reasoning" not in body
    assert all("reasoning" not in message for message in body["messages"])


def test_reasoning_summary_is_used_when_there_is_no_reasoning_content() -> None:
    body = responses_to_chat_request(
        {
            "input": [
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Need the tool."}]},
                {"type": "function_call", "call_id": "c1", "name": "get_weather", "arguments": "{}"},
            ]
        },
        reasoning_field=True,
    )

    assert body["messages"][0]["reasoning"] == "Need the tool."


# =========================================================================== Chat response -> Responses response


def test_tool_calls_become_function_call_items_of_a_valid_response() -> None:
    chat = _chat_completion(
        {
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_b",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Tokyo"}'},
                },
            ],
        },
        finish_reason="tool_calls",
    )
    params = {"model": "requested", "input": "Weather in Paris and Tokyo?", "tools": [RESPONSES_WEATHER_TOOL]}

    response = chat_to_responses_response(chat, params)

    assert isinstance(response, Response)
    assert response.status == "completed"
    assert response.model == "openai/gpt-4o-mini"  # the model that served, not the one asked for
    calls = [item for item in response.output if item.type == "function_call"]
    assert [(c.call_id, c.name, json.loads(c.arguments)) for c in calls] == [
        ("call_a", "get_weather", {"city": "Paris"}),
        ("call_b", "get_weather", {"city": "Tokyo"}),
    ]
    assert all(item.type != "message" for item in response.output)  # null content is no empty message
    assert [t.name for t in response.tools] == ["get_weather"]
    Response.model_validate(response.model_dump(mode="json"))


def test_assistant_text_becomes_an_output_message() -> None:
    response = chat_to_responses_response(_chat_completion({"content": "It is sunny."}), {"input": "Hi"})

    assert response.output_text == "It is sunny."
    message = response.output[0]
    assert message.type == "message"
    assert message.role == "assistant"
    assert response.status == "completed"


def test_request_parameters_are_echoed_on_the_response() -> None:
    params = {
        "input": "Hi",
        "instructions": "Be brief.",
        "tools": [RESPONSES_WEATHER_TOOL],
        "tool_choice": "required",
        "max_output_tokens": 64,
        "temperature": 0.5,
        "parallel_tool_calls": False,
    }

    response = chat_to_responses_response(_chat_completion({"content": "ok"}), params)

    assert response.instructions == "Be brief."
    assert response.tool_choice == "required"
    assert response.max_output_tokens == 64
    assert response.temperature == 0.5
    assert response.parallel_tool_calls is False


@pytest.mark.parametrize("field", ["reasoning", "reasoning_content"])
def test_reasoning_text_becomes_a_reasoning_item_before_the_answer(field: str) -> None:
    chat = _chat_completion({"content": "Sunny.", field: "The user wants weather."})

    response = chat_to_responses_response(chat, {"input": "Hi"})

    assert [item.type for item in response.output] == ["reasoning", "message"]
    reasoning = response.output[0]
    assert reasoning.content is not None
    assert reasoning.content[0].text == "The user wants weather."


def test_finish_reason_length_makes_the_response_incomplete() -> None:
    response = chat_to_responses_response(
        _chat_completion({"content": "The weather in Par"}, finish_reason="length"), {"input": "Hi"}
    )

    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert response.output_text == "The weather in Par"


def test_finish_reason_content_filter_makes_the_response_incomplete() -> None:
    response = chat_to_responses_response(
        _chat_completion({"content": ""}, finish_reason="content_filter"), {"input": "Hi"}
    )

    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "content_filter"


def test_usage_keeps_cached_and_reasoning_tokens_and_openrouter_cost() -> None:
    response = chat_to_responses_response(_chat_completion({"content": "ok"}, usage=OPENROUTER_USAGE), {"input": "Hi"})

    usage = response.usage
    assert usage is not None
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (1200, 300, 1500)
    assert usage.input_tokens_details.cached_tokens == 1024
    assert usage.output_tokens_details.reasoning_tokens == 120
    dumped = response.model_dump(mode="json")["usage"]
    assert dumped["cost"] == pytest.approx(0.00123)
    assert dumped["is_byok"] is False
    assert dumped["cost_details"]["upstream_inference_prompt_cost"] == pytest.approx(0.0009)


def test_chat_usage_to_responses_fills_missing_details_and_total() -> None:
    usage = chat_usage_to_responses({"prompt_tokens": 7, "completion_tokens": 3})

    assert usage is not None
    assert usage["input_tokens"] == 7
    assert usage["output_tokens"] == 3
    assert usage["total_tokens"] == 10
    assert usage["input_tokens_details"]["cached_tokens"] == 0
    assert usage["output_tokens_details"]["reasoning_tokens"] == 0
    assert "cost" not in usage
    assert chat_usage_to_responses(None) is None


def test_a_chat_completion_without_choices_is_an_error() -> None:
    with pytest.raises(ValueError, match="no choices"):
        chat_to_responses_response({"id": "gen-1", "choices": [], "usage": None}, {"input": "Hi"})


# =========================================================================== Chat request -> Responses request


def test_chat_messages_become_responses_input_items() -> None:
    params = chat_to_responses_request(
        {
            "model": "asked",
            "messages": [
                {"role": "system", "content": "You are a weather bot."},
                {"role": "user", "content": "Weather in Paris and Tokyo?"},
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {
                            "id": "call_paris",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                        },
                        {
                            "id": "call_tokyo",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city": "Tokyo"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_paris", "content": "sunny"},
                {"role": "tool", "tool_call_id": "call_tokyo", "content": "rain"},
                {"role": "assistant", "content": "Paris is sunny; Tokyo is rainy."},
            ],
            "tools": [CHAT_WEATHER_TOOL],
            "max_tokens": 128,
            "temperature": 0.1,
        },
        model="configured/model",
    )

    assert params["model"] == "configured/model"
    assert params["input"] == [
        {"type": "message", "role": "system", "content": "You are a weather bot."},
        {"type": "message", "role": "user", "content": "Weather in Paris and Tokyo?"},
        {"type": "function_call", "call_id": "call_paris", "name": "get_weather", "arguments": '{"city": "Paris"}'},
        {"type": "function_call", "call_id": "call_tokyo", "name": "get_weather", "arguments": '{"city": "Tokyo"}'},
        {"type": "function_call_output", "call_id": "call_paris", "output": "sunny"},
        {"type": "function_call_output", "call_id": "call_tokyo", "output": "rain"},
        # String content: output_text parts would need item ids and status to be a valid input item.
        {"type": "message", "role": "assistant", "content": "Paris is sunny; Tokyo is rainy."},
    ]
    assert params["tools"] == [RESPONSES_WEATHER_TOOL]
    assert params["max_output_tokens"] == 128
    assert params["temperature"] == 0.1
    _validated(RESPONSES_INPUT, params["input"])
    _validated(RESPONSES_TOOLS, params["tools"])


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    params = chat_to_responses_request({"messages": [], "max_tokens": 10, "max_completion_tokens": 20})

    assert params["max_output_tokens"] == 20


@pytest.mark.parametrize("reasoning", [{"reasoning_effort": "medium"}, {"reasoning": {"effort": "medium"}}])
def test_chat_reasoning_settings_become_responses_reasoning(reasoning: dict[str, Any]) -> None:
    params = chat_to_responses_request({"messages": [{"role": "user", "content": "Hi"}], **reasoning})

    assert params["reasoning"] == {"effort": "medium"}


def test_assistant_reasoning_text_is_not_sent_to_a_responses_upstream() -> None:
    """Responses servers accept only their own reasoning items (with ids / encrypted content), never free text."""
    params = chat_to_responses_request(
        {
            "messages": [
                {"role": "user", "content": "Weather in Lima?"},
                {
                    "role": "assistant",
                    "content": "",
                    "reasoning": "I should call the tool.",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}
                    ],
                },
            ]
        }
    )

    assert [item["type"] for item in params["input"]] == ["message", "function_call"]
    _validated(RESPONSES_INPUT, params["input"])


# =========================================================================== Responses response -> Chat response


def _response(output: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "id": "resp_1",
        "object": "response",
        "created_at": 1756743300.5,
        "model": "openai/gpt-4o",
        "status": "completed",
        "output": output,
        "parallel_tool_calls": True,
        "tool_choice": "auto",
        "tools": [],
        **extra,
    }


def test_function_call_items_become_tool_calls_of_a_valid_chat_completion() -> None:
    chat = responses_to_chat_response(
        _response(
            [
                {
                    "type": "function_call",
                    "id": "fc_1",
                    "call_id": "call_a",
                    "name": "get_weather",
                    "arguments": '{"city": "Paris"}',
                    "status": "completed",
                },
                {
                    "type": "function_call",
                    "id": "fc_2",
                    "call_id": "call_b",
                    "name": "get_weather",
                    "arguments": '{"city": "Tokyo"}',
                    "status": "completed",
                },
            ]
        )
    )

    assert isinstance(chat, ChatCompletion)
    choice = chat.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in choice.message.tool_calls] == [
        ("call_a", "get_weather", '{"city": "Paris"}'),
        ("call_b", "get_weather", '{"city": "Tokyo"}'),
    ]
    assert chat.model == "openai/gpt-4o"
    assert chat.created == 1756743300


def test_message_and_reasoning_items_become_content_and_reasoning() -> None:
    chat = responses_to_chat_response(
        _response(
            [
                {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Thinking."}]},
                {
                    "type": "message",
                    "id": "msg_1",
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": "Sunny.", "annotations": []}],
                },
            ]
        )
    )

    choice = chat.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.content == "Sunny."
    assert choice.message.model_dump()["reasoning"] == "Thinking."


def test_incomplete_for_max_output_tokens_is_finish_reason_length() -> None:
    chat = responses_to_chat_response(
        _response(
            [
                {
                    "type": "message",
                    "id": "m",
                    "role": "assistant",
                    "status": "incomplete",
                    "content": [{"type": "output_text", "text": "The wea", "annotations": []}],
                }
            ],
            status="incomplete",
            incomplete_details={"reason": "max_output_tokens"},
        )
    )

    assert chat.choices[0].finish_reason == "length"


def test_responses_usage_keeps_cached_and_reasoning_tokens_and_cost() -> None:
    usage = {
        "input_tokens": 1200,
        "output_tokens": 300,
        "total_tokens": 1500,
        "cost": 0.00123,
        "is_byok": False,
        "input_tokens_details": {"cached_tokens": 1024},
        "output_tokens_details": {"reasoning_tokens": 120},
    }

    chat = responses_to_chat_response(_response([], usage=usage))

    assert chat.usage is not None
    assert (chat.usage.prompt_tokens, chat.usage.completion_tokens, chat.usage.total_tokens) == (1200, 300, 1500)
    assert chat.usage.prompt_tokens_details is not None
    assert chat.usage.prompt_tokens_details.cached_tokens == 1024
    assert chat.usage.completion_tokens_details is not None
    assert chat.usage.completion_tokens_details.reasoning_tokens == 120
    assert chat.model_dump(mode="json")["usage"]["cost"] == pytest.approx(0.00123)


def test_responses_usage_without_total_gets_the_sum() -> None:
    usage = responses_usage_to_chat({"input_tokens": 7, "output_tokens": 3})

    assert usage is not None
    assert usage["total_tokens"] == 10
    assert responses_usage_to_chat(None) is None


# =========================================================================== round trips


def _normalized_items(items: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """What a conversation means, independent of ids and content-part packaging; developer == system."""
    out: list[tuple[Any, ...]] = []
    for item in items:
        kind = item.get("type", "message")
        if kind == "message":
            content = item["content"]
            text = content if isinstance(content, str) else "".join(p["text"] for p in content)
            role = "system" if item["role"] == "developer" else item["role"]
            out.append(("message", role, text))
        elif kind == "function_call":
            out.append(("function_call", item["call_id"], item["name"], json.loads(item["arguments"])))
        elif kind == "function_call_output":
            out.append(("function_call_output", item["call_id"], item["output"]))
        elif kind == "reasoning":
            out.append(("reasoning", "".join(p["text"] for p in item.get("content") or [])))
    return out


def test_responses_to_chat_to_responses_preserves_a_multi_turn_tool_conversation() -> None:
    original = {
        "model": "m",
        "input": copy.deepcopy(MULTI_TURN_INPUT),
        "tools": [RESPONSES_WEATHER_TOOL],
        "tool_choice": "auto",
        "max_output_tokens": 300,
        "temperature": 0.2,
        "text": {"format": {"type": "json_schema", "name": "w", "schema": WEATHER_PARAMETERS, "strict": True}},
    }

    back = chat_to_responses_request(responses_to_chat_request(original))

    assert _normalized_items(back["input"]) == _normalized_items(MULTI_TURN_INPUT)
    for key in ("model", "tools", "tool_choice", "max_output_tokens", "temperature", "text"):
        assert back[key] == original[key], key
    assert original["input"] == MULTI_TURN_INPUT  # the caller's request is not mutated


def test_chat_to_responses_to_chat_preserves_a_tool_conversation() -> None:
    original = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "You are a weather bot."},
            {"role": "user", "content": "Weather in Paris?"},
            {
                "role": "assistant",
                "content": "",
                "tool_calls": [
                    {
                        "id": "c1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            {"role": "assistant", "content": "Sunny in Paris."},
            {"role": "user", "content": "Thanks!"},
        ],
        "tools": [CHAT_WEATHER_TOOL],
        "max_tokens": 50,
    }

    back = responses_to_chat_request(chat_to_responses_request(original))

    assert back["messages"] == original["messages"]
    assert back["tools"] == original["tools"]
    assert back["max_tokens"] == 50


def test_response_round_trip_keeps_calls_text_reasoning_and_usage() -> None:
    chat = _chat_completion(
        {
            "content": "Checking.",
            "reasoning": "Need data.",
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                },
            ],
        },
        finish_reason="tool_calls",
        usage=OPENROUTER_USAGE,
    )

    response = chat_to_responses_response(chat, {"input": "Hi"})
    again = responses_to_chat_response(response.model_dump(mode="json"))

    message = again.choices[0].message
    assert message.content == "Checking."
    assert message.model_dump()["reasoning"] == "Need data."
    assert message.tool_calls is not None
    assert [(c.id, c.function.name, c.function.arguments) for c in message.tool_calls] == [
        ("call_a", "get_weather", '{"city": "Oslo"}')
    ]
    assert again.choices[0].finish_reason == "tool_calls"
    assert again.usage is not None
    dumped_usage = again.model_dump(mode="json")["usage"]
    assert dumped_usage["cost"] == pytest.approx(OPENROUTER_USAGE["cost"])
    assert dumped_usage["prompt_tokens_details"]["cached_tokens"] == 1024
    assert dumped_usage["completion_tokens_details"]["reasoning_tokens"] == 120


def test_agent_loop_feeds_converted_output_items_back_as_input() -> None:
    """What an agent does: append the converted response's output (and tool results) to the next request."""
    tools = [RESPONSES_WEATHER_TOOL]
    history: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris and Tokyo?"}]
    first = chat_to_responses_response(
        _chat_completion(
            {
                "content": None,
                "reasoning": "Two cities.",
                "tool_calls": [
                    {
                        "id": "call_a",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    },
                    {
                        "id": "call_b",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Tokyo"}'},
                    },
                ],
            },
            finish_reason="tool_calls",
        ),
        {"input": history, "tools": tools},
    )
    history += [item.model_dump(mode="json", exclude_none=True) for item in first.output]
    history += [
        {"type": "function_call_output", "call_id": item.call_id, "output": f"weather of {item.call_id}"}
        for item in first.output
        if item.type == "function_call"
    ]
    _validated(RESPONSES_INPUT, history)

    second_request = responses_to_chat_request({"input": history, "tools": tools}, reasoning_field=True)

    assert [m["role"] for m in second_request["messages"]] == ["user", "assistant", "tool", "tool"]
    assistant = second_request["messages"][1]
    assert assistant["content"] == ""
    assert assistant["reasoning"] == "Two cities."
    call_ids = [c["id"] for c in assistant["tool_calls"]]
    assert call_ids == ["call_a", "call_b"]
    assert [m["tool_call_id"] for m in second_request["messages"][2:]] == call_ids
    _validated(CHAT_MESSAGES, second_request["messages"])


def test_an_openrouter_mid_generation_error_becomes_a_failed_response() -> None:
    chat = {
        "id": "gen-1",
        "object": "chat.completion",
        "created": 1,
        "model": "openai/gpt-4o",
        "choices": [
            {
                "index": 0,
                "finish_reason": "error",
                "message": {"role": "assistant", "content": "The weather in Par"},
                "error": {"code": 502, "message": "Provider disconnected"},
            }
        ],
    }
    response = chat_to_responses_response(chat, {"input": "weather?"})
    assert response.status == "failed"
    assert response.error is not None and "Provider disconnected" in response.error.message


# =========================================================================== the model server's untyped fast path


PAYLOAD_CASES = [
    _chat_completion(
        {
            "content": None,
            "tool_calls": [
                {
                    "id": "call_a",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'},
                }
            ],
        },
        finish_reason="tool_calls",
    ),
    _chat_completion({"content": "It is sunny.", "reasoning": "Looked it up."}, usage=OPENROUTER_USAGE),
    _chat_completion({"content": "It is sun"}, finish_reason="length"),
    _chat_completion({"content": "partial"}, finish_reason="error"),
]


@pytest.mark.parametrize("chat", PAYLOAD_CASES)
def test_the_plain_payloads_are_exactly_what_the_sdk_types_validate_and_dump(chat: dict[str, Any]) -> None:
    """The model server sends the plain dicts without validating each answer; they must be the SDK's shapes."""
    params = {
        "model": "requested",
        "input": "Weather in Oslo?",
        "tools": [RESPONSES_WEATHER_TOOL],
        "instructions": "Be brief.",
        "temperature": 0.2,
    }
    payload = chat_to_responses_payload(chat, params)
    assert payload == Response.model_validate(payload).model_dump(mode="json", exclude_unset=True)
    back = responses_to_chat_payload(payload)
    assert back == ChatCompletion.model_validate(back).model_dump(mode="json", exclude_unset=True)


# =========================================================================== token ids and logprobs


def _vllm_chat(message: dict[str, Any], *, logprob_tokens: list[str], ids: list[int] | None = None) -> dict[str, Any]:
    """A chat completion as vLLM answers `logprobs` (and, with `ids`, `return_token_ids`)."""
    chat = _chat_completion(message, finish_reason="tool_calls" if message.get("tool_calls") else "stop")
    choice = chat["choices"][0]
    choice["logprobs"] = {
        "content": [
            {"token": t, "logprob": -0.5 * (i + 1), "bytes": None, "top_logprobs": []}
            for i, t in enumerate(logprob_tokens)
        ]
    }
    if ids is not None:
        chat["prompt_token_ids"] = [1, 2, 3]
        choice["token_ids"] = ids
    return chat


def test_token_ids_and_logprobs_go_on_the_last_output_item_under_nemo_gyms_names() -> None:
    chat = _vllm_chat(
        {
            "content": "Let me check.",
            "tool_calls": [
                {"id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}},
            ],
        },
        logprob_tokens=["Let", " me", " check", "."],
        ids=[10, 11, 12, 13],
    )

    response = chat_to_responses_payload(chat, {"input": "Hi"}, token_info=True)

    message, call = response["output"]
    assert call["prompt_token_ids"] == [1, 2, 3]
    assert call["generation_token_ids"] == [10, 11, 12, 13]
    assert call["generation_log_probs"] == [-0.5, -1.0, -1.5, -2.0]
    assert "generation_tokens" not in call  # with ids, the strings add nothing
    assert not {"prompt_token_ids", "generation_token_ids", "generation_log_probs"} & set(message)
    Response.model_validate(response)  # still a valid Response for the SDK


def test_without_token_info_the_answer_is_exactly_what_it_was_before() -> None:
    chat = _vllm_chat({"content": "Hi."}, logprob_tokens=["Hi", "."], ids=[5, 6])
    plain = _chat_completion({"content": "Hi."})

    with_fields = chat_to_responses_payload(chat, {"input": "Hi"})
    without = chat_to_responses_payload(plain, {"input": "Hi"})

    assert with_fields["output"][0].keys() == without["output"][0].keys()
    assert with_fields.keys() == without.keys()


def test_openrouter_logprobs_without_ids_keep_the_token_strings() -> None:
    chat = _vllm_chat({"content": "Sunny."}, logprob_tokens=["Sun", "ny", "."])

    item = chat_to_responses_payload(chat, {"input": "Hi"}, token_info=True)["output"][-1]

    assert item["generation_log_probs"] == [-0.5, -1.0, -1.5]
    assert item["generation_tokens"] == ["Sun", "ny", "."]
    assert "prompt_token_ids" not in item and "generation_token_ids" not in item


def test_vllm_token_id_strings_give_the_ids_when_the_choice_has_none() -> None:
    chat = _vllm_chat({"content": "Ok"}, logprob_tokens=["token_id:42", "token_id:7"])

    item = chat_to_responses_payload(chat, {"input": "Hi"}, token_info=True)["output"][-1]

    assert item["generation_token_ids"] == [42, 7]
    assert item["generation_log_probs"] == [-0.5, -1.0]
    assert "generation_tokens" not in item


def test_logprobs_that_do_not_line_up_with_the_ids_are_dropped_not_misaligned() -> None:
    chat = _vllm_chat({"content": "Ok"}, logprob_tokens=["O", "k", "!"], ids=[1, 2])

    item = chat_to_responses_payload(chat, {"input": "Hi"}, token_info=True)["output"][-1]

    assert item["generation_token_ids"] == [1, 2] and "generation_log_probs" not in item


def test_a_turn_with_only_an_end_token_still_carries_its_ids_on_an_empty_message() -> None:
    chat = _vllm_chat({"content": ""}, logprob_tokens=["token_id:2"], ids=[2])

    response = chat_to_responses_payload(chat, {"input": "Hi"}, token_info=True)

    assert [i["type"] for i in response["output"]] == ["message"]
    assert response["output"][0]["generation_token_ids"] == [2]
    assert chat_to_responses_payload(chat, {"input": "Hi"})["output"] == []
    Response.model_validate(response)


def test_input_items_carrying_token_fields_convert_as_if_they_had_none() -> None:
    fields = {"prompt_token_ids": [1], "generation_token_ids": [2], "generation_log_probs": [-0.1]}
    marked = [
        dict(item, **fields) if item.get("type") in ("function_call", "message") else item for item in MULTI_TURN_INPUT
    ]

    assert responses_to_chat_request({"input": marked}) == responses_to_chat_request({"input": MULTI_TURN_INPUT})


def test_responses_answers_with_token_fields_put_them_on_the_chat_message() -> None:
    response = chat_to_responses_payload(
        _vllm_chat({"content": "Hi."}, logprob_tokens=["Hi", "."], ids=[5, 6]), {"input": "Hi"}, token_info=True
    )

    chat = responses_to_chat_payload(response, token_info=True)

    assert chat["choices"][0]["message"]["generation_token_ids"] == [5, 6]
    assert "generation_token_ids" not in responses_to_chat_payload(response)["choices"][0]["message"]
    ChatCompletion.model_validate(chat)
