"""The offline OpenRouter emulator over real loopback HTTP: auth, catalog, the scripted policy, usage and cost,
credits, routing and fallbacks, every fault kind as a client sees it, and the ng_openrouter_emulator command."""

from __future__ import annotations

import json
import signal
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import yaml
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from nemo_gym.emulator import EmulatedModel, EmulatorConfig, FaultRates, OpenRouterEmulator
from nemo_gym.emulator.config import price_string
from nemo_gym.emulator.policy import ScriptedPolicy, proper_nouns
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.serving import serve_in_thread

KEY = "sk-or-v1-test-0123456789abcdef"
AUTH = {"Authorization": f"Bearer {KEY}"}
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}
RESPONSES_WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city.",
    "parameters": WEATHER_TOOL["function"]["parameters"],
    "strict": False,
}

Serve = Callable[..., tuple[OpenRouterEmulator, str]]


@pytest.fixture
def serve() -> Iterator[Serve]:
    """serve(**config) -> (emulator, base URL ending in /api/v1); every server stops when the test ends."""
    stack: list[Any] = []

    def start(**config: Any) -> tuple[OpenRouterEmulator, str]:
        emulator = OpenRouterEmulator(EmulatorConfig(**{"keys": [KEY], **config}))
        context = serve_in_thread(emulator.app())
        url = context.__enter__()
        stack.append(context)
        return emulator, url + "/api/v1"

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def chat_body(text: str, model: str = "openai/gpt-4o-mini", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}], **extra}


def post(url: str, body: dict[str, Any], *, timeout: float = 10.0) -> httpx.Response:
    return httpx.post(url + "/chat/completions", json=body, headers=AUTH, timeout=timeout, trust_env=False)


# ------------------------------------------------------------------------------------------------ auth and catalog


def test_auth_errors_use_openrouters_messages(serve: Serve) -> None:
    _, url = serve()
    body = chat_body("Hi")
    for headers in ({}, {"Authorization": "Basic abc"}, {"Authorization": "Bearer"}):
        answer = httpx.post(url + "/chat/completions", json=body, headers=headers, trust_env=False)
        assert answer.status_code == 401
        assert answer.json() == {
            "error": {"code": 401, "message": "No auth credentials found"},
            "user_id": "user_emulator",
        }
    answer = httpx.post(
        url + "/chat/completions", json=body, headers={"Authorization": "Bearer sk-or-v1-nope"}, trust_env=False
    )
    assert (answer.status_code, answer.json()["error"]["message"]) == (401, "User not found.")
    assert httpx.get(url + "/key", trust_env=False).status_code == 401

    _, open_url = serve(keys=[])  # no configured keys: any OpenRouter-looking key works
    assert (
        httpx.get(open_url + "/key", headers={"Authorization": "Bearer sk-or-v1-anything"}, trust_env=False).status_code
        == 200
    )
    assert (
        httpx.get(open_url + "/key", headers={"Authorization": "Bearer sk-proj-openai"}, trust_env=False).json()[
            "error"
        ]["message"]
        == "User not found."
    )


def test_models_is_public_with_string_prices(serve: Serve) -> None:
    _, url = serve()
    data = httpx.get(url + "/models", trust_env=False).json()["data"]
    by_id = {m["id"]: m for m in data}
    assert {"openai/gpt-4-turbo", "openai/gpt-4o-mini", "meta-llama/llama-3.1-8b-instruct:free"} <= set(by_id)
    mini = by_id["openai/gpt-4o-mini"]
    assert mini["pricing"]["prompt"] == "0.00000015" and mini["pricing"]["completion"] == "0.0000006"
    assert by_id["meta-llama/llama-3.1-8b-instruct:free"]["pricing"]["prompt"] == "0"
    for entry in data:
        assert {
            "id",
            "canonical_slug",
            "name",
            "created",
            "description",
            "context_length",
            "architecture",
            "pricing",
            "top_provider",
            "per_request_limits",
            "supported_parameters",
        } <= set(entry)
        assert all(isinstance(v, str) for v in entry["pricing"].values())
    assert "tools" in mini["supported_parameters"]
    assert "tools" not in by_id["mistralai/mixtral-8x7b-instruct"]["supported_parameters"]
    with_tools = httpx.get(url + "/models", params={"supported_parameters": "tools"}, trust_env=False).json()
    assert "mistralai/mixtral-8x7b-instruct" not in {m["id"] for m in with_tools["data"]}


