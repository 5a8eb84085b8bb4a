"""The README's offline command, end to end on the real bundled model: ng_demo starts ng_run with local_model and
simple_weather, collects rollouts, prints metrics and stops everything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nemo_gym.testing.local_model import NEEDS_LOCAL_MODEL, run_demo

pytestmark = [*NEEDS_LOCAL_MODEL, pytest.mark.slow]


def test_demo_collects_scored_rollouts_offline(tmp_path: Path) -> None:
    output = tmp_path / "demo.jsonl"
    result, records = run_demo(output, "+limit=8")
    assert "ng_run ready" in result.stdout and "mean_reward" in result.stdout

    assert len(records) == 8
    assert all(r["error"] is None and 0.0 <= r["reward"] <= 1.0 for r in records)
    assert all(r["models"] == ["SmolLM2-135M-Instruct"] and r["usage"]["input_tokens"] > 0 for r in records)
    assert any(item["type"] == "function_call" for r in records for item in r["response"]["output"])
    metrics = json.loads((tmp_path / "demo.metrics.json").read_text())
    assert metrics["succeeded"] == 8 and metrics["mean_reward"] == pytest.approx(
        sum(r["reward"] for r in records) / 8, abs=1e-4
    )


def test_demo_records_token_ids_when_asked(tmp_path: Path) -> None:
    result, records = run_demo(tmp_path / "demo_ids.jsonl", "+limit=2", "+return_token_id_information=true")
    assert "return_token_id_information=true" in result.stdout  # passed on to ng_run, printed with its command
    assert len(records) == 2 and all(r["error"] is None for r in records)
    last_items = [item for r in records for item in r["response"]["output"] if "generation_token_ids" in item]
    assert last_items and all(len(i["generation_token_ids"]) == len(i["generation_log_probs"]) for i in last_items)
    assert all(r["response"]["nemo_gym"]["token_ids"]["contiguous"] is not None for r in records)


def test_demo_of_the_judge_environment_runs_offline_with_the_judges_cost_in_each_record(tmp_path: Path) -> None:
    result, records = run_demo(tmp_path / "judged.jsonl", "+environment=rubric_judge", "+limit=3")
    assert "judge" in result.stdout and "ng_run ready" in result.stdout
    assert len(records) == 3 and all(r["error"] is None and 0.0 <= r["reward"] <= 1.0 for r in records)
    assert all(r["judge_usage"]["calls"] == 1 and r["judge_cost_usd"] > 0 for r in records)
    assert all(r["models"] == ["SmolLM2-135M-Instruct"] for r in records)  # the policy: the judge is apart
    assert all(len(r["cost_by_model"]) == 1 and r["cost_usd"] >= r["judge_cost_usd"] for r in records)
    metrics = json.loads((tmp_path / "judged.metrics.json").read_text())
    assert metrics["judge_calls"] == 3 and metrics["judge_cost_usd"] == pytest.approx(
        sum(r["judge_cost_usd"] for r in records), abs=1e-9
    )
