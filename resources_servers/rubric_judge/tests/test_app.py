import json
from pathlib import Path
from typing import Any
from unittest.mock import AsyncMock, MagicMock

import aiohttp
import pytest
import yaml
from app import (
    RubricJudgeResourcesServer,
    RubricJudgeResourcesServerConfig,
    RubricJudgeVerifyRequest,
)
from fastapi.testclient import TestClient
from pydantic import ValidationError

from nemo_gym.config_types import ModelServerRef
from nemo_gym.judge import JudgeError
from nemo_gym.openai_utils import (
    NeMoGymResponse,
    NeMoGymResponseCreateParamsNonStreaming,
    NeMoGymResponseOutputMessage,
    NeMoGymResponseOutputText,
)
from nemo_gym.server_utils import ServerClient

FOLDER = Path(__file__).resolve().parents[1]
RUBRIC = [
    {"id": "c1", "criterion": "Says ice weighs less per unit volume than water.", "weight": 2},
    {"id": "c2", "criterion": "Mentions hydrogen bonds.", "weight": 1},
    {"id": "c3", "criterion": "Two sentences at most.", "weight": 1},
]
ANSWER = "Ice is less dense than water because hydrogen bonds keep its molecules apart. So it floats."


def _config(**judge_params: Any) -> RubricJudgeResourcesServerConfig:
    return RubricJudgeResourcesServerConfig(
        host="0.0.0.0",
        port=8080,
        entrypoint="",
        name="",
        judge_model_server=ModelServerRef(type="responses_api_models", name="judge_model"),
        judge_responses_create_params=NeMoGymResponseCreateParamsNonStreaming(input=[], **judge_params),
    )


def _response(text: str, model: str = "judge") -> NeMoGymResponse:
    return NeMoGymResponse(
        id="resp_rj",
        created_at=0.0,
        model=model,
        object="response",
        output=[
            NeMoGymResponseOutputMessage(
                id="msg_1",
                type="message",
                role="assistant",
                status="completed",
                content=[NeMoGymResponseOutputText(type="output_text", text=text, annotations=[])],
            )
        ]
        if text
        else [],
        parallel_tool_calls=False,
        tool_choice="none",
        tools=[],
    )


def _judge_mock(*judge_texts: str) -> MagicMock:
    """A server client whose posts answer the judge's texts in turn, as NeMo Gym's judge tests mock it."""
    server_mock = MagicMock(spec=ServerClient)
    post_mock = MagicMock()
    post_mock.ok = True
    post_mock.read = AsyncMock(side_effect=[_response(text).model_dump_json() for text in judge_texts])
    server_mock.post = AsyncMock(return_value=post_mock)
    return server_mock


def _server(server_client: MagicMock, **judge_params: Any) -> RubricJudgeResourcesServer:
    return RubricJudgeResourcesServer(config=_config(**judge_params), server_client=server_client)


def _request(answer: str = ANSWER, rubric: list[dict[str, Any]] = RUBRIC) -> RubricJudgeVerifyRequest:
    return RubricJudgeVerifyRequest(
        responses_create_params=NeMoGymResponseCreateParamsNonStreaming(
            input=[{"role": "user", "content": "Explain in two sentences why ice floats."}]
        ),
        response=_response(answer, model="policy"),
        task_id="rj-07",
        question="Explain in two sentences why ice floats.",
        reference_answer="Frozen water takes more room than liquid water, so it is lighter per unit volume.",
        rubric=rubric,
    )


def _judge_messages(server_mock: MagicMock) -> list[dict[str, Any]]:
    sent = server_mock.post.call_args.kwargs["json"]
    return sent.model_dump(mode="json")["input"]