def test_logprobs_are_in_the_catalog_of_the_models_that_support_them(serve: Serve) -> None:
    _, url = serve()
    by_id = {m["id"]: m for m in httpx.get(url + "/models", trust_env=False).json()["data"]}
    assert {"logprobs", "top_logprobs"} <= set(by_id["openai/gpt-4o-mini"]["supported_parameters"])
    assert "logprobs" not in by_id["anthropic/claude-3.5-sonnet"]["supported_parameters"]
    listed = httpx.get(url + "/models", params={"supported_parameters": "logprobs"}, trust_env=False).json()["data"]
    assert {m["id"] for m in listed} == {m for m, e in by_id.items() if "logprobs" in e["supported_parameters"]}


def test_logprobs_come_back_only_when_asked_and_supported(serve: Serve) -> None:
    _, url = serve()
    asked = post(url, chat_body("Tell me about Oslo and Lima.", logprobs=True, top_logprobs=3)).json()
    choice = asked["choices"][0]
    content = choice["logprobs"]["content"]
    assert "".join(entry["token"] for entry in content) == choice["message"]["content"]
    for entry in content:
        assert -3.0 <= entry["logprob"] <= 0.0 and entry["bytes"] == list(entry["token"].encode())
        tops = entry["top_logprobs"]
        assert len(tops) == 3 and tops[0]["token"] == entry["token"]
        assert [t["logprob"] for t in tops] == sorted((t["logprob"] for t in tops), reverse=True)
    again = post(url, chat_body("Tell me about Oslo and Lima.", logprobs=True, top_logprobs=3)).json()
    assert again["choices"][0]["logprobs"] == choice["logprobs"], "the same request gets the same logprobs"
    ChatCompletion.model_validate(asked)

    assert post(url, chat_body("Tell me about Oslo.")).json()["choices"][0]["logprobs"] is None
    unsupported = post(url, chat_body("Tell me about Oslo.", model="anthropic/claude-3.5-sonnet", logprobs=True))
    assert unsupported.status_code == 200 and unsupported.json()["choices"][0]["logprobs"] is None

    tool_turn = post(url, chat_body("Weather in Oslo?", tools=[WEATHER_TOOL], logprobs=True)).json()["choices"][0]
    arguments = tool_turn["message"]["tool_calls"][0]["function"]["arguments"]
    assert "".join(e["token"] for e in tool_turn["logprobs"]["content"]) == arguments


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"logprobs": "yes"}, "'logprobs' must be a boolean."),
        ({"logprobs": True, "top_logprobs": 21}, "'top_logprobs' must be an integer between 0 and 20."),
        ({"logprobs": True, "top_logprobs": -1}, "'top_logprobs' must be an integer between 0 and 20."),
    ],
)
def test_bad_logprob_settings_are_refused(serve: Serve, extra: dict[str, Any], message: str) -> None:
    _, url = serve()
    answer = post(url, chat_body("Hi", **extra))
    assert answer.status_code == 400 and answer.json()["error"]["message"] == message


def test_key_reports_limit_usage_and_masked_label(serve: Serve) -> None:
    emulator, url = serve(credits_usd=2.5)
    assert post(url, chat_body("Hello there", model="openai/gpt-4-turbo")).status_code == 200
    for path in ("/key", "/auth/key"):
        data = httpx.get(url + path, headers=AUTH, trust_env=False).json()["data"]
        assert data["label"] == "sk-or-v1-tes...def" and KEY not in json.dumps(data)
        assert data["limit"] == 2.5 and emulator.spent_usd > 0 and data["usage"] == pytest.approx(emulator.spent_usd)
        assert data["limit_remaining"] == pytest.approx(2.5 - emulator.spent_usd)
        assert data["is_free_tier"] is False
        assert data["rate_limit"]["requests"] == -1 and data["rate_limit"]["interval"] == "10s"
    unlimited_emulator, unlimited_url = serve()
    data = httpx.get(unlimited_url + "/key", headers=AUTH, trust_env=False).json()["data"]
    assert data["limit"] is None and data["limit_remaining"] is None and unlimited_emulator.spent_usd == 0


