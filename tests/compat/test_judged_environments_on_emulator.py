"""mental_math and rubric_judge, two NeMo Gym-style environments, run end to end on the offline OpenRouter emulator.

mental_math is collected with repeats and its pass@k metrics come from its own `/aggregate_metrics`; rubric_judge's
verifier asks an LLM judge, which the emulator plays too (a `judge_model` instance with the environment's scripted
verdicts), so each record carries the judge's tokens and cost, and a judge that answers garbage fails its rollout
instead of scoring it 0.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest

from nemo_gym.config.paths import project_root
from nemo_gym.emulator.scripted_replies import first_reply, load_scripted_replies
from nemo_gym.openai_utils import NeMoGymResponse
from nemo_gym.server_utils import ServerClient
from nemo_gym.testing.cluster import assistant_message, environment_blocks, serve_resources_server
from nemo_gym.testing.emulated import (
    JUDGE_MODEL,
    collect_environment_on_emulator,
    judge_replies_of,
    references_instance,
)
from resources_servers.mental_math.app import canonical, parse_number
from resources_servers.rubric_judge.app import (
    RubricJudgeResourcesServer,
    RubricJudgeResourcesServerConfig,
    RubricJudgeVerifyRequest,
)

MENTAL_MATH = project_root() / "resources_servers" / "mental_math"
RUBRIC_JUDGE = project_root() / "resources_servers" / "rubric_judge"
MORE_PROBLEMS = MENTAL_MATH / "data" / "mental_math_more.jsonl"
RUBRIC_EXAMPLES = RUBRIC_JUDGE / "data" / "example.jsonl"
POLICY = "openai/gpt-4o-mini"
JUDGE = "anthropic/claude-3.5-sonnet"

# The scripted verdicts' fallback (the answer lacks the task's key phrase): the weight of the criteria met / total.
FALLBACK_REWARDS = {"rj-01": 2 / 4, "rj-02": 3 / 4, "rj-03": 1 / 4, "rj-04": 1 / 4, "rj-05": 3 / 4}
# Answers a good student might give, each with the phrase its task's full-marks verdict keys on.
GOOD_ANSWERS = {
    "rj-01": "Ice is less dense than liquid water because hydrogen bonds lock the molecules in an open lattice.",
    "rj-02": "Rayleigh scattering by air molecules redirects short blue wavelengths far more than red ones.",
    "rj-03": "Both are at room temperature, but metal's high thermal conductivity pulls heat from the skin faster.",
    "rj-04": "Dissolved salt causes freezing-point depression, so the brine stays liquid below 0 °C.",
    "rj-05": "The Moon is tidally locked: it spins once per orbit, so one face always points at Earth.",
}
OFF_TOPIC = "Paris is the capital of France."


def rows_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def by_task(records: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    grouped: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in records:
        grouped[record["input"]["task_id"]].append(record)  # a failed rollout echoes no verifier fields
    return grouped


# ------------------------------------------------------------------------------------------------ mental_math


@pytest.fixture(scope="module")
def mental_math_records(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The 20 extra problems, 4 repeats each, answered by a model that is right 85% of the time."""
    output = tmp_path_factory.mktemp("mental_math") / "rollouts.jsonl"
    return collect_environment_on_emulator(
        "mental_math", "meta-llama/llama-3.1-8b-instruct", MORE_PROBLEMS, output, num_repeats=4
    )


def test_mental_math_collects_every_repeat_without_errors(mental_math_records: list[dict[str, Any]]) -> None:
    rows = rows_of(MORE_PROBLEMS)
    assert len(mental_math_records) == len(rows) * 4
    assert [r["error"] for r in mental_math_records] == [None] * len(mental_math_records)
    repeats: dict[int, set[int]] = defaultdict(set)
    for record in mental_math_records:
        repeats[record["row_index"]].add(record["repeat_index"])
        assert record["reward"] in (0.0, 1.0)
        assert record["extracted_answer"] is not None  # the emulator always boxes an answer
        expected = parse_number(record["expected_answer"])
        assert expected is not None
        assert record["reward"] == float(record["extracted_answer"] == canonical(expected))
    assert repeats == {index: {0, 1, 2, 3} for index in range(len(rows))}
    rewards = [record["reward"] for record in mental_math_records]
    assert 0.0 < sum(rewards) / len(rewards) < 1.0  # the 85% model misses some problems


