"""`ng_compare_models "+config_paths=[model.yaml, environment.yaml]" "+models=[a/x, b/y, c/z]"
+input_jsonl_fpath=... [+model_servers=[instance, ...]] [+agent_name=...] [+output_dir=results/model_comparison]
[+limit=N] [+num_repeats=K] [+num_samples_in_parallel=P] [+max_cost_usd=X] [+report_only=true]`

Runs one dataset over several models with the same agent and resources server: starts the servers (one model
server and agent per model, their logs in `<output_dir>/servers.log`), collects each model's rollouts into
`<output_dir>/rollouts/<model>.jsonl` (resuming what an earlier run finished), and writes the report as
`comparison.md`, `.csv`, `.html`, `.png` and `.json`.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from nemo_gym.console import fail
from nemo_gym.extras import MissingExtra, require_extra


def main(argv: Sequence[str] | None = None) -> None:
    try:  # the statistics and the chart need scipy and matplotlib: say so before anything starts
        require_extra("compare", needed_for="ng_compare_models")
    except MissingExtra as exc:
        fail(str(exc))
    from nemo_gym.collection.inputs import InputError, read_rows
    from nemo_gym.collection.output_lock import OutputLocked
    from nemo_gym.collection.resume import SettingsChanged
    from nemo_gym.compare.plan import build_comparison, plan
    from nemo_gym.compare.run import (
        EXIT_INTERRUPTED,
        ComparisonRun,
        display_path,
        hold_outputs,
        report,
        settings_from,
        with_free_head_port,
    )
    from nemo_gym.config.errors import ConfigError
    from nemo_gym.config.loading import load_global_config
    from nemo_gym.config.secrets import Redactor, collect_secrets, command_redactor
    from nemo_gym.config.types import GlobalConfig
    from nemo_gym.console import print_flushed
    from nemo_gym.servers.loading import prepare

    args = list(sys.argv[1:] if argv is None else argv)
    config: GlobalConfig | None = None
    try:
        config = load_global_config(args)
        settings = settings_from(config)
        rows = read_rows(settings.input_jsonl_fpath, settings.limit)
        cluster, variants = plan(config, settings)
        if not settings.report_only:
            cluster = prepare(with_free_head_port(cluster))
    except (ConfigError, InputError) as exc:
        fail(command_redactor(args, config.data if config else None).text(str(exc)))
    redactor = Redactor(collect_secrets(cluster.data))
    settings.output_dir.mkdir(parents=True, exist_ok=True)
    code = 0
    stopped: list[str] = []
    if not settings.report_only:
        try:
            with (
                hold_outputs(cluster, variants, settings) as locks,
                (settings.output_dir / "servers.log").open("a", encoding="utf-8") as log,
            ):
                run = ComparisonRun(cluster, variants, settings, log, locks)
                code = run.run()
                stopped = run.stopped
        except (SettingsChanged, InputError, ConfigError, OutputLocked) as exc:
            fail(redactor.text(str(exc)))
    comparison = build_comparison(variants, settings, rows, dataset=display_path(settings.input_jsonl_fpath))
    report(comparison, settings.output_dir, redactor)
    for line in stopped:
        print_flushed(f"Stopped early: {redactor.text(line)}", err=True)
    if code == EXIT_INTERRUPTED:
        print_flushed(
            "Interrupted: the report covers the rollouts finished so far; re-run the same command to "
            "finish the rest (finished rollouts are reused).",
            err=True,
        )
    sys.exit(code)


if __name__ == "__main__":
    main()