# ------------------------------------------------------------------------------------------------ conversations


def test_two_turn_tool_conversation_through_chat_completions(serve: Serve) -> None:
    emulator, url = serve()
    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, http_client=httpx.Client(trust_env=False))
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Compare the weather in Berlin and Madrid."}]
    first = client.chat.completions.create(model="openai/gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL])
    assert isinstance(first, ChatCompletion)
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    calls = choice.message.tool_calls or []
    assert [(c.function.name, json.loads(c.function.arguments)) for c in calls] == [
        ("get_weather", {"city": "Berlin"}),
        ("get_weather", {"city": "Madrid"}),
    ]
    assert len({c.id for c in calls}) == 2
    assert first.model == "openai/gpt-4o-mini" and first.model_extra["provider"] == "OpenAI"
    assert first.id.startswith("gen-")

    messages.append(choice.message.model_dump(exclude_none=True))
    for call, weather in zip(calls, ("Sunny, 24 C", "Cloudy, 18 C"), strict=True):
        messages.append({"role": "tool", "tool_call_id": call.id, "content": weather})
    second = client.chat.completions.create(model="openai/gpt-4o-mini", messages=messages, tools=[WEATHER_TOOL])
    text = second.choices[0].message.content or ""
    assert second.choices[0].finish_reason == "stop" and not second.choices[0].message.tool_calls
    assert "Berlin" in text and "Sunny, 24 C" in text and "Madrid" in text and "Cloudy, 18 C" in text
    assert emulator.served == {"openai/gpt-4o-mini": 2}
    assert [r.path for r in emulator.requests] == ["/api/v1/chat/completions"] * 2
    assert emulator.requests[0].headers["authorization"] == f"Bearer {KEY}"
    assert emulator.requests[0]["body"]["tools"] == [WEATHER_TOOL]


def test_two_turn_tool_conversation_through_responses(serve: Serve) -> None:
    emulator, url = serve()
    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, http_client=httpx.Client(trust_env=False))
    items: list[dict[str, Any]] = [
        {"role": "developer", "content": "Use get_weather for every city."},
        {"role": "user", "content": "What's the weather in Oslo and in Lisbon?"},
    ]
    first = client.responses.create(model="anthropic/claude-3.5-sonnet", input=items, tools=[RESPONSES_WEATHER_TOOL])
    assert isinstance(first, Response) and first.status == "completed"
    calls = [item for item in first.output if item.type == "function_call"]
    assert [json.loads(c.arguments)["city"] for c in calls] == ["Oslo", "Lisbon"]
    assert first.model == "anthropic/claude-3.5-sonnet"
    assert first.usage is not None and first.usage.model_extra["cost"] > 0

    items += [c.model_dump(exclude_none=True) for c in calls]
    items += [{"type": "function_call_output", "call_id": c.call_id, "output": f"{c.call_id}: mild"} for c in calls]
    second = client.responses.create(model="anthropic/claude-3.5-sonnet", input=items, tools=[RESPONSES_WEATHER_TOOL])
    assert "Oslo" in second.output_text and "Lisbon" in second.output_text and "mild" in second.output_text
    assert emulator.served["anthropic/claude-3.5-sonnet"] == 2
    assert emulator.requests[-1].path == "/api/v1/responses"

    refused = httpx.post(
        url + "/responses",
        headers=AUTH,
        trust_env=False,
        json={"model": "openai/gpt-4o-mini", "input": "Hi", "store": True},
    )
    assert refused.status_code == 400 and "stateless" in refused.json()["error"]["message"]
    refused = httpx.post(
        url + "/responses",
        headers=AUTH,
        trust_env=False,
        json={"model": "openai/gpt-4o-mini", "input": "Hi", "previous_response_id": "resp_1"},
    )
    assert refused.status_code == 400


