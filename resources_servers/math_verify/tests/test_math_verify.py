"""math_verify through real HTTP on loopback: answer extraction, equivalence through the math-verify library,
several-answer refusal, timeouts, sessions, the example data, and whole collections on the emulator."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.emulator.policy import wrong_answer
from nemo_gym.http.server_client import SESSION_HEADER
from nemo_gym.testing.cluster import assistant_message as message
from nemo_gym.testing.cluster import serve_resources_server
from nemo_gym.testing.emulated import collect_environment_on_emulator
from resources_servers.math_verify.answers import (
    MAX_ANSWER_CHARS,
    MAX_CANDIDATES,
    extract_candidates,
    final_assistant_text,
)
from resources_servers.math_verify.checker import CheckerPool, Judgement, judge

FOLDER = Path(__file__).resolve().parents[1]
EXAMPLE_DATA = FOLDER / "data" / "example.jsonl"
STRONG, WEAK = "openai/gpt-4o-mini", "meta-llama/llama-3.1-8b-instruct"


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    yield from serve_resources_server("math_verify")


# ---------------------------------------------------------------------------------------------- helpers


def row_for(gold: Any, question: str = "How much?") -> dict[str, Any]:
    return {"expected_answer": gold, "responses_create_params": {"input": [{"role": "user", "content": question}]}}


def verify(
    client: httpx.Client,
    output: list[dict[str, Any]],
    *,
    row: dict[str, Any] | None = None,
    session_id: str | None = None,
) -> httpx.Response:
    headers = {SESSION_HEADER: session_id} if session_id else {}
    return client.post(
        "/verify", json={"row": row if row is not None else {}, "response": {"output": output}}, headers=headers
    )


def score(client: httpx.Client, gold: str, text: str) -> dict[str, Any]:
    """Seed a session for `gold`, verify a reply whose final message is `text`; the verdict."""
    seeded = client.post("/seed_session", json={"row": row_for(gold)})
    assert seeded.status_code == 200, seeded.text
    response = verify(client, [message(text)], session_id=seeded.json()["session_id"])
    assert response.status_code == 200, response.text
    return response.json()


def example_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EXAMPLE_DATA.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------- extraction


@pytest.mark.parametrize(
    ("text", "source", "candidates"),
    [
        ("Let me work it out. The answer is \\boxed{3/4}.", "boxed", ["3/4"]),
        ("so $\\boxed{\\frac{3}{4}}$ cups", "boxed", ["\\frac{3}{4}"]),
        ("\\boxed{\\frac{3}{4}\\text{ cup}}", "boxed", ["\\frac{3}{4}\\text{ cup}"]),
        ("\\fbox{12}", "boxed", ["12"]),
        ("\\boxed{3} and also \\boxed{4}", "boxed", ["3", "4"]),
        ("\\boxed{12} ... checking: \\boxed{12}", "boxed", ["12"]),
        ("\\boxed{3 \\text{ or } 4}", "boxed", ["3", "4"]),
        ("\\boxed{3, 4}", "boxed", ["3", "4"]),
        ("\\boxed{1,200}", "boxed", ["1,200"]),
        ("\\boxed{3;4}", "boxed", ["3", "4"]),
        ("\\boxed{3 \\quad 4}", "boxed", ["3", "4"]),
        ("\\boxed{5 7 9}", "boxed", ["5", "7", "9"]),
        ("\\boxed{35%}", "boxed", ["35\\%"]),
        ("\\boxed{$12$}", "boxed", ["12"]),
        ("<think>maybe \\boxed{5}</think>So \\boxed{6}.", "boxed", ["6"]),
        ("The answer is 42 km.", "answer_phrase", ["42 km"]),
        ("Final answer: **8.85**", "answer_phrase", ["8.85"]),
        ("The answer is 3 or 4.", "answer_phrase", ["3", "4"]),
        ("answer: 7\nAnswer = 9", "answer_phrase", ["9"]),
    ],
)
def test_candidates_are_boxes_or_the_last_answer_phrase(text: str, source: str, candidates: list[str]) -> None:
    extraction = extract_candidates(text)
    assert (extraction.source, extraction.candidates, extraction.problem) == (source, candidates, None)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "no final assistant message text"),
        ("   \n ", "no final assistant message text"),
        ("<think>\\boxed{12}</think>", "no final assistant message text"),
        ("The rolls cost 12 and 15 dollars.", "no final answer found"),
        ("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15", "no final answer found"),
        ("\\boxed{12", "no final answer found"),
        ("\\boxed{}", "the final answer is empty"),
        ("\\boxed{ }", "the final answer is empty"),
        ("\\boxed{" + "1+" * MAX_ANSWER_CHARS + "1}", f"at most {MAX_ANSWER_CHARS} are checked"),
        ("".join(f"\\boxed{{{n}}}" for n in range(MAX_CANDIDATES + 1)), f"{MAX_CANDIDATES + 1} different candidate"),
    ],
)
def test_replies_without_a_usable_final_answer(text: str, problem: str) -> None:
    assert problem in (extract_candidates(text).problem or "")


def test_only_the_last_assistant_message_is_read() -> None:
    reasoning = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "\\boxed{1}"}]}
    assert final_assistant_text([message("\\boxed{1}"), message("\\boxed{2}"), reasoning]) == "\\boxed{2}"
    assert final_assistant_text([{"role": "assistant", "content": "\\boxed{3}"}]) == "\\boxed{3}"
    assert final_assistant_text([message("\\boxed{1}"), {"type": "function_call", "name": "x"}]) == ""
    assert final_assistant_text([{"role": "user", "content": "\\boxed{1}"}]) == ""
    assert final_assistant_text([]) == ""


# ---------------------------------------------------------------------------------------------- the checker


@pytest.mark.parametrize(
    ("gold", "answer"),
    [
        ("3/4", "3/4"),
        ("3/4", "0.75"),
        ("3/4", "\\frac{3}{4}"),
        ("3/4", "\\dfrac34"),
        ("3/4", "0.750"),
        ("3/4", "\\frac{6}{8}"),
        ("3/4", "3/4 \\text{ cup}"),
        ("12", "12 \\text{ km}"),
        ("12", "12 km"),
        ("12", "\\$12"),
        ("12", "12.0"),
        ("12", "x = 12"),
        ("35", "35\\%"),
        ("1200", "1,200"),
        ("5/2", "2\\frac{1}{2}"),
        ("-11", "-11^\\circ"),
        ("8.85", "\\$8.85"),
    ],
)
def test_equivalent_forms_are_accepted(gold: str, answer: str) -> None:
    judgement = judge(gold, [answer])
    assert judgement.equivalent, judgement
    assert judgement.distinct == [answer]


@pytest.mark.parametrize(
    ("gold", "answer"),
    [
        ("3/4", "4/3"),
        ("3/4", "0.7"),
        ("3/4", "not 3/4"),
        ("3/4", "75\\%"),
        ("12", "13"),
        ("12", "12 dollars"),
        ("-11", "11"),
        ("5/12", "5"),
        ("12", "abc"),
        ("12", "\\text{twelve}"),
    ],
)
def test_other_values_are_not_equivalent(gold: str, answer: str) -> None:
    assert not judge(gold, [answer]).equivalent


def test_equivalent_candidates_collapse_and_different_ones_do_not() -> None:
    assert judge("3/4", ["3/4", "0.75", "\\frac{3}{4}"]).distinct == ["3/4"]
    several = judge("3/4", ["3/4", "4/3"])
    assert several.distinct == ["3/4", "4/3"] and not several.equivalent


def test_the_checker_works_off_the_main_thread() -> None:
    """math_verify's signal timeouts raise outside the main thread; judge turns them off there."""
    results: list[Any] = []
    thread = threading.Thread(target=lambda: results.append(judge("3/4", ["0.75"])))
    thread.start()
    thread.join(60)
    assert results and results[0].equivalent and results[0].failure is None