def test_mental_math_pass_at_k_over_the_emulators_repeats(mental_math_records: list[dict[str, Any]]) -> None:
    verify_responses = [
        {
            "_ng_task_index": record["row_index"],
            "_ng_rollout_index": record["repeat_index"],
            "reward": record["reward"],
            "extracted_answer": record["extracted_answer"],
            "difficulty": record["difficulty"],
        }
        for record in mental_math_records
    ]
    for client in serve_resources_server("mental_math", domain="math"):
        answer = client.post("/aggregate_metrics", json={"verify_responses": verify_responses})
    assert answer.status_code == 200
    key_metrics = answer.json()["key_metrics"]
    mean_reward = sum(r["reward"] for r in mental_math_records) / len(mental_math_records)
    # The emulator answers every repeat of a question the same way, so every repeat-based metric is the mean.
    assert key_metrics == pytest.approx(
        {
            "mean/reward": mean_reward,
            "pass@1[avg-of-4]/accuracy": 100 * mean_reward,
            "pass@1[avg-of-4]/no_answer": 0.0,
            "pass@4/accuracy": 100 * mean_reward,
            "majority@4/accuracy": 100 * mean_reward,
        }
    )
    agent_metrics = answer.json()["agent_metrics"]
    for difficulty in ("easy", "medium", "hard"):
        assert f"{difficulty}/pass@4/accuracy" in agent_metrics


# ------------------------------------------------------------------------------------------------ rubric_judge


def test_rubric_judge_names_the_judge_model_instance_and_has_scripted_verdicts() -> None:
    assert references_instance(environment_blocks("rubric_judge"), "judge_model")
    assert not references_instance(environment_blocks("mental_math"), "judge_model")
    assert judge_replies_of("rubric_judge") == RUBRIC_JUDGE / "data" / "judge_replies.jsonl"
    assert judge_replies_of("mental_math") is None


@pytest.mark.parametrize("row", rows_of(RUBRIC_EXAMPLES), ids=lambda row: row["task_id"])
async def test_the_scripted_verdict_depends_on_the_answer(row: dict[str, Any]) -> None:
    """The judge prompt the environment builds gets full marks only for an answer with the task's key phrase (so
    the phrase is not already in the question, reference or rubric), and the partial fallback otherwise."""
    rules = load_scripted_replies([RUBRIC_JUDGE / "data" / "judge_replies.jsonl"], catalog=[JUDGE_MODEL])
    ids = [criterion["id"] for criterion in row["rubric"]]
    weights = {criterion["id"]: criterion["weight"] for criterion in row["rubric"]}
    server = RubricJudgeResourcesServer(
        config=RubricJudgeResourcesServerConfig(
            host="127.0.0.1",
            port=8080,
            entrypoint="",
            name="rubric_judge",
            judge_model_server={"type": "responses_api_models", "name": "judge_model"},
            judge_responses_create_params={"input": []},
        ),
        server_client=MagicMock(spec=ServerClient),
    )
    for answer, full_marks in ((GOOD_ANSWERS[row["task_id"]], True), (OFF_TOPIC, False)):
        response = NeMoGymResponse.model_validate(
            {
                "id": "resp",
                "created_at": 0,
                "model": POLICY,
                "object": "response",
                "output": [assistant_message(answer)],
                "parallel_tool_calls": False,
                "tool_choice": "none",
                "tools": [],
            }
        )
        request = RubricJudgeVerifyRequest.model_validate({**row, "response": response})
        messages = server.judge_request(request, answer).model_dump(mode="json")["input"]
        reply = first_reply(rules, {"messages": messages}, JUDGE_MODEL)
        assert reply is not None
        verdict = json.loads(reply[reply.index("{") : reply.rindex("}") + 1])["criteria"]
        assert sorted(verdict) == ids
        score = sum(weights[c] for c, met in verdict.items() if met) / sum(weights.values())
        assert score == (1.0 if full_marks else FALLBACK_REWARDS[row["task_id"]]), answer


