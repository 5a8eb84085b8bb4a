"""Finding the final answer in a model's reply, in the order of preference the prompt sets.

1. `<answer>...</answer>` tags (what the prompt asks for); an unclosed last `<answer>` counts when no pair is closed.
2. `\\boxed{...}` (LaTeX habit, and what the OpenRouter emulator writes), with nested braces.
3. The last line saying "answer is X" / "answer: X".

Every non-empty answer of the first format present is kept as a candidate, so the verifier can see a reply that
hedges between several answers; `answer` is the last one, as the library's own `extract_answer` takes it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

TAG_PAIR = re.compile(r"<answer>(.*?)</answer>", re.IGNORECASE | re.DOTALL)
TAG_OPEN = "<answer>"
BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")
ANSWER_LINE = re.compile(r"\banswer\b[^:\n]{0,24}?(?:\bis\b\s*:?|:)\s*(.+)$", re.IGNORECASE)
# Wrappers that enclose a whole answer without being part of it: $x$, $$x$$, \(x\), \[x\], \boxed{x}, \text{x}.
MATH_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
COMMAND_WRAPPER = re.compile(r"^\\(?:boxed|text|textbf|mathrm|fbox)\s*\{(.*)\}$", re.DOTALL)

FORMAT_TAG, FORMAT_BOXED, FORMAT_LINE = "answer_tag", "boxed", "answer_line"


@dataclass(frozen=True)
class Extraction:
    """Where the answer was found (`format`, None when nowhere) and every answer given in that format, in order."""

    format: str | None
    found: tuple[str, ...] = ()

    @property
    def answer(self) -> str | None:
        """The last answer given: what the reply settles on."""
        return self.found[-1] if self.found else None

    @property
    def candidates(self) -> list[str]:
        """The distinct answers, in order of first appearance; more than one means the reply hedges."""
        return list(dict.fromkeys(self.found))


def extract(text: str) -> Extraction:
    for fmt, finder in ((FORMAT_TAG, _tagged), (FORMAT_BOXED, _boxed), (FORMAT_LINE, _answer_line)):
        found = tuple(a for a in (clean(raw) for raw in finder(text)) if a)
        if found:
            return Extraction(fmt, found)
    return Extraction(None)


def clean(answer: str) -> str:
    """Strip whitespace and wrappers around a whole answer (`$42$`, `\\boxed{42}`, `\\text{yes}`), repeatedly."""
    answer = answer.strip()
    while True:
        before = answer
        for start, end in MATH_WRAPPERS:
            if len(answer) > len(start) + len(end) and answer.startswith(start) and answer.endswith(end):
                answer = answer[len(start) : -len(end)].strip()
                break
        if (match := COMMAND_WRAPPER.match(answer)) and _balanced(match.group(1)):
            answer = match.group(1).strip()
        if answer == before:
            return answer


def _tagged(text: str) -> list[str]:
    pairs = TAG_PAIR.findall(text)
    if pairs:
        return pairs
    opened = text.lower().rfind(TAG_OPEN)
    return [text[opened + len(TAG_OPEN) :]] if opened >= 0 else []


def _boxed(text: str) -> list[str]:
    found = []
    for match in BOXED.finditer(text):
        body = _brace_body(text, match.end())
        if body is not None:
            found.append(body)
    return found


def _brace_body(text: str, start: int) -> str | None:
    """The text from `start` up to the brace closing the one just before it, or None if it never closes."""
    depth = 1
    for i in range(start, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start:i]
    return None


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"{": 1, "}": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def _answer_line(text: str) -> list[str]:
    for line in reversed(text.splitlines()):
        match = ANSWER_LINE.search(line)
        if match:
            value = match.group(1).strip().strip("*`\"'“”").strip()
            if value.endswith(".") and not value.endswith(".."):
                value = value[:-1].rstrip()
            return [value.strip("*`\"'“”").strip()]
    return []
