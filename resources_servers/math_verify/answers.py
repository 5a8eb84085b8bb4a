"""Finding the final answer in a model's reply, before any maths: which text counts as "the answer" is a policy
decision, kept here as plain regex code so it can be read and tested without math_verify.

Rules (documented in README.md):
- Only the last assistant message counts; `<think>...</think>` sections in it are ignored.
- Every `\\boxed{...}` (or `\\fbox{...}`) in it is a candidate. Without any box, the text after the last
  "answer is" / "answer:" phrase, up to the end of its line, is the candidate.
- A candidate that lists values ("3 or 4", "3, 4", "3; 4", "3 \\quad 4", "1 2 3") is split into one candidate per
  value, so hedging between answers shows up as several candidates rather than letting the checker pick one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from nemo_gym.servers import resources

MAX_ANSWER_CHARS = 200
"""Longer "final answers" are not answers; refusing them also bounds the work the checker can be asked to do."""
MAX_CANDIDATES = 8
"""More distinct candidates than this is a list of guesses: scored 0 without checking each one."""

_BOX = re.compile(r"\\(?:boxed|fbox)\s*\{")
_THINK = re.compile(r"<think>.*?(?:</think>|\Z)", re.DOTALL | re.IGNORECASE)
_ANSWER_PHRASE = re.compile(r"\banswer\b\s*(?:is\b\s*:?|:|=)\s*(?P<answer>[^\n]*)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"\.(?:\s|$)")
_LIST_SEPARATOR = re.compile(
    r"\\text\s*\{\s*(?:or|and)\s*\}"  # 3 \text{ or } 4
    r"|\\q?quad\b|\\\\"  # 3 \quad 4, 3 \\ 4
    r"|\b(?:or|and)\b"  # 3 or 4
    r"|;|,(?=\s)"  # 3; 4 and 3, 4 (but not the thousands separator of 1,200)
)
_NUMBER = r"[-+−]?\d+(?:\.\d+)?"
_SPACED_NUMBERS = re.compile(rf"{_NUMBER}(?:\s+{_NUMBER})+")
_BARE_PERCENT = re.compile(r"(?<!\\)%")

Source = Literal["boxed", "answer_phrase", "none"]


@dataclass
class Extraction:
    """The candidate final answers found in a reply, where they came from, and why none is usable (if so)."""

    source: Source
    candidates: list[str] = field(default_factory=list)
    problem: str | None = None


def final_assistant_text(output: list[dict[str, Any]]) -> str:
    """The final answer's text, "" when the trajectory does not end with one (nothing to extract from)."""
    return resources.final_assistant_text(output) or ""


def boxed_contents(text: str) -> list[str]:
    """The contents of every `\\boxed{...}` with balanced braces; an unclosed box is not an answer."""
    found = []
    for match in _BOX.finditer(text):
        depth, start = 1, match.end()
        for index in range(start, len(text)):
            if text[index] == "{" and text[index - 1] != "\\":
                depth += 1
            elif text[index] == "}" and text[index - 1] != "\\":
                depth -= 1
                if depth == 0:
                    found.append(text[start:index])
                    break
    return found


def answer_phrase(text: str) -> str | None:
    """What follows the last "answer is" / "answer:" up to the end of its sentence or line, if anything."""
    matches = list(_ANSWER_PHRASE.finditer(text))
    if not matches:
        return None
    answer = matches[-1].group("answer")
    end = _SENTENCE_END.search(answer)
    answer = answer[: end.start()] if end else answer
    return answer.strip().strip("*").strip() or None


def split_values(answer: str) -> list[str]:
    """One string per value an answer lists ("3 or 4" -> ["3", "4"]), normalised for LaTeX parsing."""
    pieces = []
    for piece in _LIST_SEPARATOR.split(answer):
        piece = normalize(piece)
        if _SPACED_NUMBERS.fullmatch(piece):
            pieces.extend(piece.split())
        elif piece:
            pieces.append(piece)
    return pieces


def normalize(piece: str) -> str:
    """One line, no wrapping `$`s or trailing full stop, and `%` as LaTeX's `\\%` (a bare `%` starts a comment)."""
    piece = " ".join(piece.split()).strip()
    if len(piece) >= 2 and piece[0] == piece[-1] == "$":
        piece = piece.strip("$").strip()
    piece = piece.rstrip(".").strip()
    return _BARE_PERCENT.sub(r"\\%", piece)


def extract_candidates(text: str) -> Extraction:
    """Apply the rules in the module docstring to the final message's text."""
    text = _THINK.sub(" ", text)
    if not text.strip():
        return Extraction("none", problem="the reply has no final assistant message text")
    boxes = boxed_contents(text)
    if boxes:
        source: Source = "boxed"
        answers = boxes
    elif (phrase := answer_phrase(text)) is not None:
        source, answers = "answer_phrase", [phrase]
    else:
        return Extraction("none", problem="no final answer found: put it in \\boxed{...}")
    too_long = [a for a in answers if len(a) > MAX_ANSWER_CHARS]
    if too_long:
        return Extraction(
            source,
            problem=f"a final answer is {len(too_long[0])} characters long; at most {MAX_ANSWER_CHARS} are checked",
        )
    candidates = list(dict.fromkeys(piece for a in answers for piece in split_values(a)))
    if not candidates:
        return Extraction(source, problem="the final answer is empty")
    if len(candidates) > MAX_CANDIDATES:
        return Extraction(
            source, candidates, problem=f"{len(candidates)} different candidate answers; give exactly one final answer"
        )
    return Extraction(source, candidates)
