"""The openai_model server over real HTTP on loopback, against nemo_gym's StubUpstream and a few quirky upstreams.

Self-contained (`ng_test +entrypoint=responses_api_models/openai_model`): every upstream runs in this process on
127.0.0.1, so nothing here touches the network.
"""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from openai.types.chat import ChatCompletion
from openai.types.responses import Response as ResponsesResponse

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.types import GlobalConfig
from nemo_gym.http.pool import HttpPool
from nemo_gym.servers.loading import prepare
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.cluster import openai_model_block, serve_config
from nemo_gym.testing.stub_upstream import COST_PER_CALL_USD, StubUpstream
from nemo_gym.upstream.endpoint import UpstreamEndpoint, UpstreamError
from responses_api_models.openai_model.app import OpenAIModelConfig, OpenAIModelServer

API_KEY = "sk-or-v1-test-key-for-the-stub-0001"
WRONG_KEY = "sk-or-v1-wrong-key-never-shown-0002"
LEAKED_KEY = "plainsecret-echoed-by-upstream-77"  # not sk-shaped: only value-based redaction can catch it
CONFIGURED_MODEL = "test-org/configured-model"

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
CHAT_WEATHER_TOOL = {"type": "function", "function": {k: v for k, v in WEATHER_TOOL.items() if k != "type"}}


