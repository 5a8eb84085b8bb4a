"""What every command shares: flushed printing and failing with one clear message."""

from __future__ import annotations

import sys
from typing import NoReturn


def print_flushed(message: str, *, err: bool = False) -> None:
    """Print and flush at once, so scripts and process managers see status lines immediately."""
    print(message, file=sys.stderr if err else sys.stdout, flush=True)


def fail(message: str, code: int = 2) -> NoReturn:
    print_flushed(f"error: {message}", err=True)
    sys.exit(code)
