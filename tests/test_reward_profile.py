"""ng_reward_profile: pass@k and majority@k per row (exact, checked against enumerating every draw), the summary over
rows, agents and settings, filtering into a new input dataset that ng_collect_rollouts reads, and bad input counted
and explained, never a traceback."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from collections.abc import Hashable
from fractions import Fraction
from math import comb
from pathlib import Path
from typing import Any

import orjson
import pytest

from nemo_gym.cli.reward_profile import main
from nemo_gym.collection.inputs import read_rows, row_hash
from nemo_gym.collection.records import build_record
from nemo_gym.config.paths import project_root
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.protocol.types import RolloutRecord
from nemo_gym.testing.cluster import environment_blocks
from nemo_gym.testing.emulated import EMULATOR_KEY, collect_rows, emulated_cluster
from nemo_gym.training.passk import AnswerTally, ks_up_to, majority_at_k, pass_at_k
from nemo_gym.training.profile import OrderedOutput, ProfileSettings, profile, profile_line

MCQA_DATA = project_root() / "resources_servers/mcqa/data/example.jsonl"
MATH = "math_verify_simple_agent"
WEATHER = "simple_weather_simple_agent"

# ---------------------------------------------------------------------------------------------- pass@k, majority@k


def brute_pass_at_k(correct: list[bool], k: int) -> Fraction:
    draws = list(itertools.combinations(correct, k))
    return Fraction(sum(any(draw) for draw in draws), len(draws))


def brute_majority_at_k(votes: list[tuple[Hashable | None, bool]], k: int) -> Fraction:
    """Every k-subset: the answers' counts, the most common wins, a tie is a fair draw; the winner's correctness is
    the share of its rollouts that were correct; no answer at all is wrong."""
    total = Fraction(0)
    draws = list(itertools.combinations(range(len(votes)), k))
    for draw in draws:
        counts = Counter(votes[i][0] for i in draw if votes[i][0] is not None)
        if not counts:
            continue
        top = max(counts.values())
        winners = [answer for answer, count in counts.items() if count == top]
        for answer in winners:
            members = [right for given, right in votes if given == answer]
            total += Fraction(sum(members), len(members)) / len(winners)
    return total / len(draws)


def test_pass_at_k_is_exactly_the_share_of_draws_with_a_correct_rollout_for_every_small_case() -> None:
    for n in range(1, 9):
        for correct in range(n + 1):
            flags = [True] * correct + [False] * (n - correct)
            for k in range(1, n + 1):
                assert pass_at_k(n, correct, k) == float(brute_pass_at_k(flags, k)), (n, correct, k)


def test_pass_at_k_stays_exact_where_one_minus_a_ratio_would_lose_digits() -> None:
    assert pass_at_k(10_000, 1, 1) == 1e-4  # 1 - C(9999,1)/C(10000,1) in floats gives 9.999999999998899e-05
    assert pass_at_k(3_000, 7, 3) == float(1 - Fraction(comb(2_993, 3), comb(3_000, 3)))
    assert pass_at_k(2_048, 0, 1_024) == 0.0 and pass_at_k(2_048, 1_025, 1_024) == 1.0


@pytest.mark.parametrize(("n", "correct", "k"), [(4, 1, 0), (4, 1, 5), (4, 5, 2), (0, 0, 1)])
def test_pass_at_k_refuses_impossible_arguments(n: int, correct: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, correct, k)


def test_the_ks_are_powers_of_two_up_to_the_number_of_rollouts() -> None:
    assert [ks_up_to(n) for n in (0, 1, 2, 5, 8, 9)] == [[], [1], [1, 2], [1, 2, 4], [1, 2, 4, 8], [1, 2, 4, 8]]


def test_majority_at_k_is_exactly_the_expected_vote_over_every_draw_on_random_small_rows() -> None:
    rng = random.Random(3)
    for _ in range(150):
        n = rng.randint(1, 8)
        answers = [None, "A", "B", "C", "D"][: rng.randint(2, 5)]
        votes = [(rng.choice(answers), rng.random() < 0.5) for _ in range(n)]
        tally = AnswerTally.of(votes)
        for k in range(1, n + 1):
            assert majority_at_k(tally, k) == float(brute_majority_at_k(votes, k)), (votes, k)


@pytest.mark.parametrize(
    ("votes", "k", "expected"),
    [
        ([("A", True), ("B", False)], 2, 0.5),  # one each: the tie is a fair draw
        ([("A", True), ("B", False), ("C", False)], 3, 1 / 3),  # a three-way tie
        ([("A", True), (None, False), (None, False)], 3, 1.0),  # rollouts without an answer do not vote
        ([(None, False), (None, False)], 2, 0.0),  # nobody answered: wrong
        ([("A", True)] * 2 + [("B", False)] * 3, 5, 0.0),  # pass@5 is 1, but the vote goes the wrong way
        ([("A", True)] * 3 + [("B", False)] * 2, 5, 1.0),
        ([("A", True)] * 3 + [("B", False)] * 2, 1, 0.6),  # majority@1 is the share of correct answers
    ],
)
def test_majority_at_k_cases(votes: list[tuple[str | None, bool]], k: int, expected: float) -> None:
    assert majority_at_k(AnswerTally.of(votes), k) == pytest.approx(expected, abs=1e-15)


def test_an_answer_scored_differently_across_rollouts_counts_by_the_share_it_was_right() -> None:
    votes = [("A", True), ("A", False), ("B", False)]
    assert majority_at_k(AnswerTally.of(votes), 3) == 0.5
    assert majority_at_k(AnswerTally.of(votes), 2) == float(brute_majority_at_k(votes, 2))


# ---------------------------------------------------------------------------------------------- records and files


def row(i: int, agent: str | None = None) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": f"q{i}",
        "expected_answer": str(i),
        "responses_create_params": {"input": [{"role": "user", "content": f"What is {i} + 0? Box it."}]},
    }
    if agent is not None:
        data["agent_ref"] = {"type": "responses_api_agents", "name": agent}
    return data


def record(
    i: int,
    repeat: int,
    reward: float | None,
    *,
    answer: str | None = "?",
    error: str | None = None,
    agent: str = MATH,
    fingerprint: str = "f1",
    model: str = "openai/gpt-4o-mini",
    agent_ref: bool = False,
) -> RolloutRecord:
    """A record as the collector builds it for math_verify: its verdict fields beside the reward."""
    result = None
    if error is None:
        given = (str(i) if reward else "0") if answer == "?" else answer
        text = f"The answer is \\boxed{{{given}}}." if given is not None else "I do not know."
        result = {
            "reward": reward,
            "extracted_answer": given,
            "gold": str(i),
            "reasons": ["..."],
            "response": {
                "id": f"resp-{i}-{repeat}",
                "model": model,
                "output": [
                    {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": text}]}
                ],
                "nemo_gym": {"models": [model]},
            },
        }
    return build_record(
        row=row(i, agent if agent_ref else None),
        row_index=i,
        repeat_index=repeat,
        agent_name=agent,
        result=result,
        error=error,
        latency_s=0.2,
        fingerprint=fingerprint,
    )


def write(path: Path, lines: list[Any]) -> Path:
    with path.open("wb") as handle:
        for line in lines:
            handle.write(line if isinstance(line, bytes) else orjson.dumps(line) + b"\n")
    return path


def run(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """ng_reward_profile with `args`; its output (it must succeed)."""
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    assert exited.value.code == 0, err
    return out


def run_fails(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(list(args))
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    return int(exited.value.code or 0), err


def lines_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def rewards_file(tmp_path: Path) -> Path:
    """Five rows with known figures (written out of order, as a collection finishes them) and every kind of bad
    line: q0 always solved, q1 never, q2 half, q3 three of four with a failure beside, q4 failures only."""
    lines: list[Any] = [
        *(record(2, k, reward) for k, reward in enumerate([1.0, 0.0, 1.0, 0.0])),
        *(record(0, k, 1.0) for k in range(4)),
        *(record(1, k, 0.0, answer=None if k == 0 else "?") for k in range(4)),
        *(record(3, k, reward) for k, reward in enumerate([1.0, 1.0, 0.0, 1.0])),
        record(3, 4, None, error="ServerCallError: policy_model answered 502"),
        record(4, 0, None, error="ServerCallError: policy_model answered 502"),
        record(0, 0, 1.0),  # a copy of a rollout already written
        {**record(2, 9, 1.0), "reward": None},  # no reward and no error
        row(7),  # a dataset row, not a record
        orjson.dumps(record(1, 9, 1.0))[:150],  # torn: a crash mid-write
    ]
    return write(tmp_path / "rollouts.jsonl", lines)


# ---------------------------------------------------------------------------------------------- the command


def test_each_row_gets_its_counts_rewards_pass_at_k_and_majority_at_k_in_dataset_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = rewards_file(tmp_path)
    output = tmp_path / "out" / "profile.jsonl"
    run(capsys, f"+input_jsonl_fpath={source}", f"+output_jsonl_fpath={output}")
    lines = lines_of(output)
    assert [line["row_index"] for line in lines] == [0, 1, 2, 3, 4]
    q0, q1, q2, q3, q4 = lines
    assert q0["row_hash"] == row_hash(row(0)) and q0["agent_name"] == MATH
    assert (q0["fingerprints"], q0["models"]) == (["f1"], ["openai/gpt-4o-mini"])
    assert (q0["rollouts"], q0["failed"], q0["correct"], q0["pass_rate"]) == (4, 0, 4, 1.0)
    assert q0["pass_at_k"] == {"1": 1.0, "2": 1.0, "4": 1.0} and q0["majority_at_k"] == {"1": 1.0, "2": 1.0, "4": 1.0}
    assert q1["pass_at_k"] == {"1": 0.0, "2": 0.0, "4": 0.0} and q1["answered"] == 3
    assert (q2["mean_reward"], q2["std_reward"], q2["min_reward"], q2["max_reward"]) == (0.5, 0.5, 0.0, 1.0)
    assert q2["pass_at_k"] == {"1": 0.5, "2": 5 / 6, "4": 1.0}
    assert q2["majority_at_k"]["2"] == 0.5  # 4 of 6 pairs split 1-1 (a fair draw), 1 is right-right, 1 wrong-wrong
    assert (q3["rollouts"], q3["failed"], q3["correct"]) == (4, 1, 3)
    assert q3["pass_at_k"]["2"] == 1.0 and q3["majority_at_k"]["4"] == 1.0
    assert (q4["rollouts"], q4["failed"], q4["pass_rate"], q4["mean_reward"], q4["pass_at_k"]) == (0, 1, None, None, {})
    assert not (tmp_path / "out" / "profile.jsonl.partial").exists()


def test_the_summary_says_how_rows_spread_and_what_was_skipped_and_why(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = rewards_file(tmp_path)
    output = tmp_path / "profile.jsonl"
    out = run(capsys, f"+input_jsonl_fpath={source}", f"+output_jsonl_fpath={output}")
    summary = json.loads((tmp_path / "profile.summary.json").read_text())
    assert (summary["rows"], summary["rollouts"], summary["failed"], summary["rows_only_failed"]) == (5, 16, 2, 1)
    assert (summary["always_solved"], summary["never_solved"], summary["mixed"]) == (1, 1, 2)
    assert summary["rows_with_reward_spread"] == 2
    assert summary["mean_reward"] == pytest.approx((1 + 0 + 0.5 + 0.75) / 4)
    assert summary["pass_at_k"]["1"] == {"mean": pytest.approx((1 + 0 + 0.5 + 0.75) / 4), "rows": 4}
    assert summary["pass_at_k"]["4"] == {"mean": 0.75, "rows": 4}
    assert [b["rows"] for b in summary["pass_rate_histogram"]] == [1, 0, 0, 0, 0, 1, 0, 1, 0, 1]
    assert summary["pass_rate_histogram"][5] == {"from": 0.5, "to": 0.6, "rows": 1}
    assert summary["read"]["skipped"] == {"duplicate": 1, "failed": 2, "no_reward": 1, "dataset_row": 1, "not_json": 1}
    assert summary["read"]["skipped_first_at"]["not_json"] == f"{source}:22"
    assert any("1 rows have only failed rollouts" in w for w in summary["warnings"])
    for text in (
        "5 rows, 16 rollouts (2 failed) from 1 file(s)",
        "a rollout is correct when its reward >= 1",
        "1 always solved, 1 never solved, 2 mixed",
        "skipped 1 lines that are not JSON (torn by a crash mid-write",
        "skipped 1 dataset rows (`responses_create_params`, no `row_hash`)",
        "skipped 1 records without a numeric `reward`",
        "skipped 1 copies of a rollout already read",
        "Rows that were never collected have no rollouts and are not in the profile.",
        "[0.9, 1.0]       1",
    ):
        assert text in out, text
    assert "per agent:" not in out and "per settings" not in out  # one of each


def test_filters_write_the_original_rows_that_ng_collect_rollouts_reads_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = rewards_file(tmp_path)

    def selected(*rule: str) -> list[str]:
        chosen = tmp_path / "chosen.jsonl"
        run(
            capsys,
            f"+input_jsonl_fpath={source}",
            f"+output_jsonl_fpath={tmp_path / 'p.jsonl'}",
            f"+filter_output_jsonl_fpath={chosen}",
            *rule,
        )
        rows = read_rows(chosen) if chosen.stat().st_size else []
        assert all(r == row(int(r["id"][1:])) for r in rows)  # exactly as collected
        return [r["id"] for r in rows]

    assert selected("+keep=mixed") == ["q2", "q3"]
    assert selected("+keep=unsolved") == ["q1"]  # q4 has no usable rollout: never selected
    assert selected("+keep=solved") == ["q0"]
    assert selected("+min_mean_reward=0", "+max_mean_reward=1") == ["q2", "q3"]  # strict: 0 < mean < 1
    assert selected("+min_mean_reward=0.5") == ["q0", "q3"]  # 0.5 itself is not above 0.5
    assert selected("+max_pass_rate=0.75") == ["q1", "q2"]  # nor 0.75 below 0.75
    assert selected("+min_pass_rate=0", "+max_pass_rate=1") == ["q2", "q3"]
    assert selected("+keep=mixed", "+max_pass_rate=0.6") == ["q2"]  # every condition must hold
    summary = json.loads((tmp_path / "p.summary.json").read_text())
    assert summary["filter"]["rows_written"] == 1
    assert summary["filter"]["rule"].startswith("0 < pass_rate < 1") and "pass_rate < 0.6" in summary["filter"]["rule"]
    assert selected("+keep=solved", "+max_mean_reward=0.5") == []
    assert any(
        "no row matched the filter" in w for w in json.loads((tmp_path / "p.summary.json").read_text())["warnings"]
    )


def test_a_row_selected_under_several_agents_is_written_once_and_keeps_its_agent_ref(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [
        *(record(i, k, float(k % 2), agent=MATH, agent_ref=True) for i in range(3) for k in range(2)),
        *(record(i, k, 1.0, agent=WEATHER, fingerprint="f2", agent_ref=True) for i in range(2) for k in range(4)),
        *(record(5, k, float(k == 0), agent=WEATHER, fingerprint="f2") for k in range(4)),
        *(record(5, k, float(k == 0), agent=MATH) for k in range(2)),
    ]
    source = write(tmp_path / "rollouts.jsonl", lines)
    chosen = tmp_path / "mixed.jsonl"
    out = run(
        capsys,
        f"+input_jsonl_fpath={source}",
        f"+output_jsonl_fpath={tmp_path / 'p.jsonl'}",
        f"+filter_output_jsonl_fpath={chosen}",
        "+keep=mixed",
    )
    rows = read_rows(chosen)
    assert [r["id"] for r in rows] == ["q0", "q1", "q2", "q5"]  # q5 is mixed under both agents: written once
    assert rows[0]["agent_ref"] == {"type": "responses_api_agents", "name": MATH}
    summary = json.loads((tmp_path / "p.summary.json").read_text())
    math, weather = summary["agents"][MATH], summary["agents"][WEATHER]
    assert (math["rows"], math["rollouts"], math["mixed"], math["never_solved"]) == (4, 8, 4, 0)
    assert (weather["rows"], weather["rollouts"], weather["always_solved"], weather["mixed"]) == (3, 12, 2, 1)
    assert weather["pass_at_k"]["4"] == {"mean": 1.0, "rows": 3}
    assert summary["rows_pooling_settings"] == 0  # another agent is another line, not a pooled setting
    assert summary["dataset_rows"] == 6 and summary["rows"] == 7  # rows naming another agent are other rows
    assert "6 rows (7 profile lines: one per row, agent)" in out
    assert f"  {MATH}: 4 rows, 8 rollouts, pass@1 0.500, 0 always / 0 never solved / 4 mixed" in out

    only = tmp_path / "only.jsonl"
    run(capsys, f"+input_jsonl_fpath={source}", f"+output_jsonl_fpath={only}", f"+agent_name={WEATHER}")
    assert {line["agent_name"] for line in lines_of(only)} == {WEATHER}
    assert json.loads((tmp_path / "only.summary.json").read_text())["read"]["skipped"] == {"other_agent": 8}


def test_majority_needs_the_answer_field_and_another_field_can_be_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = [{k: v for k, v in record(0, k, float(k < 2)).items() if k != "extracted_answer"} for k in range(4)]
    source = write(tmp_path / "weather.jsonl", [{**r, "city": "Paris" if r["reward"] else "Rome"} for r in plain])
    output = tmp_path / "p.jsonl"
    out = run(capsys, f"+input_jsonl_fpath={source}", f"+output_jsonl_fpath={output}")
    assert lines_of(output)[0]["majority_at_k"] is None
    assert "majority@k: no rollout records `extracted_answer`" in out and "+answer_key=..." in out
    run(capsys, f"+input_jsonl_fpath={source}", f"+output_jsonl_fpath={output}", "+answer_key=city")
    assert lines_of(output)[0]["majority_at_k"] == {"1": 0.5, "2": 0.5, "4": 0.5}
    run(capsys, f"+input_jsonl_fpath={source}", f"+output_jsonl_fpath={output}", "+answer_key=null")
    assert lines_of(output)[0]["majority_at_k"] is None


def test_graded_rewards_count_as_correct_from_the_pass_threshold(tmp_path: Path) -> None:
    records = [record(0, k, reward) for k, reward in enumerate([0.6, 0.8, 1.0, 0.2])]
    line = profile_line(records, [], threshold=0.7, answer_key=None)
    assert (line["correct"], line["pass_rate"], line["pass_at_k"]["2"]) == (2, 0.5, 5 / 6)
    assert profile_line(records, [], threshold=1.0, answer_key=None)["correct"] == 1


def test_rows_pooled_across_settings_are_flagged_and_row_and_settings_keeps_them_apart(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A real collection: mcqa on the OpenRouter emulator with a strong and a weaker model, two repeats each; the
    weaker one gets some rows wrong, so pooled rows are mixed while each model alone solves a row always or never."""
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], answer_keys=[MCQA_DATA]))
    files = []
    for model in ("openai/gpt-4o-mini", "meta-llama/llama-3.1-8b-instruct"):
        files.append(tmp_path / f"{model.split('/')[0]}.jsonl")
        with emulated_cluster(emulator, environment=environment_blocks("mcqa"), model=model) as config:
            collect_rows(config, MCQA_DATA, files[-1], agent_name="mcqa_simple_agent", num_repeats=2)
    inputs = f"+input_jsonl_fpath=[{files[0]},{files[1]}]"
    pooled = tmp_path / "pooled.jsonl"
    chosen = tmp_path / "mixed.jsonl"
    out = run(capsys, inputs, f"+output_jsonl_fpath={pooled}", f"+filter_output_jsonl_fpath={chosen}", "+keep=mixed")
    lines = lines_of(pooled)
    rows = len(read_rows(MCQA_DATA))
    assert len(lines) == rows and all(len(line["fingerprints"]) == 2 and line["rollouts"] == 4 for line in lines)
    assert all(line["answered"] == 4 and line["majority_at_k"] is not None for line in lines)
    mixed = [line for line in lines if 0 < line["pass_rate"] < 1]
    assert mixed and all(line["pass_rate"] == 0.5 and line["majority_at_k"]["4"] == 0.5 for line in mixed)
    assert f"{rows} rows pool rollouts collected with different settings" in out
    assert "+group_by=row_and_settings" in out
    assert [row_hash(r) for r in read_rows(chosen)] == [line["row_hash"] for line in mixed]
    summary = json.loads((tmp_path / "pooled.summary.json").read_text())
    by_model = {s["models"][0]: s for s in summary["settings"].values()}
    assert by_model["openai/gpt-4o-mini"]["pass_rate"] == 1.0
    assert by_model["meta-llama/llama-3.1-8b-instruct"]["pass_rate"] < 1.0
    assert by_model["openai/gpt-4o-mini"]["rows"] == rows

    apart = tmp_path / "apart.jsonl"
    out = run(capsys, inputs, f"+output_jsonl_fpath={apart}", "+group_by=row_and_settings")
    lines = lines_of(apart)
    assert len(lines) == 2 * rows and all(len(line["fingerprints"]) == 1 for line in lines)
    assert all(line["pass_rate"] in (0.0, 1.0) for line in lines)  # each model is consistent with itself
    assert "pool rollouts" not in out and f"{rows} rows ({2 * rows} profile lines" in out
    assert "per settings (fingerprint):" in out and "meta-llama/llama-3.1-8b-instruct" in out


