"""`ng_models [+search=text] [+tools=true] [+max_price=X] [+sort=price] [+limit=N] [+format=table|json|csv]
[+offline=true] [+estimate_from=rollouts.jsonl +input_jsonl_fpath=dataset.jsonl|+dataset_rows=N +num_repeats=K]`

Lists the models of `{base_url}/models` (default: `policy_base_url`, else OpenRouter) with prices per million tokens,
context length and tool support; the live catalog refreshes an on-disk cache, which is used (and dated) when the
endpoint cannot be reached or with +offline=true. With +estimate_from, each model's cost per rollout (mean tokens of
the sample's successful rollouts times the model's prices) and for the whole dataset, before a run.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Sequence

from nemo_gym.collection.inputs import InputError
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.loading import load_global_config
from nemo_gym.config.paths import resolve_input_path
from nemo_gym.config.secrets import command_redactor
from nemo_gym.console import fail, print_flushed
from nemo_gym.upstream.catalog import CatalogError
from nemo_gym.upstream.model_listing import count_rows, fetch, read_sample, render, settings_from


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    redactor = command_redactor(args)
    try:
        config = load_global_config(args)
        redactor = command_redactor(args, config.data)
        settings = settings_from(config)
        if settings.cache_dir is not None:
            settings.cache_dir = settings.cache_dir.expanduser()
        sample = read_sample(resolve_input_path(settings.estimate_from)) if settings.estimate_from else None
        rows = settings.dataset_rows or (
            count_rows(resolve_input_path(settings.input_jsonl_fpath)) if settings.input_jsonl_fpath else None
        )
        catalog, reason = asyncio.run(fetch(settings))
    except (ConfigError, InputError, CatalogError) as exc:
        fail(redactor.text(str(exc)))
    except OSError as exc:  # e.g. a cache directory that cannot be created
        fail(redactor.text(f"{exc}. Pass a writable +cache_dir=PATH (or set NEMO_GYM_CACHE_DIR)."))
    except KeyboardInterrupt:
        fail("interrupted.", code=130)
    out, notes = render(catalog, reason, settings, sample, rows)
    for line in notes:
        print_flushed(redactor.text(line), err=True)
    for line in out:
        print_flushed(redactor.text(line))


if __name__ == "__main__":
    main()
