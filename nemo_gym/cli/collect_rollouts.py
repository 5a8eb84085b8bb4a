"""`ng_collect_rollouts [+agent_name=...] +input_jsonl_fpath=... +output_jsonl_fpath=... [+limit=N]
[+num_repeats=K] [+num_samples_in_parallel=P] [+responses_create_params.temperature=0.7] [+overwrite=true]`

Finds the agents through the running ng_run's head server, runs each row on the agent its `agent_ref` names (else
on `+agent_name`) once per repeat, appends one JSON line per rollout to the output (skipping rollouts already
there), and prints and writes the run's metrics (per agent too, when several ran) next to the output as
`<output stem>.metrics.json`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nemo_gym.collection.run import collect, format_summary, metrics_path, run_resumable_command, settings_from
from nemo_gym.config.types import GlobalConfig
from nemo_gym.console import print_flushed
from nemo_gym.protocol.types import CollectionSummary
from nemo_gym.servers.gc_tuning import tune_for_many_in_flight


def _collect(config: GlobalConfig) -> Any:
    settings = settings_from(config)
    tune_for_many_in_flight()
    return collect(config, settings)


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    summary: CollectionSummary = run_resumable_command(args, _collect, kept="finished rollouts")
    print_flushed(f"Metrics (also in {metrics_path(Path(summary['output_jsonl_fpath']))}):")
    print_flushed(format_summary(summary))
    this_run = summary["this_run"]
    sys.exit(1 if this_run["succeeded"] == 0 and this_run["rollouts"] > 0 else 0)


if __name__ == "__main__":
    main()
