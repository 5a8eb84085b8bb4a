"""Scripted replies: fixed answers for requests that contain given substrings, such as an LLM judge's verdicts.

The scripted policy cannot judge anything, so an environment whose verifier asks a judge model would get nonsense
verdicts offline. A JSONL file of rules (`{"when_all": [...], "reply": "..."}`) tells the emulator what to answer
when a request's text contains all of a rule's substrings, so a judge environment runs offline with known verdicts.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeGuard

from nemo_gym.config.errors import ConfigError
from nemo_gym.protocol.conversion import content_text

RULE_FORMAT = (
    'each line must be a JSON object like {"when_all": ["substring", ...], "reply": "text"}, '
    'optionally with "models": ["openai/gpt-4o-mini", ...]'
)


@dataclass(frozen=True)
class ScriptedReply:
    """One rule: `reply` answers any request whose text contains every string of `when_all` (for `models` only,
    when given). `source` is `file:line`, for messages."""

    when_all: tuple[str, ...]
    reply: str
    models: frozenset[str] | None
    source: str

    def matches(self, text: str, model_id: str) -> bool:
        if self.models is not None and model_id not in self.models:
            return False
        return all(needle in text for needle in self.when_all)


def request_text(body: Mapping[str, Any]) -> str:
    """The texts of all the chat request's messages (system, user, assistant, tool), one per line."""
    messages = body.get("messages") or []
    return "\n".join(content_text(m.get("content")) for m in messages if isinstance(m, Mapping))


def first_reply(rules: Sequence[ScriptedReply], body: Mapping[str, Any], model_id: str) -> str | None:
    """The reply of the first rule matching the request for this model, or None."""
    if not rules:
        return None
    text = request_text(body)
    return next((rule.reply for rule in rules if rule.matches(text, model_id)), None)


def load_scripted_replies(paths: Iterable[Path], catalog: Collection[str]) -> list[ScriptedReply]:
    """The rules of the JSONL files, in order; a ConfigError naming file:line and the problem for a bad one.

    `catalog` is the emulator's model ids: a rule restricted to a model the emulator does not serve would never
    fire, which is almost certainly a typo."""
    rules: list[ScriptedReply] = []
    for path in paths:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ConfigError(
                f"scripted_replies: file not found: {path}. Give JSONL files of rules (paths are relative to the "
                f"working directory or the project root); {RULE_FORMAT}."
            ) from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"scripted_replies: cannot read {path}: {exc}") from None
        for number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                rules.append(_parse_rule(line, f"{path}:{number}", catalog))
    return rules


def _parse_rule(line: str, source: str, catalog: Collection[str]) -> ScriptedReply:
    def problem(what: str) -> ConfigError:
        return ConfigError(f"{source}: {what}; {RULE_FORMAT}.")

    try:
        row = json.loads(line)
    except ValueError as exc:
        raise problem(f"not valid JSON ({exc})") from None
    if not isinstance(row, dict):
        raise problem(f"a JSON {type(row).__name__}, not an object")
    unknown = sorted(set(row) - {"when_all", "reply", "models"})
    if unknown:
        raise problem(f"unknown key(s) {', '.join(map(repr, unknown))}")
    when_all = row.get("when_all")
    if "when_all" not in row:
        raise problem('missing "when_all" (a non-empty list of non-empty strings)')
    if not _non_empty_strings(when_all):
        raise problem(f'"when_all" must be a non-empty list of non-empty strings, got {when_all!r}')
    reply = row.get("reply")
    if "reply" not in row:
        raise problem('missing "reply" (the text to answer)')
    if not isinstance(reply, str):
        raise problem(f'"reply" must be a string, got {reply!r}')
    models = row.get("models")
    if models is not None:
        if not _non_empty_strings(models):
            raise problem(f'"models" must be a non-empty list of model ids, got {models!r}')
        missing = [m for m in models if m not in catalog]
        if missing:
            raise problem(
                f'"models" names {", ".join(map(repr, missing))}, not in the emulator\'s catalog '
                f"({', '.join(sorted(catalog))})"
            )
    return ScriptedReply(tuple(when_all), reply, frozenset(models) if models is not None else None, source)


def _non_empty_strings(value: Any) -> TypeGuard[list[str]]:
    return isinstance(value, list) and bool(value) and all(isinstance(v, str) and v for v in value)
