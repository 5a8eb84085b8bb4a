"""Internal entry point of one server process started by ng_run: `python -m nemo_gym.cli.serve <instance>`.

The resolved global config (with assigned ports) arrives in the NEMO_GYM_GLOBAL_CONFIG environment variable, so
secrets never appear on a command line or on disk.
"""

from __future__ import annotations

import json
import os
import sys

from nemo_gym.config import ConfigError, GlobalConfig
from nemo_gym.loader import load_server_class
from nemo_gym.server import serve_instance

CONFIG_ENV_VAR = "NEMO_GYM_GLOBAL_CONFIG"


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1 or CONFIG_ENV_VAR not in os.environ:
        sys.exit("usage: NEMO_GYM_GLOBAL_CONFIG=<json> python -m nemo_gym.cli.serve <instance name> "
                 "(ng_run starts servers this way)")
    payload = json.loads(os.environ.pop(CONFIG_ENV_VAR))
    global_config = GlobalConfig(data=payload["data"], origins=payload["origins"])
    name = args[0]
    try:
        spec = global_config.instances[name]
        serve_instance(load_server_class(spec), name, global_config)
    except ConfigError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
