"""Scaffolding a working resources server from `nemo_gym/templates/resources_server/`: a tool, a verifier, a config,
example data, tests and a README.
"""

from __future__ import annotations

import importlib.util
import keyword
import os
import re
import shutil
from pathlib import Path

TEMPLATE_DIR = Path(__file__).resolve().parent.parent / "templates" / "resources_server"
TEMPLATE_SUFFIX = ".tmpl"
DEFAULT_OUTPUT_DIR = "resources_servers"
MAX_NAME_LENGTH = 40  # the generated code stays within the 120-character lines ruff checks
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")
LEFTOVER_PLACEHOLDER = re.compile(r"\{\{\s*\w+\s*\}\}")


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
        raise ScaffoldError(
            f"'{name}' is not a valid environment name: it must be a lowercase Python identifier "
            "(letters, digits and underscores, starting with a letter, not a keyword), because it "
            f"names a folder, a Python package and config keys. Use a name such as '{suggestion}'."
        )
    if len(name) > MAX_NAME_LENGTH:
        raise ScaffoldError(
            f"'{name}' is {len(name)} characters long; use at most {MAX_NAME_LENGTH} (it becomes "
            "the folder, the class name and config keys)."
        )
    if not (output_dir / "__init__.py").exists() and importlib.util.find_spec(name) is not None:
        # Outside a package folder, the server is imported as the top-level package `<name>`.
        raise ScaffoldError(
            f"'{name}' is already an importable Python module, so {output_dir / name}/app.py would "
            f"not be found as `{name}.app`. Pick another name, e.g. {name}_env."
        )


def render(text: str, name: str) -> str:
    return text.replace("{{name}}", name).replace("{{Name}}", class_name(name))


def scaffold(name: str, output_dir: Path) -> Path:
    """Create `output_dir/name/` from the templates, all at once: a failure leaves no half-made folder."""
    check_name(name, output_dir)
    target = output_dir / name
    if target.exists():
        raise ScaffoldError(
            f"{target} already exists; the scaffold never overwrites files. Pick another name, or "
            "delete that folder first if you mean to start it again."
        )
    output_dir.mkdir(parents=True, exist_ok=True)
    staging = output_dir / f".{name}.partial-{os.getpid()}"
    staging.mkdir()
    try:
        for template in sorted(TEMPLATE_DIR.rglob(f"*{TEMPLATE_SUFFIX}")):
            relative = render(str(template.relative_to(TEMPLATE_DIR)), name).removesuffix(TEMPLATE_SUFFIX)
            text = render(template.read_text(encoding="utf-8"), name)
            if leftover := LEFTOVER_PLACEHOLDER.search(text):
                raise ScaffoldError(
                    f"template {template} has an unknown placeholder {leftover.group()}; "
                    "only {{name}} and {{Name}} are filled in."
                )
            destination = staging / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.write_text(text, encoding="utf-8")
        staging.rename(target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return target


def next_steps(name: str, target: Path) -> str:
    shown = _shown(target)
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    lines = [
        f"Created {shown}/:",
        *(f"  {f}" for f in files),
        "",
        "Next:",
        f"  1. Edit the tool and the verifier in {shown}/app.py, and the rows in {shown}/data/example.jsonl",
        f"  2. ng_test +entrypoint={shown}",
        f'  3. ng_run "+config_paths=[responses_api_models/openai_model/configs/openai_model.yaml, '
        f'{shown}/configs/{name}.yaml]"   (policy_base_url, policy_api_key, policy_model_name in env.yaml)',
        f"  4. ng_collect_rollouts +agent_name={name}_simple_agent "
        f"+input_jsonl_fpath={shown}/data/example.jsonl +output_jsonl_fpath=results/{name}_rollouts.jsonl",
        f"See {shown}/README.md.",
    ]
    if target.parent.name != "resources_servers":
        lines.append(
            f"Note: ng_run finds servers in resources_servers/<name>/ under the working directory or the "
            f"project; {target} is not there, so move it before running it."
        )
    return "\n".join(lines)


def _shown(path: Path) -> str:
    """`resources_servers/my_env` when under the working directory (what the user types next), else absolute."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)
