"""The emulator's scripted "model": deterministic tool calls from the proper nouns of the user's message.

It is simple enough to predict in tests and plausible enough to make rollouts meaningful: it calls each
single-string-argument tool once per capitalised name ("Compare Berlin and Madrid" -> two calls), makes the
mistakes a weak model makes ("the capital of Japan" -> Japan, "weather sydney pls" -> no call), and with
`quality` < 1 deterministically skips some calls, so different models earn different rewards.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nemo_gym.emulator.scripted_replies import ScriptedReply, first_reply
from nemo_gym.protocol.conversion import content_text

MAX_CALLS_PER_TURN = 4

# Capitalised words that are not names: question words, pronouns, polite openers, days and months.
_COMMON_WORDS_TEXT = """
    I A An The And Or But If So Yes No Not Ok Okay Hi Hello Hey Thanks Thank Please Dear Also Then Now Just
    What Who Whom Whose Which When Where Why How Is Are Was Were Be Am Do Does Did Can Could Would Should Will
    Shall May Might Must Have Has Had It Its My Me We Our Us You Your He She They Them Their His Her This That
    These Those There Here In On At Of For To From By With About As Into Over After Before Tell Give Show Find
    Get Check Compare Let Today Tomorrow Yesterday Tonight Monday Tuesday Wednesday Thursday Friday Saturday
    Sunday January February March April June July August September October November December
"""
COMMON_WORDS = frozenset(_COMMON_WORDS_TEXT.split())

_WORD = re.compile(r"[A-Za-z\u00C0-\u024F][\w\u00C0-\u024F'’-]*")
_SENTENCE_END = re.compile(r"[.!?]")


def _bare(word: str) -> str:
    """`Japan's` -> `Japan`, `What's` -> `What`, `I'm` -> `I` (possessives and contractions)."""
    return re.split(r"['’]", word, maxsplit=1)[0]


def proper_nouns(text: str) -> list[str]:
    """Capitalised words and runs of them ("New York"), skipping sentence-initial words and common words."""
    nouns: list[str] = []
    run: list[str] = []
    previous_end = 0
    sentence_start = True

    def close_run() -> None:
        if run and (name := " ".join(run)) not in nouns:
            nouns.append(name)
        run.clear()

    for match in _WORD.finditer(text):
        gap = text[previous_end : match.start()]
        if _SENTENCE_END.search(gap):
            sentence_start = True
        if gap.strip():  # punctuation between two words ends a multi-word name
            close_run()
        previous_end = match.end()
        word = _bare(match.group())
        initial, sentence_start = sentence_start, False
        if initial or not word[:1].isupper() or word.capitalize() in COMMON_WORDS:
            close_run()
            continue
        run.append(word)
        if match.group() != word:  # "Japan's weather": the possessive ends the name
            close_run()
    close_run()
    return nouns


def single_string_argument(tool: Mapping[str, Any]) -> str | None:
    """The one required string property of a function tool's JSON schema, if it has exactly one."""
    parameters = (tool.get("function") or {}).get("parameters") or {}
    required = parameters.get("required") or []
    if len(required) != 1:
        return None
    kind = ((parameters.get("properties") or {}).get(required[0]) or {}).get("type")
    if kind == "string" or isinstance(kind, list) and "string" in kind:
        return str(required[0])
    return None


@dataclass
class ToolCall:
    name: str
    arguments: str


@dataclass
class Turn:
    """What the scripted model says: text, or tool calls with `content` None, as OpenRouter returns them."""

    content: str | None
    tool_calls: list[ToolCall] = field(default_factory=list)

    @property
    def finish_reason(self) -> str:
        return "tool_calls" if self.tool_calls else "stop"


