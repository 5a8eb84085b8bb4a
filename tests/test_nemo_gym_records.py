"""NeMo Gym's rollout records (its collector's verify responses, and the rows of its `_failures.jsonl`) read as ours:
the conversion itself, then ng_reward_profile, ng_export and ng_reverify over NeMo Gym files, and our own records
still read without it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import orjson
import pytest

from nemo_gym.cli.export import main as ng_export
from nemo_gym.collection.inputs import read_rows, row_agent
from nemo_gym.collection.records import build_record
from nemo_gym.protocol.nemo_gym_records import from_nemo_gym_record, is_nemo_gym_record, task_hash
from nemo_gym.protocol.types import RECORD_KEYS, JSONObject
from nemo_gym.training import reading
from nemo_gym.training.profile import profile, settings_from
from nemo_gym.training.reading import RolloutFiles
from tests.test_reverify import (  # noqa: F401 (cluster: the fixture)
    Cluster,
    cluster,
    command_env,
    records_of,
    run_reverify,
)

AGENT = "math_with_judge_simple_agent"
MODEL = "Qwen/Qwen3-8B"
REWARDS = {0: [1.0, 1.0, 1.0, 1.0], 1: [0.0, 0.0, 0.0, 0.0], 2: [1.0, 0.0, 0.0, 0.0]}
"""3 tasks x 4 rollouts: always, never and once solved."""
JUDGE_ERROR = "JudgeError: APIConnectionError: Connection error."


def ng_row(task: int) -> JSONObject:
    """A NeMo Gym dataset row as math_with_judge takes it."""
    return {
        "responses_create_params": {"input": [{"role": "user", "content": f"What is {task} + {task}?"}]},
        "agent_ref": {"type": "responses_api_agents", "name": AGENT},
        "question": f"What is {task} + {task}?",
        "expected_answer": str(2 * task),
    }


def ng_response(text: str, rollout: int) -> JSONObject:
    return {
        "id": f"resp_{rollout}",
        "object": "response",
        "model": MODEL,
        "output": [
            {
                "id": f"msg_{rollout}",
                "type": "message",
                "role": "assistant",
                "status": "completed",
                "content": [{"type": "output_text", "text": text, "annotations": []}],
            }
        ],
        "usage": {
            "input_tokens": 20,
            "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": 10,
            "output_tokens_details": {"reasoning_tokens": 4},
            "total_tokens": 30,
        },
    }


def ng_record(task: int, rollout: int, reward: float, *, seeded: bool = False) -> JSONObject:
    """One line of NeMo Gym's rollouts file: the verify response plus the collector's bookkeeping."""
    row = ng_row(task)
    if seeded:  # +num_repeats_add_seed: the collector's seed, one per rollout
        row["responses_create_params"]["metadata"] = {"extra_body": json.dumps({"seed": rollout})}
    answer = str(2 * task) if reward else "7"
    return {
        **row,
        "response": ng_response(f"The answer is \\boxed{{{answer}}}.", rollout),
        "reward": reward,
        "extracted_answer": answer,
        "library_reward": reward,
        "judge_evaluations": None,
        "_ng_task_index": task,
        "_ng_rollout_index": rollout,
    }


def ng_failure(task: int, rollout: int) -> JSONObject:
    """A row of NeMo Gym's `<stem>_failures.jsonl`, as judge_failsafe returns it."""
    return {
        **ng_row(task),
        "response": ng_response("The answer is \\boxed{3}.", rollout),
        "reward": 0.0,
        "mask_sample": True,
        "failure_kind": "judge_failed",
        "failure_reason": JUDGE_ERROR,
        "instance_config": {"mask_sample": True},
        "_ng_failure_class": "judge_failed",
        "_ng_failure_judge_error": JUDGE_ERROR,
        "_ng_task_index": task,
        "_ng_rollout_index": rollout,
    }


def write(path: Path, lines: list[Any]) -> Path:
    with path.open("wb") as handle:
        for line in lines:
            handle.write(orjson.dumps(line) + b"\n")
    return path