def test_a_cancelled_check_does_not_leak_its_reply_into_the_next_one() -> None:
    async def scenario() -> Judgement:
        pool = CheckerPool(size=1, deadline_s=10)
        await pool.start()
        try:
            slow = asyncio.create_task(pool.judge("12", ["9^{9^{9^{9}}}"]))
            await asyncio.sleep(0.3)
            slow.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slow
            return await pool.judge("3/4", ["0.75"])
        finally:
            await pool.close()

    judgement = asyncio.run(scenario())
    assert judgement.equivalent and judgement.distinct == ["0.75"] and judgement.gold_value == "3/4"


# ---------------------------------------------------------------------------------------------- /verify


def test_health(client: httpx.Client) -> None:
    assert client.get("/health").json()["status"] == "ok"
    assert client.get("/tools").json() == {"tools": []}


@pytest.mark.parametrize(
    ("gold", "text"),
    [
        ("3/4", "Let me work it out. The answer is \\boxed{3/4}."),
        ("3/4", "Half plus a quarter is \\boxed{0.75}."),
        ("3/4", "$\\boxed{\\frac{3}{4}}$"),
        ("3/4", "\\boxed{\\frac{3}{4} \\text{ of a cup}}"),
        ("0.75", "\\boxed{3/4}"),
        ("42", "Distance = 18 x 7/3, so \\boxed{42 \\text{ km}}."),
        ("42", "The answer is 42 km."),
        ("12", "Final answer: 12"),
        ("35", "So 35% walk: \\boxed{35\\%}"),
        ("-11", "4 - 15 = \\boxed{-11}"),
        ("15/8", "\\boxed{1.875} which is \\boxed{\\frac{15}{8}}"),
    ],
)
def test_right_answers_score_one(client: httpx.Client, gold: str, text: str) -> None:
    verdict = score(client, gold, text)
    assert verdict["reward"] == 1.0, verdict
    assert verdict["gold"] == gold
    assert verdict["extracted_answer"] is not None and verdict["extracted_answer"] in text.replace("%", "\\%")
    reason = verdict["reasons"][0]
    assert reason.startswith("final answer ") and "is equivalent to the expected" in reason


