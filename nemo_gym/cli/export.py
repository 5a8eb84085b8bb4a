"""`ng_export +format=sft|dpo|rl +input_jsonl_fpath=rollouts.jsonl +output_fpath=sft.jsonl [+output_format=parquet]
[+agent_name=...] [+fingerprint=...] [+allow_mixed=true] [+keep_reasoning=true]
[+min_reward=X] [+best_of_n=true]                 (sft)
[+min_margin=0.5] [+max_pairs_per_row=1]          (dpo)
[+normalize_std=true]                             (rl)
[+push_to_hub=org/name [+push_to_hub_dry_run_dir=<folder>] [+hub_private=true] [+hub_endpoint=URL]]`
(the token: the HF_TOKEN environment variable)

Turns rollout files into a training dataset, streaming (files of millions of rollouts in bounded memory): prints
what it wrote and what it left out and why, and writes that summary to `<output stem>.export.json`. Exit status 1
when the inputs cannot make the dataset (mixed environments or settings, nothing usable), 2 for bad settings.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from nemo_gym.config.errors import ConfigError
from nemo_gym.console import fail, overrides_or_fail, print_flushed
from nemo_gym.extras import MissingExtra
from nemo_gym.training.export import ExportRefused, export, summary_path
from nemo_gym.training.export_settings import settings_from
from nemo_gym.training.hub import HubError
from nemo_gym.training.reading import TrainingInputError


def main(argv: Sequence[str] | None = None) -> None:
    overrides = overrides_or_fail(argv)
    try:
        settings = settings_from(overrides)
        summary = export(settings, progress=lambda line: print_flushed(f"ng_export: {line}", err=True))
    except (ConfigError, MissingExtra, TrainingInputError) as exc:
        fail(str(exc))
    except (ExportRefused, HubError) as exc:
        fail(str(exc), code=1)
    except OSError as exc:  # an unreadable input, an unwritable output folder, a full disk
        fail(f"{exc.filename or 'the export'}: {exc.strerror or exc}; nothing was written.", code=1)
    except KeyboardInterrupt:
        fail("interrupted; nothing was written.", code=130)
    print_flushed(f"ng_export: summary (also in {summary_path(settings.output_fpath)}):")
    for line in summary.lines():
        print_flushed(f"  {line}")
    sys.exit(0)


if __name__ == "__main__":
    main()
