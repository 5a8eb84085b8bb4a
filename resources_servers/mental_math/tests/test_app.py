import json
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
from app import (
    MentalMathResourcesServer,
    MentalMathResourcesServerConfig,
    MentalMathVerifyRequest,
    canonical,
    extract_final_answer,
    parse_number,
)
from fastapi.testclient import TestClient
from pydantic import ValidationError

from nemo_gym.base_resources_server import AggregateMetricsRequest, ReverifyMode
from nemo_gym.openai_utils import (
    NeMoGymResponse,
    NeMoGymResponseCreateParamsNonStreaming,
    NeMoGymResponseOutputMessage,
    NeMoGymResponseOutputText,
)
from nemo_gym.server_utils import ServerClient

DATA = Path(__file__).resolve().parents[1] / "data"


def _server() -> MentalMathResourcesServer:
    config = MentalMathResourcesServerConfig(host="0.0.0.0", port=8080, entrypoint="", name="")
    return MentalMathResourcesServer(config=config, server_client=MagicMock(spec=ServerClient))


def _response(*texts: str) -> NeMoGymResponse:
    return NeMoGymResponse(
        id="resp_mm",
        created_at=0.0,
        model="test-model",
        object="response",
        output=[
            NeMoGymResponseOutputMessage(
                id=f"msg_{i}",
                type="message",
                role="assistant",
                status="completed",
                content=[NeMoGymResponseOutputText(type="output_text", text=text, annotations=[])],
            )
            for i, text in enumerate(texts)
        ],
        parallel_tool_calls=False,
        tool_choice="none",
        tools=[],
    )


def _request(*texts: str, expected_answer: str = "85", difficulty: str = "easy") -> MentalMathVerifyRequest:
    return MentalMathVerifyRequest(
        responses_create_params=NeMoGymResponseCreateParamsNonStreaming(
            input=[{"role": "user", "content": "48 + 37?"}]
        ),
        response=_response(*texts),
        question="48 + 37?",
        expected_answer=expected_answer,
        difficulty=difficulty,
    )


def _rollout(task: int, rollout: int, reward: float, answer: str | None, difficulty: str) -> dict[str, Any]:
    return {
        "_ng_task_index": task,
        "_ng_rollout_index": rollout,
        "reward": reward,
        "extracted_answer": answer,
        "difficulty": difficulty,
    }


