"""The `ng_prepare_reasoning_gym` console script: checks that reasoning-gym is installed before importing it, so a
core install gets the line that fixes it instead of a traceback."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from nemo_gym.console import fail
from nemo_gym.extras import folder_requirements_problem


def main(argv: Sequence[str] | None = None) -> None:
    missing = folder_requirements_problem(Path(__file__).resolve().parent, "resources_servers/reasoning_gym")
    if missing is not None:
        fail(f"ng_prepare_reasoning_gym: {missing}")
    from resources_servers.reasoning_gym.prepare import main as prepare

    prepare(argv)
