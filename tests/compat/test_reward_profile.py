"""NeMo Gym's `nemo_gym.reward_profile`, imported as environments import it: pass@k (unbiased, combinatorial) and
majority@k (ties averaged) from grouped rollouts, per-subset and highest-k selections, and the `/aggregate_metrics`
computation (per-task and overall stats of every numeric verify-response field)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from nemo_gym.reward_profile import (
    AggregateMetrics,
    AggregateMetricsMixin,
    AggregateMetricsRequest,
    add_avg_sample_std_dev,
    compute_aggregate_metrics,
    compute_pass_majority_metrics,
    compute_subset_metrics,
    highest_k_metrics,
)


def rollouts(rewards: list[float], **fields: list[Any]) -> list[dict[str, Any]]:
    """One task's rollouts: `reward` plus any per-rollout fields given as lists."""
    return [
        {"reward": reward, **{name: values[i] for name, values in fields.items()}} for i, reward in enumerate(rewards)
    ]


# --------------------------------------------------------------------------- compute_pass_majority_metrics

# Task A: 3 of 4 right; task B: 1 of 4 right (the second rollout).
TWO_TASKS = [rollouts([1, 1, 0, 1]), rollouts([0, 1, 0, 0])]


def test_pass_at_k_of_binary_scores_is_the_combinatorial_estimate_averaged_over_tasks_in_percent() -> None:
    metrics, _, score_names, max_k = compute_pass_majority_metrics(TWO_TASKS)

    assert (score_names, max_k) == (["accuracy"], 4)
    # pass@k = 1 - C(wrong, k) / C(4, k): A has 1 wrong, B has 3 wrong.
    assert metrics["pass@1/accuracy"] == pytest.approx(100 * (3 / 4 + 1 / 4) / 2)  # 50
    assert metrics["pass@2/accuracy"] == pytest.approx(100 * (1 + (1 - 3 / 6)) / 2)  # 75
    assert metrics["pass@3/accuracy"] == pytest.approx(100 * (1 + (1 - 1 / 4)) / 2)  # 87.5
    assert metrics["pass@4/accuracy"] == pytest.approx(100.0)


def test_pass_at_1_avg_of_k_averages_the_first_k_rollouts_of_each_task() -> None:
    metrics = compute_pass_majority_metrics(TWO_TASKS)[0]

    assert metrics["pass@1[avg-of-1]/accuracy"] == pytest.approx(100 * (1 + 0) / 2)
    assert metrics["pass@1[avg-of-2]/accuracy"] == pytest.approx(100 * (1 + 1 / 2) / 2)
    assert metrics["pass@1[avg-of-3]/accuracy"] == pytest.approx(100 * (2 / 3 + 1 / 3) / 2)
    assert metrics["pass@1[avg-of-4]/accuracy"] == pytest.approx(100 * (3 / 4 + 1 / 4) / 2)


def test_per_sample_aggregate_is_pass_at_1_of_each_run_and_its_spread_is_reported_across_runs() -> None:
    metrics = compute_pass_majority_metrics(TWO_TASKS)[0]

    # Run i = rollout i of every task: [1, 0], [1, 1], [0, 0], [1, 0].
    assert metrics["per_sample_aggregate"] == {"accuracy": [50.0, 100.0, 0.0, 50.0]}
    # Sample std of the first k run means; std_err = std / sqrt(k).
    assert metrics["pass@1[avg-of-2]/accuracy/std_dev_across_runs"] == pytest.approx(25 * math.sqrt(2))
    assert metrics["pass@1[avg-of-2]/accuracy/std_err_across_runs"] == pytest.approx(25.0)
    assert metrics["pass@1[avg-of-4]/accuracy/std_dev_across_runs"] == pytest.approx(40.824829, rel=1e-6)
    assert metrics["pass@1[avg-of-4]/accuracy/std_err_across_runs"] == pytest.approx(40.824829 / 2, rel=1e-6)
    assert "pass@1[avg-of-1]/accuracy/std_dev_across_runs" not in metrics