def test_the_verdict_reports_what_was_read(client: httpx.Client) -> None:
    verdict = score(client, "3/4", "The answer is \\boxed{0.75}.")
    assert verdict == {
        "reward": 1.0,
        "extracted_answer": "0.75",
        "extracted_value": "0.750000000000000",
        "gold": "3/4",
        "answer_source": "boxed",
        "candidates": ["0.75"],
        "reasons": ["final answer 0.75 (read as 0.750000000000000) is equivalent to the expected 3/4"],
    }


@pytest.mark.parametrize(
    ("gold", "text", "extracted"),
    [
        ("3/4", "\\boxed{4/3}", "4/3"),
        ("12", "\\boxed{13}", "13"),
        ("5/12", "Let me work it out. The answer is \\boxed{not 5/12}.", "not 5/12"),
        ("35", "\\boxed{0.35}", "0.35"),
    ],
)
def test_wrong_answers_score_zero(client: httpx.Client, gold: str, text: str, extracted: str) -> None:
    verdict = score(client, gold, text)
    assert verdict["reward"] == 0.0
    assert verdict["extracted_answer"] == extracted
    assert f"is not equivalent to the expected {gold}" in verdict["reasons"][0]


@pytest.mark.parametrize(
    "output",
    [
        [],
        [message("")],
        [message("I am not sure.")],
        [message("#$%^&*( }{ \\boxed{")],
        [message("\\boxed{}")],
        [{"role": "user", "content": "\\boxed{12}"}],
        [message("\\boxed{12}"), {"type": "function_call", "call_id": "c1", "name": "calculator", "arguments": "{}"}],
        [{"type": "reasoning", "summary": [{"type": "summary_text", "text": "\\boxed{12}"}]}],
        [{"type": "message", "role": "assistant", "content": None}],
        ["not an item", 7],
    ],
)
def test_malformed_replies_score_zero(client: httpx.Client, output: list[Any]) -> None:
    response = verify(client, output, row=row_for("12"))
    assert response.status_code == 200, response.text
    verdict = response.json()
    assert verdict["reward"] == 0.0
    assert verdict["extracted_answer"] is None
    assert verdict["reasons"] and verdict["reasons"][0]