class TestVerify:
    async def test_the_emulators_answer_format_scores_1(self) -> None:
        server = _server()
        result = await server.verify(_request("Let me work it out. The answer is \\boxed{85}."))
        assert result.reward == 1.0
        assert result.extracted_answer == "85"
        assert result.expected_answer == "85"
        assert result.difficulty == "easy"  # dataset fields are echoed

    async def test_a_wrong_number_scores_0_and_keeps_the_answer_for_majority_votes(self) -> None:
        result = await _server().verify(_request("48 + 37 = 86, so \\boxed{86}."))
        assert result.reward == 0.0
        assert result.extracted_answer == "86"

    async def test_the_last_box_counts(self) -> None:
        result = await _server().verify(_request("First guess \\boxed{80}.", "Checking again: \\boxed{85}."))
        assert result.reward == 1.0
        assert result.extracted_answer == "85"

    async def test_without_a_box_the_answer_is_phrase_counts(self) -> None:
        result = await _server().verify(_request("48 and 37 make 85. So the answer is 85 rolls. Easy."))
        assert result.reward == 1.0
        assert result.extracted_answer == "85"

    async def test_equal_numbers_in_other_spellings_score_1(self) -> None:
        server = _server()
        for written, expected in [
            ("\\boxed{\\frac{3}{8}}", "0.375"),
            ("\\boxed{0.375}", "3/8"),
            ("\\boxed{1,000}", "1000"),
            ("\\boxed{\\$66.00}", "66"),
            ("\\boxed{36\\%}", "36"),
            ("\\boxed{72\\text{ km/h}}", "72"),
            ("\\boxed{x = -7}", "-7"),
        ]:
            result = await server.verify(_request(written, expected_answer=expected))
            assert result.reward == 1.0, (written, expected)

    async def test_no_final_answer_is_no_answer(self) -> None:
        result = await _server().verify(_request("I think it is around eighty-something."))
        assert result.reward == 0.0
        assert result.extracted_answer is None

    async def test_an_empty_trajectory_is_no_answer(self) -> None:
        result = await _server().verify(_request())
        assert result.reward == 0.0
        assert result.extracted_answer is None

    async def test_a_hedged_or_non_numeric_answer_scores_0_with_its_text(self) -> None:
        server = _server()
        hedged = await server.verify(_request("\\boxed{85 or 86}"))
        assert hedged.reward == 0.0 and hedged.extracted_answer == "85 or 86"
        words = await server.verify(_request("The answer is eighty-five."))
        assert words.reward == 0.0 and words.extracted_answer == "eighty-five"

    async def test_an_unclosed_box_is_not_an_answer(self) -> None:
        result = await _server().verify(_request("\\boxed{85"))
        assert result.reward == 0.0
        assert result.extracted_answer is None

    def test_a_row_whose_expected_answer_is_not_a_number_is_refused_with_the_fix(self) -> None:
        with pytest.raises(ValidationError, match="expected_answer must be a number .* 'eighty'"):
            _request("\\boxed{80}", expected_answer="eighty")

    def test_a_difficulty_outside_easy_medium_hard_is_refused(self) -> None:
        with pytest.raises(ValidationError, match="difficulty"):
            _request("\\boxed{85}", difficulty="trivial")

    def test_verify_over_http_and_reverify_mode(self) -> None:
        client = TestClient(_server().setup_webserver())
        answer = client.post("/verify", json=_request("\\boxed{85}").model_dump(mode="json"))
        assert answer.status_code == 200
        assert answer.json()["reward"] == 1.0 and answer.json()["extracted_answer"] == "85"
        assert client.get("/reverify_mode").json() == ReverifyMode.STATELESS.value


class TestAnswerParsing:
    def test_extract_final_answer(self) -> None:
        assert extract_final_answer("so \\boxed{\\frac{1}{2}} it is") == "\\frac{1}{2}"
        assert extract_final_answer("The final answer is: 12.") == "12"
        assert extract_final_answer("the answer is 3/4; done") == "3/4"
        assert extract_final_answer("\\boxed{}") is None
        assert extract_final_answer("no answer here") is None

    def test_parse_number_and_canonical_spelling(self) -> None:
        assert canonical(parse_number("1,250.50")) == "1250.5"
        assert canonical(parse_number("6/8")) == "0.75"
        assert canonical(parse_number("2/6")) == "1/3"
        assert canonical(parse_number("−4")) == "-4"
        assert parse_number("3/0") is None
        assert parse_number("12 13") is None


