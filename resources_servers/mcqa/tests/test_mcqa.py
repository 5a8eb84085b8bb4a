"""mcqa: which letter a free-text reply chooses (a table of cases), /verify through real HTTP on loopback, the
example data, and whole collections on the OpenRouter emulator."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.http.server_client import SESSION_HEADER
from nemo_gym.testing.cluster import assistant_message as message
from nemo_gym.testing.cluster import serve_resources_server
from nemo_gym.testing.emulated import collect_environment_on_emulator
from resources_servers.mcqa.extract import extract_answer, parse_options

FOLDER = Path(__file__).resolve().parents[1]
EXAMPLE_DATA = FOLDER / "data" / "example.jsonl"
PLANETS = {"A": "Venus", "B": "Earth", "C": "Mercury", "D": "Mars"}  # closest to the Sun: C
VITAMINS = {"A": "Vitamin A", "B": "Vitamin B12", "C": "Vitamin C", "D": "Vitamin D"}
ANIMALS = {"A": "A bird", "B": "A reptile", "C": "A mammal", "D": "An insect"}
NUMBERS = {"A": "24", "B": "32", "C": "36", "D": "48"}


# ---------------------------------------------------------------------------------------------- the extractor

# (reply, letter it chooses or None, rule that decides), all for PLANETS.
RIGHT_FORMS = [
    ("Answer: C", "C", "marker"),
    ("answer: c", "C", "marker"),
    ("**Answer:** C", "C", "marker"),
    ("Final answer - (C)", "C", "marker"),
    ("the answer is C", "C", "marker"),
    ("The correct answer is option C.", "C", "marker"),
    ("The answer is clearly C) Mercury.", "C", "marker"),
    ("Let me work it out. The answer is \\boxed{C}.", "C", "marker"),
    ("$\\boxed{\\text{C}}$", "C", "marker"),
    ('{"answer": "C"}', "C", "marker"),
    ("I'd go with C.", "C", "marker"),
    ("C is correct because Mercury orbits closest.", "C", "marker"),
    ("Option (C) is the right one.", "C", "marker"),
    ("The answer is Mercury.", "C", "marker"),
    ("Answer: Mercury (C)", "C", "marker"),
    ("Answer: C) Mercury", "C", "marker"),
    ("Answer: C. Venus is second, so not that.", "C", "marker"),
    ("C", "C", "only_letter"),
    ("c", "C", "only_letter"),
    ("(C)", "C", "only_letter"),
    ("C)", "C", "only_letter"),
    ("**C**", "C", "only_letter"),
    ("Option C.", "C", "only_letter"),
    ("C. Mercury", "C", "only_letter"),
    ("C) Mercury\nIt is the innermost planet.", "C", "only_letter"),
    ("Mercury", "C", "option_text"),
    ("mercury.", "C", "option_text"),
    ("Mercury orbits closest to the Sun, so C.", "C", "end_letter"),
    ("Venus is second and Earth third; that leaves C", "C", "end_letter"),
    ("A good question. Mercury is the innermost planet, so (C).", "C", "end_letter"),
    ("(A) is wrong. (C) Mercury fits.", "C", "formatted_letter"),
    ("I think B fits", "B", "bare_letter"),
    ("I think A fits", "A", "bare_letter"),
    ("It has to be the innermost planet, Mercury, for sure.", "C", "option_text_mentioned"),
]
# A clearer signal beats the article "A" and earlier text; the explicit final marker beats earlier answers.
PRECEDENCE = [
    ("A good question! The answer is C.", "C", "marker"),
    ("A planet close to the Sun... Answer: C", "C", "marker"),
    ("The answer is A. Wait, Venus is second. Final answer: C", "C", "marker"),
    ("Answer: B\nOn reflection, Mercury is closer.\nAnswer: C", "C", "marker"),
    ("\\boxed{A} was my first thought, but the answer is C.", "C", "marker"),
    ("The answer is either A or B. Checking again: Answer: C", "C", "marker"),
    ("Answer: C, and A is wrong.", "C", "marker"),
    ("<think>The answer is A.</think>Answer: C", "C", "marker"),
    ("The answer is not A but C", "C", "end_letter"),
]
WRONG = [
    ("Answer: A", "A", "marker"),
    ("\\boxed{D}", "D", "marker"),
    ("Venus", "A", "option_text"),
    ("B", "B", "only_letter"),
    ("It is Mars, D.", "D", "end_letter"),
]
MALFORMED = [
    ("", None, "empty"),
    ("   \n ", None, "empty"),
    ("<think>still thinking about whether it is C", None, "empty"),
    ("asdf qwerty zxcv", None, "none"),
    ("A good question.", None, "none"),
    ("Answer: <letter>", None, "none"),
    ("Answer: E", None, "none"),
    ("The answer is not A", None, "none"),
    ("It is definitely not B.", None, "none"),
    ("The U.S.A.", None, "none"),
    ("The answer is a bit subtle.", None, "none"),
]
# Naming several letters as the answer never scores, whichever of them is right.
ADVERSARIAL = [
    ("A, B, C or D", None, "hedged"),
    ("A B C D", None, "hedged"),
    ("either A or B", None, "hedged"),
    ("It could be B or C.", None, "hedged"),
    ("The answer is either A or C.", None, "hedged"),
    ("Answer: A, B, C, D", None, "hedged"),
    ("Answer: C/D", None, "hedged"),
    ("\\boxed{B, C}", None, "hedged"),
    ("A or C is correct.", None, "hedged"),
    ("A) Venus\nB) Earth\nC) Mercury\nD) Mars", None, "hedged"),
    ("**A** **B** **C** **D**", None, "hedged"),
    ("Answer: A\nAnswer: B\nAnswer: C\nAnswer: D", None, "hedged"),
    ("\\boxed{A}\\boxed{B}\\boxed{C}\\boxed{D}", None, "hedged"),
    ("Between (B) and (C), hard to say.", None, "hedged"),
    ("A. B. C. D.", None, "hedged"),
    ("Each option:\n(A) Venus, second\n(B) Earth, third\n(C) Mercury, first\n(D) Mars, fourth", None, "hedged"),
    ("Venus, Earth, Mercury or Mars: one of them.", None, "hedged"),
    # A letter and a different option's text contradict each other: neither is the answer.
    ("B. Mercury", None, "conflict"),
    ("Answer: B) Mercury", None, "conflict"),
    ("\\boxed{B. Mercury}", None, "conflict"),
]


@pytest.mark.parametrize(("reply", "letter", "rule"), [*RIGHT_FORMS, *PRECEDENCE, *WRONG, *MALFORMED, *ADVERSARIAL])
def test_extraction_table(reply: str, letter: str | None, rule: str) -> None:
    extraction = extract_answer(reply, PLANETS)
    assert (extraction.letter, extraction.rule) == (letter, rule), extraction.reason


def test_a_hedge_reports_every_letter_it_names() -> None:
    extraction = extract_answer("It is A, B, C or D.", PLANETS)
    assert extraction.letter is None
    assert extraction.named == ("A", "B", "C", "D")
    assert "several letters (A, B, C, D)" in extraction.reason


def test_a_final_marker_says_what_it_overrides() -> None:
    extraction = extract_answer("The answer is A. No wait. Answer: C", PLANETS)
    assert extraction.letter == "C"
    assert "overrides the earlier A" in extraction.reason


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("You need Vitamin C, so D.", "D"),  # the C of an option's text is not a letter
        ("Vitamin D", "D"),
        ("Answer: vitamin d", "D"),
        ("Sunlight makes vitamin D in the skin.", "D"),
        ("Vitamin C or Vitamin D", None),
    ],
)
def test_letters_inside_option_texts_are_not_answers(reply: str, letter: str | None) -> None:
    assert extract_answer(reply, VITAMINS).letter == letter


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("A mammal", "C"),
        ("Answer: a mammal", "C"),
        ("I would say a mammal.", "C"),
        ("A bat is a mammal, so C.", "C"),
        ("Answer: A", "A"),
    ],
)
def test_option_texts_that_start_with_the_article(reply: str, letter: str) -> None:
    assert extract_answer(reply, ANIMALS).letter == letter


@pytest.mark.parametrize(
    ("reply", "letter"),
    [
        ("Answer: 36", "C"),
        ("\\boxed{36}", "C"),
        ("36", "C"),
        ("0.15 x 240 = 36, so the answer is C", "C"),
        ("0.15 x 240 = 36", None),  # numbers in working are not option mentions
    ],
)
def test_numeric_option_texts(reply: str, letter: str | None) -> None:
    assert extract_answer(reply, NUMBERS).letter == letter


def test_five_options_accept_e() -> None:
    options = {**PLANETS, "E": "Jupiter"}
    assert extract_answer("Answer: E", options).letter == "E"
    assert extract_answer("Answer: E", PLANETS).letter is None


@pytest.mark.parametrize(
    ("reply", "letter", "rule"),
    [
        ("Answer: " * 5000 + "C", "C", "marker"),
        ("\\boxed{" * 5000, None, "none"),
        ("A, B, " * 5000 + "C", None, "hedged"),
        ("(A) " * 5000, "A", "only_letter"),
        ("Mercury " * 5000 + "so C", "C", "end_letter"),
        ("x" * 100_000, None, "none"),
    ],
)
def test_long_and_pathological_replies_are_read_by_the_same_rules(reply: str, letter: str | None, rule: str) -> None:
    # How fast they are read is bench/extraction.py's business; here, that they end and end the way short ones do.
    extraction = extract_answer(reply, PLANETS)
    assert (extraction.letter, extraction.rule) == (letter, rule)


def test_options_as_a_list_or_a_dict() -> None:
    listed = [{"letter": "A", "text": " Venus "}, {"letter": "b", "text": "Earth"}]
    assert parse_options(listed) == {"A": "Venus", "B": "Earth"}
    assert parse_options({"A": "Venus", "B": "Earth"}) == {"A": "Venus", "B": "Earth"}


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("A) Venus", "must be a list"),
        ([{"letter": "A", "text": "Venus"}], "at least two options"),
        ([{"letter": "AB", "text": "x"}, {"letter": "C", "text": "y"}], "not a single letter"),
        ([{"letter": "A", "text": ""}, {"letter": "B", "text": "y"}], "option A has no text"),
        ([{"letter": "A", "text": "x"}, {"letter": "a", "text": "y"}], "appears twice"),
        (["Venus", "Earth"], "must be a list of"),
    ],
)
def test_unusable_options_are_rejected(raw: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_options(raw)


# ---------------------------------------------------------------------------------------------- /verify over HTTP


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    yield from serve_resources_server("mcqa")


def planets_row(expected: str = "C", options: Any = None) -> dict[str, Any]:
    return {
        "options": options if options is not None else [{"letter": k, "text": v} for k, v in PLANETS.items()],
        "expected_answer": expected,
        "responses_create_params": {"input": [{"role": "user", "content": "Which planet is closest to the Sun?"}]},
    }


def verify(
    client: httpx.Client, output: list[dict[str, Any]], row: dict[str, Any] | None = None, session_id: str | None = None
) -> httpx.Response:
    headers = {SESSION_HEADER: session_id} if session_id else {}
    body = {"row": row if row is not None else planets_row(), "response": {"output": output}}
    return client.post("/verify", json=body, headers=headers)


def verdict_of(client: httpx.Client, output: list[dict[str, Any]], row: dict[str, Any] | None = None) -> dict[str, Any]:
    response = verify(client, output, row)
    assert response.status_code == 200, response.text
    return response.json()


def test_right_answer_scores_one(client: httpx.Client) -> None:
    verdict = verdict_of(client, [message("Mercury is closest.\nAnswer: C")])
    assert verdict["reward"] == 1.0
    assert verdict["extracted_answer"] == "C"
    assert verdict["expected_answer"] == "C"
    assert verdict["extraction_rule"] == "marker"
    assert verdict["reasons"] == ["C from the final answer marker 'Answer: C'", "C is the expected answer"]


def test_wrong_answer_scores_zero(client: httpx.Client) -> None:
    verdict = verdict_of(client, [message("Answer: A")])
    assert verdict["reward"] == 0.0
    assert verdict["extracted_answer"] == "A"
    assert verdict["reasons"][-1] == "expected C, not A"


@pytest.mark.parametrize(
    "reply",
    [
        "A, B, C or D",
        "The answer is either B or C.",
        "A) Venus\nB) Earth\nC) Mercury\nD) Mars",
        "\\boxed{A}\\boxed{B}\\boxed{C}\\boxed{D}",
    ],
)
def test_hedging_over_several_letters_scores_zero_even_if_one_is_right(client: httpx.Client, reply: str) -> None:
    verdict = verdict_of(client, [message(reply)])
    assert verdict["reward"] == 0.0
    assert verdict["extracted_answer"] is None
    assert verdict["extraction_rule"] == "hedged"
    assert "C" in verdict["letters_named"] and len(verdict["letters_named"]) > 1
    assert verdict["reasons"][-1] == "no single answer letter, so no credit (expected C)"


@pytest.mark.parametrize(
    ("output", "rule"),
    [
        ([], "none"),
        ([message("")], "empty"),
        ([message("qwerty uiop")], "none"),
        ([{"role": "user", "content": "Answer: C"}], "none"),
        (
            [message("Answer: C"), {"type": "function_call", "call_id": "c1", "name": "lookup", "arguments": "{}"}],
            "none",
        ),
        ([{"type": "reasoning", "summary": []}], "none"),
    ],
)
def test_malformed_outputs_score_zero(client: httpx.Client, output: list[dict[str, Any]], rule: str) -> None:
    verdict = verdict_of(client, output)
    assert verdict["reward"] == 0.0
    assert verdict["extracted_answer"] is None
    assert verdict["extraction_rule"] == rule


def test_reply_forms_the_verifier_reads(client: httpx.Client) -> None:
    reasoning = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "Answer: A"}]}
    for output in (
        [message("\\boxed{C}"), reasoning],
        [{"role": "assistant", "content": "(c)"}],
        [message("Answer: A"), message("Sorry, Answer: C")],
    ):
        verdict = verdict_of(client, output)
        assert (verdict["reward"], verdict["extracted_answer"]) == (1.0, "C"), output


def test_options_may_be_a_dict_and_the_expected_letter_any_case(client: httpx.Client) -> None:
    verdict = verdict_of(client, [message("Answer: C")], planets_row(expected="c", options=dict(PLANETS)))
    assert verdict["reward"] == 1.0
    assert verdict["expected_answer"] == "C"


def test_a_seeded_session_scores_its_own_row(client: httpx.Client) -> None:
    seeded = client.post("/seed_session", json={"row": planets_row(expected="D")})
    assert seeded.status_code == 200, seeded.text
    session_id = seeded.json()["session_id"]
    # The row in the /verify body does not replace the one the session was seeded with.
    verdict = verify(client, [message("Answer: D")], row=planets_row(expected="C"), session_id=session_id).json()
    assert verdict["reward"] == 1.0 and verdict["expected_answer"] == "D"
    again = verify(client, [message("Answer: D")], session_id=session_id)
    assert again.status_code == 404 and again.json()["error"]["type"] == "unknown_session"


@pytest.mark.parametrize(
    ("row", "message_part"),
    [
        ({}, "no `options` and `expected_answer`"),
        ({"options": dict(PLANETS)}, "no `options` and `expected_answer`"),
        ({"options": dict(PLANETS), "expected_answer": "F"}, "'F' is not one of its option letters (A, B, C, D)"),
        ({"options": dict(PLANETS), "expected_answer": 3}, "3 is not one of its option letters"),
        ({"options": "A) Venus B) Earth", "expected_answer": "A"}, "`options` are unusable"),
    ],
)
def test_an_unusable_row_is_a_clear_422(client: httpx.Client, row: dict[str, Any], message_part: str) -> None:
    for response in (verify(client, [message("Answer: A")], row=row), client.post("/seed_session", json={"row": row})):
        assert response.status_code == 422, response.text
        error = response.json()["error"]
        assert error["type"] == "invalid_row"
        assert message_part in error["message"]


def test_there_are_no_tools(client: httpx.Client) -> None:
    assert client.get("/tools").json() == {"tools": []}


# ---------------------------------------------------------------------------------------------- example data


def example_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EXAMPLE_DATA.read_text().splitlines() if line.strip()]


def test_example_data_rows_are_well_formed() -> None:
    rows = example_rows()
    assert len(rows) >= 24
    assert len({row["id"] for row in rows}) == len(rows)
    for row in rows:
        options = parse_options(row["options"])
        assert len(options) in (4, 5) and list(options) == list("ABCDE"[: len(options)]), row["id"]
        assert row["expected_answer"] in options, row["id"]
        developer, user = row["responses_create_params"]["input"]
        assert developer["role"] == "developer" and "Answer: X" in developer["content"]
        assert user["role"] == "user"
        # The user sees the question and every option, lettered.
        for letter, text in options.items():
            assert f"\n{letter}) {text}" in user["content"], row["id"]
    assert {row["expected_answer"] for row in rows} == set("ABCD")  # the right letter is not always the same
    assert any(len(row["options"]) == 5 for row in rows)


@pytest.mark.parametrize(
    "form",
    [
        "Answer: {letter}",
        "\\boxed{{{letter}}}",
        "{text}",
        "{letter}. {text}",
        "Some thinking first.\nAnswer: ({lower})",
    ],
)
def test_every_example_row_scores_a_right_reply_and_not_a_wrong_one(client: httpx.Client, form: str) -> None:
    for row in example_rows():
        options = parse_options(row["options"])
        right = row["expected_answer"]
        wrong = next(letter for letter in options if letter != right)
        for letter, reward in ((right, 1.0), (wrong, 0.0)):
            reply = form.format(letter=letter, lower=letter.lower(), text=options[letter])
            verdict = verdict_of(client, [message(reply)], row)
            assert (verdict["reward"], verdict["extracted_answer"]) == (reward, letter), (row["id"], reply, verdict)


# ---------------------------------------------------------------------------------------------- on the emulator


def collect_on_emulator(model: str, tmp_path: Path) -> list[dict[str, Any]]:
    output = tmp_path / f"{model.replace('/', '_')}.jsonl"
    return collect_environment_on_emulator("mcqa", model, EXAMPLE_DATA, output)


def test_collection_on_the_emulator_rewards_the_stronger_model(tmp_path: Path) -> None:
    strong = collect_on_emulator("openai/gpt-4o-mini", tmp_path)
    weak = collect_on_emulator("meta-llama/llama-3.1-8b-instruct", tmp_path)
    rows = len(example_rows())
    for records in (strong, weak):
        assert len(records) == rows
        assert all(r["error"] is None and r["reward"] in (0.0, 1.0) for r in records)
        assert all(r["extraction_rule"] == "marker" and r["extracted_answer"] for r in records)
        assert {r["input"]["id"] for r in records} == {row["id"] for row in example_rows()}
    assert all(r["reward"] == 1.0 for r in strong)
    weak_rewards = [r["reward"] for r in weak]
    assert 0.0 in weak_rewards and 1.0 in weak_rewards
    assert sum(weak_rewards) / rows < sum(r["reward"] for r in strong) / rows
    for record in weak:
        assert (record["reward"] == 1.0) == (record["extracted_answer"] == record["expected_answer"])
