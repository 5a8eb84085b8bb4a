"""Collect N rollouts against the offline OpenRouter emulator with a share of upstream attempts failing (every
fault kind: 429 with/without Retry-After, 500/502/503, 408, hangs, dropped connections, errors inside HTTP 200,
finish_reason error) and print what it took.

    python bench/fault_run.py [rows=1000] [fault_rate=0.2] [parallel=64]
"""

from __future__ import annotations

import json
import logging
import sys

from nemo_gym.testing.emulated import fault_run


def main() -> None:
    args = dict(arg.split("=", 1) for arg in sys.argv[1:])
    logging.disable(logging.WARNING)  # retries and fallbacks log by design; the figures are what matter here
    figures = fault_run(
        int(args.get("rows", 1000)), float(args.get("fault_rate", 0.2)), parallel=int(args.get("parallel", 64))
    )
    print(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