@pytest.fixture(scope="module")
def rubric_judge_records(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The examples with Claude 3.5 Sonnet as the judge; the policy gives a good answer to rj-03 (a scripted reply)
    and the emulator's default text to the others."""
    folder = tmp_path_factory.mktemp("rubric_judge")
    rj_03 = next(row for row in rows_of(RUBRIC_EXAMPLES) if row["task_id"] == "rj-03")
    policy_replies = folder / "policy_replies.jsonl"
    rule = {"when_all": [rj_03["question"]], "reply": GOOD_ANSWERS["rj-03"], "models": [POLICY]}
    policy_replies.write_text(json.dumps(rule) + "\n")
    return collect_environment_on_emulator(
        "rubric_judge",
        POLICY,
        RUBRIC_EXAMPLES,
        folder / "rollouts.jsonl",
        judge_model=JUDGE,
        policy_replies=[policy_replies],
    )


def test_rubric_judge_records_carry_the_judges_cost(rubric_judge_records: list[dict[str, Any]]) -> None:
    assert len(rubric_judge_records) == 5
    for record in rubric_judge_records:
        assert record["error"] is None
        assert record["judge_usage"]["calls"] == 1
        assert record["judge_usage"]["input_tokens"] > 0
        assert record["judge_cost_usd"] > 0
        assert set(record["cost_by_model"]) == {POLICY, JUDGE}
        assert record["cost_by_model"][JUDGE] == pytest.approx(record["judge_cost_usd"])
        assert record["cost_usd"] == pytest.approx(record["usage"]["cost"] + record["judge_cost_usd"])
        [evaluation] = record["judge_evaluations"]
        assert (
            f"Task id: {record['input']['task_id']}\n" in evaluation["responses_create_params"]["input"][1]["content"]
        )
        assert evaluation["responses_create_params"]["max_output_tokens"] == 256


def test_rubric_judge_rewards_vary_with_the_answer(rubric_judge_records: list[dict[str, Any]]) -> None:
    rewards = {task: records[0]["reward"] for task, records in by_task(rubric_judge_records).items()}
    assert rewards == pytest.approx({**FALLBACK_REWARDS, "rj-03": 1.0})
    rj_03 = by_task(rubric_judge_records)["rj-03"][0]
    assert rj_03["criteria_met"] == ["c1", "c2", "c3"] and rj_03["criteria_missed"] == []
    rj_04 = by_task(rubric_judge_records)["rj-04"][0]
    assert rj_04["criteria_met"] == ["c3"] and rj_04["criteria_missed"] == ["c1", "c2"]


def test_a_garbage_verdict_fails_its_rollout_with_the_judges_text(tmp_path: Path) -> None:
    garbage = "Grade: B+ (solid effort)"
    replies = tmp_path / "judge_replies.jsonl"
    rules = [{"when_all": ["Task id: rj-02"], "reply": garbage}]
    replies.write_text(
        "".join(json.dumps(rule) + "\n" for rule in rules) + (RUBRIC_JUDGE / "data" / "judge_replies.jsonl").read_text()
    )
    records = by_task(
        collect_environment_on_emulator(
            "rubric_judge", POLICY, RUBRIC_EXAMPLES, tmp_path / "rollouts.jsonl", judge_replies=replies
        )
    )
    [failed] = records.pop("rj-02")
    assert failed["reward"] is None
    assert "judge" in failed["error"] and garbage in failed["error"]
    assert failed["judge_usage"]["calls"] == 1  # the judge answered, and was paid, before its answer was refused
    assert {task: r[0]["reward"] for task, r in records.items()} == pytest.approx(
        {task: reward for task, reward in FALLBACK_REWARDS.items() if task != "rj-02"}
    )
    assert all(r[0]["error"] is None for r in records.values())


def test_judge_replies_are_refused_for_an_environment_without_a_judge(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="does not name the 'judge_model' instance"):
        collect_environment_on_emulator(
            "mental_math", POLICY, MORE_PROBLEMS, tmp_path / "out.jsonl", judge_replies=tmp_path / "r.jsonl"
        )
