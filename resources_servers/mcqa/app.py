"""mcqa: multiple-choice questions answered in free text, scored on the one option letter the reply chooses.

There are no tools: the agent asks the model once and sends its reply to /verify. Which letter the reply chooses is
decided by `extract.extract_answer` (rules from the most explicit signal, `Answer: C` or `\\boxed{C}`, to the least,
the text of one option; a reply that names several letters as its answer chooses none).

Reward (documented in README.md):
    reward = 1.0 if the extracted letter is the row's `expected_answer`, else 0.0
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from nemo_gym.servers.resources import (
    BaseResourcesServer,
    Session,
    ToolError,
    VerifyRequest,
    VerifyResponse,
    final_assistant_text,
)
from resources_servers.mcqa.extract import extract_answer, parse_options


class McqaServer(BaseResourcesServer):
    tools = {}
    row_fields = ("options", "expected_answer")

    async def seed_session(self, session: Session) -> None:
        _row_key(session.row)  # a row that cannot be scored fails now, before the model is paid for an answer

    async def call_tool(self, session: Session, name: str, arguments: BaseModel) -> Any:
        raise ToolError(f"mcqa has no tools (asked for {name}); answer in text.")

    async def verify(self, session: Session, request: VerifyRequest) -> VerifyResponse:
        row = session.row or request.row
        options, expected = _row_key(row)
        reply = final_assistant_text(request.response.get("output") or [])
        if reply is None:
            return VerifyResponse(
                reward=0.0,
                extracted_answer=None,
                expected_answer=expected,
                extraction_rule="none",
                reasons=["the trajectory does not end with an assistant message"],
            )
        extraction = extract_answer(reply, options)
        correct = extraction.letter == expected
        if correct:
            verdict = f"{expected} is the expected answer"
        elif extraction.letter is None:
            verdict = f"no single answer letter, so no credit (expected {expected})"
        else:
            verdict = f"expected {expected}, not {extraction.letter}"
        return VerifyResponse(
            reward=1.0 if correct else 0.0,
            extracted_answer=extraction.letter,
            expected_answer=expected,
            extraction_rule=extraction.rule,
            letters_named=list(extraction.named),
            reasons=[extraction.reason, verdict],
        )


def _row_key(row: dict[str, Any]) -> tuple[dict[str, str], str]:
    """The row's options and expected letter, or a ToolError (422 invalid_row) that says what is wrong."""
    if "options" not in row or "expected_answer" not in row:
        raise ToolError(
            "This row has no `options` and `expected_answer`; every mcqa row needs both, e.g. "
            '"options": [{"letter": "A", "text": "..."}, ...], "expected_answer": "B".'
        )
    try:
        options = parse_options(row["options"])
    except ValueError as exc:
        raise ToolError(f"This row's `options` are unusable: {exc}.") from None
    expected = row["expected_answer"]
    letter = expected.strip().upper() if isinstance(expected, str) else ""
    if letter not in options:
        raise ToolError(
            f"This row's `expected_answer` {expected!r} is not one of its option letters ({', '.join(options)})."
        )
    return options, letter


if __name__ == "__main__":
    from nemo_gym.cli.serve import main

    main()