@pytest.fixture
def ng_files(tmp_path: Path) -> tuple[Path, Path]:
    """NeMo Gym's rollouts file (written as rollouts finish) and its failures sidecar: a judge failure of task 2's
    rollout 1 whose retry succeeded, and task 3, whose only rollout failed."""
    main = [
        ng_record(task, k, reward) for k in range(4) for task, rewards in REWARDS.items() for reward in [rewards[k]]
    ]
    rollouts = write(tmp_path / "rollouts.jsonl", main)
    failures = write(tmp_path / "rollouts_failures.jsonl", [ng_failure(2, 1), ng_failure(3, 0)])
    return rollouts, failures


# ---------------------------------------------------------------------------------------------- the conversion


def test_a_nemo_gym_rollout_becomes_our_record_with_the_dispatched_row_as_input() -> None:
    source = ng_record(2, 3, 1.0)
    assert is_nemo_gym_record(source)

    record = from_nemo_gym_record(source)

    assert set(RECORD_KEYS) <= set(record), "every key of our record, in our order"
    assert list(record)[: len(RECORD_KEYS) - 2] == [k for k in RECORD_KEYS if k not in ("response", "input")]
    assert (record["row_index"], record["repeat_index"], record["agent_name"]) == (2, 3, AGENT)
    assert (record["reward"], record["error"], record["fingerprint"]) == (1.0, None, None)
    assert record["row_hash"] == task_hash(ng_row(2)["responses_create_params"], 2)
    assert record["input"] == ng_row(2), "the row as dispatched: no response, reward, verdict or _ng_ bookkeeping"
    assert record["response"] == source["response"]
    assert record["models"] == [MODEL] and record["cost_usd"] is None
    assert record["usage"] == {
        "input_tokens": 20,
        "output_tokens": 10,
        "total_tokens": 30,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 4},
        "cost": None,
        "calls": 1,
    }
    verifier_fields = {k: record[k] for k in record if k not in RECORD_KEYS}  # type: ignore[literal-required]
    assert verifier_fields == {
        "question": "What is 2 + 2?",
        "expected_answer": "4",
        "extracted_answer": "4",
        "library_reward": 1.0,
        "judge_evaluations": None,
    }, "beside our keys, as our collector writes a verifier's fields (dataset fields too: they cannot be told apart)"


def test_a_judge_failure_is_a_failed_rollout_with_the_judges_error_and_the_row_without_the_mask() -> None:
    record = from_nemo_gym_record(ng_failure(3, 0))
    assert record["reward"] is None
    assert record["error"] == f"judge_failed: {JUDGE_ERROR}"
    assert record["input"] == ng_row(3), "judge_failsafe's instance_config.mask_sample is not part of the row"
    assert record["row_hash"] == from_nemo_gym_record(ng_record(3, 1, 1.0))["row_hash"], "one task, one row"


def test_a_masked_sample_outside_the_failures_file_is_a_failure_for_training() -> None:
    masked = {**ng_record(1, 0, 0.0), "mask_sample": True, "failure_kind": "empty_response"}
    record = from_nemo_gym_record(masked)
    assert (record["reward"], record["error"]) == (None, "mask_sample: empty_response")
    assert "mask_sample" not in record and "mask_sample" not in record["input"]


def test_every_seeded_repeat_of_a_task_is_one_row_and_the_seed_is_not_in_the_input() -> None:
    records = [from_nemo_gym_record(ng_record(0, k, 1.0, seeded=True)) for k in range(3)]
    assert len({r["row_hash"] for r in records}) == 1
    assert all(r["input"] == ng_row(0) for r in records)
    own_seed = ng_record(0, 1, 1.0)
    own_seed["responses_create_params"]["metadata"] = {"extra_body": json.dumps({"seed": 42})}
    assert from_nemo_gym_record(own_seed)["input"]["responses_create_params"]["metadata"] == {
        "extra_body": json.dumps({"seed": 42})
    }, "a seed the collector did not put there is the dataset's"


