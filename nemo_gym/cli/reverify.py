"""`ng_reverify +input_jsonl_fpath=rollouts.jsonl +output_jsonl_fpath=rescored.jsonl [+resources_server=<name>]
[+num_samples_in_parallel=P] [+limit=N] [+overwrite=true] [+retry_failed=true] [+replay_tools=false]`

Re-scores stored rollouts with the current verifier of the running ng_run's resources servers, calling no agent and
no model: each record is written to the output with its new `reward`, its `previous_reward` and a `reverified`
marker; the summary is printed and written to `<output stem>.reverify.json`. A re-run resumes.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nemo_gym.collection.reverify import ReverifySummary, reverify, settings_from, summary_path
from nemo_gym.collection.run import format_summary, run_resumable_command
from nemo_gym.config.types import GlobalConfig
from nemo_gym.console import print_flushed


def _reverify(config: GlobalConfig) -> Any:
    return reverify(config, settings_from(config))


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    summary: ReverifySummary = run_resumable_command(args, _reverify, kept="finished records")
    print_flushed(f"Summary (also in {summary_path(Path(summary['output_jsonl_fpath']))}):")
    print_flushed(format_summary(summary))
    nothing_rescored = summary["rescored"] == 0 and bool(summary["failed_now"] or summary["skipped"])
    sys.exit(1 if nothing_rescored else 0)


if __name__ == "__main__":
    main()
