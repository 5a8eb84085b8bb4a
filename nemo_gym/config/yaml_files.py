"""Reading one YAML config file, with errors that point at file:line:col and never quote a secret."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where configs are loaded: a server process, given its resolved config, needs neither
    import yaml
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.paths import project_root
from nemo_gym.config.secrets import REDACTED, Redactor, is_secret_key


def load_yaml_file(path: Path) -> dict[str, Any]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"Config file not found: {path}\n"
            f"Paths are looked up relative to the working directory ({Path.cwd()}) and then to the project "
            f"root ({project_root()}); check the spelling in config_paths."
        ) from None
    except OSError as exc:
        reason = "it is a directory" if path.is_dir() else (exc.strerror or str(exc))
        raise ConfigError(
            f"Cannot read config file {path}: {reason}. config_paths must list readable YAML files, "
            "e.g. +config_paths=[configs/my_env.yaml]."
        ) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(_not_utf8_message(path, data, exc)) from None
    import yaml

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error_message(path, exc, text)) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{path} must contain a YAML mapping at the top level, not a {type(loaded).__name__}. Write `key: value` "
            "lines, e.g. `policy_model_name: openai/gpt-4-turbo` or `my_instance: {resources_servers: {...}}`."
        )
    return loaded


def _not_utf8_message(path: Path, data: bytes, exc: UnicodeDecodeError) -> str:
    """Where the first undecodable byte is; the line is not quoted (it may hold a key)."""
    line = data.count(b"\n", 0, exc.start) + 1
    column = exc.start - (data.rfind(b"\n", 0, exc.start) + 1) + 1
    return (
        f"{path}:{line}:{column}: not UTF-8: byte 0x{data[exc.start]:02x} at byte offset {exc.start} cannot be "
        f"decoded. YAML config files must be UTF-8: re-encode it, e.g. `iconv -f latin1 -t utf-8 {path} > "
        f"{path.name}.utf8 && mv {path.name}.utf8 {path}` (if it was saved as Latin-1), or re-type the value "
        "in an editor that saves UTF-8."
    )


def _yaml_error_message(path: Path, exc: yaml.YAMLError, text: str) -> str:
    """`file:line:column: problem`, pointing at the line to fix (PyYAML's own text points at "<unicode string>").
    The line is quoted with every secret redacted: those read by value from the file, and what follows a secret
    key's name on the line itself, whose value the broken syntax may keep from being read."""
    import yaml

    secrets = _secret_lines(text)
    redactor = Redactor(secrets.values)
    line, column = _position(exc, text)
    if line is None:
        return redactor.text(
            f"{path} is not valid YAML: {getattr(exc, 'problem', None) or exc}. Fix its syntax (indent with "
            "spaces, close quotes and brackets)."
        )
    if isinstance(exc, yaml.reader.ReaderError):
        problem = f"unacceptable character #x{exc.character:04x}: {exc.reason}"
    else:
        problem = getattr(exc, "problem", None) or "syntax error"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark.line != line:
        problem += f" ({context} started at line {context_mark.line + 1})"
    elif context:
        problem += f" ({context})"
    lines = text.splitlines()
    shown = f"\n    {secrets.shown(line, lines[line])}\n    {' ' * column}^" if line < len(lines) else ""
    return redactor.text(
        f"{path}:{line + 1}:{column + 1}: not valid YAML: {problem}.{shown}\n"
        "Fix the syntax at that line or just before it: indent with spaces (not tabs), close every quote and "
        "bracket, and quote values that contain ': ' or start with a special character."
    )


def _position(exc: yaml.YAMLError, text: str) -> tuple[int | None, int]:
    """The 0-based line and column of the problem: PyYAML's mark, else a reader error's character position."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    if mark is not None:
        return mark.line, mark.column
    position = getattr(exc, "position", None)
    if isinstance(position, int):
        return text.count("\n", 0, position), position - (text.rfind("\n", 0, position) + 1)
    return None, 0


# --------------------------------------------------------------------------- secrets in a file that does not parse

_KEY = re.compile(r"""(["']?)([\w.\-]+)\1[ \t]*:(?=[ \t]|$)""")
_YAML_WORDS = frozenset({"true", "false", "yes", "no", "on", "off", "null", "~"})
_MIN_SECRET_LENGTH = 4


@dataclass
class _SecretLines:
    """What a line scan of a file finds about its secrets, without parsing it (it does not parse)."""

    values: set[str] = field(default_factory=set)
    """Each secret value in the forms it may be quoted in."""
    key_ends: dict[int, int] = field(default_factory=dict)
    """Line index -> the column just after the `:` of the first secret key on that line."""
    inside: set[int] = field(default_factory=set)
    """Lines that continue a secret key's value (block scalar, list, unclosed bracket or quote)."""

    def shown(self, index: int, line: str) -> str:
        """A line as an error message may quote it."""
        line = line.rstrip()
        if index in self.inside:
            return line[: len(line) - len(line.lstrip())] + REDACTED
        if index in self.key_ends:
            return line[: self.key_ends[index]] + " " + REDACTED
        return line


def _secret_lines(text: str) -> _SecretLines:
    """The secrets of a YAML text read line by line: the value after a key such as api_key, token or password (as
    `is_secret_key` decides), in a flow mapping too, and every line of a value continued below such a key."""
    found = _SecretLines()
    owner_indent: int | None = None  # indentation of the secret key whose value continues on the next lines
    unclosed = ""  # brackets and a quote of that value still open
    for index, line in enumerate(text.splitlines()):
        content = line.strip()
        indent = len(line) - len(line.lstrip())
        if owner_indent is not None:
            if not content or indent > owner_indent or unclosed:
                found.inside.add(index)
                found.values.update(_value_forms(content, items=True))
                unclosed = _still_open(unclosed, content)
                continue
            owner_indent = None
        for match in _KEY.finditer(line):
            if not is_secret_key(match.group(2)):
                continue
            value = line[match.end() :]
            found.key_ends[index] = match.end()
            found.values.update(_value_forms(value, items=False))
            written = _without_comment(value).strip()
            unclosed = _still_open("", written)
            if not written or written[0] in "|>" or unclosed:
                owner_indent = indent
            break
    return found


def _value_forms(value: str, *, items: bool) -> set[str]:
    """The ways a secret value may be quoted back: as written, unquoted, up to the end of its flow item; with
    `items`, also each item of a flow collection or `- ` entry (a line continuing a secret value is all secret)."""
    value = _without_comment(value).strip()
    while value.startswith("- "):
        value = value[2:].strip()
    pieces = [value, re.split(r"[,}\]]", value, maxsplit=1)[0]]
    if items:
        pieces += re.split(r"[,\[\]{}]|:\s", value)
    forms: set[str] = set()
    for piece in pieces:
        piece = piece.strip().lstrip("[{").strip()
        for form in (piece, piece.strip("\"'").strip()):
            if len(form) >= _MIN_SECRET_LENGTH and form.lower() not in _YAML_WORDS and "${" not in form:
                forms.add(form)
    return forms


def _without_comment(value: str) -> str:
    return value if value.lstrip().startswith(("'", '"')) else re.split(r"(?:^|\s)#", value, maxsplit=1)[0]


def _still_open(opened: str, text: str) -> str:
    """The brackets and quote still open after `text`, given those open before it (a rough count, for a file
    that does not parse: enough to know that the next line continues the value)."""
    stack = list(opened)
    for char in text:
        if stack and stack[-1] in "'\"":
            if char == stack[-1]:
                stack.pop()
        elif char in "[{" or (char in "'\"" and not stack and text.lstrip().startswith(char)):
            stack.append(char)
        elif char in "]}" and stack:
            stack.pop()
    return "".join(stack)
