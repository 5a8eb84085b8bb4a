"""Internal entry point of one server process started by ng_run: `python -m nemo_gym.cli.serve <instance>`."""

from __future__ import annotations

import os
import sys

from nemo_gym.config.errors import ConfigError
from nemo_gym.servers.serving import CONFIG_ENV_VAR, serve_from_environment


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or CONFIG_ENV_VAR not in os.environ:
        sys.exit(
            f"usage: {CONFIG_ENV_VAR}=<json> python -m nemo_gym.cli.serve <instance name> "
            "(ng_run starts servers this way)"
        )
    try:
        serve_from_environment(args[0])
    except ConfigError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