def test_without_answer_key_there_is_no_majority_and_no_no_answer_score() -> None:
    metrics = compute_pass_majority_metrics(TWO_TASKS)[0]

    assert not [key for key in metrics if key.startswith("majority@") or "no_answer" in key]


def test_scores_that_are_not_binary_take_the_best_of_the_first_k() -> None:
    tasks = [rollouts([0, 0, 0], quality=[0.2, 0.9, 0.5])]

    metrics = compute_pass_majority_metrics(tasks, score_fn=lambda r: {"quality": r["quality"]})[0]

    assert metrics["pass@1/quality"] == pytest.approx(20.0)
    assert metrics["pass@2/quality"] == pytest.approx(90.0)
    assert metrics["pass@3/quality"] == pytest.approx(90.0)
    assert metrics["pass@1[avg-of-2]/quality"] == pytest.approx(100 * (0.2 + 0.9) / 2)


def test_bool_scores_count_as_0_and_1_and_each_named_score_gets_its_own_metrics() -> None:
    tasks = [rollouts([1, 0], judged=[True, True])]

    metrics, scores, names, _ = compute_pass_majority_metrics(
        tasks, score_fn=lambda r: {"accuracy": r["reward"] == 1, "judge_accuracy": r["judged"]}
    )

    assert names == ["accuracy", "judge_accuracy"]
    assert scores == [[{"accuracy": 1, "judge_accuracy": 1}, {"accuracy": 0, "judge_accuracy": 1}]]
    assert metrics["pass@1/accuracy"] == pytest.approx(50.0)
    assert metrics["pass@1/judge_accuracy"] == pytest.approx(100.0)


def test_majority_at_k_votes_among_the_first_k_answers_and_averages_a_tie() -> None:
    tasks = [rollouts([1, 0, 1, 0], answer=["4", "5", "4", "5"])]

    metrics = compute_pass_majority_metrics(tasks, answer_key="answer")[0]

    assert metrics["majority@1/accuracy"] == pytest.approx(100.0)  # "4" alone
    assert metrics["majority@2/accuracy"] == pytest.approx(50.0)  # "4" vs "5", one each: averaged
    assert metrics["majority@3/accuracy"] == pytest.approx(100.0)  # "4" twice
    assert metrics["majority@4/accuracy"] == pytest.approx(50.0)  # two each: averaged


def test_missing_answers_score_no_answer_and_do_not_vote() -> None:
    tasks = [rollouts([0, 1, 0, 0], answer=[None, "7", None, "8"])]

    metrics = compute_pass_majority_metrics(tasks, answer_key="answer")[0]

    assert metrics["pass@1/no_answer"] == pytest.approx(50.0)
    assert metrics["pass@1[avg-of-1]/no_answer"] == pytest.approx(100.0)
    assert metrics["majority@1/accuracy"] == 0.0  # nobody answered among the first one
    assert metrics["majority@2/accuracy"] == pytest.approx(100.0)  # only "7" voted
    assert metrics["majority@4/accuracy"] == pytest.approx(50.0)  # "7" (right) ties "8" (wrong)
    assert metrics["majority@4/no_answer"] == 0.0  # every voter answered


def test_unhashable_answers_vote_by_value() -> None:
    tasks = [rollouts([1, 1, 0], answer=[[1, 2], [1, 2], [3]])]

    assert compute_pass_majority_metrics(tasks, answer_key="answer")[0]["majority@3/accuracy"] == pytest.approx(100.0)


def test_no_tasks_give_empty_results() -> None:
    assert compute_pass_majority_metrics([]) == ({}, [], [], 0)


def test_a_score_that_is_not_a_number_is_named_in_the_error() -> None:
    with pytest.raises(TypeError, match="score 'accuracy' is 'yes'"):
        compute_pass_majority_metrics([rollouts([1], verdict=["yes"])], score_fn=lambda r: {"accuracy": r["verdict"]})


