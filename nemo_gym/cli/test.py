"""`ng_test +entrypoint=responses_api_models/openai_model`: run one server folder's own tests with pytest and exit
with pytest's status."""

from __future__ import annotations

import difflib
import subprocess
import sys
from collections.abc import Sequence

from nemo_gym.cli.common import fail, overrides_or_fail
from nemo_gym.config import SERVER_TYPES, available_impls, resolve_input_path


def main(argv: Sequence[str] | None = None) -> None:
    overrides = overrides_or_fail(argv)
    entrypoint = overrides.get("entrypoint")
    if not entrypoint:
        fail("pass the server folder to test, e.g. ng_test +entrypoint=responses_api_models/openai_model")
    folder = resolve_input_path(str(entrypoint))
    if folder.is_file():
        folder = folder.parent
    if not folder.is_dir():
        known = [f"{t}/{impl}" for t in SERVER_TYPES for impl in available_impls(t)]
        near = difflib.get_close_matches(str(entrypoint).strip("/"), known, n=1)
        fail(f"+entrypoint={entrypoint}: no such folder ({folder}). "
             + (f"Did you mean +entrypoint={near[0]}? " if near else "")
             + f"Server folders: {', '.join(known) or 'none'}.")
    tests = folder / "tests"
    if not tests.is_dir():
        fail(f"{folder} has no tests/ folder (expected {tests}). Is +entrypoint a server folder such as "
             "responses_api_models/openai_model?")
    extra = [str(a) for a in overrides.get("pytest_args", [])] if isinstance(overrides.get("pytest_args"), list) \
        else str(overrides.get("pytest_args", "")).split()
    command = [sys.executable, "-m", "pytest", str(tests), *extra]
    print(f"ng_test: {' '.join(command)}", flush=True)
    sys.exit(subprocess.call(command, cwd=folder.parent.parent))


if __name__ == "__main__":
    main()
