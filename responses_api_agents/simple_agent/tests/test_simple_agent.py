"""simple_agent through real HTTP on loopback: the agent, simple_weather and an `openai_model` server, each on its
own port, in front of either the deterministic StubUpstream or a scripted model that replays fixed outputs."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from nemo_gym.servers.base import BaseServer
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.cluster import openai_model_block, serve_config, simple_weather_blocks
from nemo_gym.testing.stub_upstream import COMPLETION_TOKENS_PER_CALL, PROMPT_TOKENS_PER_CALL, StubUpstream

ROOT = Path(__file__).resolve().parents[3]
EXAMPLE_DATA = ROOT / "resources_servers" / "simple_weather" / "data" / "example.jsonl"
API_KEY = "sk-test-key-0001"
AGENT = "simple_weather_simple_agent"
SHORT_AGENT = "short_agent"
SHORT_MAX_STEPS = 3


def example_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EXAMPLE_DATA.read_text().splitlines() if line.strip()]


def example_row(row_id: str) -> dict[str, Any]:
    return next(row for row in example_rows() if row["id"] == row_id)


def weather_row(question: str, expected: list[str]) -> dict[str, Any]:
    row = copy.deepcopy(example_row("weather-000"))
    row["responses_create_params"]["input"][-1]["content"] = question
    row["expected_cities"] = expected
    return row


class Cluster:
    """A served configuration: instance URLs and one synchronous client for the tests."""

    def __init__(self, urls: dict[str, str], servers: dict[str, BaseServer], client: httpx.Client) -> None:
        self.urls, self.servers, self.client = urls, servers, client

    def post(self, instance: str, path: str, body: Any) -> httpx.Response:
        return self.client.post(self.urls[instance] + path, json=body)

    def run(self, row: dict[str, Any], *, agent: str = AGENT) -> dict[str, Any]:
        response = self.post(agent, "/run", row)
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def serve() -> Iterator[Any]:
    """`serve(config)` serves a config for the rest of the module and returns a Cluster."""
    with httpx.Client(trust_env=False, timeout=60) as client:
        stacks: list[Any] = []

        def start(data: dict[str, Any]) -> Cluster:
            context = serve_config(data)
            config, servers = context.__enter__()
            stacks.append(context)
            return Cluster({name: spec.url() for name, spec in config.instances.items()}, servers, client)

        yield start
        for context in reversed(stacks):
            context.__exit__(None, None, None)


# ---------------------------------------------------------------------------------------------- StubUpstream


@pytest.fixture(scope="module")
def stub() -> Iterator[StubUpstream]:
    upstream = StubUpstream(api_key=API_KEY)
    with serve_in_thread(upstream.app()) as url:
        upstream.base_url = url  # type: ignore[attr-defined]
        yield upstream


@pytest.fixture(scope="module")
def stub_cluster(serve: Any, stub: StubUpstream) -> Cluster:
    """The simple_weather config, with policy_model an openai_model speaking Chat Completions to the stub."""
    base_url = stub.base_url + "/v1"  # type: ignore[attr-defined]
    return serve({**simple_weather_blocks(), "policy_model": openai_model_block(base_url, api_key=API_KEY)})


def test_run_scores_a_rollout_end_to_end(stub_cluster: Cluster) -> None:
    result = stub_cluster.run(example_row("weather-000"))
    assert result["reward"] == 1.0
    assert result["called_cities"] == ["Paris"]
    assert result["answered"] is True
    response = result["response"]
    assert [item["type"] for item in response["output"]] == ["function_call", "function_call_output", "message"]
    call, call_output, answer = response["output"]
    assert call["name"] == "get_weather" and json.loads(call["arguments"]) == {"city": "Paris"}
    assert call_output["call_id"] == call["call_id"]
    assert json.loads(call_output["output"])["weather"].startswith("The weather in Paris is ")
    assert "Paris" in answer["content"][0]["text"]
    assert response["nemo_gym"]["steps"] == 2
    assert response["nemo_gym"]["stop_reason"] == "answered"
    assert response["nemo_gym"]["models"] == ["stub/weather-model"]
    usage = response["usage"]
    assert usage["calls"] == 2
    assert usage["input_tokens"] == 2 * PROMPT_TOKENS_PER_CALL
    assert usage["output_tokens"] == 2 * COMPLETION_TOKENS_PER_CALL
    assert usage["total_tokens"] == 2 * (PROMPT_TOKENS_PER_CALL + COMPLETION_TOKENS_PER_CALL)
    assert usage["cost"] == pytest.approx(0.0002)
    # /verify freed the rollout's session.
    assert stub_cluster.servers["simple_weather"].sessions == {}  # type: ignore[attr-defined]


def test_run_several_cities(stub_cluster: Cluster) -> None:
    result = stub_cluster.run(example_row("weather-018"))
    assert result["reward"] == 1.0
    assert result["called_cities"] == ["Bangkok", "Mumbai", "Seoul"]
    calls = [item for item in result["response"]["output"] if item["type"] == "function_call"]
    outputs = [item for item in result["response"]["output"] if item["type"] == "function_call_output"]
    assert [o["call_id"] for o in outputs] == [c["call_id"] for c in calls]


def test_run_a_row_the_model_gets_wrong(stub_cluster: Cluster) -> None:
    result = stub_cluster.run(example_row("weather-008"))  # "the capital of Japan": the stub calls no tool
    assert result["reward"] == pytest.approx(0.2)
    assert result["missing_cities"] == ["Tokyo"]
    assert result["answered"] is True
    assert result["response"]["nemo_gym"]["steps"] == 1


def test_every_example_row_completes(stub_cluster: Cluster) -> None:
    for row in example_rows():
        result = stub_cluster.run(row)
        assert 0.0 <= result["reward"] <= 1.0, row["id"]
        if row["kind"] in ("plain", "several"):
            assert result["reward"] == 1.0, (row["id"], result["reasons"])
    assert stub_cluster.servers["simple_weather"].sessions == {}  # type: ignore[attr-defined]


def test_v1_responses_runs_the_loop_without_a_session(stub_cluster: Cluster) -> None:
    params = example_row("weather-016")["responses_create_params"]
    response = stub_cluster.post(AGENT, "/v1/responses", params)
    assert response.status_code == 200, response.text
    body = response.json()
    outputs = [item["output"] for item in body["output"] if item["type"] == "function_call_output"]
    assert len(outputs) == 2 and all("weather" in json.loads(o) for o in outputs)
    cities = {
        item["call_id"]: json.loads(item["arguments"])["city"]
        for item in body["output"]
        if item["type"] == "function_call" and item["name"] == "get_weather"
    }
    assert sorted(cities.values()) == ["Lisbon", "Oslo"]  # the row's expected_cities
    for item in (i for i in body["output"] if i["type"] == "function_call_output"):
        assert json.loads(item["output"])["weather"].startswith(f"The weather in {cities[item['call_id']]} is ")
    assert body["output"][-1]["type"] == "message"
    assert body["usage"]["calls"] == 2


def test_run_rejects_a_row_without_responses_create_params(stub_cluster: Cluster) -> None:
    response = stub_cluster.post(AGENT, "/run", {"expected_cities": ["Paris"]})
    assert response.status_code == 400
    assert "responses_create_params" in response.json()["error"]["message"]
    response = stub_cluster.post(AGENT, "/run", ["not", "a", "row"])
    assert response.status_code == 400


# ---------------------------------------------------------------------------------------------- scripted model


@dataclass
class ScriptedModel:
    """A Responses-API model that answers call k with `script[k]` (the last entry repeats), recording inputs."""

    script: list[list[dict[str, Any]]] = field(default_factory=list)
    requests: list[dict[str, Any]] = field(default_factory=list)
    status: str = "completed"
    fail_with: int | None = None

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/responses")
        async def responses(request: Request) -> Any:
            body = await request.json()
            self.requests.append(body)
            if self.fail_with is not None:
                return JSONResponse({"error": {"message": "scripted failure"}}, status_code=self.fail_with)
            k = len(self.requests)
            output = copy.deepcopy(self.script[min(k, len(self.script)) - 1])
            return {
                "id": f"resp_{k}",
                "object": "response",
                "created_at": 0,
                "model": "scripted/model",
                "status": self.status,
                "output": output,
                "usage": {
                    "input_tokens": 100 * k,
                    "output_tokens": 10 * k,
                    "total_tokens": 110 * k,
                    "input_tokens_details": {"cached_tokens": k},
                    "output_tokens_details": {"reasoning_tokens": 2 * k},
                    "cost": 0.001 * k,
                },
            }

        return app

    def reset(self, *script: list[dict[str, Any]], status: str = "completed", fail_with: int | None = None) -> None:
        self.script, self.requests, self.status, self.fail_with = list(script), [], status, fail_with


def call(name: str, arguments: str, call_id: str) -> dict[str, Any]:
    return {
        "type": "function_call",
        "id": f"fc_{call_id}",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": "completed",
    }


def answer(text: str) -> dict[str, Any]:
    return {
        "type": "message",
        "id": "msg_1",
        "role": "assistant",
        "status": "completed",
        "content": [{"type": "output_text", "text": text, "annotations": []}],
    }


@pytest.fixture(scope="module")
def scripted_server() -> Iterator[tuple[ScriptedModel, str]]:
    model = ScriptedModel()
    with serve_in_thread(model.app()) as url:
        yield model, url


@pytest.fixture(scope="module")
def scripted_cluster(serve: Any, scripted_server: tuple[ScriptedModel, str]) -> Cluster:
    """policy_model is an openai_model (Responses upstream) in front of the scripted model; two agents."""
    _, url = scripted_server
    data = {
        **simple_weather_blocks(),
        "policy_model": openai_model_block(url + "/v1", model="scripted/model", api="responses"),
    }
    short = simple_weather_blocks(max_steps=SHORT_MAX_STEPS)["simple_weather_simple_agent"]
    return serve({**data, SHORT_AGENT: short})


@pytest.fixture
def scripted(scripted_server: tuple[ScriptedModel, str], scripted_cluster: Cluster) -> ScriptedModel:
    model, _ = scripted_server
    model.reset()
    return model


def last_tool_output(request: dict[str, Any], call_id: str) -> str:
    """What the model was told for `call_id`: the function_call_output right after that call in its input."""
    items = request["input"]
    index = next(
        i for i, item in enumerate(items) if item.get("type") == "function_call" and item.get("call_id") == call_id
    )
    following = items[index + 1]
    assert following["type"] == "function_call_output" and following["call_id"] == call_id
    return following["output"]


PARIS = weather_row("What's the weather in Paris?", ["Paris"])


@pytest.mark.parametrize(
    ("bad_call", "told"),
    [
        (
            call("get_weather", "{not json", "c1"),
            ["Error: the arguments of get_weather are not valid JSON", "Call get_weather again with a JSON object"],
        ),
        (
            call("get_stock_price", json.dumps({"symbol": "NVDA"}), "c1"),
            ["Error: unknown tool 'get_stock_price'. Available tools: get_weather."],
        ),
        (
            call("get_weather", json.dumps(["Paris"]), "c1"),
            ["Error: the arguments of get_weather must be a JSON object, got list."],
        ),
        (
            call("get_weather", json.dumps({"city": ""}), "c1"),
            ["Error: Invalid arguments for get_weather: city: String should have at least 1 character"],
        ),
        (
            call("get_weather", json.dumps({"town": "Paris"}), "c1"),
            ["Error: Invalid arguments for get_weather: city: Field required"],
        ),
    ],
)
def test_a_bad_tool_call_is_answered_with_an_error_the_model_reads(
    scripted_cluster: Cluster, scripted: ScriptedModel, bad_call: dict[str, Any], told: list[str]
) -> None:
    scripted.reset([bad_call], [answer("Sorry, I could not check the weather in Paris.")])
    result = scripted_cluster.run(PARIS)
    assert len(scripted.requests) == 2
    error_text = last_tool_output(scripted.requests[1], "c1")
    for fragment in told:
        assert fragment in error_text
    # The rollout completes and is scored: answered and named Paris, but never looked it up.
    assert result["reward"] == pytest.approx(0.2 + 0.2)
    assert result["called_cities"] == []
    assert result["response"]["output"][-1]["type"] == "message"
    assert result["response"]["nemo_gym"]["stop_reason"] == "answered"


def test_the_model_recovers_after_errors(scripted_cluster: Cluster, scripted: ScriptedModel) -> None:
    scripted.reset(
        [call("get_weather", "{not json", "c1")],
        [call("get_stock_price", '{"symbol": "NVDA"}', "c2")],
        [call("get_weather", '{"city": "Paris"}', "c3")],
        [answer("Paris looks fine today.")],
    )
    result = scripted_cluster.run(PARIS)
    requests = scripted.requests
    assert len(requests) == 4
    assert "not valid JSON" in last_tool_output(requests[1], "c1")
    assert "unknown tool 'get_stock_price'" in last_tool_output(requests[2], "c2")
    assert json.loads(last_tool_output(requests[3], "c3"))["city"] == "Paris"
    # Each request carries the row's input, then the whole trajectory so far, and the row's tools.
    row_input = PARIS["responses_create_params"]["input"]
    for k, request in enumerate(requests):
        assert request["input"][: len(row_input)] == row_input
        assert len(request["input"]) == len(row_input) + 2 * k
        assert [t["name"] for t in request["tools"]] == ["get_weather"]
    assert result["reward"] == 1.0
    output = result["response"]["output"]
    assert [item["type"] for item in output] == ["function_call", "function_call_output"] * 3 + ["message"]
    assert result["response"]["nemo_gym"]["steps"] == 4


def test_parallel_calls_each_get_their_output(scripted_cluster: Cluster, scripted: ScriptedModel) -> None:
    row = weather_row("Weather in Oslo and Lima?", ["Oslo", "Lima"])
    scripted.reset(
        [call("get_weather", '{"city": "Oslo"}', "a"), call("get_weather", '{"city": "Lima"}', "b")],
        [answer("Oslo and Lima: see above.")],
    )
    result = scripted_cluster.run(row)
    second_input = scripted.requests[1]["input"]
    assert [(i["type"], i["call_id"]) for i in second_input[-4:]] == [
        ("function_call", "a"),
        ("function_call", "b"),
        ("function_call_output", "a"),
        ("function_call_output", "b"),
    ]
    outputs = {
        i["call_id"]: json.loads(i["output"])["city"] for i in second_input if i.get("type") == "function_call_output"
    }
    assert outputs == {"a": "Oslo", "b": "Lima"}
    assert result["reward"] == 1.0


def test_max_steps_bounds_the_model_calls(scripted_cluster: Cluster, scripted: ScriptedModel) -> None:
    scripted.reset([call("get_weather", '{"city": "Paris"}', "again")])  # never answers
    result = scripted_cluster.run(PARIS, agent=SHORT_AGENT)
    assert len(scripted.requests) == SHORT_MAX_STEPS
    response = result["response"]
    assert response["nemo_gym"]["steps"] == SHORT_MAX_STEPS
    assert response["nemo_gym"]["stop_reason"] == "max_steps"
    assert response["output"][-1]["type"] == "function_call_output"
    assert len(response["output"]) == 2 * SHORT_MAX_STEPS
    # Still scored: looked up but never answered.
    assert result["answered"] is False
    assert result["reward"] == pytest.approx(0.6)
    assert response["usage"]["calls"] == SHORT_MAX_STEPS


def test_usage_is_summed_over_model_calls(scripted_cluster: Cluster, scripted: ScriptedModel) -> None:
    scripted.reset(
        [call("get_weather", '{"city": "Paris"}', "c1")],
        [call("get_weather", '{"city": "Paris"}', "c2")],
        [answer("Paris is fine.")],
    )
    usage = scripted_cluster.run(PARIS)["response"]["usage"]
    calls = (1, 2, 3)
    assert usage["calls"] == 3
    assert usage["input_tokens"] == sum(100 * k for k in calls)
    assert usage["output_tokens"] == sum(10 * k for k in calls)
    assert usage["total_tokens"] == sum(110 * k for k in calls)
    assert usage["input_tokens_details"] == {"cached_tokens": sum(calls)}
    assert usage["output_tokens_details"] == {"reasoning_tokens": sum(2 * k for k in calls)}
    assert usage["cost"] == pytest.approx(0.006)


def test_the_final_response_keeps_the_last_call_metadata(scripted_cluster: Cluster, scripted: ScriptedModel) -> None:
    scripted.reset([answer("Paris is fine.")])
    response = scripted_cluster.run(PARIS)["response"]
    assert response["id"] == "resp_1"
    assert response["model"] == "scripted/model"
    assert response["nemo_gym"]["models"] == ["scripted/model"]
    assert response["nemo_gym"]["upstream_api"] == "responses"
    assert response["nemo_gym"]["agent_latency_s"] >= 0


def test_an_incomplete_response_stops_the_loop(scripted_cluster: Cluster, scripted: ScriptedModel) -> None:
    scripted.reset([answer("Paris is")], status="incomplete")
    result = scripted_cluster.run(PARIS)
    assert len(scripted.requests) == 1
    assert result["response"]["nemo_gym"]["stop_reason"] == "incomplete"
    assert result["response"]["status"] == "incomplete"


def test_a_failed_turn_stops_the_loop_without_running_its_tool_calls(
    scripted_cluster: Cluster, scripted: ScriptedModel
) -> None:
    scripted.reset([call("get_weather", json.dumps({"city": "Paris"}), "c1")], status="failed")
    result = scripted_cluster.run(PARIS)
    assert len(scripted.requests) == 1
    assert result["response"]["nemo_gym"]["stop_reason"] == "failed"
    assert result["called_cities"] == [] and result["reward"] == 0.0


def test_a_model_error_fails_the_rollout_with_its_message(scripted_cluster: Cluster, scripted: ScriptedModel) -> None:
    scripted.reset(fail_with=400)
    response = scripted_cluster.post(AGENT, "/run", PARIS)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "downstream_error"
    assert "policy_model" in error["message"] and "scripted failure" in error["message"]
    assert len(scripted.requests) == 1
    # The failed rollout's session is closed, not left to expire.
    assert scripted_cluster.servers["simple_weather"].sessions == {}  # type: ignore[attr-defined]


def test_the_agent_carries_one_session_through_the_rollout(
    scripted_cluster: Cluster, scripted: ScriptedModel, monkeypatch: pytest.MonkeyPatch
) -> None:
    resources = scripted_cluster.servers["simple_weather"]
    seen: list[tuple[str, list[dict[str, Any]], dict[str, Any]]] = []
    original = resources.verify  # type: ignore[attr-defined]

    async def spy(session: Any, request: Any) -> Any:
        seen.append((session.id, list(session.tool_calls), dict(session.row)))
        return await original(session, request)

    monkeypatch.setattr(resources, "verify", spy)
    scripted.reset(
        [call("get_weather", '{"city": "Oslo"}', "c1")],
        [call("get_weather", '{"city": 5}', "c2")],
        [answer("Oslo and Paris are fine.")],
    )
    result = scripted_cluster.run(PARIS)
    [(session_id, tool_calls, row)] = seen
    assert session_id  # a seeded session, not the header-less fallback
    assert row == PARIS
    assert [c["arguments"] for c in tool_calls] == [{"city": "Oslo"}]  # the invalid call never ran
    # Scored from what ran in the session: Oslo, not the Paris the answer claims.
    assert result["called_cities"] == ["Oslo"]
    assert result["unexpected_cities"] == ["Oslo"]
    assert result["missing_cities"] == ["Paris"]
    assert result["reward"] == pytest.approx(0.4)
    assert resources.sessions == {}  # type: ignore[attr-defined]
