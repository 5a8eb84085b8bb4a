"""The one error every config problem raises: it names the key, the file it came from, and the fix."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where configs are loaded: a server process, given its resolved config, needs neither
    pass

COMMAND_LINE = "the command line"


class ConfigError(Exception):
    """A configuration problem the user must fix; the message says what, where and how."""
