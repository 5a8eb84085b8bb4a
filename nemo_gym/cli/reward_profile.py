"""`ng_reward_profile +input_jsonl_fpath=rollouts.jsonl +output_jsonl_fpath=profile.jsonl [+pass_threshold=1.0]
[+answer_key=extracted_answer] [+group_by=row|row_and_settings] [+agent_name=...]
[+filter_output_jsonl_fpath=hard.jsonl (+keep=mixed|unsolved|solved) (+min_mean_reward=X) (+max_mean_reward=X)
(+min_pass_rate=X) (+max_pass_rate=X)]`

How hard each dataset row is for the model(s) that collected it: one line per row with its rollouts, failures,
reward mean and spread, pass@k and majority@k; a summary printed and written to `<output stem>.summary.json`. With a
filter, the selected rows are written as a new input dataset for ng_collect_rollouts. Exit status 1 when the inputs
hold no usable rollout, 2 for bad settings or a file that cannot be read or written.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence

from nemo_gym.config.errors import ConfigError
from nemo_gym.console import fail, overrides_or_fail, print_flushed
from nemo_gym.protocol.types import JSONObject
from nemo_gym.training.profile import NoUsableRollouts, profile, settings_from, summary_path
from nemo_gym.training.reading import TrainingInputError


def format_summary(summary: JSONObject) -> list[str]:
    """The summary as lines for a terminal."""
    threshold = summary["pass_threshold"]
    lines = [
        f"{_rows(summary)}, {summary['rollouts']:,} rollouts ({summary['failed']:,} failed) from "
        f"{len(summary['inputs'])} file(s); grouped by {summary['group_by'].replace('_', ' ')}; a rollout is "
        f"correct when its reward >= {threshold:g}",
        *_k_table(summary),
        f"rows: {summary['always_solved']:,} always solved, {summary['never_solved']:,} never solved, "
        f"{summary['mixed']:,} mixed; {summary['rows_with_reward_spread']:,} with rewards that differ (a GRPO "
        "learning signal)",
        "pass rate per row:",
        *_histogram(summary["pass_rate_histogram"]),
    ]
    if len(summary["agents"]) > 1:
        lines.append("per agent:")
        lines += [f"  {name}: {_brief(figures)}" for name, figures in summary["agents"].items()]
    if len(summary["settings"]) > 1:
        lines.append("per settings (fingerprint):")
        for fp, figures in summary["settings"].items():
            models = ", ".join(figures["models"]) or "models unknown"
            rate = "-" if figures["pass_rate"] is None else f"{figures['pass_rate']:.3f}"
            lines.append(
                f"  {fp} ({figures['agent_name']}; {models}): {figures['rows']:,} rows, {figures['rollouts']:,} "
                f"rollouts, {figures['failed']:,} failed, pass rate {rate}"
            )
    lines += summary["skipped"]
    lines += [f"warning: {warning}" for warning in summary["warnings"]]
    lines += summary["notes"]
    selection = summary["filter"]
    if selection is not None:
        lines.append(
            f"filter: wrote {selection['rows_written']:,} rows to {selection['filter_output_jsonl_fpath']} "
            f"(kept: {selection['rule']})"
        )
    return lines


def _rows(summary: JSONObject) -> str:
    """Rows, and profile lines when a row has several (one per agent, or per settings with row_and_settings)."""
    rows, lines = summary["dataset_rows"], summary["rows"]
    if rows == lines:
        return f"{rows:,} rows"
    per = "agent and settings" if summary["group_by"] == "row_and_settings" else "agent"
    return f"{rows:,} rows ({lines:,} profile lines: one per row, {per})"


def _k_table(summary: JSONObject) -> list[str]:
    ks = list(summary["pass_at_k"])
    if not ks:
        return []
    width = max(7, *(len(f"k={k}") + 1 for k in ks))
    header = "            " + "".join(f"k={k}".rjust(width) for k in ks)
    rows = [header]
    for name, key in (("pass@k", "pass_at_k"), ("majority@k", "majority_at_k")):
        figures = summary[key]
        if figures:
            cells = "".join((f"{figures[k]['mean']:.3f}" if k in figures else "-").rjust(width) for k in ks)
            rows.append(f"{name:<12}{cells}")
    rows.append(f"{'rows':<12}" + "".join(str(summary["pass_at_k"][k]["rows"]).rjust(width) for k in ks))
    return rows


def _histogram(bins: list[JSONObject]) -> list[str]:
    most = max((b["rows"] for b in bins), default=0) or 1
    lines = []
    for i, entry in enumerate(bins):
        closing = "]" if i == len(bins) - 1 else ")"
        bar = "#" * math.ceil(40 * entry["rows"] / most) if entry["rows"] else ""
        lines.append(f"  [{entry['from']:.1f}, {entry['to']:.1f}{closing} {entry['rows']:>7,} {bar}".rstrip())
    return lines


def _brief(figures: JSONObject) -> str:
    pass1 = figures["pass_at_k"].get("1", {}).get("mean")
    shown = "-" if pass1 is None else f"{pass1:.3f}"
    return (
        f"{figures['rows']:,} rows, {figures['rollouts']:,} rollouts, pass@1 {shown}, "
        f"{figures['always_solved']:,} always / {figures['never_solved']:,} never solved / {figures['mixed']:,} mixed"
    )


def main(argv: Sequence[str] | None = None) -> None:
    overrides = overrides_or_fail(argv)
    try:
        settings = settings_from(overrides)
        summary = profile(settings, progress=lambda line: print_flushed(f"ng_reward_profile: {line}", err=True))
    except NoUsableRollouts as exc:
        fail(str(exc), code=1)
    except (ConfigError, TrainingInputError) as exc:
        fail(str(exc))
    except KeyboardInterrupt:
        fail("interrupted; nothing was written.", code=130)
    written = settings.output_jsonl_fpath
    print_flushed(f"ng_reward_profile: wrote {written} (summary: {summary_path(written)})")
    for line in format_summary(summary):
        print_flushed(f"  {line}")
    sys.exit(0)


if __name__ == "__main__":
    main()