@pytest.mark.parametrize(
    "text",
    [
        "\\boxed{12} or maybe \\boxed{13}",
        "\\boxed{13} hmm, no: \\boxed{12}",
        "\\boxed{12 \\text{ or } 13}",
        "\\boxed{11, 12, 13}",
        "The answer is 12 or 13.",
        "The answer is 10 11 12 13 14",
        "\\boxed{10 11 12 13 14}",
        "".join(f"\\boxed{{{n}}}" for n in range(1, 41)),
        "The answer is " + ", ".join(str(n) for n in range(1, 51)) + ".",
        "\\boxed{12}\\boxed{x}",
    ],
)
def test_several_different_answers_never_score(client: httpx.Client, text: str) -> None:
    verdict = score(client, "12", text)
    assert verdict["reward"] == 0.0
    assert verdict["extracted_answer"] is None
    assert len(verdict["candidates"]) > 1
    reason = verdict["reasons"][0]
    assert "several different final answers" in reason or "different candidate answers" in reason


def test_the_same_answer_twice_in_different_forms_is_one_answer(client: httpx.Client) -> None:
    verdict = score(client, "12", "\\boxed{12} and in words, \\boxed{12.0 \\text{ km}}")
    assert verdict["reward"] == 1.0
    assert verdict["candidates"] == ["12"]


def test_an_answer_hidden_in_thinking_does_not_count(client: httpx.Client) -> None:
    assert score(client, "12", "<think>It is \\boxed{12}.</think>I think it is \\boxed{13}.")["reward"] == 0.0
    assert score(client, "12", "<think>Not \\boxed{13}.</think>\\boxed{12}")["reward"] == 1.0


def test_an_overlong_answer_is_not_checked(client: httpx.Client) -> None:
    verdict = score(client, "12", "\\boxed{12" + " " * 10 + "+0" * MAX_ANSWER_CHARS + "}")
    assert verdict["reward"] == 0.0
    assert f"at most {MAX_ANSWER_CHARS} are checked" in verdict["reasons"][0]


def test_a_pathological_power_scores_zero_and_the_server_keeps_answering(client: httpx.Client) -> None:
    verdict = score(client, "12", "\\boxed{9^{9^{9^{9}}}}")
    assert verdict["reward"] == 0.0 and verdict["reasons"], verdict
    assert score(client, "12", "\\boxed{12}")["reward"] == 1.0


def test_a_check_beyond_the_deadline_is_killed_and_its_worker_replaced() -> None:
    for client in serve_resources_server("math_verify", checker_workers=1, check_timeout_s=0.5):
        verdict = score(client, "12", "\\boxed{9^{9^{9^{9}}}}")
        assert verdict["reward"] == 0.0 and verdict["extracted_answer"] is None
        assert verdict["reasons"] == ["the answer could not be checked: checking took longer than 0.5s"]
        # The only worker was killed; a new one serves the next check.
        assert score(client, "3/4", "\\boxed{0.75}")["reward"] == 1.0


def test_concurrent_checks_are_all_scored(client: httpx.Client) -> None:
    cases = [
        ("3/4", "\\boxed{0.75}", 1.0),
        ("12", "\\boxed{13}", 0.0),
        ("5/12", "\\boxed{\\frac{5}{12}}", 1.0),
        ("12", "\\boxed{3} \\boxed{4}", 0.0),
    ] * 4
    with ThreadPoolExecutor(8) as pool:
        rewards = list(pool.map(lambda case: score(client, case[0], case[1])["reward"], cases))
    assert rewards == [case[2] for case in cases]


# ---------------------------------------------------------------------------------------------- rows and sessions


@pytest.mark.parametrize("row", [{}, row_for(None), row_for(""), row_for("  "), row_for(True), row_for([3])])
def test_a_row_without_expected_answer_is_refused(client: httpx.Client, row: dict[str, Any]) -> None:
    seeded = client.post("/seed_session", json={"row": row})
    assert seeded.status_code == 422, seeded.text
    assert seeded.json()["error"]["type"] == "invalid_row"
    assert "expected_answer" in seeded.json()["error"]["message"]
    response = verify(client, [message("\\boxed{1}")], row=row)
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_row"


