"""`ng_collect_rollouts [+agent_name=...] +input_jsonl_fpath=... +output_jsonl_fpath=... [+limit=N]
[+num_repeats=K] [+num_samples_in_parallel=P] [+responses_create_params.temperature=0.7] [+overwrite=true]`

Finds the agents through the running ng_run's head server, runs each row on the agent its `agent_ref` names (else
on `+agent_name`) once per repeat, appends one JSON line per rollout to the output (skipping rollouts already
there), and prints and writes the run's metrics (per agent too, when several ran) next to the output as
`<output stem>.metrics.json`.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from nemo_gym.collection.inputs import InputError
from nemo_gym.collection.output_lock import OutputLocked
from nemo_gym.collection.resume import (
    SettingsChanged,
)
from nemo_gym.collection.run import Interrupted, RunStopped, collect, format_summary, metrics_path, settings_from
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.loading import load_global_config
from nemo_gym.config.secrets import command_redactor
from nemo_gym.console import fail, print_flushed, run_async
from nemo_gym.servers.gc_tuning import tune_for_many_in_flight


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    # SIGTERM while the run starts or ends (the collection itself drains on it) unwinds like Ctrl-C instead of
    # killing the process on the spot, so the output's lock file is removed on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        config = load_global_config(args)
        settings = settings_from(config)
        tune_for_many_in_flight()
        summary = run_async(collect(config, settings))
    except (ConfigError, InputError, SettingsChanged, OutputLocked) as exc:
        fail(command_redactor(args).text(str(exc)))
    except Interrupted as exc:
        fail(str(exc), code=130)
    except RunStopped as exc:
        fail(str(exc), code=3)
    except KeyboardInterrupt:
        fail("interrupted; finished rollouts are in the output. Re-run the same command to resume.", code=130)
    print_flushed(f"Metrics (also in {metrics_path(Path(summary['output_jsonl_fpath']))}):")
    print_flushed(format_summary(summary))
    this_run = summary["this_run"]
    sys.exit(1 if this_run["succeeded"] == 0 and this_run["rollouts"] > 0 else 0)


if __name__ == "__main__":
    main()