def _quirky_upstream() -> FastAPI:
    """OpenRouter's odd answers, chosen by the requested model: a key echoed in an error, an error inside an
    HTTP 200 body after whitespace padding, and a padded truncated answer with reasoning."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        body = await request.json()
        model = body.get("model")
        if model == "quirk/leaks-key":
            key = (request.headers.get("authorization") or "").removeprefix("Bearer ")
            return JSONResponse(
                {"error": {"message": f"Key {key} is disabled", "code": 401, "metadata": {"raw": f"api_key={key}"}}},
                status_code=401,
            )
        if model == "quirk/error-in-200":
            error = {
                "error": {
                    "message": "Provider returned error",
                    "code": 400,
                    "metadata": {"raw": "invalid tool schema", "provider_name": "Quirk"},
                },
                "user_id": "u",
            }
            return Response(b"\n   \n" + json.dumps(error).encode(), media_type="application/json")
        answer = {
            "id": "gen-1756743299-quirk",
            "object": "chat.completion",
            "created": 1756743300,
            "model": "quirk/served-model-2025-01-01",
            "provider": "QuirkCloud",
            "choices": [
                {
                    "index": 0,
                    "finish_reason": "length",
                    "native_finish_reason": "MAX_TOKENS",
                    "message": {
                        "role": "assistant",
                        "content": "The weather in Pa",
                        "reasoning": "User wants the weather.",
                    },
                }
            ],
            "usage": {
                "prompt_tokens": 30,
                "completion_tokens": 8,
                "total_tokens": 38,
                "cost": 0.0042,
                "prompt_tokens_details": {"cached_tokens": 16},
                "completion_tokens_details": {"reasoning_tokens": 4},
            },
        }
        return Response(b"      \n" + json.dumps(answer).encode(), media_type="application/json")

    return app


@dataclass
class Cluster:
    stub: StubUpstream
    urls: dict[str, str]
    http: httpx.Client
    closed_port_url: str

    def post(self, instance: str, path: str, body: Any) -> httpx.Response:
        return self.http.post(self.urls[instance] + path, json=body)

    def upstream_calls_since(self, mark: int) -> list[tuple[str, dict[str, str], dict[str, Any]]]:
        return self.stub.requests[mark:]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    stub = StubUpstream(api_key=API_KEY)
    # Bound but never listening: connecting is refused, and no other server can take the port meanwhile.
    closed = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    closed.bind(("127.0.0.1", 0))
    closed_url = f"http://127.0.0.1:{closed.getsockname()[1]}/v1"
    with serve_in_thread(stub.app()) as stub_url, serve_in_thread(_quirky_upstream()) as quirky_url:
        stub_v1, quirky_v1 = stub_url + "/v1", quirky_url + "/v1"
        data = {
            "chat_model": openai_model_block(stub_v1, api_key=API_KEY, model=CONFIGURED_MODEL),
            "responses_model": openai_model_block(stub_v1, api_key=API_KEY, model=CONFIGURED_MODEL, api="responses"),
            "tuned_model": openai_model_block(
                stub_v1,
                api_key=API_KEY,
                model=CONFIGURED_MODEL,
                extra_body={"provider": {"sort": "price", "allow_fallbacks": False}, "usage": {"include": True}},
                headers={"HTTP-Referer": "https://nemo-gym.test", "X-Title": "nemo-gym tests"},
            ),
            "tuned_responses_model": openai_model_block(
                stub_v1,
                api_key=API_KEY,
                model=CONFIGURED_MODEL,
                api="responses",
                extra_body={"provider": {"sort": "price"}},
                headers={"X-Title": "nemo-gym tests"},
            ),
            "wrong_key_model": openai_model_block(stub_v1, api_key=WRONG_KEY, model=CONFIGURED_MODEL),
            "leaky_model": openai_model_block(quirky_v1, api_key=LEAKED_KEY, model="quirk/leaks-key"),
            "error_in_200_model": openai_model_block(quirky_v1, model="quirk/error-in-200"),
            "padded_model": openai_model_block(quirky_v1, model="quirk/padded-truncated"),
            "offline_model": openai_model_block(
                closed_url,
                api_key=API_KEY,
                model=CONFIGURED_MODEL,
                retry={"max_attempts": 2, "initial_backoff_s": 0.01},
            ),
        }
        try:
            with serve_config(data) as (config, _servers), httpx.Client(timeout=60) as http:
                urls = {name: spec.url() for name, spec in config.instances.items()}
                yield Cluster(stub=stub, urls=urls, http=http, closed_port_url=closed_url)
        finally:
            closed.close()


def _function_calls(response: dict[str, Any]) -> list[dict[str, Any]]:
    return [item for item in response["output"] if item["type"] == "function_call"]


def _tool_outputs(calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [
        {
            "type": "function_call_output",
            "call_id": call["call_id"],
            "output": json.dumps({"city": json.loads(call["arguments"])["city"], "weather": "sunny"}),
        }
        for call in calls
    ]


# =========================================================================== /v1/responses, chat upstream


def test_models_lists_the_configured_model(cluster: Cluster) -> None:
    answer = cluster.http.get(cluster.urls["chat_model"] + "/v1/models")

    assert answer.status_code == 200
    assert [m["id"] for m in answer.json()["data"]] == [CONFIGURED_MODEL]


def test_responses_two_turn_tool_conversation_through_a_chat_upstream(cluster: Cluster) -> None:
    user = {"role": "user", "content": "What is the weather in Paris and Tokyo?"}
    mark = len(cluster.stub.requests)

    first = cluster.post(
        "chat_model",
        "/v1/responses",
        {"model": CONFIGURED_MODEL, "instructions": "Use the tool.", "input": [user], "tools": [WEATHER_TOOL]},
    )

    assert first.status_code == 200, first.text
    ResponsesResponse.model_validate(first.json())
    calls = _function_calls(first.json())
    assert [json.loads(c["arguments"]) for c in calls] == [{"city": "Paris"}, {"city": "Tokyo"}]
    assert {c["name"] for c in calls} == {"get_weather"}
    assert len({c["call_id"] for c in calls}) == 2

    second = cluster.post(
        "chat_model",
        "/v1/responses",
        {"input": [user, *first.json()["output"], *_tool_outputs(calls)], "tools": [WEATHER_TOOL]},
    )

    assert second.status_code == 200, second.text
    response = ResponsesResponse.model_validate(second.json())
    assert response.status == "completed"
    assert _function_calls(second.json()) == []
    assert "Paris" in response.output_text and "Tokyo" in response.output_text

    upstream = cluster.upstream_calls_since(mark)
    assert [path for path, _, _ in upstream] == ["/v1/chat/completions"] * 2
    for _, headers, body in upstream:
        assert headers["authorization"] == f"Bearer {API_KEY}"
        assert body["model"] == CONFIGURED_MODEL
        assert body["tools"] == [CHAT_WEATHER_TOOL]
    first_body, second_body = upstream[0][2], upstream[1][2]
    assert first_body["messages"][0] == {"role": "system", "content": "Use the tool."}
    assistant, *tools = second_body["messages"][1:]
    assert assistant["role"] == "assistant"
    assert assistant["content"] == ""
    assert [t["id"] for t in assistant["tool_calls"]] == [c["call_id"] for c in calls]
    assert [(t["role"], t["tool_call_id"]) for t in tools] == [("tool", c["call_id"]) for c in calls]


def test_responses_carry_nemo_gym_metadata_and_usage_cost(cluster: Cluster) -> None:
    started = time.perf_counter()
    answer = cluster.post("chat_model", "/v1/responses", {"input": "Weather in Oslo?", "tools": [WEATHER_TOOL]})
    round_trip_s = time.perf_counter() - started

    assert answer.status_code == 200, answer.text
    body = answer.json()
    meta = body["nemo_gym"]
    assert meta["served_model"] == cluster.stub.model_label  # what the upstream says served, not what we asked
    assert meta["requested_model"] == CONFIGURED_MODEL
    assert meta["provider"] == "StubProvider"
    assert meta["upstream_api"] == "chat_completions"
    assert isinstance(meta["latency_s"], float)
    assert 0 < meta["latency_s"] <= round_trip_s  # the upstream call is part of our request to the model server
    assert body["model"] == cluster.stub.model_label
    assert body["usage"]["cost"] == pytest.approx(COST_PER_CALL_USD)
    assert body["usage"]["input_tokens"] > 0


def test_openrouter_quirks_padding_reasoning_truncation_and_cached_tokens(cluster: Cluster) -> None:
    answer = cluster.post("padded_model", "/v1/responses", {"input": "Weather in Paris?", "max_output_tokens": 8})

    assert answer.status_code == 200, answer.text
    response = ResponsesResponse.model_validate(answer.json())
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output_text == "The weather in Pa"
    usage = answer.json()["usage"]
    assert usage["input_tokens_details"]["cached_tokens"] == 16
    assert usage["output_tokens_details"]["reasoning_tokens"] == 4
    assert usage["cost"] == pytest.approx(0.0042)
    assert answer.json()["nemo_gym"]["served_model"] == "quirk/served-model-2025-01-01"
    assert answer.json()["nemo_gym"]["provider"] == "QuirkCloud"


# =========================================================================== /v1/responses, responses upstream


def test_responses_api_upstream_gets_the_request_at_its_responses_endpoint(cluster: Cluster) -> None:
    user = {"role": "user", "content": "Weather in Paris and Tokyo?"}
    mark = len(cluster.stub.requests)

    first = cluster.post(
        "responses_model",
        "/v1/responses",
        {"model": CONFIGURED_MODEL, "input": [user], "tools": [WEATHER_TOOL], "stream": False},
    )
    assert first.status_code == 200, first.text
    ResponsesResponse.model_validate(first.json())
    calls = _function_calls(first.json())
    assert [json.loads(c["arguments"])["city"] for c in calls] == ["Paris", "Tokyo"]
    assert first.json()["nemo_gym"]["upstream_api"] == "responses"

    second = cluster.post(
        "responses_model",
        "/v1/responses",
        {"input": [user, *first.json()["output"], *_tool_outputs(calls)], "tools": [WEATHER_TOOL]},
    )
    assert second.status_code == 200, second.text
    assert "Here is the weather" in ResponsesResponse.model_validate(second.json()).output_text

    upstream = cluster.upstream_calls_since(mark)
    assert [path for path, _, _ in upstream] == ["/v1/responses"] * 2
    path, headers, body = upstream[0]
    assert headers["authorization"] == f"Bearer {API_KEY}"
    assert body["model"] == CONFIGURED_MODEL
    assert body["tools"] == [WEATHER_TOOL]  # Responses tools stay flat
    assert "stream" not in body
    assert [i.get("type") for i in upstream[1][2]["input"]].count("function_call_output") == 2


# =========================================================================== /v1/chat/completions


def test_chat_completions_pass_through_a_chat_upstream_for_two_turns(cluster: Cluster) -> None:
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    mark = len(cluster.stub.requests)

    first = cluster.post(
        "chat_model",
        "/v1/chat/completions",
        {"model": CONFIGURED_MODEL, "messages": messages, "tools": [CHAT_WEATHER_TOOL]},
    )

    assert first.status_code == 200, first.text
    completion = ChatCompletion.model_validate(first.json())
    assert completion.choices[0].finish_reason == "tool_calls"
    assert first.json()["nemo_gym"]["upstream_api"] == "chat_completions"
    assert first.json()["nemo_gym"]["provider"] == "StubProvider"
    assistant = first.json()["choices"][0]["message"]
    assert assistant["content"] is None  # as the upstream sent it

    # A client echoes the assistant message back unchanged (content null); strict upstreams reject null.
    messages += [assistant, {"role": "tool", "tool_call_id": assistant["tool_calls"][0]["id"], "content": "sunny"}]
    second = cluster.post("chat_model", "/v1/chat/completions", {"messages": messages, "tools": [CHAT_WEATHER_TOOL]})

    assert second.status_code == 200, second.text
    assert ChatCompletion.model_validate(second.json()).choices[0].message.content == "Here is the weather: sunny"
    upstream = cluster.upstream_calls_since(mark)
    assert [path for path, _, _ in upstream] == ["/v1/chat/completions"] * 2
    assert all(body["model"] == CONFIGURED_MODEL for _, _, body in upstream)
    assert all(headers["authorization"] == f"Bearer {API_KEY}" for _, headers, _ in upstream)


def test_chat_completions_are_converted_for_a_responses_upstream(cluster: Cluster) -> None:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris and Tokyo?"},
    ]
    mark = len(cluster.stub.requests)

    first = cluster.post(
        "responses_model",
        "/v1/chat/completions",
        {"messages": messages, "tools": [CHAT_WEATHER_TOOL], "max_tokens": 100},
    )

    assert first.status_code == 200, first.text
    completion = ChatCompletion.model_validate(first.json())
    assert completion.choices[0].finish_reason == "tool_calls"
    tool_calls = completion.choices[0].message.tool_calls or []
    assert [json.loads(c.function.arguments)["city"] for c in tool_calls] == ["Paris", "Tokyo"]
    assert first.json()["nemo_gym"]["upstream_api"] == "responses"

    messages.append(first.json()["choices"][0]["message"])
    messages += [{"role": "tool", "tool_call_id": c.id, "content": "sunny"} for c in tool_calls]
    second = cluster.post(
        "responses_model", "/v1/chat/completions", {"messages": messages, "tools": [CHAT_WEATHER_TOOL]}
    )

    assert second.status_code == 200, second.text
    assert ChatCompletion.model_validate(second.json()).choices[0].finish_reason == "stop"
    upstream = cluster.upstream_calls_since(mark)
    assert [path for path, _, _ in upstream] == ["/v1/responses"] * 2
    first_body, second_body = upstream[0][2], upstream[1][2]
    assert first_body["model"] == CONFIGURED_MODEL
    assert first_body["tools"] == [WEATHER_TOOL]
    assert first_body["max_output_tokens"] == 100
    kinds = [item["type"] for item in second_body["input"]]
    assert kinds == [
        "message",
        "message",
        "function_call",
        "function_call",
        "function_call_output",
        "function_call_output",
    ]
    assert [i["call_id"] for i in second_body["input"][2:4]] == [c.id for c in tool_calls]


# =========================================================================== configuration forwarded upstream


def test_extra_body_and_headers_are_forwarded_to_a_chat_upstream(cluster: Cluster) -> None:
    mark = len(cluster.stub.requests)

    answer = cluster.post("tuned_model", "/v1/responses", {"input": "Hello"})
    chat_answer = cluster.post(
        "tuned_model", "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hello"}]}
    )

    assert answer.status_code == 200, answer.text
    assert chat_answer.status_code == 200, chat_answer.text
    upstream = cluster.upstream_calls_since(mark)
    assert len(upstream) == 2
    for _, headers, body in upstream:
        assert body["provider"] == {"sort": "price", "allow_fallbacks": False}
        assert body["usage"] == {"include": True}
        assert headers["http-referer"] == "https://nemo-gym.test"
        assert headers["x-title"] == "nemo-gym tests"
        assert headers["authorization"] == f"Bearer {API_KEY}"


def test_extra_body_and_headers_are_forwarded_to_a_responses_upstream(cluster: Cluster) -> None:
    mark = len(cluster.stub.requests)

    answer = cluster.post("tuned_responses_model", "/v1/responses", {"input": "Hello"})

    assert answer.status_code == 200, answer.text
    [(path, headers, body)] = cluster.upstream_calls_since(mark)
    assert path == "/v1/responses"
    assert body["provider"] == {"sort": "price"}
    assert headers["x-title"] == "nemo-gym tests"


# =========================================================================== errors


def test_wrong_key_is_401_with_a_hint_and_without_the_key(cluster: Cluster) -> None:
    answer = cluster.post("wrong_key_model", "/v1/responses", {"input": "Weather in Paris?"})

    assert answer.status_code == 401
    message = answer.json()["error"]["message"]
    assert "api_key" in message
    assert "env.yaml" in message
    assert WRONG_KEY not in answer.text
    assert answer.json()["error"]["upstream_status"] == 401


def test_a_key_echoed_by_the_upstream_is_redacted(cluster: Cluster) -> None:
    for path, body in [
        ("/v1/responses", {"input": "Hi"}),
        ("/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}]}),
    ]:
        answer = cluster.post("leaky_model", path, body)

        assert answer.status_code == 401
        assert LEAKED_KEY not in answer.text
        assert "is disabled" in answer.json()["error"]["message"]  # the upstream's message still gets through


def test_an_error_inside_an_http_200_body_is_an_error(cluster: Cluster) -> None:
    answer = cluster.post("error_in_200_model", "/v1/responses", {"input": "Hi", "tools": [WEATHER_TOOL]})

    assert answer.status_code == 400
    message = answer.json()["error"]["message"]
    assert "Provider returned error" in message
    assert "invalid tool schema" in message  # OpenRouter's metadata.raw names the real cause


@pytest.mark.parametrize("path", ["/v1/responses", "/v1/chat/completions"])
def test_stream_true_is_rejected_with_400_before_calling_upstream(cluster: Cluster, path: str) -> None:
    mark = len(cluster.stub.requests)
    body = {"input": "Hi", "messages": [{"role": "user", "content": "Hi"}], "stream": True}

    answer = cluster.post("chat_model", path, body)

    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request"
    assert "stream" in answer.json()["error"]["message"]
    assert cluster.upstream_calls_since(mark) == []


def test_an_unreachable_upstream_is_a_502_that_names_the_url(cluster: Cluster) -> None:
    answer = cluster.post("offline_model", "/v1/responses", {"input": "Hi"})

    assert 502 <= answer.status_code <= 504
    message = answer.json()["error"]["message"]
    assert cluster.closed_port_url in message
    assert "base_url" in message
    assert API_KEY not in answer.text


def test_a_body_that_is_not_json_is_400(cluster: Cluster) -> None:
    answer = cluster.http.post(
        cluster.urls["chat_model"] + "/v1/responses", content=b"{not json", headers={"content-type": "application/json"}
    )

    assert answer.status_code == 400
    assert "JSON" in answer.json()["error"]["message"]


# =========================================================================== configuration


@pytest.mark.parametrize(
    ("base_url", "expected"),
    [
        ("https://openrouter.ai/api/v1", "chat_completions"),
        ("http://127.0.0.1:8000/v1", "chat_completions"),
        ("https://api.openai.com/v1", "responses"),
    ],
)
def test_api_auto_picks_chat_completions_except_for_api_openai_com(base_url: str, expected: str) -> None:
    config = OpenAIModelConfig(base_url=base_url, model="openai/gpt-4o", api_key="sk-or-v1-abc")
    server = OpenAIModelServer("m", config, GlobalConfig(data={}))

    assert server.upstream_api == expected


def test_explicit_api_overrides_auto() -> None:
    config = OpenAIModelConfig(
        base_url="https://openrouter.ai/api/v1", model="openai/gpt-4o", api="responses", api_key="sk-or-v1-abc"
    )

    assert OpenAIModelServer("m", config, GlobalConfig(data={})).upstream_api == "responses"


def test_an_unknown_config_key_is_an_error_naming_instance_and_key() -> None:
    block = openai_model_block("http://127.0.0.1:9/v1", temprature=0.3)

    with pytest.raises(ConfigError, match=r"policy_model.*temprature"):
        prepare(GlobalConfig(data={"policy_model": block}))


def test_an_invalid_api_value_is_an_error() -> None:
    with pytest.raises(ConfigError, match="api"):
        prepare(GlobalConfig(data={"policy_model": openai_model_block("http://127.0.0.1:9/v1", api="grpc")}))


def test_upstream_endpoint_never_puts_the_key_in_a_connection_error() -> None:
    """The error raised for an unreachable upstream is built without the key (it is only in a header)."""
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        endpoint = UpstreamEndpoint(
            base_url=f"http://127.0.0.1:{closed.getsockname()[1]}/v1", model="m", api_key=API_KEY
        )

        async def call() -> None:
            async with HttpPool(timeout=10) as http:
                await endpoint.post(http, "chat/completions", {"model": "m", "messages": []})

        with pytest.raises(UpstreamError) as caught:
            asyncio.run(call())

    assert caught.value.status_code == 502
    assert API_KEY not in str(caught.value)