def test_a_numeric_expected_answer_is_read_as_text(client: httpx.Client) -> None:
    verdict = verify(client, [message("\\boxed{2.5}")], row=row_for(2.5)).json()
    assert verdict["reward"] == 1.0 and verdict["gold"] == "2.5"


def test_the_row_comes_from_the_session_and_verify_ends_it(client: httpx.Client) -> None:
    session_id = client.post("/seed_session", json={"row": row_for("7")}).json()["session_id"]
    first = verify(client, [message("\\boxed{7}")], row=row_for("8"), session_id=session_id)
    assert first.json()["reward"] == 1.0 and first.json()["gold"] == "7"
    again = verify(client, [message("\\boxed{7}")], session_id=session_id)
    assert again.status_code == 404 and again.json()["error"]["type"] == "unknown_session"


def test_verify_needs_a_response(client: httpx.Client) -> None:
    response = client.post("/verify", json={"row": row_for("1")})
    assert response.status_code == 422
    assert "response" in response.json()["error"]["message"]


# ---------------------------------------------------------------------------------------------- example data


def test_example_data_rows_are_well_formed() -> None:
    rows = example_rows()
    assert len(rows) >= 24
    assert len({row["id"] for row in rows}) == len(rows)
    questions = [row["responses_create_params"]["input"][-1]["content"] for row in rows]
    assert len(set(questions)) == len(rows), "the emulator's answer key is keyed by question"
    for row in rows:
        first, last = row["responses_create_params"]["input"]
        assert first["role"] == "developer" and "\\boxed{" in first["content"], row["id"]
        assert last["role"] == "user" and last["content"].strip(), row["id"]
        assert "tools" not in row["responses_create_params"]
        assert isinstance(row["expected_answer"], str) and row["expected_answer"] == row["expected_answer"].strip()
    kinds = {row["kind"] for row in rows}
    assert {"integer", "fraction", "decimal", "percent", "algebra", "units"} <= kinds
    golds = [row["expected_answer"] for row in rows]
    assert any("/" in g for g in golds) and any("." in g for g in golds) and any(g.startswith("-") for g in golds)


def test_every_gold_is_a_number_math_verify_reads() -> None:
    for row in example_rows():
        judgement = judge(row["expected_answer"], [row["expected_answer"]])
        assert judgement.equivalent and judgement.gold_value, (row["id"], judgement)


def test_every_example_row_scores_its_answer_and_not_the_emulators_wrong_one(client: httpx.Client) -> None:
    for row in example_rows():
        gold = row["expected_answer"]
        for answer, reward in ((gold, 1.0), (wrong_answer(gold), 0.0)):
            session_id = client.post("/seed_session", json={"row": row}).json()["session_id"]
            text = f"Let me work it out. The answer is \\boxed{{{answer}}}."
            verdict = verify(client, [message(text)], session_id=session_id).json()
            assert verdict["reward"] == reward, (row["id"], answer, verdict)


# ---------------------------------------------------------------------------------------------- end to end


def _collect_on_emulator(model: str, output: Path) -> list[dict[str, Any]]:
    return collect_environment_on_emulator("math_verify", model, EXAMPLE_DATA, output)


def test_collection_on_the_emulator_separates_a_strong_and_a_weak_model(tmp_path: Path) -> None:
    rows = example_rows()
    strong = _collect_on_emulator(STRONG, tmp_path / "strong.jsonl")
    weak = _collect_on_emulator(WEAK, tmp_path / "weak.jsonl")
    for records in (strong, weak):
        assert len(records) == len(rows)
        assert all(r["error"] is None for r in records), [r["error"] for r in records if r["error"]]
        assert all(r["reward"] in (0.0, 1.0) for r in records)
    strong_rewards = [r["reward"] for r in strong]
    weak_rewards = [r["reward"] for r in weak]
    assert set(weak_rewards) == {0.0, 1.0}
    assert sum(strong_rewards) / len(strong) > sum(weak_rewards) / len(weak)
    assert all(reward == 1.0 for reward in strong_rewards)
    wrong = [r for r in weak if r["reward"] == 0.0]
    assert all("is not equivalent to the expected" in r["reasons"][0] for r in wrong)
