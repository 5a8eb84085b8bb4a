"""Where things live: the project root, server folders by type and implementation, user-given input paths."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported where configs are loaded: a server process, given its resolved config, needs neither
    pass


SERVER_TYPES: tuple[str, ...] = ("responses_api_models", "resources_servers", "responses_api_agents")
ENV_YAML_NAME = "env.yaml"


def project_root() -> Path:
    """The checkout this package lives in: server folders and their configs are found relative to it."""
    return Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------- files


def resolve_input_path(path: str | os.PathLike[str], *, cwd: Path | None = None) -> Path:
    """A user-given path: absolute, else relative to the working directory, else to the project root."""
    candidate = Path(os.path.expanduser(str(path)))
    if candidate.is_absolute():
        return candidate
    base = cwd or Path.cwd()
    if (base / candidate).exists():
        return base / candidate
    if (project_root() / candidate).exists():
        return project_root() / candidate
    return base / candidate


def find_server_dir(server_type: str, impl: str) -> Path:
    """A server implementation's folder: `<server_type>/<impl>/`, in the working directory or the project."""
    relative = Path(server_type) / impl
    for base in (Path.cwd(), project_root()):
        if (base / relative).is_dir():
            return base / relative
    return project_root() / relative


def available_impls(server_type: str) -> list[str]:
    """The implementation folders of one server type (those with an app.py), in the working directory and project."""
    found = {
        entry.name
        for base in (Path.cwd(), project_root())
        if (base / server_type).is_dir()
        for entry in (base / server_type).iterdir()
        if (entry / "app.py").is_file()
    }
    return sorted(found)
