"""Keep secrets out of every output: logs, config dumps, records, error messages and endpoints.

Secrets are found by the *name* of the key that configures them (api_key, api_keys, token, secret, password, ...)
and then redacted by *value* wherever the value shows up, so a key echoed in an upstream error body is caught too.
Everything under a secret key is secret: each string in `api_keys: [a, b]`, and numbers such as
`password: 12345678` (YAML reads those as ints). `max_output_tokens` is not a secret: names must contain the word
`token`, never `tokens`, which always counts something.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

import orjson

REDACTED = "***REDACTED***"
_SECRET_KEY = re.compile(
    r"(^|[_\-.])(api[_\-]?keys?|keys?|token|secrets?|passwords?|passwd|authorization|auth|bearer|credentials?)"
    r"($|[_\-.])",
    re.IGNORECASE,
)
_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
# Safety nets for values that were never configured: bearer headers, other Authorization schemes, OpenAI/OpenRouter
# style keys and passwords inside URLs.
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{6,}")
_AUTHORIZATION = re.compile(r"""(?i)(\bauthorization["']?\s*[:=]\s*["']?(?!bearer\s)[A-Za-z]+\s+)[^\s"',;}]{6,}""")
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9][A-Za-z0-9_\-]{10,}")
_URL_PASSWORD = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]+:)([^/\s@]+)(@)")
_SAFETY_NET_MARKERS = ("bearer", "authorization", "sk-", "://")
"""What every safety-net pattern needs (in lower case); most strings (model text, tool output) have none, and skip
the four patterns."""


_SAFETY_NET_BYTE_MARKERS = tuple(marker.encode() for marker in _SAFETY_NET_MARKERS)


def _may_match_safety_net(value: str) -> bool:
    # Substring tests on a lower-cased copy: about 6x faster than one case-insensitive alternation over a record.
    lowered = value.lower()
    return any(marker in lowered for marker in _SAFETY_NET_MARKERS)


def _may_match_safety_net_bytes(value: bytes) -> bool:
    # The same on UTF-8 bytes: bytes.lower() folds ASCII only, which is all the markers hold, and costs a fraction
    # of str.lower() on text with any non-ASCII character in it.
    lowered = value.lower()
    return any(marker in lowered for marker in _SAFETY_NET_BYTE_MARKERS)


_MIN_SECRET_LENGTH = 4
_MIN_FRAGMENT_LENGTH = 8
_KEY_CHARACTERS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-")


def is_secret_key(key: str) -> bool:
    """True for names such as api_key, apiKeys, x-api-key, hf_token, db_password, Authorization."""
    return bool(_SECRET_KEY.search(_CAMEL_BOUNDARY.sub("_", key)))


def _secret_text(value: Any) -> str | None:
    """A scalar as the text it would show up as in output; None for what cannot be a secret (None, booleans)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str | int | float):
        text = str(value)
        return text if len(text) >= _MIN_SECRET_LENGTH else None
    return None


def collect_secrets(config: Any) -> set[str]:
    """Every scalar configured under a secret-looking key (at any depth, inside lists too), as text; and the
    password of every URL that carries one (`https://user:password@host`), under whatever key."""
    found: set[str] = set()

    def walk(node: Any, secret: bool) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                walk(value, secret or is_secret_key(str(key)))
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item, secret)
        elif secret and (text := _secret_text(node)) is not None:
            found.add(text)
        elif isinstance(node, str):
            found.update(m.group(2) for m in _URL_PASSWORD.finditer(node) if len(m.group(2)) >= _MIN_SECRET_LENGTH)

    walk(config, False)
    return found


def command_line_secrets(args: Iterable[str]) -> set[str]:
    """Values given on a command line for secret-looking keys (`+policy_api_key=...`), read without parsing the
    override grammar, so an error quoting an override that does not parse cannot quote its key."""
    found: set[str] = set()
    for arg in args:
        key, equals, value = arg.partition("=")
        if equals and any(is_secret_key(part) for part in key.lstrip("+~").split(".")):
            found.update(v for v in (value.strip(), value.strip().strip("'\"")) if len(v) >= _MIN_SECRET_LENGTH)
    return found