# ---------------------------------------------------------------------------------------------- bad input


def test_files_without_a_usable_rollout_fail_with_what_was_skipped_and_write_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path / "rows.jsonl", [row(0), row(1), b"not json\n"])
    output = tmp_path / "p.jsonl"
    code, err = run_fails(capsys, f"+input_jsonl_fpath={source}", f"+output_jsonl_fpath={output}")
    assert code == 1
    assert f"no usable rollout in {source}: 3 lines read" in err
    assert "skipped 2 dataset rows" in err and "pass the file ng_collect_rollouts wrote" in err
    assert "skipped 1 lines that are not JSON" in err
    assert list(tmp_path.iterdir()) == [source]  # no profile, no partial file, no summary


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["+output_jsonl_fpath=p.jsonl"], "+input_jsonl_fpath is required: pass a rollouts file, or several"),
        (["+input_jsonl_fpath=missing.jsonl", "+output_jsonl_fpath=p.jsonl"], "missing.jsonl: no such file."),
        (["+input_jsonl_fpath=r.jsonl", "+output_jsonl_fpath=r.jsonl"], "is one of the inputs"),
        (
            ["+input_jsonl_fpath=r.jsonl", "+output_jsonl_fpath=p.jsonl", "+keep=mixed"],
            "+keep selects rows for a new input dataset: name the file with +filter_output_jsonl_fpath",
        ),
        (
            ["+input_jsonl_fpath=r.jsonl", "+output_jsonl_fpath=p.jsonl", "+filter_output_jsonl_fpath=h.jsonl"],
            "+filter_output_jsonl_fpath needs a rule: +keep=mixed|unsolved|solved",
        ),
        (
            [
                "+input_jsonl_fpath=r.jsonl",
                "+output_jsonl_fpath=p.jsonl",
                "+filter_output_jsonl_fpath=h.jsonl",
                "+min_pass_rate=0.5",
                "+max_pass_rate=0.5",
            ],
            "+min_pass_rate=0.5 >= +max_pass_rate=0.5: no row can be kept",
        ),
        (
            [
                "+input_jsonl_fpath=r.jsonl",
                "+output_jsonl_fpath=p.jsonl",
                "+filter_output_jsonl_fpath=r.jsonl",
                "+keep=solved",
            ],
            "+filter_output_jsonl_fpath=r.jsonl is one of the inputs",
        ),
        (
            ["+input_jsonl_fpath=r.jsonl", "+output_jsonl_fpath=p.jsonl", "+keep=hard", "+filter_output_jsonl_fpath=h"],
            "+keep='hard' is not valid: pass +keep=mixed, +keep=unsolved or +keep=solved",
        ),
        (
            ["+input_jsonl_fpath=r.jsonl", "+output_jsonl_fpath=p.jsonl", "+pass_treshold=0.5"],
            "Unknown setting +pass_treshold (did you mean +pass_threshold?)",
        ),
        (["+input_jsonl_fpath=r.jsonl", "+output_jsonl_fpath=p.jsonl", "+group_by=model"], "+group_by=row (pool"),
    ],
)
def test_bad_settings_exit_2_with_what_to_pass(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    monkeypatch.chdir(tmp_path)
    write(tmp_path / "r.jsonl", [record(0, 0, 1.0)])
    code, err = run_fails(capsys, *args)
    assert code == 2 and err.startswith("error: ") and message in err, err


def test_an_output_that_cannot_be_written_is_an_error_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = write(tmp_path / "r.jsonl", [record(0, 0, 1.0)])
    blocker = write(tmp_path / "file", [])
    code, err = run_fails(capsys, f"+input_jsonl_fpath={source}", f"+output_jsonl_fpath={blocker}/p.jsonl")
    assert code == 2 and f"Cannot write {blocker}/p.jsonl" in err


def test_outputs_come_out_in_row_index_order_with_a_rows_lines_together(tmp_path: Path) -> None:
    output = OrderedOutput(tmp_path / "o.jsonl")
    for index, text in [(5, b"e1\n"), (None, b"unknown\n"), (2, b"b\n"), (5, b"e2\n"), (0, b"a\n")]:
        output.write(index, text)
    output.commit()
    assert (tmp_path / "o.jsonl").read_bytes() == b"a\nb\ne1\ne2\nunknown\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.jsonl"]


def test_the_library_call_returns_the_summary_it_writes(tmp_path: Path) -> None:
    source = rewards_file(tmp_path)
    settings = ProfileSettings(input_jsonl_fpath=[source], output_jsonl_fpath=tmp_path / "p.jsonl")
    summary = profile(settings)
    assert summary == json.loads((tmp_path / "p.summary.json").read_text())
    assert summary["majority_at_k"]["4"] == {"mean": pytest.approx((1 + 0 + 0.5 + 1) / 4), "rows": 4}
