"""`ng_test +entrypoint=resources_servers/simple_weather`: check one server folder and run its own tests.

For a resources server (a folder under `resources_servers/`) the example data is checked first
(`nemo_gym.servers.datacheck`: rows parse, name only the server's tools and carry its `row_fields`), because a bad row
otherwise only fails mid-collection. Then pytest runs the folder's `tests/`. Both always run, so one command shows
every problem; the exit status is pytest's if it failed, else 1 if the data check failed, else 0.
"""

from __future__ import annotations

import difflib
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

from nemo_gym.config.paths import SERVER_TYPES, available_impls, resolve_input_path
from nemo_gym.console import fail, overrides_or_fail, print_flushed
from nemo_gym.extras import folder_requirements_notice, folder_requirements_problem
from nemo_gym.servers.datacheck import check_resources_server, display_path


def is_resources_server(folder: Path) -> bool:
    """Folders under a `resources_servers/` directory are resources servers; model and agent folders are not."""
    return folder.resolve().parent.name == "resources_servers"


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
        fail(
            f"+entrypoint={entrypoint}: no such folder ({folder}). "
            + (f"Did you mean +entrypoint={near[0]}? " if near else "")
            + f"Server folders: {', '.join(known) or 'none'}."
        )
    tests = folder / "tests"
    if not tests.is_dir():
        fail(
            f"{folder} has no tests/ folder (expected {tests}). Is +entrypoint a server folder such as "
            "responses_api_models/openai_model?"
        )
    missing = folder_requirements_problem(folder, display_path(folder))
    if missing is not None:
        fail(missing)
    notice = folder_requirements_notice(folder, display_path(folder))
    if notice is not None:
        print_flushed(notice, err=True)
    data_ok = True
    if is_resources_server(folder):
        check = check_resources_server(folder)
        print_flushed(check.report(), err=not check.ok)
        data_ok = check.ok
    extra = (
        [str(a) for a in overrides.get("pytest_args", [])]
        if isinstance(overrides.get("pytest_args"), list)
        else str(overrides.get("pytest_args", "")).split()
    )
    command = [sys.executable, "-m", "pytest", str(tests), *extra]
    print_flushed(f"ng_test: {' '.join(command)}")
    code = subprocess.call(command, cwd=folder.parent.parent)
    if code == 0 and not data_ok:
        print_flushed("ng_test: the tests passed but the data check failed (problems above).", err=True)
        code = 1
    sys.exit(code)


if __name__ == "__main__":
    main()