def test_avg_sample_std_dev_is_the_within_task_std_of_the_first_k_averaged_over_tasks() -> None:
    metrics, scores, names, max_k = compute_pass_majority_metrics([rollouts([1, 0, 1]), rollouts([1, 1, 1])])

    add_avg_sample_std_dev(metrics, scores, names, max_k)

    assert metrics["pass@1[avg-of-2]/accuracy/avg_sample_std_dev"] == pytest.approx((math.sqrt(0.5) + 0) / 2)
    assert metrics["pass@1[avg-of-3]/accuracy/avg_sample_std_dev"] == pytest.approx((math.sqrt(1 / 3) + 0) / 2)
    assert "pass@1[avg-of-1]/accuracy/avg_sample_std_dev" not in metrics


# --------------------------------------------------------------------------- compute_subset_metrics


def test_subset_metrics_prefix_each_subset_and_leave_out_tasks_without_one() -> None:
    tasks = [
        rollouts([1, 1], difficulty=["easy", "easy"]),
        rollouts([0, 1], difficulty=["hard", "hard"]),
        rollouts([0, 0], difficulty=["hard", "hard"]),
        rollouts([1, 1], difficulty=[None, None]),
    ]

    metrics = compute_subset_metrics(tasks, "difficulty")

    assert metrics["easy/pass@1/accuracy"] == pytest.approx(100.0)
    assert metrics["hard/pass@1/accuracy"] == pytest.approx(100 * (1 / 2 + 0) / 2)
    assert metrics["hard/pass@2/accuracy"] == pytest.approx(100 * (1 + 0) / 2)
    # hard's runs: [0, 0] then [1, 0], so 0% and 50%.
    assert metrics["hard/pass@1[avg-of-2]/accuracy/std_dev_across_runs"] == pytest.approx(25 * math.sqrt(2))
    assert {key.split("/")[0] for key in metrics} == {"easy", "hard"}
    assert not [key for key in metrics if "per_sample_aggregate" in key]


# --------------------------------------------------------------------------- highest_k_metrics

AGENT_METRICS = {
    "mean/reward": 0.5,
    "pass@1/accuracy": 50.0,
    "pass@4/accuracy": 80.0,
    "pass@16/accuracy": 95.0,
    "pass@16/no_answer": 2.0,
    "pass@1[avg-of-16]/accuracy": 60.0,
    "pass@1[avg-of-4]/accuracy": 58.0,
    "pass@1[avg-of-16]/accuracy/std_dev_across_runs": 3.0,
    "pass@1[avg-of-16]/accuracy/avg_sample_std_dev": 0.4,
    "majority@16/accuracy": 70.0,
    "easy/pass@1[avg-of-8]/accuracy": 90.0,
}


def test_highest_k_picks_the_entries_at_the_largest_k_of_the_pattern() -> None:
    assert highest_k_metrics(AGENT_METRICS, "pass@{k}") == {"pass@16/accuracy": 95.0, "pass@16/no_answer": 2.0}


def test_highest_k_leaves_out_the_spread_entries() -> None:
    assert highest_k_metrics(AGENT_METRICS, "pass@1[avg-of-{k}]") == {"pass@1[avg-of-16]/accuracy": 60.0}
    assert highest_k_metrics(AGENT_METRICS, "easy/pass@1[avg-of-{k}]") == {"easy/pass@1[avg-of-8]/accuracy": 90.0}


def test_highest_k_filters_by_score_name_then_excludes_names() -> None:
    assert highest_k_metrics(AGENT_METRICS, "pass@{k}", exclude_names=["no_answer"]) == {"pass@16/accuracy": 95.0}
    assert highest_k_metrics(AGENT_METRICS, "pass@{k}", score_names=["no_answer"]) == {"pass@16/no_answer": 2.0}
    assert highest_k_metrics(AGENT_METRICS, "pass@{k}", score_names=["accuracy"], exclude_names=["accuracy"]) == {}
    assert highest_k_metrics(AGENT_METRICS, "majority@{k}") == {"majority@16/accuracy": 70.0}
    assert highest_k_metrics(AGENT_METRICS, "hard/pass@{k}") == {}


# --------------------------------------------------------------------------- compute_aggregate_metrics