@dataclass
class ScriptedPolicy:
    """Answers one chat request for one model. `quality` is the chance each planned call is made."""

    model_id: str
    quality: float = 1.0
    seed: int = 0
    answers: Mapping[str, str] = field(default_factory=dict)
    """Question text (see `question_key`) -> the right answer, for questions asked without tools."""
    replies: Sequence[ScriptedReply] = ()
    """Rules checked first: the first whose substrings all occur in the request answers its reply verbatim."""

    def answer(self, body: Mapping[str, Any]) -> Turn:
        if (reply := first_reply(self.replies, body, self.model_id)) is not None:
            return Turn(reply)
        messages: Sequence[Mapping[str, Any]] = body.get("messages") or []
        last_user = max((i for i, m in enumerate(messages) if m.get("role") == "user"), default=-1)
        user_text = content_text(messages[last_user].get("content")) if last_user >= 0 else ""
        since_user = messages[last_user + 1 :]
        results = _tool_results(since_user)
        done = {(c.name, c.arguments) for c in _calls_made(since_user)}
        tools = [
            t for t in body.get("tools") or [] if isinstance(t.get("function"), Mapping) and t["function"].get("name")
        ]
        choice = body.get("tool_choice", "auto")
        nouns = proper_nouns(user_text)

        if tools and choice != "none":
            forced = choice.get("function", {}).get("name") if isinstance(choice, Mapping) else None
            usable = [t for t in tools if forced is None or (t.get("function") or {}).get("name") == forced]
            planned = self._plan(usable, nouns, user_text)
            todo = [c for c in planned if (c.name, c.arguments) not in done]
            if body.get("parallel_tool_calls") is False:
                todo = todo[:1]
            if not todo and (choice == "required" or forced is not None) and usable:
                todo = [self._fallback_call(usable, nouns, user_text)]
            if todo:
                return Turn(None, todo[:MAX_CALLS_PER_TURN])
        if results:
            return Turn("Here is what I found. " + " ".join(results))
        if (known := self.answers.get(question_key(user_text))) is not None:
            right = self._makes(user_text, "answer", known)
            return Turn(f"Let me work it out. The answer is \\boxed{{{known if right else wrong_answer(known)}}}.")
        if nouns:
            listed = " and ".join([", ".join(nouns[:-1]), nouns[-1]] if len(nouns) > 1 else nouns)
            return Turn(f"You asked about {listed}. I did not look anything up, so I cannot give live details.")
        quoted = user_text.strip()[:80] or "your message"
        return Turn(f'I read "{quoted}" but found nothing specific to look up.')

    def _plan(self, tools: Sequence[Mapping[str, Any]], nouns: Sequence[str], user_text: str) -> list[ToolCall]:
        calls: list[ToolCall] = []
        for tool in tools:
            argument = single_string_argument(tool)
            if argument is None:
                continue
            name = str(tool["function"]["name"])
            for noun in nouns:
                if self._makes(user_text, name, noun):
                    calls.append(ToolCall(name, json.dumps({argument: noun}, ensure_ascii=False)))
        return calls

    def _fallback_call(self, tools: Sequence[Mapping[str, Any]], nouns: Sequence[str], user_text: str) -> ToolCall:
        """`tool_choice` demands a call but nothing is planned: call the first tool as best it can."""
        for tool in tools:
            if (argument := single_string_argument(tool)) is not None:
                value = nouns[0] if nouns else user_text.strip()
                return ToolCall(str(tool["function"]["name"]), json.dumps({argument: value}, ensure_ascii=False))
        return ToolCall(str(tools[0]["function"]["name"]), "{}")

    def _makes(self, user_text: str, tool: str, noun: str) -> bool:
        """Deterministic coin with P(heads) = quality, from the request content, model and seed."""
        if self.quality >= 1.0:
            return True
        digest = hashlib.sha256(f"{self.seed}\0{self.model_id}\0{tool}\0{noun}\0{user_text}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64 < self.quality


def _calls_made(messages: Sequence[Mapping[str, Any]]) -> list[ToolCall]:
    calls = []
    for message in messages:
        for call in message.get("tool_calls") or [] if message.get("role") == "assistant" else []:
            function = call.get("function") or {}
            calls.append(ToolCall(str(function.get("name", "")), _canonical(function.get("arguments"))))
    return calls


def _canonical(arguments: Any) -> str:
    """Arguments as this policy writes them, so an echoed call is recognised whatever its JSON spacing."""
    try:
        return json.dumps(json.loads(arguments), ensure_ascii=False)
    except (TypeError, ValueError):
        return str(arguments)


def _tool_results(messages: Sequence[Mapping[str, Any]]) -> list[str]:
    """One sentence per tool result since the last user message: `get_weather(Berlin): sunny, 21 C.`"""
    names = {}
    for message in messages:
        for call in message.get("tool_calls") or [] if message.get("role") == "assistant" else []:
            function = call.get("function") or {}
            try:
                values = ", ".join(str(v) for v in json.loads(function.get("arguments") or "{}").values())
            except (ValueError, AttributeError):
                values = str(function.get("arguments"))
            names[call.get("id")] = f"{function.get('name', 'tool')}({values})"
    sentences = []
    for message in messages:
        if message.get("role") == "tool":
            label = names.get(message.get("tool_call_id"), "tool")
            sentences.append(f"{label}: {content_text(message.get('content')).strip()}".rstrip(".") + ".")
    return sentences


def question_key(text: str) -> str:
    """Questions match whatever their spacing: whitespace runs become one space."""
    return " ".join(text.split())


def wrong_answer(right: str) -> str:
    """A plausible wrong answer: the next option letter, the next integer, or a different word."""
    text = right.strip()
    if len(text) == 1 and text.isalpha():
        return "B" if text.upper() == "A" else "A"
    try:
        return str(int(text) + 1)
    except ValueError:
        pass
    try:
        return repr(float(text) + 1)
    except ValueError:
        return f"not {text}"


def load_answer_keys(paths: Sequence[Path], answer_field: str) -> dict[str, str]:
    """Question -> answer from JSONL datasets: the question is the last user message of each row's
    `responses_create_params.input` (a string input is the question itself); rows without the field are skipped."""
    answers: dict[str, str] = {}
    for path in paths:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except ValueError as exc:
                raise ValueError(f"{path}:{number}: not valid JSON ({exc})") from None
            answer = row.get(answer_field) if isinstance(row, dict) else None
            params = row.get("responses_create_params") if isinstance(row, dict) else None
            if answer is None or not isinstance(params, dict):
                continue
            question = _last_user_text(params.get("input"))
            if question:
                answers[question_key(question)] = str(answer)
    return answers


def _last_user_text(items: Any) -> str:
    if isinstance(items, str):
        return items
    users = [i for i in items or [] if isinstance(i, Mapping) and i.get("role") == "user"]
    if not users:
        return ""
    return content_text(users[-1].get("content"))