def command_redactor(args: Iterable[str], config: Any = None) -> Redactor:
    """What a command's own error messages go through: the secrets of the configuration it loaded (if it got that
    far) and those of its command line."""
    return Redactor(command_line_secrets(args) | collect_secrets(config))


class Redactor:
    """Replaces known secret values (longest first) and bearer tokens in text and nested data."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(*secrets)

    def add(self, *secrets: str) -> None:
        known = {*self._secrets, *(s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH)}
        self._secrets = sorted(known, key=len, reverse=True)
        self._known = frozenset(known)
        # What any trace of a secret in JSON text starts with: its first characters, as written and JSON-escaped.
        self._probes = tuple(
            {form[:_MIN_FRAGMENT_LENGTH] for s in known for form in (s, orjson.dumps(s).decode()[1:-1])}
        )
        self._byte_probes = tuple(probe.encode() for probe in self._probes)

    def json_line(self, value: Any) -> str:
        """`value` as one line of JSON with secrets redacted. Serialized once and kept as is when nothing in it can
        be a secret or look like one (the usual rollout record), else redacted value by value: one rollout's record
        is tens of kilobytes, and walking it was the collector's largest cost."""
        line = orjson.dumps(value)
        if any(probe in line for probe in self._byte_probes) or _may_match_safety_net_bytes(line):
            line = orjson.dumps(self.data(value))
        return line.decode()

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        if _may_match_safety_net(value):
            value = _BEARER.sub(lambda m: m.group(1) + REDACTED, value)
            value = _AUTHORIZATION.sub(lambda m: m.group(1) + REDACTED, value)
            value = _URL_PASSWORD.sub(lambda m: m.group(1) + REDACTED + m.group(3), value)
            value = _KEY_LIKE.sub(REDACTED, value)
        return self._fragments(value)

    def _fragments(self, value: str) -> str:
        """A secret cut short by a message that was truncated before it was redacted (`body[:300]`): at least
        8 leading characters of a secret that end where the text stops looking like a key."""
        for secret in self._secrets:
            if len(secret) <= _MIN_FRAGMENT_LENGTH:
                continue
            head = secret[:_MIN_FRAGMENT_LENGTH]
            start = value.find(head)
            while start != -1:
                end = start + _MIN_FRAGMENT_LENGTH
                while end < len(value) and end - start < len(secret) and value[end] == secret[end - start]:
                    end += 1
                if end == len(value) or value[end] not in _KEY_CHARACTERS:
                    value = value[:start] + REDACTED + value[end:]
                    end = start + len(REDACTED)
                start = value.find(head, end)
        return value

    def data(self, value: Any) -> Any:
        """A copy with every string redacted, and every number that is a configured secret replaced."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        if isinstance(value, int | float) and not isinstance(value, bool) and str(value) in self._known:
            return REDACTED
        return value

    def config(self, value: Any) -> Any:
        """`data`, plus every value under a secret-looking key replaced whole: for showing a configuration, where
        even a secret too short to match by value (or one never collected) must not appear."""
        if isinstance(value, Mapping):
            return {k: self._secret_subtree(v) if is_secret_key(str(k)) else self.config(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.config(v) for v in value]
        return self.data(value)

    def _secret_subtree(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return {k: self._secret_subtree(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._secret_subtree(v) for v in value]
        return value if value is None or isinstance(value, bool) else REDACTED


class RedactingFilter(logging.Filter):
    """A logging filter that rewrites each record's final message through a Redactor."""

    def __init__(self, redactor: Redactor) -> None:
        super().__init__()
        self.redactor = redactor

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        redacted = self.redactor.text(message)
        if record.exc_info and record.exc_info[1] is not None:
            record.exc_text = self.redactor.text(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if redacted != message or record.args:
            record.msg, record.args = redacted, None
        return True


def install_log_redaction(redactor: Redactor) -> None:
    """Attach the filter to every handler of the root logger and of uvicorn's loggers."""
    log_filter = RedactingFilter(redactor)
    for name in ("", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx"):
        logger = logging.getLogger(name)
        for handler in logger.handlers:
            handler.addFilter(log_filter)
        logger.addFilter(log_filter)
