"""What every command shares: flushed printing and failing with one clear message."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from nemo_gym.config import ConfigError, parse_overrides
from nemo_gym.redaction import command_redactor


def print_flushed(message: str, *, err: bool = False) -> None:
    """Print and flush at once, so scripts and process managers see status lines immediately."""
    print(message, file=sys.stderr if err else sys.stdout, flush=True)


def fail(message: str, code: int = 2) -> NoReturn:
    print_flushed(f"error: {message}", err=True)
    sys.exit(code)


def overrides_or_fail(argv: Sequence[str] | None) -> dict[str, Any]:
    """The command's `+key=value` arguments (sys.argv when `argv` is None) as a nested dict, or a clean exit."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return parse_overrides(args)
    except ConfigError as exc:
        fail(command_redactor(args).text(str(exc)))