def verify_response(task: int, rollout: int, reward: float, **fields: Any) -> dict[str, Any]:
    """A verify response as the rollout collector sends it: heavy fields stripped, usage kept."""
    return {
        "_ng_task_index": task,
        "_ng_rollout_index": rollout,
        "reward": reward,
        "response": {"usage": {"input_tokens": 10 * (rollout + 1), "output_tokens_details": {"reasoning_tokens": 3}}},
        **fields,
    }


# Task 2 arrives first; task 0 has one rollout.
VERIFY_RESPONSES = [
    verify_response(2, 0, 1.0, correct=True, extracted_answer="4"),
    verify_response(2, 1, 0.0, correct=False, extracted_answer="5"),
    verify_response(2, 2, 1.0, correct=True, extracted_answer=None),
    verify_response(0, 0, 0.5, correct=True, extracted_answer="9"),
]


def test_aggregate_metrics_profile_each_task_in_task_order_with_its_index_and_sample() -> None:
    result = compute_aggregate_metrics(VERIFY_RESPONSES)

    first, second = result.group_level_metrics
    assert (first["_ng_task_index"], second["_ng_task_index"]) == (0, 2)
    assert first["sample"] == second["sample"] == {"agent_ref": {"name": "agent"}}
    assert second["mean/reward"] == pytest.approx(2 / 3)
    assert (second["max/reward"], second["min/reward"], second["median/reward"]) == (1.0, 0.0, 1.0)
    assert second["std/reward"] == pytest.approx(math.sqrt(1 / 3))  # sample std (ddof=1)
    assert second["mean/correct"] == pytest.approx(2 / 3)  # bools as 0/1
    assert second["mean/input_tokens"] == pytest.approx(20.0)  # response.usage merged in
    assert first["mean/reward"] == 0.5
    assert first["std/reward"] == 0.0  # one rollout: 0, not missing


def test_aggregate_metrics_profile_only_numeric_fields() -> None:
    entry = compute_aggregate_metrics(VERIFY_RESPONSES).group_level_metrics[1]

    fields = {key.split("/", 1)[1] for key in entry if "/" in key}
    assert fields == {"reward", "correct", "input_tokens"}
    assert set(entry) - {f"{stat}/{field}" for stat in ("mean", "max", "min", "median", "std") for field in fields} == {
        "_ng_task_index",
        "sample",
    }


def test_agent_metrics_cover_every_rollout_and_key_metrics_default_to_the_means() -> None:
    result = compute_aggregate_metrics(VERIFY_RESPONSES)

    assert result.agent_metrics["mean/reward"] == pytest.approx(2.5 / 4)
    assert result.agent_metrics["median/reward"] == pytest.approx(0.75)
    assert result.agent_metrics["std/reward"] == pytest.approx(0.478713, rel=1e-5)
    assert result.agent_metrics["max/input_tokens"] == 30
    assert "agent_ref" not in result.agent_metrics
    assert result.key_metrics == {k: v for k, v in result.agent_metrics.items() if k.startswith("mean/")}
    assert set(result.key_metrics) == {"mean/reward", "mean/correct", "mean/input_tokens"}


def test_a_field_with_one_value_in_a_task_of_several_rollouts_gets_no_std_there() -> None:
    # pandas' convention, which NeMo Gym's numbers follow: std is only filled with 0 when no field has two values.
    responses = [{"_ng_task_index": 0, "reward": 1.0, "judge_score": 0.3}, {"_ng_task_index": 0, "reward": 0.0}]

    entry = compute_aggregate_metrics(responses).group_level_metrics[0]

    assert entry["mean/judge_score"] == pytest.approx(0.3)
    assert "std/judge_score" not in entry
    assert entry["std/reward"] == pytest.approx(math.sqrt(0.5))


def test_no_verify_responses_give_empty_aggregate_metrics() -> None:
    assert compute_aggregate_metrics([]) == AggregateMetrics()
    assert AggregateMetrics().model_dump() == {"group_level_metrics": [], "agent_metrics": {}, "key_metrics": {}}


def test_missing_task_index_counts_as_task_0() -> None:
    result = compute_aggregate_metrics([{"reward": 1.0}, {"reward": 0.0}])

    assert [entry["_ng_task_index"] for entry in result.group_level_metrics] == [0]
    assert result.group_level_metrics[0]["mean/reward"] == 0.5