def test_dataset_rows_materialized_inputs_and_our_records_are_not_nemo_gym_records() -> None:
    materialized = {**ng_row(0), "_ng_task_index": 0, "_ng_rollout_index": 1}
    ours = {**from_nemo_gym_record(ng_record(0, 0, 1.0))}
    assert not is_nemo_gym_record(ng_row(0))
    assert not is_nemo_gym_record(materialized)
    assert not is_nemo_gym_record(ours)
    assert not is_nemo_gym_record([1, 2])
    assert is_nemo_gym_record({k: v for k, v in ng_record(0, 0, 1.0).items() if not k.startswith("_ng_")})


def test_a_nemo_gym_dataset_row_with_an_agent_ref_reads_as_an_input_row(tmp_path: Path) -> None:
    path = write(tmp_path / "math.jsonl", [ng_row(0), ng_row(1)])
    rows = read_rows(path)
    assert rows == [ng_row(0), ng_row(1)]
    assert row_agent(rows[0]) == AGENT


# ---------------------------------------------------------------------------------------------- the reader


def test_the_reader_groups_a_tasks_rollouts_and_counts_sidecar_rows_as_failed(ng_files: tuple[Path, Path]) -> None:
    rollouts, failures = ng_files
    files = RolloutFiles([rollouts, failures], keep_failed=True)
    groups = {group.input["question"]: group for group in files.rows()}

    assert [r["reward"] for r in groups["What is 2 + 2?"].records] == REWARDS[2], "repeat order; a success wins"
    assert [r["repeat_index"] for r in groups["What is 3 + 3?"].failed] == [0] and not groups["What is 3 + 3?"].records
    report = files.report
    assert (report.lines, report.records, report.rows) == (14, 12, 4)
    assert report.skipped == {"duplicate": 1, "failed": 1}
    assert report.converted == {"nemo_gym_record": 14}
    assert report.to_json()["converted"] == {"nemo_gym_record": 14}
    assert (
        report.explained()[-1].startswith("read 14 NeMo Gym rollout records")
        and f"{rollouts}:1" in (report.explained()[-1])
    )


def test_through_bucket_files_nemo_gym_records_group_as_in_memory(ng_files: tuple[Path, Path], tmp_path: Path) -> None:
    paths = list(ng_files)
    in_memory = RolloutFiles(paths, keep_failed=True)
    through_buckets = RolloutFiles(paths, keep_failed=True, in_memory_bytes=0, bucket_bytes=1024, spill_dir=tmp_path)

    def found(files: RolloutFiles) -> dict[str, Any]:
        return {g.row_hash: ([r["reward"] for r in g.records], len(g.failed)) for g in files.rows()}

    assert found(through_buckets) == found(in_memory)
    assert through_buckets.report.to_json() == in_memory.report.to_json()