class TestVerify:
    def test_sanity(self) -> None:
        _server(MagicMock(spec=ServerClient))

    async def test_all_criteria_met_scores_1(self) -> None:
        server_mock = _judge_mock('{"criteria": {"c1": true, "c2": true, "c3": true}}')
        result = await _server(server_mock).verify(_request())
        assert result.reward == 1.0
        assert result.criteria_met == ["c1", "c2", "c3"]
        assert result.criteria_missed == []
        assert result.task_id == "rj-07"  # the row is echoed
        server_mock.post.assert_awaited_once()

    async def test_partial_credit_is_the_weight_met_over_the_total_weight(self) -> None:
        server_mock = _judge_mock('Mostly fine.\n```json\n{"criteria": {"c1": false, "c2": true, "c3": true}}\n```')
        result = await _server(server_mock).verify(_request())
        assert result.reward == pytest.approx(2 / 4)  # c1 (weight 2) missed; c2 and c3 (1 each) met
        assert result.criteria_met == ["c2", "c3"]
        assert result.criteria_missed == ["c1"]

    async def test_only_the_heavy_criterion_met(self) -> None:
        server_mock = _judge_mock('{"criteria": {"c1": true, "c2": false, "c3": false}}')
        result = await _server(server_mock).verify(_request())
        assert result.reward == pytest.approx(0.5)
        assert result.criteria_missed == ["c2", "c3"]

    async def test_ids_the_rubric_does_not_have_are_ignored(self) -> None:
        server_mock = _judge_mock('{"criteria": {"c1": true, "c2": true, "c3": false, "overall": false}}')
        result = await _server(server_mock).verify(_request())
        assert result.reward == pytest.approx(3 / 4)
        assert result.criteria_missed == ["c3"]

    async def test_the_judge_request_and_response_are_recorded(self) -> None:
        verdict = '{"criteria": {"c1": true, "c2": false, "c3": true}}'
        server_mock = _judge_mock(verdict)
        result = await _server(server_mock).verify(_request())
        [evaluation] = result.judge_evaluations
        assert evaluation.response.output_text == verdict
        assert evaluation.responses_create_params.input == server_mock.post.call_args.kwargs["json"].input
        assert "judge_evaluations" in result.model_dump()

    async def test_a_garbage_verdict_is_a_judge_error_quoting_the_judge(self) -> None:
        server_mock = _judge_mock("I would give this answer a solid B+.")
        with pytest.raises(JudgeError) as caught:
            await _server(server_mock).verify(_request())
        message = str(caught.value)
        assert "rj-07" in message
        assert "no JSON object" in message
        assert '"I would give this answer a solid B+."' in message
        assert '{"criteria": {"c1": true|false, "c2": true|false, "c3": true|false}}' in message

    async def test_a_long_garbage_verdict_is_quoted_cut_to_300_characters(self) -> None:
        server_mock = _judge_mock("blah " * 200)
        with pytest.raises(JudgeError) as caught:
            await _server(server_mock).verify(_request())
        message = str(caught.value)
        assert ("blah " * 60)[:300] + '..."' in message
        assert "blah " * 61 not in message

    @pytest.mark.parametrize(
        "verdict, problem",
        [
            ('{"criteria": {"c1": true, "c3": true}}', "criteria ['c2'] missing"),
            ('{"criteria": {"c1": "yes", "c2": 1, "c3": true}}', "criteria ['c1', 'c2'] not true/false"),
            ('{"criteria": ["c1", "c2"]}', "'criteria' is list"),
            ('{"verdict": {"c1": true, "c2": true, "c3": true}}', "no JSON object with a 'criteria' key"),
        ],
    )
    async def test_a_verdict_that_does_not_cover_the_rubric_with_booleans_is_a_judge_error(
        self, verdict: str, problem: str
    ) -> None:
        with pytest.raises(JudgeError) as caught:
            await _server(_judge_mock(verdict)).verify(_request())
        assert problem in str(caught.value)
        assert json.dumps(verdict) in str(caught.value)  # the judge's text, quoted

    async def test_a_judge_http_error_is_a_judge_error(self) -> None:
        server_mock = MagicMock(spec=ServerClient)
        post_mock = MagicMock()
        post_mock.ok = False
        post_mock.read = AsyncMock(return_value=b'{"error": {"message": "upstream down"}}')
        post_mock.raise_for_status = MagicMock(
            side_effect=aiohttp.ClientResponseError(
                request_info=MagicMock(), history=(), status=502, message="Bad Gateway"
            )
        )
        server_mock.post = AsyncMock(return_value=post_mock)
        with pytest.raises(JudgeError, match="ClientResponseError.*502.*Bad Gateway.*upstream down"):
            await _server(server_mock).verify(_request())

    async def test_an_unreachable_judge_is_a_judge_error(self) -> None:
        server_mock = MagicMock(spec=ServerClient)
        server_mock.post = AsyncMock(side_effect=aiohttp.ClientConnectionError("connection refused"))
        with pytest.raises(JudgeError, match="ClientConnectionError: connection refused"):
            await _server(server_mock).verify(_request())

    async def test_an_empty_answer_scores_0_without_asking_the_judge(self) -> None:
        server_mock = _judge_mock()
        result = await _server(server_mock).verify(_request(answer=""))
        assert result.reward == 0.0
        assert result.criteria_missed == ["c1", "c2", "c3"]
        assert result.judge_evaluations == []
        server_mock.post.assert_not_awaited()

    def test_verify_over_http(self) -> None:
        server_mock = _judge_mock('{"criteria": {"c1": true, "c2": true, "c3": false}}')
        client = TestClient(_server(server_mock).setup_webserver())
        answer = client.post("/verify", json=_request().model_dump(mode="json"))
        assert answer.status_code == 200
        assert answer.json()["reward"] == pytest.approx(0.75)
        assert answer.json()["criteria_missed"] == ["c3"]