def test_compute_metrics_fn_gets_rollouts_grouped_by_task_and_extends_agent_and_task_metrics() -> None:
    seen: list[list[list[dict[str, Any]]]] = []

    def compute_metrics(tasks: list[list[dict[str, Any]]]) -> dict[str, Any]:
        seen.append(tasks)
        return {
            "solved_tasks": sum(any(r["reward"] == 1.0 for r in task) for task in tasks),
            "per_task_metrics": [{"_ng_task_index": 2, "solved": True}, {"_ng_task_index": 7, "solved": False}],
        }

    result = compute_aggregate_metrics(
        VERIFY_RESPONSES,
        compute_metrics_fn=compute_metrics,
        get_key_metrics_fn=lambda metrics: {"solved_tasks": metrics["solved_tasks"]},
    )

    (tasks,) = seen
    assert [[r["_ng_rollout_index"] for r in task] for task in tasks] == [[0], [0, 1, 2]]
    assert [task[0]["_ng_task_index"] for task in tasks] == [0, 2]
    assert result.agent_metrics["solved_tasks"] == 1
    assert "per_task_metrics" not in result.agent_metrics
    assert "solved" not in result.group_level_metrics[0]
    assert result.group_level_metrics[1]["solved"] is True
    assert result.group_level_metrics[1]["_ng_task_index"] == 2
    assert result.key_metrics == {"solved_tasks": 1}


def test_per_task_metrics_without_a_task_index_are_a_clear_error() -> None:
    with pytest.raises(ValueError, match="per_task_metrics\\[0\\].*_ng_task_index"):
        compute_aggregate_metrics(VERIFY_RESPONSES, compute_metrics_fn=lambda tasks: {"per_task_metrics": [{"x": 1}]})


# --------------------------------------------------------------------------- AggregateMetricsMixin


class DefaultServer(AggregateMetricsMixin):
    pass


class MathLikeServer(AggregateMetricsMixin):
    """What NeMo Gym's math environment does: pass@k / majority@k over the extracted answer, headline at the top k."""

    def compute_metrics(self, tasks: list[list[dict[str, Any]]]) -> dict[str, Any]:
        return compute_pass_majority_metrics(tasks, answer_key="extracted_answer")[0]

    def get_key_metrics(self, agent_metrics: dict[str, Any]) -> dict[str, Any]:
        return {
            **highest_k_metrics(agent_metrics, "pass@1[avg-of-{k}]"),
            **highest_k_metrics(agent_metrics, "majority@{k}", exclude_names=["no_answer"]),
        }


async def test_the_mixin_defaults_add_nothing_and_headline_the_means() -> None:
    request = AggregateMetricsRequest.model_validate({"verify_responses": VERIFY_RESPONSES})

    result = await DefaultServer().aggregate_metrics(request)

    assert result == compute_aggregate_metrics(VERIFY_RESPONSES)
    assert DefaultServer().compute_metrics([]) == {}
    assert DefaultServer().get_key_metrics({"mean/reward": 1.0, "max/reward": 1.0}) == {"mean/reward": 1.0}


async def test_the_mixin_runs_the_servers_overrides() -> None:
    result = await MathLikeServer().aggregate_metrics(AggregateMetricsRequest(verify_responses=VERIFY_RESPONSES))

    # Task 0: [0.5] is not binary; task 2: [1, 0, 1] answers "4", "5", None.
    assert result.agent_metrics["pass@1/accuracy"] == pytest.approx(100 * (0.5 + 2 / 3) / 2)
    assert result.key_metrics == {
        "pass@1[avg-of-3]/accuracy": pytest.approx(100 * (0.5 + 2 / 3) / 2),
        "pass@1[avg-of-3]/no_answer": pytest.approx(100 * (0 + 1 / 3) / 2),
        "majority@3/accuracy": pytest.approx(100 * (0.5 + 1 / 2) / 2),
    }


def test_the_request_body_requires_verify_responses() -> None:
    with pytest.raises(ValueError, match="verify_responses"):
        AggregateMetricsRequest.model_validate({})
