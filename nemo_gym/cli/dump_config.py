"""`ng_dump_config "+config_paths=[...]" [+key=value ...]`: print the merged, resolved config as YAML, with every
configured secret redacted, to check what ng_run would start."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import yaml

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.loading import load_global_config
from nemo_gym.config.secrets import Redactor, collect_secrets, command_redactor
from nemo_gym.console import fail


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        config = load_global_config(args)
    except ConfigError as exc:
        fail(command_redactor(args).text(str(exc)))  # an override echoed in the message may hold a key
    redactor = Redactor(collect_secrets(config.data))
    sys.stdout.write(yaml.safe_dump(redactor.config(config.data), sort_keys=False, allow_unicode=True))
    sys.stdout.flush()


if __name__ == "__main__":
    main()