@pytest.mark.parametrize(
    ("text", "nouns"),
    [
        ("Compare the weather in Berlin and Madrid.", ["Berlin", "Madrid"]),
        ("What's the weather in the capital of Japan?", ["Japan"]),
        ("I'm flying from Chicago to Dublin. What's the weather in both cities?", ["Chicago", "Dublin"]),
        ("What is the weather in the capital of the United Kingdom and in Paris?", ["United Kingdom", "Paris"]),
        ("Weather check: Seoul, Bangkok and Mumbai.", ["Seoul", "Bangkok", "Mumbai"]),
        ("Is it warmer in Lima or in Vienna on Monday?", ["Lima", "Vienna"]),
        ("weather sydney pls", []),
        ("Paris is lovely. Is it sunny in New York and in Paris?", ["New York", "Paris"]),
        ("How is Japan's weather?", ["Japan"]),
    ],
)
def test_proper_noun_extraction(text: str, nouns: list[str]) -> None:
    assert proper_nouns(text) == nouns


def test_policy_honours_tool_choice_parallel_calls_and_quality() -> None:
    body = chat_body("Weather check: Seoul, Bangkok and Mumbai.", tools=[WEATHER_TOOL])
    policy = ScriptedPolicy("openai/gpt-4o-mini")

    def cities(request: dict[str, Any]) -> list[str]:
        calls = policy.answer(request).tool_calls
        assert all(c.name == "get_weather" for c in calls)
        return [json.loads(c.arguments)["city"] for c in calls]

    assert len(policy.answer(body).tool_calls) == 3
    assert cities(body) == ["Seoul", "Bangkok", "Mumbai"]
    assert policy.answer({**body, "tool_choice": "none"}).content.startswith("You asked about Seoul, Bangkok")
    assert len(policy.answer({**body, "parallel_tool_calls": False}).tool_calls) == 1
    assert cities({**body, "parallel_tool_calls": False}) == ["Seoul"]
    forced = {**body, "tool_choice": {"type": "function", "function": {"name": "get_weather"}}}
    assert len(policy.answer(forced).tool_calls) == 3
    assert cities(forced) == ["Seoul", "Bangkok", "Mumbai"]
    vague = chat_body("weather sydney pls", tools=[WEATHER_TOOL])
    assert policy.answer(vague).tool_calls == [] and policy.answer(vague).content
    required = policy.answer({**vague, "tool_choice": "required"}).tool_calls
    assert [json.loads(c.arguments) for c in required] == [{"city": "weather sydney pls"}]
    no_tools = policy.answer(chat_body("Hello"))
    assert no_tools.tool_calls == [] and "Hello" in (no_tools.content or "")

    # quality < 1 skips calls deterministically, differently per model and seed, at roughly that rate
    rows = [
        chat_body(f"Weather in {city}?", tools=[WEATHER_TOOL])
        for city in ("Paris", "London", "Tokyo", "Berlin", "Madrid", "Rome", "Cairo", "Oslo", "Lima", "Seoul") * 4
    ]
    weak = ScriptedPolicy("meta-llama/llama-3.1-8b-instruct:free", quality=0.5)
    made = [bool(weak.answer(r).tool_calls) for r in rows[:10]]
    assert made == [bool(weak.answer(r).tool_calls) for r in rows[:10]]
    other = [bool(ScriptedPolicy("google/gemini-pro", quality=0.5).answer(r).tool_calls) for r in rows[:10]]
    assert made != other
    assert 2 <= sum(made) <= 8


def test_known_questions_are_answered_right_at_the_models_quality(serve: Serve, tmp_path: Path) -> None:
    key = tmp_path / "questions.jsonl"
    rows = [
        {
            "responses_create_params": {
                "input": [
                    {"role": "system", "content": "Be brief."},
                    {"role": "user", "content": f"What is {n} + {n}?"},
                ]
            },
            "expected_answer": str(2 * n),
        }
        for n in range(40)
    ]
    rows.append({"responses_create_params": {"input": "Which letter? A) x B) y"}, "expected_answer": "B"})
    key.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    strong = [m for m in EmulatorConfig().models if m.quality == 1.0][0]
    weak = EmulatedModel(id="weak/model", name="Weak", provider_name="Weak", quality=0.5)
    _, url = serve(answer_keys=[key], models=[strong, weak])

    def answer(model: str, question: str) -> str:
        return post(url, chat_body(question, model)).json()["choices"][0]["message"]["content"]

    assert answer(strong.id, "What is  7 +   7?") == "Let me work it out. The answer is \\boxed{14}."
    assert answer(strong.id, "Which letter? A) x B) y").endswith("\\boxed{B}.")
    weak_right = [answer("weak/model", f"What is {n} + {n}?").endswith(f"{{{2 * n}}}.") for n in range(40)]
    assert 10 <= sum(weak_right) <= 30  # about half, and the same every time
    assert weak_right == [answer("weak/model", f"What is {n} + {n}?").endswith(f"{{{2 * n}}}.") for n in range(40)]
    assert "boxed" not in answer(strong.id, "An unknown question")


