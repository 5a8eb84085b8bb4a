"""The shared reader of rollout files (nemo_gym/training/reading.py): every usable rollout of a row together, once,
with what was skipped counted, explained and located; the same groups through bucket files as in memory."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import orjson
import pytest

from nemo_gym.collection.records import build_record
from nemo_gym.protocol.types import RolloutRecord
from nemo_gym.training import reading
from nemo_gym.training.reading import SKIP_REASONS, RolloutFiles, RowGroup, TrainingInputError

AGENT = "mcqa_simple_agent"


def row(i: int) -> dict[str, Any]:
    return {
        "id": f"q{i}",
        "expected_answer": "B",
        "responses_create_params": {"input": [{"role": "user", "content": f"Question {i}? A) x B) y"}]},
    }


def record(
    i: int,
    repeat: int = 0,
    *,
    reward: float | None = 1.0,
    error: str | None = None,
    agent: str = AGENT,
    fingerprint: str | None = "f1",
) -> RolloutRecord:
    """A record as the collector builds it: the verifier's fields beside the reward, the response, the row."""
    result = None
    if error is None:
        text = "Answer: B" if reward else "Answer: A"
        result = {
            "reward": reward,
            "extracted_answer": "B" if reward else "A",
            "response": {"id": f"resp-{i}-{repeat}", "output": [{"type": "message", "content": text}]},
        }
    return build_record(
        row=row(i),
        row_index=i,
        repeat_index=repeat,
        agent_name=agent,
        result=result,
        error=error,
        latency_s=0.5,
        fingerprint=fingerprint,
    )


def write(path: Path, lines: list[Any]) -> Path:
    """Records (dicts) as JSON lines; bytes as they are (torn or foreign lines)."""
    with path.open("wb") as handle:
        for line in lines:
            handle.write(line if isinstance(line, bytes) else orjson.dumps(line) + b"\n")
    return path


def groups(files: RolloutFiles) -> dict[str, RowGroup]:
    return {group.row_hash: group for group in files.rows()}


def repeats(group: RowGroup) -> list[tuple[int, float | None]]:
    return [(r["repeat_index"], r["reward"]) for r in group.records]


