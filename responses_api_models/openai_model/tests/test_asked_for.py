"""What a request asks for is what it gets, or a 400 that says what to change: the model it names must be one this
server serves, parameters that need stored state are refused, and `GET /v1/models` lists the served models in the
shape OpenAI's SDK validates. Over real HTTP on loopback, through the real `openai` client, against a StubUpstream.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import openai
import pytest
from openai.types import Model
from openai.types.chat import ChatCompletionMessageParam

from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.cluster import openai_model_block, serve_config
from nemo_gym.testing.stub_upstream import StubUpstream

API_KEY = "sk-test-key-for-the-stub-0003"
PRIMARY = "test-org/primary-model"
FALLBACK = "test-org/fallback-model"
ENDPOINT_MODEL = "other-org/endpoint-model"
ENDPOINT_FALLBACK = "other-org/endpoint-fallback"
SERVED = [PRIMARY, FALLBACK, ENDPOINT_MODEL, ENDPOINT_FALLBACK]
OTHER = "someone/not-served-here"
MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Hello"}]


@dataclass
class Servers:
    stub: StubUpstream
    urls: dict[str, str]

    def client(self, instance: str) -> openai.OpenAI:
        return openai.OpenAI(
            base_url=self.urls[instance] + "/v1",
            api_key="unused-by-the-model-server",
            max_retries=0,
            http_client=httpx.Client(trust_env=False, timeout=30),
        )

    def mark(self) -> int:
        return len(self.stub.requests)

    def upstream_models_since(self, mark: int) -> list[Any]:
        return [body.get("model") for _, _, body in self.stub.requests[mark:]]


@pytest.fixture(scope="module")
def servers() -> Iterator[Servers]:
    stub = StubUpstream(api_key=API_KEY)
    with serve_in_thread(stub.app()) as stub_url:
        v1 = stub_url + "/v1"
        fallback_endpoint = {"base_url": v1, "api_key": API_KEY, "model": ENDPOINT_MODEL}
        data = {
            "policy_model": openai_model_block(
                v1,
                api_key=API_KEY,
                model=PRIMARY,
                fallback_models=[FALLBACK],
                fallbacks=[{**fallback_endpoint, "fallback_models": [ENDPOINT_FALLBACK]}],
            ),
            "responses_model": openai_model_block(v1, api_key=API_KEY, model=PRIMARY, api="responses"),
        }
        with serve_config(data) as (config, _servers):
            yield Servers(stub=stub, urls={name: spec.url() for name, spec in config.instances.items()})


def _refusal(caught: pytest.ExceptionInfo[openai.BadRequestError]) -> str:
    """The 400's message, after checking it is the model server's `invalid_request`."""
    assert caught.value.status_code == 400
    error = caught.value.response.json()["error"]
    assert error["type"] == "invalid_request"
    message: str = error["message"]
    return message


# =========================================================================== the model a request names


def test_a_model_this_server_does_not_serve_is_refused_before_any_upstream_call(servers: Servers) -> None:
    client, mark = servers.client("policy_model"), servers.mark()

    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(model=OTHER, input="Hello")

    message = _refusal(caught)
    assert f"asks for model '{OTHER}'" in message
    assert f"model server 'policy_model' does not serve: it serves '{PRIMARY}'" in message
    assert all(f"'{model}'" in message for model in SERVED)  # the fallbacks are named too
    assert "start a model server for it" in message
    assert "change `model` in the config of 'policy_model'" in message
    assert "drop `model` from the request" in message and "responses_create_params" in message
    assert servers.upstream_models_since(mark) == []


def test_chat_completions_refuse_a_model_this_server_does_not_serve(servers: Servers) -> None:
    client, mark = servers.client("policy_model"), servers.mark()

    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=OTHER, messages=MESSAGES)

    message = _refusal(caught)
    assert f"asks for model '{OTHER}'" in message
    assert "start a model server for it" in message
    assert f"send `model: {PRIMARY}` (or no `model`)" in message
    assert servers.upstream_models_since(mark) == []


def test_every_listed_model_is_answered_and_routed_from_the_configured_one(servers: Servers) -> None:
    """A request may name any model the server lists (an answer may come from any of them); naming a fallback does
    not skip the configured model, so the chain runs as configured."""
    client = servers.client("policy_model")
    listed = [model.id for model in client.models.list()]
    assert listed == SERVED

    for model in listed:
        mark = servers.mark()
        response = client.responses.create(model=model, input="Hello")
        completion = client.chat.completions.create(model=model, messages=MESSAGES)

        assert response.status == "completed" and completion.choices[0].finish_reason == "stop"
        assert servers.upstream_models_since(mark) == [PRIMARY, PRIMARY]
    mark = servers.mark()
    assert client.responses.create(input="Hello").status == "completed"  # no `model`: the configured one, as before
    assert servers.upstream_models_since(mark) == [PRIMARY]


@pytest.mark.parametrize("model", [42, ["test-org/primary-model"], ""])
def test_a_model_that_is_not_a_served_id_is_refused(servers: Servers, model: Any) -> None:
    mark = servers.mark()

    answer = httpx.post(
        servers.urls["policy_model"] + "/v1/responses", json={"model": model, "input": "Hi"}, trust_env=False
    )

    assert answer.status_code == 400
    assert answer.json()["error"]["type"] == "invalid_request"
    message = answer.json()["error"]["message"]
    assert ("must be a model id (a string)" if model != "" else "asks for model ''") in message
    assert f"serves '{PRIMARY}'" in message and "drop `model`" in message
    assert servers.upstream_models_since(mark) == []


# =========================================================================== state this server does not keep


REFUSED_STATE = [
    # (endpoint, parameter, the value that is refused, a value that asks nothing and is answered, key phrases)
    ("responses", "previous_response_id", "resp_123", None, ["stateless", "whole conversation in `input`"]),
    ("responses", "store", True, False, ["store=true is not supported", "stores nothing", "Drop `store`"]),
    ("responses", "background", True, False, ["background=true is not supported", "nothing to poll"]),
    ("responses", "conversation", "conv_123", None, ["keeps no conversations", "whole conversation in `input`"]),
    ("chat_completions", "store", True, False, ["store=true is not supported", "all of it in `messages`"]),
]


@pytest.mark.parametrize("instance", ["policy_model", "responses_model"])
@pytest.mark.parametrize(
    ("api", "parameter", "refused", "accepted", "phrases"),
    REFUSED_STATE,
    ids=[f"{api}-{parameter}" for api, parameter, *_ in REFUSED_STATE],
)
def test_parameters_that_need_stored_state_are_refused_not_ignored(
    servers: Servers, instance: str, api: str, parameter: str, refused: Any, accepted: Any, phrases: list[str]
) -> None:
    """Refused whatever the upstream API: a Responses upstream would take them, but the next call may go to a fallback
    that has none of its state, and the rollout record would lack the conversation."""
    client, mark = servers.client(instance), servers.mark()

    def call(value: Any) -> Any:
        if api == "responses":
            return client.responses.create(model=PRIMARY, input="Hello", extra_body={parameter: value})
        return client.chat.completions.create(model=PRIMARY, messages=MESSAGES, extra_body={parameter: value})

    with pytest.raises(openai.BadRequestError) as caught:
        call(refused)

    message = _refusal(caught)
    assert parameter in message
    assert all(phrase in message for phrase in phrases), message
    assert servers.upstream_models_since(mark) == []
    call(accepted)  # false / null ask for nothing and are answered as before
    assert servers.upstream_models_since(mark) == [PRIMARY]


# =========================================================================== GET /v1/models


def test_models_are_listed_in_the_shape_the_openai_sdk_validates(servers: Servers) -> None:
    raw = httpx.get(servers.urls["policy_model"] + "/v1/models", trust_env=False).json()

    assert raw["object"] == "list"
    entries = [Model.model_validate(entry, strict=True) for entry in raw["data"]]
    assert [(m.id, m.object, m.owned_by) for m in entries] == [(model, "model", "policy_model") for model in SERVED]
    assert all(type(entry["created"]) is int and entry["created"] > 0 for entry in raw["data"])
    listed = list(servers.client("responses_model").models.list())
    assert [(m.id, type(m.created)) for m in listed] == [(PRIMARY, int)]