# ------------------------------------------------------------------------------------------------ usage and credits


def test_usage_and_cost_arithmetic(serve: Serve) -> None:
    emulator, url = serve()
    answer = post(
        url,
        chat_body(
            "What is the weather in Cairo?",
            model="openai/gpt-4-turbo",
            tools=[WEATHER_TOOL],
            usage={"include": True},
            transforms=["middle-out"],
        ),
    )
    usage = answer.json()["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
    assert usage["cost"] == pytest.approx(usage["prompt_tokens"] * 0.00001 + usage["completion_tokens"] * 0.00003)
    assert usage["is_byok"] is False
    assert usage["prompt_tokens_details"] == {"cached_tokens": 0, "cache_write_tokens": 0, "audio_tokens": 0}
    assert usage["completion_tokens_details"]["reasoning_tokens"] == 0
    assert usage["cost_details"]["upstream_inference_cost"] is None
    assert answer.json()["choices"][0]["native_finish_reason"] == "tool_calls"
    assert emulator.spent_usd == pytest.approx(usage["cost"])

    longer = post(url, chat_body("What is the weather in Cairo? " * 20, model="openai/gpt-4-turbo"))
    assert longer.json()["usage"]["prompt_tokens"] > usage["prompt_tokens"]  # deterministic, grows with the text
    free = post(url, chat_body("Hello", model="meta-llama/llama-3.1-8b-instruct:free")).json()["usage"]
    assert free["cost"] == 0 and free["prompt_tokens"] > 0
    assert emulator.spent_usd == pytest.approx(usage["cost"] + longer.json()["usage"]["cost"])

    record = httpx.get(url + "/generation", params={"id": answer.json()["id"]}, headers=AUTH, trust_env=False)
    assert record.json()["data"]["total_cost"] == usage["cost"]
    assert record.json()["data"]["model"] == "openai/gpt-4-turbo"
    assert answer.headers["x-generation-id"] == answer.json()["id"]

    truncated = post(url, chat_body("Tell me a story about nothing in particular", max_tokens=3)).json()
    assert truncated["choices"][0]["finish_reason"] == "length"
    assert truncated["usage"]["completion_tokens"] <= 3


def test_credits_run_out_with_402(serve: Serve) -> None:
    emulator, url = serve(credits_usd=0.001)
    statuses = [post(url, chat_body("Hello " * 50, model="openai/gpt-4-turbo")).status_code for _ in range(10)]
    assert statuses[0] == 200 and statuses[-1] == 402
    assert statuses.index(402) == sum(1 for s in statuses if s == 200)  # no success after the first refusal
    refusal = post(url, chat_body("Hello"))
    assert refusal.json() == {
        "error": {"code": 402, "message": "Insufficient credits. Add more using https://openrouter.ai/credits"},
        "user_id": "user_emulator",
    }
    assert emulator.spent_usd >= 0.001


# ------------------------------------------------------------------------------------------------ routing


def test_model_validation_errors(serve: Serve) -> None:
    _, url = serve()
    unknown = post(url, chat_body("Hi", model="openai/gpt-99"))
    assert unknown.status_code == 400 and unknown.json()["error"]["message"] == "openai/gpt-99 is not a valid model ID"
    many = post(url, chat_body("Hi", models=["openai/gpt-4o-mini"] * 4))
    assert many.status_code == 400
    assert many.json()["error"]["message"] == "'models' array must have 3 items or fewer."
    only_models = post(url, {"models": ["google/gemini-pro"], "messages": [{"role": "user", "content": "Hi"}]})
    assert only_models.status_code == 200 and only_models.json()["model"] == "google/gemini-pro"


def test_fallback_serves_from_the_next_model(serve: Serve) -> None:
    emulator, url = serve()
    emulator.inject("openai/gpt-4o-mini", ["rate_limit", "server_error"])
    body = chat_body("Weather in Rome?", tools=[WEATHER_TOOL], models=["anthropic/claude-3.5-sonnet"])
    first = post(url, body)
    assert first.status_code == 200
    assert first.json()["model"] == "anthropic/claude-3.5-sonnet" and first.json()["provider"] == "Anthropic"
    assert first.json()["choices"][0]["native_finish_reason"] == "tool_use"
    assert emulator.served == {"anthropic/claude-3.5-sonnet": 1}
    assert post(url, body).json()["model"] == "anthropic/claude-3.5-sonnet"  # second injected fault
    assert post(url, body).json()["model"] == "openai/gpt-4o-mini"  # injections used up
    assert emulator.served == {"anthropic/claude-3.5-sonnet": 2, "openai/gpt-4o-mini": 1}

    # every candidate fails: the last error is the answer
    emulator.inject("openai/gpt-4o-mini", ["rate_limit"])
    emulator.inject("anthropic/claude-3.5-sonnet", ["unavailable"])
    assert post(url, body).status_code == 503
    with pytest.raises(ValueError, match="unknown fault"):
        emulator.inject("openai/gpt-4o-mini", ["meteor_strike"])


def test_provider_preferences_and_tool_support(serve: Serve) -> None:
    emulator, url = serve()
    assert post(url, chat_body("Hi", provider={"only": ["openai"]})).status_code == 200
    ignored = post(url, chat_body("Hi", provider={"ignore": ["OpenAI"]}))
    assert ignored.status_code == 404
    assert ignored.json()["error"]["message"] == "No endpoints found for openai/gpt-4o-mini."
    assert post(url, chat_body("Hi", provider={"only": ["anthropic"]})).status_code == 404
    assert post(url, chat_body("Hi", provider={"order": ["anthropic"]})).status_code == 200
    assert post(url, chat_body("Hi", provider={"order": ["anthropic"], "allow_fallbacks": False})).status_code == 404
    gemini = post(
        url, chat_body("Hi", model="google/gemini-pro", provider={"only": ["google-ai-studio"], "sort": "price"})
    )
    assert gemini.status_code == 200
    # an ignored provider falls through to the next model
    fell = post(url, chat_body("Hi", models=["google/gemini-pro"], provider={"ignore": ["openai"]}))
    assert fell.json()["model"] == "google/gemini-pro"

    no_tools = post(url, chat_body("Weather in Oslo?", model="mistralai/mixtral-8x7b-instruct", tools=[WEATHER_TOOL]))
    assert no_tools.status_code == 404
    assert no_tools.json()["error"]["message"].startswith("No endpoints found that support tool use.")
    assert post(url, chat_body("Hi", model="mistralai/mixtral-8x7b-instruct")).status_code == 200
    assert "mistralai/mixtral-8x7b-instruct" in emulator.served


# ------------------------------------------------------------------------------------------------ faults


@pytest.mark.parametrize(
    ("fault", "status", "message"),
    [
        ("rate_limit", 429, "Rate limit exceeded: limit_rpm/openai/gpt-4o-mini/"),
        ("rate_limit_no_retry_after", 429, "Provider returned error"),
        ("server_error", 500, "Internal Server Error"),
        ("bad_gateway", 502, "Provider returned error"),
        ("unavailable", 503, "Service temporarily unavailable"),
        ("timeout", 408, "Operation timed out. Please try again later."),
    ],
)
def test_routing_faults_on_the_wire(serve: Serve, fault: str, status: int, message: str) -> None:
    emulator, url = serve(
        models=[
            EmulatedModel(
                id="openai/gpt-4o-mini", name="GPT-4o-mini", provider_name="OpenAI", faults=FaultRates(retry_after_s=2)
            )
        ]
    )
    emulator.inject("openai/gpt-4o-mini", [fault])
    answer = post(url, chat_body("Hi"))
    assert answer.status_code == status
    error = answer.json()["error"]
    assert error["code"] == status and error["message"].startswith(message)
    assert answer.json()["user_id"] == "user_emulator"
    if fault == "rate_limit":
        assert answer.headers["retry-after"] == "2"
        assert answer.headers["x-ratelimit-remaining"] == "0"
        assert int(answer.headers["x-ratelimit-reset"]) > 1_600_000_000_000  # epoch milliseconds
        assert error["metadata"]["headers"]["X-RateLimit-Limit"] == answer.headers["x-ratelimit-limit"]
    else:
        assert "retry-after" not in answer.headers
    if fault in ("bad_gateway", "rate_limit_no_retry_after"):
        assert error["metadata"]["provider_name"] == "OpenAI" and error["metadata"]["raw"]
    assert emulator.served == {} and emulator.spent_usd == 0
    assert post(url, chat_body("Hi")).status_code == 200


def test_hang_fires_the_client_read_timeout(serve: Serve) -> None:
    emulator, url = serve(default_faults=FaultRates(hang_s=10))
    emulator.inject("openai/gpt-4o-mini", ["hang"])
    with pytest.raises(httpx.ReadTimeout):
        post(url, chat_body("Hi"), timeout=0.3)
    assert emulator.served == {}
    assert post(url, chat_body("Hi"), timeout=5).status_code == 200  # the server was not stuck behind it


def test_drop_connection_is_a_protocol_error(serve: Serve) -> None:
    emulator, url = serve()
    emulator.inject("openai/gpt-4o-mini", ["drop_connection", "drop_connection"])
    with pytest.raises(httpx.RemoteProtocolError):
        post(url, chat_body("Hi"))
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(
            url + "/responses", json={"model": "openai/gpt-4o-mini", "input": "Hi"}, headers=AUTH, trust_env=False
        )
    assert emulator.served == {} and emulator.spent_usd == 0
    assert post(url, chat_body("Hi")).status_code == 200


def test_errors_inside_http_200(serve: Serve) -> None:
    emulator, url = serve()
    emulator.inject("openai/gpt-4o-mini", ["error_in_200", "finish_reason_error"])
    padded = post(url, chat_body("Compare the weather in Berlin and Madrid."))
    assert padded.status_code == 200 and padded.content.startswith(b"\n")
    body = padded.json()
    assert "choices" not in body and body["error"]["code"] == 502
    assert body["error"]["message"] == "Provider returned error" and body["user_id"] == "user_emulator"
    assert body["error"]["metadata"]["provider_name"] == "OpenAI"

    partial = post(url, chat_body("Hello there, how are you?")).json()
    choice = partial["choices"][0]
    assert choice["finish_reason"] == "error" and choice["error"]["code"] == 502
    assert choice["message"]["content"] and partial["usage"]["cost"] == 0
    assert emulator.served == {} and emulator.spent_usd == 0


def test_fault_rates_match_their_probabilities(serve: Serve) -> None:
    rates = FaultRates(rate_limit=0.2, server_error=0.1, error_in_200=0.1)

    def outcomes(url: str) -> list[int | str]:
        """Each of 200 calls' status code, or "in_200" for an error inside a 200 answer."""
        kinds: list[int | str] = []
        with httpx.Client(headers=AUTH, trust_env=False, timeout=10) as client:
            for _ in range(200):
                answer = client.post(url + "/chat/completions", json=chat_body("Hi"))
                kinds.append(
                    answer.status_code if "error" not in answer.json() or answer.status_code != 200 else "in_200"
                )
        return kinds

    emulator, url = serve(seed=7, default_faults=rates)
    sequence = outcomes(url)
    counts = Counter(sequence)
    assert 25 <= counts.get(429, 0) <= 55
    assert 8 <= counts.get(500, 0) <= 32
    assert 8 <= counts.get("in_200", 0) <= 32
    assert counts[200] == emulator.served["openai/gpt-4o-mini"]
    assert sum(counts.values()) == 200

    # the same seed replays the same sequence
    replay, replay_url = serve(seed=7, default_faults=rates)
    assert outcomes(replay_url) == sequence
    assert replay.served == emulator.served


def test_streaming_chat_completions(serve: Serve) -> None:
    emulator, url = serve()
    client = openai.OpenAI(base_url=url, api_key=KEY, max_retries=0, http_client=httpx.Client(trust_env=False))
    stream = client.chat.completions.create(
        model="openai/gpt-4o-mini",
        stream=True,
        tools=[WEATHER_TOOL],
        messages=[{"role": "user", "content": "Weather in Lima and Oslo?"}],
    )
    arguments: dict[int, str] = {}
    finish, usage = None, None
    for chunk in stream:
        for choice in chunk.choices:
            for delta in choice.delta.tool_calls or []:
                arguments[delta.index] = arguments.get(delta.index, "") + (delta.function.arguments or "")
            finish = choice.finish_reason or finish
        usage = chunk.usage or usage
    assert [json.loads(a)["city"] for _, a in sorted(arguments.items())] == ["Lima", "Oslo"]
    assert finish == "tool_calls" and usage is not None and usage.model_extra["cost"] > 0
    assert emulator.served == {"openai/gpt-4o-mini": 1}

    raw = httpx.post(
        url + "/chat/completions", headers=AUTH, trust_env=False, json=chat_body("Hello", stream=True)
    ).text
    assert raw.startswith(": OPENROUTER PROCESSING") and raw.rstrip().endswith("data: [DONE]")
    emulator.inject("openai/gpt-4o-mini", ["finish_reason_error"])
    raw = httpx.post(
        url + "/chat/completions", headers=AUTH, trust_env=False, json=chat_body("Hello", stream=True)
    ).text
    assert '"finish_reason": "error"' in raw and "[DONE]" not in raw
    emulator.inject("openai/gpt-4o-mini", ["drop_connection"])
    with pytest.raises(httpx.RemoteProtocolError):
        httpx.post(url + "/chat/completions", headers=AUTH, trust_env=False, json=chat_body("Hello", stream=True))
    emulator.inject("openai/gpt-4o-mini", ["rate_limit"])  # before the first byte: a plain HTTP error
    assert (
        httpx.post(
            url + "/chat/completions", headers=AUTH, trust_env=False, json=chat_body("Hello", stream=True)
        ).status_code
        == 429
    )


# ------------------------------------------------------------------------------------------------ config and CLI


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="add up to"):
        FaultRates(rate_limit=0.7, server_error=0.5)
    with pytest.raises(ValueError):
        EmulatorConfig(keyz=["x"])
    with pytest.raises(ValueError, match="appears twice"):
        EmulatorConfig(models=[EmulatedModel(id="a/b", name="A", provider_name="A")] * 2)
    model = EmulatedModel(
        id="a/b", name="A", provider_name="Together AI", prompt_price=1.5e-07, completion_price="0.000002"
    )
    assert model.prompt_price == 1.5e-07 and model.completion_price == 0.000002
    assert price_string(model.prompt_price) == "0.00000015" and price_string(0.0) == "0"
    assert model.provider_slug == "together-ai"


