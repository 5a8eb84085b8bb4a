"""Run NeMo Gym-style server folders' tests as NeMo Gym runs them: with the server folder first on `sys.path`.

NeMo Gym's `ng_test` runs each folder's pytest with `PYTHONPATH=<folder>`, so its tests write `from app import ...`.
Here one pytest run collects many such folders, each with its own `app.py`; before a test module of a folder that
is not a package is imported, that folder goes first on sys.path and the top-level modules another such folder had
imported (its `app`, its helpers) are forgotten, so each test module gets its own folder's.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

SERVER_ROOT = Path(__file__).resolve().parent


def _plain_server_folder(path: Path) -> Path | None:
    """The server folder (`resources_servers/<name>`) a test file belongs to, when that folder is not a package."""
    try:
        name = path.resolve().relative_to(SERVER_ROOT).parts[0]
    except (ValueError, IndexError):
        return None
    folder = SERVER_ROOT / name
    return folder if folder.is_dir() and not (folder / "__init__.py").exists() else None


def pytest_collectstart(collector: pytest.Collector) -> None:
    if not isinstance(collector, pytest.Module):
        return
    folder = _plain_server_folder(collector.path)
    if folder is None:
        return
    for name, module in list(sys.modules.items()):
        origin = getattr(module, "__file__", None)
        if "." in name or not origin:
            continue
        owner = _plain_server_folder(Path(origin))
        if owner is not None and owner != folder:
            del sys.modules[name]
    while str(folder) in sys.path:
        sys.path.remove(str(folder))
    sys.path.insert(0, str(folder))