def test_a_rows_rollouts_come_together_in_repeat_order_whatever_order_they_were_written(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", [record(1, 1, reward=0.0), record(0, 0), record(1, 0), record(0, 1)])
    files = RolloutFiles([path])
    found = list(files.rows())
    assert [g.input["id"] for g in found] == ["q1", "q0"]  # in memory: the order rows first appear
    assert [repeats(g) for g in found] == [[(0, 1.0), (1, 0.0)], [(0, 1.0), (1, 1.0)]]
    assert found[0].rewards == [1.0, 0.0] and found[0].agent_name == AGENT
    assert found[0].input == row(1)
    report = files.report
    assert (report.lines, report.records, report.rows, dict(report.skipped)) == (4, 4, 2, {})
    assert report.agents == {AGENT: 4} and report.fingerprints == {"f1": 4}


def test_torn_and_undecodable_lines_are_skipped_as_not_json_with_where_the_first_is(tmp_path: Path) -> None:
    whole = orjson.dumps(record(0))
    path = write(tmp_path / "a.jsonl", [record(1), b"\xff\xfe not utf-8\n", b"\n", record(2), whole[: len(whole) // 2]])
    files = RolloutFiles([path])
    assert sorted(g.input["id"] for g in files.rows()) == ["q1", "q2"]
    assert files.report.skipped == {"not_json": 2}
    assert files.report.first_at == {"not_json": f"{path}:2"}  # blank lines count in the numbering, like an editor
    assert files.report.lines == 4
    (line,) = files.report.explained()
    assert line.startswith("skipped 2 lines that are not JSON (torn by a crash mid-write") and f"{path}:2" in line


def test_foreign_lines_are_not_records_and_say_another_file_may_be_mixed_in(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", [row(0), [1, 2], 7, {"row_hash": 12}, record(0)])
    files = RolloutFiles([path])
    assert [g.input["id"] for g in files.rows()] == ["q0"]
    assert files.report.skipped == {"dataset_row": 1, "not_a_record": 3}
    assert files.report.first_at == {"dataset_row": f"{path}:1", "not_a_record": f"{path}:2"}
    assert "is another kind of file mixed in?" in files.report.explained()[1]


def test_failed_rollouts_are_skipped_or_kept_apart_and_a_row_of_failures_only_is_kept_only_when_asked(
    tmp_path: Path,
) -> None:
    lines = [record(0, 0), record(0, 1, error="ServerCallError: 502"), record(1, 0, error="BadAgentResponse: x")]
    path = write(tmp_path / "a.jsonl", lines)
    files = RolloutFiles([path])
    (only,) = files.rows()
    assert repeats(only) == [(0, 1.0)] and only.failed == []
    assert files.report.skipped == {"failed": 2} and files.report.rows == 1
    assert "+retry_failed=true" in files.report.explained()[0]

    kept = RolloutFiles([path], keep_failed=True)
    by_id = {g.input["id"]: g for g in kept.rows()}
    assert [r["repeat_index"] for r in by_id["q0"].failed] == [1]
    assert by_id["q1"].records == [] and by_id["q1"].failed[0]["error"] == "BadAgentResponse: x"
    assert by_id["q1"].input == row(1) and by_id["q1"].agent_name == AGENT
    assert kept.report.skipped == {"failed": 2} and kept.report.rows == 2 and kept.report.records == 1


@pytest.mark.parametrize("reward", [None, "1.0", True, [1.0]])
def test_a_record_without_a_numeric_reward_is_skipped_as_no_reward(tmp_path: Path, reward: Any) -> None:
    odd = {**record(0, 1), "reward": reward}
    path = write(tmp_path / "a.jsonl", [record(0, 0), odd])
    files = RolloutFiles([path])
    (only,) = files.rows()
    assert repeats(only) == [(0, 1.0)]
    assert files.report.skipped == {"no_reward": 1} and files.report.first_at == {"no_reward": f"{path}:2"}


def test_a_file_given_twice_counts_each_rollout_once_and_points_at_the_first_copy_skipped(tmp_path: Path) -> None:
    path = write(tmp_path / "a.jsonl", [record(0, 0), record(0, 1, reward=0.0), record(1, 0)])
    copy = write(tmp_path / "b.jsonl", [record(1, 0), record(0, 1, reward=0.0), record(0, 0)])
    files = RolloutFiles([path, copy])
    found = groups(files)
    assert sorted(repeats(g) for g in found.values()) == [[(0, 1.0)], [(0, 1.0), (1, 0.0)]]
    assert files.report.records == 3 and files.report.skipped == {"duplicate": 3}
    assert files.report.first_at == {"duplicate": f"{copy}:1"}
    assert "+num_repeats=K" in files.report.explained()[0]


def test_the_same_row_and_repeat_under_other_settings_or_another_agent_is_another_rollout(tmp_path: Path) -> None:
    lines = [record(0, 0), record(0, 0, fingerprint="f2", reward=0.0), record(0, 0, agent="other_agent")]
    files = RolloutFiles([write(tmp_path / "a.jsonl", lines)])
    (only,) = files.rows()
    assert [(r["agent_name"], r["fingerprint"], r["reward"]) for r in only.records] == [
        (AGENT, "f1", 1.0),
        (AGENT, "f2", 0.0),
        ("other_agent", "f1", 1.0),
    ]
    assert files.report.skipped == {}


@pytest.mark.parametrize("failure_first", [True, False])
def test_a_success_supersedes_a_failure_of_the_same_rollout_in_either_order(
    tmp_path: Path, failure_first: bool
) -> None:
    failure = write(tmp_path / "failure.jsonl", [record(0, 0, error="ServerCallError: 502")])
    success = write(tmp_path / "success.jsonl", [record(0, 0, reward=0.0)])
    paths = [failure, success] if failure_first else [success, failure]
    files = RolloutFiles(paths, keep_failed=True)
    (only,) = files.rows()
    assert repeats(only) == [(0, 0.0)] and only.failed == []
    assert files.report.skipped == {"duplicate": 1}
    assert files.report.first_at == {"duplicate": f"{failure}:1"}


def test_the_agent_filter_keeps_the_named_agents_and_counts_the_others(tmp_path: Path) -> None:
    lines = [record(0, 0), record(1, 0, agent="weather_agent"), record(2, 0, agent="math_agent")]
    path = write(tmp_path / "a.jsonl", lines)
    files = RolloutFiles([path], agent_names=[AGENT, "math_agent"])
    assert sorted(g.input["id"] for g in files.rows()) == ["q0", "q2"]
    assert files.report.skipped == {"other_agent": 1} and files.report.first_at == {"other_agent": f"{path}:2"}
    assert files.report.agents == {AGENT: 1, "math_agent": 1}
    assert SKIP_REASONS["other_agent"] in files.report.explained()[0]


def test_missing_or_no_files_are_refused_with_how_to_name_them(tmp_path: Path) -> None:
    with pytest.raises(TrainingInputError, match=r"no such file. Name a rollouts file"):
        RolloutFiles([tmp_path / "missing.jsonl"])
    with pytest.raises(TrainingInputError, match=r"No rollout files given"):
        RolloutFiles([])
    with pytest.raises(TrainingInputError, match="no such file"):
        RolloutFiles([tmp_path])  # a folder is not a rollouts file


def messy_files(tmp_path: Path, rows: int = 60) -> list[Path]:
    """Two files of `rows` rows x 4 repeats, shuffled and split, with every kind of line the reader must handle."""
    rng = random.Random(7)
    lines: list[Any] = [record(i, k, reward=float(rng.random() < 0.5)) for i in range(rows) for k in range(4)]
    lines += [record(i, 4, error="ServerCallError: 502") for i in range(0, rows, 5)]  # failures
    lines += [record(i, 0, fingerprint="f2", reward=0.0) for i in range(0, rows, 7)]  # other settings
    lines += [record(i, 0, agent="other_agent") for i in range(0, rows, 9)]
    lines += [{**record(i, 5), "reward": None} for i in range(0, rows, 11)]  # no reward
    lines += [row(0), b"{torn\n", b"\x00\x01\n"]
    rng.shuffle(lines)
    lines += [record(i, 1) for i in range(0, rows, 6)]  # copies of rollouts already written
    lines += [record(i, 4, reward=1.0) for i in range(0, rows, 10)]  # successes over earlier failures
    half = len(lines) // 2
    return [write(tmp_path / "a.jsonl", lines[:half]), write(tmp_path / "b.jsonl", lines[half:])]


def summary_of(files: RolloutFiles) -> tuple[dict[str, Any], dict[str, Any]]:
    found = {
        g.row_hash: (
            [(r["agent_name"], r["fingerprint"], r["repeat_index"], r["reward"]) for r in g.records],
            [r["repeat_index"] for r in g.failed],
        )
        for g in files.rows()
    }
    report = files.report.to_json()
    return found, report


def test_the_bucket_path_gives_the_same_groups_and_report_as_the_in_memory_path(tmp_path: Path) -> None:
    paths = messy_files(tmp_path)
    spill = tmp_path / "spill"
    spill.mkdir()
    in_memory = RolloutFiles(paths, keep_failed=True)
    assert in_memory.size_bytes < reading.IN_MEMORY_BYTES
    through_buckets = RolloutFiles(paths, keep_failed=True, in_memory_bytes=0, bucket_bytes=4096, spill_dir=spill)
    expected, expected_report = summary_of(in_memory)
    found, report = summary_of(through_buckets)
    assert found == expected
    assert report == expected_report  # counts, and the first place each kind of skip happened
    assert set(report["skipped"]) == {"not_json", "dataset_row", "duplicate", "no_reward", "failed"}
    assert len(expected) == 60 and report["rows"] == 60
    assert list(spill.iterdir()) == []  # the bucket files are gone


def test_buckets_too_large_for_the_open_file_limit_are_dealt_again_into_smaller_ones(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    paths = messy_files(tmp_path)
    dealt: list[int] = []
    original = reading._bucket_of

    def spy(digest: str, buckets: int, level: int = 0) -> int:
        dealt.append(level)
        return original(digest, buckets, level)

    monkeypatch.setattr(reading, "MAX_OPEN_BUCKETS", 2)
    monkeypatch.setattr(reading, "_bucket_of", spy)
    expected, expected_report = summary_of(RolloutFiles(paths, keep_failed=True))
    found, report = summary_of(
        RolloutFiles(paths, keep_failed=True, in_memory_bytes=0, bucket_bytes=2048, spill_dir=tmp_path)
    )
    assert (found, report) == (expected, expected_report)
    assert set(dealt) == {0, 1, 2}  # two buckets were not enough: dealt again, twice


def test_the_row_hash_is_read_from_a_lines_bytes_only_where_that_is_safe() -> None:
    from nemo_gym.training.reading import row_hash_of_line

    assert row_hash_of_line(b'{"row_index":0,"repeat_index":1,"row_hash":"ab12","reward":1}\n') == "ab12"
    assert row_hash_of_line(b'{"row_hash": "ab12"}') == "ab12"
    # a nested object first could hold a row_hash of its own; an escaped value needs a real parse
    assert row_hash_of_line(b'{"input":{"row_hash":"inner"},"row_hash":"outer"}') is None
    assert row_hash_of_line(b'{"row_hash":"a\\"b"}') is None
    assert row_hash_of_line(b'{"error":"\\"row_hash\\":\\"fake\\"","row_hash":"real"}') == "real"
    assert row_hash_of_line(b"[1, 2]") is None
    assert row_hash_of_line(b'{"row_hash":1}') is None


def test_a_dataset_given_instead_of_rollouts_is_named_as_such(tmp_path: Path) -> None:
    dataset = tmp_path / "rows.jsonl"
    dataset.write_text('{"responses_create_params": {"input": "hi"}}\n{"foo": 1}\n')
    files = RolloutFiles([dataset])
    assert list(files.rows()) == []
    assert files.report.skipped == {"dataset_row": 1, "not_a_record": 1}
    (explained_row,) = [line for line in files.report.explained() if "dataset rows" in line]
    assert "pass the file ng_collect_rollouts wrote" in explained_row and f"{dataset}:1" in explained_row
