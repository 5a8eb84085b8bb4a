"""How a command talks to its user: flushed lines, one clear message and an exit status on failure, an event loop."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Coroutine, Sequence
from typing import Any, NoReturn, TypeVar

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.overrides import parse_overrides
from nemo_gym.config.secrets import command_redactor
from nemo_gym.protocol.types import JSONObject

T = TypeVar("T")


def print_flushed(message: str, *, err: bool = False) -> None:
    """Print and flush at once, so scripts and process managers see status lines immediately."""
    print(message, file=sys.stderr if err else sys.stdout, flush=True)


def fail(message: str, code: int = 2) -> NoReturn:
    print_flushed(f"error: {message}", err=True)
    sys.exit(code)


def overrides_or_fail(argv: Sequence[str] | None) -> JSONObject:
    """The command's `+key=value` arguments (sys.argv when `argv` is None) as a nested dict, or a clean exit."""
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        return parse_overrides(args)
    except ConfigError as exc:
        fail(command_redactor(args).text(str(exc)))


def run_async(main: Coroutine[Any, Any, T]) -> T:
    """`asyncio.run`, on uvloop when it is installed (it comes with uvicorn[standard]): the collector's event loop
    handles every rollout's answer, and uvloop's costs a fraction of the default loop's CPU per event."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(main)


def print_columns(rows: Sequence[Sequence[str]]) -> None:
    """Rows of cells as left-aligned columns, the first row being the header (ng_run's table of servers)."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print_flushed("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())
