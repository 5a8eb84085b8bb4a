"""Keep secrets out of every output: logs, config dumps, records, error messages and endpoints.

Secrets are found by the *name* of the key that configures them (api_key, token, secret, password, ...) and then
redacted by *value* wherever the value shows up, so a key echoed in an upstream error body is caught too.
`max_output_tokens` is not a secret: names must contain the word `token`, not `tokens`.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from typing import Any

REDACTED = "***REDACTED***"
_SECRET_KEY = re.compile(
    r"(^|[_\-.])(api[_\-]?key|apikey|key|token|secret|password|passwd|authorization|auth|bearer|credentials?)"
    r"($|[_\-.])",
    re.IGNORECASE,
)
# Safety nets for values that were never configured: bearer headers and OpenAI/OpenRouter-style keys.
_BEARER = re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=\-]{6,}")
_KEY_LIKE = re.compile(r"\bsk-[A-Za-z0-9][A-Za-z0-9_\-]{10,}")
_MIN_SECRET_LENGTH = 4


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def collect_secrets(config: Any) -> set[str]:
    """Every string value configured under a secret-looking key, anywhere in a nested config."""
    found: set[str] = set()

    def walk(node: Any) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if isinstance(value, str) and is_secret_key(str(key)) and len(value) >= _MIN_SECRET_LENGTH:
                    found.add(value)
                else:
                    walk(value)
        elif isinstance(node, list | tuple):
            for item in node:
                walk(item)

    walk(config)
    return found


class Redactor:
    """Replaces known secret values (longest first) and bearer tokens in text and nested data."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets = sorted({s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH}, key=len, reverse=True)

    def add(self, *secrets: str) -> None:
        self._secrets = sorted(
            {*self._secrets, *(s for s in secrets if s and len(s) >= _MIN_SECRET_LENGTH)}, key=len, reverse=True
        )

    def text(self, value: str) -> str:
        for secret in self._secrets:
            if secret in value:
                value = value.replace(secret, REDACTED)
        value = _BEARER.sub(lambda m: m.group(1) + REDACTED, value)
        return _KEY_LIKE.sub(REDACTED, value)

    def data(self, value: Any) -> Any:
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, Mapping):
            return {k: self.data(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.data(v) for v in value]
        return value


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