def test_our_records_never_go_through_the_conversion(
    ng_files: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rollouts, _ = ng_files
    response = ng_response("The answer is \\boxed{10}.", 0)
    response["usage"] |= {"cost": 0.0001, "calls": 1}  # as our agents answer: usage in our shape
    ours = write(tmp_path / "ours.jsonl", [from_nemo_gym_record(orjson.loads(line)) for line in rollouts.open("rb")])

    def refuse(obj: Any) -> bool:
        raise AssertionError(f"converted: {obj}")

    monkeypatch.setattr(reading, "is_nemo_gym_record", refuse)
    for files in (RolloutFiles([ours]), RolloutFiles([ours], in_memory_bytes=0, bucket_bytes=1024, spill_dir=tmp_path)):
        assert sum(len(g.records) for g in files.rows()) == 12
        assert not files.report.converted


def test_our_files_and_nemo_gym_files_are_read_together_each_row_apart(
    ng_files: tuple[Path, Path], tmp_path: Path
) -> None:
    rollouts, _ = ng_files
    response = ng_response("The answer is \\boxed{10}.", 0)
    response["usage"] |= {"cost": 0.0001, "calls": 1}  # as our agents answer: usage in our shape
    ours = write(
        tmp_path / "ours.jsonl",
        [
            build_record(
                row=ng_row(5),
                row_index=5,
                repeat_index=k,
                agent_name=AGENT,
                result={"reward": 1.0, "response": response},
                error=None,
                latency_s=0.5,
            )
            for k in range(2)
        ],
    )
    files = RolloutFiles([ours, rollouts])
    rows = {group.input["question"]: group.rewards for group in files.rows()}
    assert rows == {"What is 5 + 5?": [1.0, 1.0], **{f"What is {t} + {t}?": rewards for t, rewards in REWARDS.items()}}
    assert (files.report.records, files.report.converted) == (14, {"nemo_gym_record": 12})
    assert files.report.converted_first_at == {"nemo_gym_record": f"{rollouts}:1"}


# ---------------------------------------------------------------------------------------------- the commands


def test_the_reward_profile_of_nemo_gym_files_has_the_right_pass_at_k(
    ng_files: tuple[Path, Path], tmp_path: Path
) -> None:
    rollouts, failures = ng_files
    output = tmp_path / "profile.jsonl"
    settings = settings_from({"input_jsonl_fpath": [str(rollouts), str(failures)], "output_jsonl_fpath": str(output)})

    summary = profile(settings)

    lines = [json.loads(line) for line in output.read_text().splitlines()]
    assert [line["row_index"] for line in lines] == [0, 1, 2, 3]
    assert [line["pass_at_k"] for line in lines] == [
        {"1": 1.0, "2": 1.0, "4": 1.0},
        {"1": 0.0, "2": 0.0, "4": 0.0},
        {"1": 0.25, "2": 0.5, "4": 1.0},
        {},
    ]
    assert [(line["rollouts"], line["failed"]) for line in lines] == [(4, 0), (4, 0), (4, 0), (0, 1)]
    assert lines[2]["majority_at_k"]["4"] == 0.0, "extracted_answer is read as the rollout's answer"
    assert summary["pass_at_k"]["1"]["mean"] == pytest.approx((1 + 0 + 0.25) / 3)
    assert summary["pass_at_k"]["2"]["mean"] == pytest.approx(0.5)
    assert summary["pass_at_k"]["4"]["mean"] == pytest.approx(2 / 3)
    assert (summary["rollouts"], summary["failed"], summary["rows_only_failed"]) == (12, 1, 1)
    assert any(line.startswith("read 14 NeMo Gym rollout records") for line in summary["skipped"])


def test_the_reward_profile_command_reads_a_nemo_gym_file_and_says_so(
    ng_files: tuple[Path, Path], tmp_path: Path
) -> None:
    rollouts, _ = ng_files
    output = tmp_path / "profile.jsonl"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "nemo_gym.cli.reward_profile",
            f"+input_jsonl_fpath={rollouts}",
            f"+output_jsonl_fpath={output}",
            "+filter_output_jsonl_fpath=mixed.jsonl",
            "+keep=mixed",
        ],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
        env={**os.environ, **command_env()},
    )
    assert done.returncode == 0, done.stderr
    assert "read 12 NeMo Gym rollout records" in done.stdout
    assert len(output.read_text().splitlines()) == 3
    assert [json.loads(line) for line in (tmp_path / "mixed.jsonl").read_text().splitlines()] == [ng_row(2)], (
        "the selected task, as a dataset row NeMo Gym's collector takes again"
    )


