"""`ng_init_resources_server <name>` (or `+name=<name>`) [+output_dir=resources_servers]: scaffold a working resources
server, `<output_dir>/<name>/`, with a tool, a verifier, a config, example data, tests and a README.

The templates in `nemo_gym/templates/resources_server/` are the files themselves with `{{name}}` (the folder
name) and `{{Name}}` (its CamelCase, for the class name) in them, also in file names; `.tmpl` keeps ruff, pytest
and the package finder away from them. Rendering is plain string replacement rather than a template engine (Jinja
and the like): two placeholders need no logic, there is no dependency to add, and the templates stay readable and
diffable as the Python, YAML and JSON they become (a `{` in generated code never needs escaping).
"""

from __future__ import annotations

import importlib.util
import keyword
import os
import re
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path

from nemo_gym.cli.common import fail, overrides_or_fail, print_flushed

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates" / "resources_server"
TEMPLATE_SUFFIX = ".tmpl"
DEFAULT_OUTPUT_DIR = "resources_servers"
MAX_NAME_LENGTH = 40  # the generated code stays within the 120-character lines ruff checks
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
LEFTOVER_PLACEHOLDER = re.compile(r"\{\{\s*\w+\s*\}\}")
USAGE = "ng_init_resources_server <name> [+output_dir=resources_servers]   (or +name=<name>)"


class ScaffoldError(Exception):
    """The scaffold cannot be created as asked; the message says why and what to do instead."""


def class_name(name: str) -> str:
    """`my_env` -> `MyEnv`: the `{{Name}}` placeholder."""
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def check_name(name: str, output_dir: Path) -> None:
    """A name is a folder, a Python package and a config key: a lowercase identifier no import can mistake."""
    if not NAME_PATTERN.fullmatch(name) or keyword.iskeyword(name):
        suggestion = re.sub(r"[^a-z0-9_]+", "_", name.lower()).strip("_")
        suggestion = f"{suggestion}_env" if keyword.iskeyword(suggestion) else suggestion
        suggestion = suggestion if NAME_PATTERN.fullmatch(suggestion or "-") else "my_env"
        raise ScaffoldError(f"'{name}' is not a valid environment name: it must be a lowercase Python identifier "
                            "(letters, digits and underscores, starting with a letter, not a keyword), because it "
                            f"names a folder, a Python package and config keys. Use a name such as '{suggestion}'.")
    if len(name) > MAX_NAME_LENGTH:
        raise ScaffoldError(f"'{name}' is {len(name)} characters long; use at most {MAX_NAME_LENGTH} (it becomes "
                            "the folder, the class name and config keys).")
    if not (output_dir / "__init__.py").exists() and importlib.util.find_spec(name) is not None:
        # Outside a package folder, the server is imported as the top-level package `<name>`.
        raise ScaffoldError(f"'{name}' is already an importable Python module, so {output_dir / name}/app.py would "
                            f"not be found as `{name}.app`. Pick another name, e.g. {name}_env.")


def render(text: str, name: str) -> str:
    return text.replace("{{name}}", name).replace("{{Name}}", class_name(name))


def scaffold(name: str, output_dir: Path) -> Path:
    """Create `output_dir/name/` from the templates, all at once: a failure leaves no half-made folder."""
    check_name(name, output_dir)
    target = output_dir / name
    if target.exists():
        raise ScaffoldError(f"{target} already exists; the scaffold never overwrites files. Pick another name, or "
                            "delete that folder first if you mean to start it again.")
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = output_dir / f".{name}.partial-{os.getpid()}"
    staging.mkdir()
    try:
        for template in sorted(TEMPLATE_DIR.rglob(f"*{TEMPLATE_SUFFIX}")):
            relative = render(str(template.relative_to(TEMPLATE_DIR)), name).removesuffix(TEMPLATE_SUFFIX)
            text = render(template.read_text(encoding="utf-8"), name)
            if leftover := LEFTOVER_PLACEHOLDER.search(text):
                raise ScaffoldError(f"template {template} has an unknown placeholder {leftover.group()}; "
                                    "only {{name}} and {{Name}} are filled in.")
            destination = staging / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_text(text, encoding="utf-8")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def split_args(argv: Sequence[str]) -> tuple[str | None, list[str]]:
    """The positional name (if any) and the `+key=value` overrides."""
    positional = [a for a in argv if not a.startswith(("+", "~")) and "=" not in a]
    if len(positional) > 1:
        raise ScaffoldError(f"expected one environment name, got {len(positional)}: {' '.join(positional)}. "
                            f"Usage: {USAGE}")
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
        fail(f"cannot create {output_dir / str(name)}: {exc.strerror or exc}. Check that +output_dir is a writable "
             "folder (or a path where one can be made).")
    print_flushed(next_steps(str(name), target))


def next_steps(name: str, target: Path) -> str:
    shown = _shown(target)
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    lines = [f"Created {shown}/:", *(f"  {f}" for f in files), "", "Next:",
             f"  1. Edit the tool and the verifier in {shown}/app.py, and the rows in {shown}/data/example.jsonl",
             f"  2. ng_test +entrypoint={shown}",
             f"  3. ng_run \"+config_paths=[responses_api_models/openai_model/configs/openai_model.yaml, "
             f"{shown}/configs/{name}.yaml]\"   (policy_base_url, policy_api_key, policy_model_name in env.yaml)",
             f"  4. ng_collect_rollouts +agent_name={name}_simple_agent "
             f"+input_jsonl_fpath={shown}/data/example.jsonl +output_jsonl_fpath=results/{name}_rollouts.jsonl",
             f"See {shown}/README.md."]
    if target.parent.name != "resources_servers":
        lines.append(f"Note: ng_run finds servers in resources_servers/<name>/ under the working directory or the "
                     f"project; {target} is not there, so move it before running it.")
    return "\n".join(lines)


def _shown(path: Path) -> str:
    """`resources_servers/my_env` when under the working directory (what the user types next), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    main()