class TestJudgeRequest:
    async def test_the_prompt_holds_the_task_id_the_rubric_and_the_candidate_answer(self) -> None:
        server_mock = _judge_mock('{"criteria": {"c1": true, "c2": true, "c3": true}}')
        await _server(server_mock).verify(_request())
        system, user = _judge_messages(server_mock)
        assert system["role"] == "system" and "rubric" in system["content"]
        assert user["role"] == "user"
        text = user["content"]
        assert "Task id: rj-07\n" in text
        assert "Explain in two sentences why ice floats." in text
        assert "Frozen water takes more room than liquid water" in text
        assert "- c1 (2): Says ice weighs less per unit volume than water." in text
        assert "- c3 (1): Two sentences at most." in text
        assert ANSWER in text
        assert '{"criteria": {"c1": true or false, "c2": true or false, "c3": true or false}}' in text

    async def test_the_request_carries_judge_responses_create_params(self) -> None:
        server_mock = _judge_mock('{"criteria": {"c1": true, "c2": true, "c3": true}}')
        server = _server(server_mock, max_output_tokens=256, temperature=0.0)
        await server.verify(_request())
        call = server_mock.post.call_args.kwargs
        assert call["server_name"] == "judge_model"
        assert call["url_path"] == "/v1/responses"
        sent = call["json"]
        assert isinstance(sent, NeMoGymResponseCreateParamsNonStreaming)
        assert sent.max_output_tokens == 256 and sent.temperature == 0.0
        assert len(sent.input) == 2
        assert server.config.judge_responses_create_params.input == []  # the configured params are not changed

    def test_a_rubric_with_a_repeated_id_is_refused(self) -> None:
        rubric = [{"id": "c1", "criterion": "a", "weight": 1}, {"id": "c1", "criterion": "b", "weight": 1}]
        with pytest.raises(ValidationError, match=r"\['c1'\] appear more than once"):
            _request(rubric=rubric)

    def test_weights_must_be_positive_and_the_rubric_not_empty(self) -> None:
        with pytest.raises(ValidationError, match="weight"):
            _request(rubric=[{"id": "c1", "criterion": "a", "weight": 0}])
        with pytest.raises(ValidationError, match="rubric"):
            _request(rubric=[])


class TestFolder:
    def test_the_config_block_builds_the_server_config(self) -> None:
        config = yaml.safe_load((FOLDER / "configs" / "rubric_judge.yaml").read_text())
        block = config["rubric_judge"]["resources_servers"]["rubric_judge"]
        parsed = RubricJudgeResourcesServerConfig(host="127.0.0.1", port=8080, name="rubric_judge", **block)
        assert parsed.judge_model_server.name == "judge_model"
        assert parsed.judge_responses_create_params.max_output_tokens == 256
        assert (FOLDER.parents[1] / parsed.judge_prompt_config).is_file()

    async def test_every_example_row_verifies_with_a_full_verdict(self) -> None:
        rows = [json.loads(line) for line in (FOLDER / "data" / "example.jsonl").read_text().splitlines()]
        assert [row["task_id"] for row in rows] == ["rj-01", "rj-02", "rj-03", "rj-04", "rj-05"]
        for row in rows:
            ids = [criterion["id"] for criterion in row["rubric"]]
            server_mock = _judge_mock(json.dumps({"criteria": {criterion_id: True for criterion_id in ids}}))
            request = RubricJudgeVerifyRequest.model_validate({**row, "response": _response("An answer.")})
            assert (await _server(server_mock).verify(request)).reward == 1.0
            assert f"Task id: {row['task_id']}\n" in _judge_messages(server_mock)[1]["content"]
