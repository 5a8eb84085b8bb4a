"""NeMo Gym's `judge` module: a judge call that fails in any way is a JudgeError, and a verify served by a
`SimpleResourcesServer` answers a JudgeError as NeMo Gym's base does (reward 0, masked, failure class), which ng_run's
host then records as a failed rollout (see test_hosting.py)."""

from __future__ import annotations

from unittest.mock import AsyncMock, MagicMock

import pytest
from fastapi.testclient import TestClient

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseVerifyRequest,
    BaseVerifyResponse,
    SimpleResourcesServer,
)
from nemo_gym.config_types import ModelServerRef
from nemo_gym.judge import JudgeError, call_judge, reraise_judge_errors
from nemo_gym.openai_utils import NeMoGymResponse, NeMoGymResponseCreateParamsNonStreaming
from nemo_gym.server_utils import ServerClient


def judge_response(text: str) -> NeMoGymResponse:
    return NeMoGymResponse(
        id="judge",
        created_at=0,
        model="judge-model",
        object="response",
        output=[
            {"type": "message", "id": "m", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
        ],
        parallel_tool_calls=True,
        tool_choice="auto",
        tools=[],
    )


def client_answering(text: str) -> MagicMock:
    server_client = MagicMock(spec=ServerClient)
    answer = MagicMock()
    answer.read = AsyncMock(return_value=judge_response(text).model_dump_json())
    server_client.post = AsyncMock(return_value=answer)
    return server_client


def failing_client() -> MagicMock:
    server_client = MagicMock(spec=ServerClient)
    server_client.post = AsyncMock(side_effect=ConnectionError("judge unreachable"))
    return server_client


async def test_call_judge_parses_the_answer_as_the_model_asked_for() -> None:
    verdict = await call_judge(
        client_answering("[[A=B]]"),
        server_name="judge_model",
        url_path="/v1/responses",
        json={"input": "x"},
        response_model=NeMoGymResponse,
    )
    assert verdict.output_text == "[[A=B]]"


async def test_any_failure_of_a_judge_call_is_a_judge_error_naming_it() -> None:
    with pytest.raises(JudgeError, match="ConnectionError: judge unreachable"):
        await call_judge(
            failing_client(), server_name="j", url_path="/v1/responses", json={}, response_model=NeMoGymResponse
        )
    server_client = MagicMock(spec=ServerClient)
    server_client.post = AsyncMock(return_value=MagicMock(read=AsyncMock(return_value=b'{"not": "a response"}')))
    with pytest.raises(JudgeError, match="ValidationError"):
        await call_judge(
            server_client, server_name="j", url_path="/v1/responses", json={}, response_model=NeMoGymResponse
        )


async def test_reraise_judge_errors_keeps_a_judge_error_and_wraps_the_rest() -> None:
    async def fails(exc: Exception) -> None:
        raise exc

    with pytest.raises(JudgeError, match="^first$"):
        await reraise_judge_errors(fails(JudgeError("first")))
    with pytest.raises(JudgeError, match="^KeyError: 'x'$"):
        await reraise_judge_errors(fails(KeyError("x")))


class JudgedConfig(BaseResourcesServerConfig):
    judge_model_server: ModelServerRef = ModelServerRef(name="judge_model")


class JudgedServer(SimpleResourcesServer):
    config: JudgedConfig

    async def verify(self, body: BaseVerifyRequest) -> BaseVerifyResponse:
        verdict = await call_judge(
            self.server_client,
            server_name=self.config.judge_model_server.name,
            url_path="/v1/responses",
            json=NeMoGymResponseCreateParamsNonStreaming(input="grade it"),
            response_model=NeMoGymResponse,
        )
        return BaseVerifyResponse(**body.model_dump(), reward=float("[[A=B]]" in verdict.output_text))


def verify_body() -> dict:
    return {"responses_create_params": {"input": "q"}, "response": judge_response("an answer").model_dump()}


def test_a_verify_whose_judge_fails_answers_as_nemo_gyms_failsafe_does() -> None:
    config = JudgedConfig(host="0.0.0.0", port=8080, entrypoint="", name="")
    client = TestClient(JudgedServer(config=config, server_client=failing_client()).setup_webserver())
    answer = client.post("/verify", json=verify_body())
    assert answer.status_code == 200
    body = answer.json()
    assert body["reward"] == 0.0 and body["mask_sample"] is True and body["_ng_failure_class"] == "judge_failed"
    assert "judge unreachable" in body["failure_reason"] and body["response"]["id"] == "judge"


def test_a_verify_whose_judge_answers_is_scored() -> None:
    config = JudgedConfig(host="0.0.0.0", port=8080, entrypoint="", name="")
    client = TestClient(JudgedServer(config=config, server_client=client_answering("[[A=B]]")).setup_webserver())
    answer = client.post("/verify", json=verify_body())
    assert answer.status_code == 200 and answer.json()["reward"] == 1.0 and answer.json()["failure_kind"] is None