def test_an_sft_export_of_nemo_gym_files_has_one_conversation_per_successful_rollout(
    ng_files: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rollouts, failures = ng_files
    every = tmp_path / "sft.jsonl"
    solved = tmp_path / "solved.jsonl"
    for output, *extra in ((every,), (solved, "+min_reward=1")):
        with pytest.raises(SystemExit) as exited:
            ng_export(
                [
                    "+format=sft",
                    f"+input_jsonl_fpath=[{rollouts},{failures}]",
                    f"+output_fpath={output}",
                    *extra,
                ]
            )
        assert exited.value.code == 0, capsys.readouterr().err
    assert "read 14 NeMo Gym rollout records" in capsys.readouterr().out
    lines = [json.loads(line) for line in every.read_text().splitlines()]
    assert len(lines) == 12 and len(solved.read_text().splitlines()) == 5
    first = lines[0]
    assert first["messages"][0] == {"role": "user", "content": "What is 0 + 0?"}
    assert first["messages"][-1]["role"] == "assistant" and "\\boxed{0}" in first["messages"][-1]["content"]
    assert (first["agent_name"], first["row_index"], first["models"]) == (AGENT, 0, [MODEL])


# ---------------------------------------------------------------------------------------------- ng_reverify


def as_nemo_gym(record: JSONObject) -> JSONObject:
    """One of our records as NeMo Gym's collector would have written the same rollout."""
    verdict = {k: v for k, v in record.items() if k not in RECORD_KEYS}
    return {
        **record["input"],
        **verdict,
        "response": record["response"],
        "reward": record["reward"],
        "_ng_task_index": record["row_index"],
        "_ng_rollout_index": record["repeat_index"],
        "agent_ref": {"type": "responses_api_agents", "name": record["agent_name"]},
    }


def test_reverify_rescores_a_nemo_gym_file_by_its_agent_refs_resources_server_and_resumes(
    cluster: Cluster,  # noqa: F811 (the fixture imported above)
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    ours = [r for r in records_of(cluster.rollouts) if r["error"] is None]
    failed = {**ng_failure(0, 9), "agent_ref": {"type": "responses_api_agents", "name": ours[0]["agent_name"]}}
    source = write(tmp_path / "ng_rollouts.jsonl", [as_nemo_gym(r) for r in ours] + [failed])
    output = tmp_path / "rescored.jsonl"

    summary = run_reverify(cluster, source, output)

    assert summary["nemo_gym_records"] == len(ours) + 1 and summary["skipped"] == {}
    assert (summary["rescored"], summary["changed"], summary["copied_failed"]) == (len(ours), 0, 1)
    assert "NeMo Gym rollout records" in capsys.readouterr().out
    rescored = records_of(output)
    by_position = {(r["row_index"], r["repeat_index"]): r for r in rescored}
    for original in ours:
        again = by_position[(original["row_index"], original["repeat_index"])]
        assert again["reward"] == again["previous_reward"] == original["reward"]
        assert again["reverified"]["resources_server"] == "simple_weather"
        assert again["response"] == original["response"]
        assert again["input"]["responses_create_params"] == original["input"]["responses_create_params"]
    assert by_position[(0, 9)]["error"] == f"judge_failed: {JUDGE_ERROR}", "a failed rollout copied, in our shape"

    resumed = run_reverify(cluster, source, output)
    assert resumed["this_run"]["records_written"] == 0 and resumed["this_run"]["skipped_already_done"] == len(ours) + 1


def test_the_viewer_shows_a_nemo_gym_rollout_file_as_ours(tmp_path: Path) -> None:
    from nemo_gym.viewer import RolloutIndex

    path = tmp_path / "nemo_gym_rollouts.jsonl"
    lines = [
        {
            "responses_create_params": {"input": [{"role": "user", "content": f"What is {task} + 1?"}]},
            "response": {"id": "r", "model": "m", "output": [], "usage": {"input_tokens": 3, "output_tokens": 2}},
            "reward": float(task % 2),
            "_ng_task_index": task,
            "_ng_rollout_index": 0,
            "agent_ref": {"type": "responses_api_agents", "name": "math_simple_agent"},
        }
        for task in range(3)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    index = RolloutIndex.load(path)
    shown = index.record(2)["record"]
    assert shown["row_index"] == 2 and shown["agent_name"] == "math_simple_agent" and shown["reward"] == 0.0
    assert len(index.entries) == 3 and not index.all_warnings()
