"""`ng_reverify +input_jsonl_fpath=rollouts.jsonl +output_jsonl_fpath=rescored.jsonl [+resources_server=<name>]
[+num_samples_in_parallel=P] [+limit=N] [+overwrite=true] [+retry_failed=true] [+replay_tools=false]`

Re-scores stored rollouts with the current verifier of the running ng_run's resources servers, calling no agent and
no model: each record is written to the output with its new `reward`, its `previous_reward` and a `reverified`
marker; the summary is printed and written to `<output stem>.reverify.json`. A re-run resumes.
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from nemo_gym.collection.inputs import InputError
from nemo_gym.collection.output_lock import OutputLocked
from nemo_gym.collection.reverify import reverify, settings_from, summary_path
from nemo_gym.collection.run import Interrupted, RunStopped, format_summary
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.loading import load_global_config
from nemo_gym.config.secrets import command_redactor
from nemo_gym.console import fail, print_flushed, run_async


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, _interrupt)  # before and after the run (which drains on it): unwind, unlock
    try:
        config = load_global_config(args)
        settings = settings_from(config)
        summary = run_async(reverify(config, settings))
    except (ConfigError, InputError, OutputLocked) as exc:
        fail(command_redactor(args).text(str(exc)))
    except Interrupted as exc:
        fail(str(exc), code=130)
    except RunStopped as exc:
        fail(str(exc), code=3)
    except KeyboardInterrupt:
        fail("interrupted; finished records are in the output. Re-run the same command to resume.", code=130)
    print_flushed(f"Summary (also in {summary_path(Path(summary['output_jsonl_fpath']))}):")
    print_flushed(format_summary(summary))
    nothing_rescored = summary["rescored"] == 0 and bool(summary["failed_now"] or summary["skipped"])
    sys.exit(1 if nothing_rescored else 0)


if __name__ == "__main__":
    main()