def test_cli_serves_until_sigint(tmp_path: Path) -> None:
    config = {
        "keys": [KEY],
        "credits_usd": 1.0,
        "models": [
            {
                "id": "openai/gpt-4o-mini",
                "name": "GPT-4o-mini",
                "provider_name": "OpenAI",
                "prompt_price": "0.00000015",
                "completion_price": "0.0000006",
            }
        ],
    }
    (tmp_path / "emulator.yaml").write_text(yaml.safe_dump(config))
    process = CommandProcess(
        [sys.executable, "-m", "nemo_gym.cli.openrouter_emulator", "+config_path=emulator.yaml", "+credits_usd=3"],
        cwd=tmp_path,
    )
    try:
        assert process.wait_for("ng_openrouter_emulator ready at http://127.0.0.1:", timeout_s=30), process.output
        line = next(li for li in process.lines if "ready at" in li)
        url = line.split("ready at ")[1].strip()
        assert url.endswith("/api/v1")
        assert [m["id"] for m in httpx.get(url + "/models", trust_env=False).json()["data"]] == ["openai/gpt-4o-mini"]
        assert httpx.get(url + "/key", headers=AUTH, trust_env=False).json()["data"]["limit"] == 3
        process.send(signal.SIGINT)
        assert process.wait(timeout_s=15) == 0, process.output
    finally:
        process.close()

    bad = CommandProcess([sys.executable, "-m", "nemo_gym.cli.openrouter_emulator", "+seed=notanumber"], cwd=tmp_path)
    try:
        assert bad.wait(timeout_s=30) == 2 and "seed" in bad.output
    finally:
        bad.close()