class TestAggregateMetrics:
    async def test_pass_at_k_and_majority_at_k_for_2_tasks_of_4_rollouts(self) -> None:
        # Task 0 (easy): right 3 times out of 4; answers 12, 13, 12, 12.
        # Task 1 (hard): right once; answers 7, none, 8, 7.
        verify_responses = [
            _rollout(0, 0, 1.0, "12", "easy"),
            _rollout(0, 1, 0.0, "13", "easy"),
            _rollout(0, 2, 1.0, "12", "easy"),
            _rollout(0, 3, 1.0, "12", "easy"),
            _rollout(1, 0, 0.0, "7", "hard"),
            _rollout(1, 1, 0.0, None, "hard"),
            _rollout(1, 2, 1.0, "8", "hard"),
            _rollout(1, 3, 0.0, "7", "hard"),
        ]
        result = await _server().aggregate_metrics(AggregateMetricsRequest(verify_responses=verify_responses))
        metrics = result.agent_metrics

        # pass@k = 1 - C(n - c, k) / C(n, k) per task, averaged, in percent.
        assert metrics["pass@1/accuracy"] == pytest.approx(50.0)  # (3/4 + 1/4) / 2
        assert metrics["pass@2/accuracy"] == pytest.approx(75.0)  # (1 + (1 - C(3,2)/C(4,2))) / 2 = (1 + 0.5) / 2
        assert metrics["pass@4/accuracy"] == pytest.approx(100.0)
        # pass@1[avg-of-k]: the mean of the first k rollouts of each task.
        assert metrics["pass@1[avg-of-2]/accuracy"] == pytest.approx(25.0)  # (1/2 + 0) / 2
        assert metrics["pass@1[avg-of-4]/accuracy"] == pytest.approx(50.0)
        assert metrics["pass@1[avg-of-4]/no_answer"] == pytest.approx(12.5)  # (0 + 1/4) / 2
        # majority@k: the most common answer's score; ties averaged; no answer does not vote.
        assert metrics["majority@2/accuracy"] == pytest.approx(25.0)  # task 0: 12 vs 13 tie -> 0.5; task 1: 7 -> 0
        assert metrics["majority@4/accuracy"] == pytest.approx(50.0)  # task 0: 12 -> 1; task 1: 7 -> 0
        # Per difficulty.
        assert metrics["easy/pass@1[avg-of-4]/accuracy"] == pytest.approx(75.0)
        assert metrics["hard/pass@1[avg-of-4]/accuracy"] == pytest.approx(25.0)
        assert metrics["easy/majority@4/accuracy"] == pytest.approx(100.0)
        assert metrics["hard/majority@4/accuracy"] == pytest.approx(0.0)
        assert metrics["hard/pass@4/accuracy"] == pytest.approx(100.0)
        assert "easy/per_sample_aggregate" not in metrics

        assert result.key_metrics == pytest.approx(
            {
                "mean/reward": 0.5,
                "pass@1[avg-of-4]/accuracy": 50.0,
                "pass@1[avg-of-4]/no_answer": 12.5,
                "pass@4/accuracy": 100.0,
                "majority@4/accuracy": 50.0,
            }
        )

    async def test_one_rollout_per_task_gives_k_of_1(self) -> None:
        verify_responses = [_rollout(0, 0, 1.0, "5", "easy"), _rollout(1, 0, 0.0, "9", "medium")]
        result = await _server().aggregate_metrics(AggregateMetricsRequest(verify_responses=verify_responses))
        assert result.key_metrics == pytest.approx(
            {
                "mean/reward": 0.5,
                "pass@1[avg-of-1]/accuracy": 50.0,
                "pass@1[avg-of-1]/no_answer": 0.0,
                "pass@1/accuracy": 50.0,
                "majority@1/accuracy": 50.0,
            }
        )
        assert result.agent_metrics["medium/pass@1/accuracy"] == 0.0

    async def test_no_rollouts_give_no_metrics(self) -> None:
        result = await _server().aggregate_metrics(AggregateMetricsRequest(verify_responses=[]))
        assert result.agent_metrics == {} and result.key_metrics == {}


class TestData:
    async def test_every_row_is_scored_1_for_its_own_expected_answer(self) -> None:
        server = _server()
        rows: list[dict[str, Any]] = []
        for name in ("example.jsonl", "mental_math_more.jsonl"):
            rows += [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]
        assert len(rows) == 25
        assert {row["difficulty"] for row in rows} == {"easy", "medium", "hard"}
        for row in rows:
            request = MentalMathVerifyRequest.model_validate(
                {**row, "response": _response(f"The answer is \\boxed{{{row['expected_answer']}}}.")}
            )
            assert (await server.verify(request)).reward == 1.0, row["id"]
            assert request.question in json.dumps(row["responses_create_params"]["input"])
            assert row["agent_ref"]["name"] == "mental_math_simple_agent"
