"""`ng_init_resources_server <name>` (or `+name=<name>`) [+output_dir=resources_servers]: scaffold a working resources
server, `<output_dir>/<name>/`, with a tool, a verifier, a config, example data, tests and a README.

The templates in `nemo_gym/templates/resources_server/` are the files themselves with `{{name}}` (the folder
name) and `{{Name}}` (its CamelCase, for the class name) in them, also in file names; `.tmpl` keeps ruff, pytest
and the package finder away from them. Rendering is plain string replacement rather than a template engine (Jinja
and the like): two placeholders need no logic, there is no dependency to add, and the templates stay readable and
diffable as the Python, YAML and JSON they become (a `{` in generated code never needs escaping).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

from nemo_gym.console import fail, overrides_or_fail, print_flushed
from nemo_gym.servers.scaffold import DEFAULT_OUTPUT_DIR, ScaffoldError, next_steps, scaffold

USAGE = "ng_init_resources_server <name> [+output_dir=resources_servers]   (or +name=<name>)"


def split_args(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """The positional name (if any) and the `+key=value` overrides."""
    positional = [a for a in argv if not a.startswith(("+", "~")) and "=" not in a]
    if len(positional) > 1:
        raise ScaffoldError(
            f"expected one environment name, got {len(positional)}: {' '.join(positional)}. Usage: {USAGE}"
        )
    return (positional[0] if positional else None), [a for a in argv if a not in positional]


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if any(a in ("-h", "--help") for a in args):
        print_flushed(f"usage: {USAGE}\n\n{__doc__}")
        return
    try:
        positional, rest = split_args(args)
    except ScaffoldError as exc:
        fail(str(exc))
    overrides = overrides_or_fail(rest)
    unknown = sorted(set(overrides) - {"name", "output_dir"})
    if unknown:
        fail(f"unknown option(s) {', '.join('+' + k for k in unknown)}. Usage: {USAGE}")
    named = overrides.get("name")
    if positional is not None and named is not None and str(named) != positional:
        fail(f"two different names given ('{positional}' and +name={named}); pass one. Usage: {USAGE}")
    name = positional if positional is not None else named
    if name is None or not str(name).strip():
        fail(f"pass the new environment's name. Usage: {USAGE}")
    output_dir = Path(str(overrides.get("output_dir", DEFAULT_OUTPUT_DIR))).expanduser()
    output_dir = output_dir if output_dir.is_absolute() else Path.cwd() / output_dir
    try:
        target = scaffold(str(name), output_dir)
    except ScaffoldError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(
            f"cannot create {output_dir / str(name)}: {exc.strerror or exc}. Check that +output_dir is a writable "
            "folder (or a path where one can be made)."
        )
    print_flushed(next_steps(str(name), target))


if __name__ == "__main__":
    main()
