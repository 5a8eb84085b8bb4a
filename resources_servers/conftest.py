"""Run NeMo Gym-style server folders' tests as NeMo Gym runs them.

NeMo Gym's `ng_test` runs each folder's pytest inside the folder with `PYTHONPATH=<folder>`, so its tests write
`from app import ...` and may open files by paths relative to the folder. Here one pytest run collects many such
folders (those that are not packages), each with its own `app.py`:
- before a test module of such a folder is imported, the folder goes first on sys.path and the top-level modules
  another such folder had imported (its `app`, its helpers) are forgotten, so each test module gets its own folder's;
- each of its tests runs with the folder as the working directory;
- its module is imported while Starlette's `TestClient` is built on `httpx`, as it was when NeMo Gym's tests were
  written (some subclass `httpx.Cookies`); Starlette now prefers `httpx2`, which the openai SDK brings along.
"""

from __future__ import annotations

import importlib
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

SERVER_ROOT = Path(__file__).resolve().parent
TEST_CLIENT_MODULES = ("starlette.testclient", "fastapi.testclient")
_httpx_test_client: dict[str, ModuleType] = {}
_set_aside: dict[str, ModuleType | None] = {}


def _plain_server_folder(path: Path) -> Path | None:
    """The server folder (`resources_servers/<name>`) a file belongs to, when that folder is not a package."""
    try:
        name = path.resolve().relative_to(SERVER_ROOT).parts[0]
    except (ValueError, IndexError):
        return None
    folder = SERVER_ROOT / name
    return folder if folder.is_dir() and not (folder / "__init__.py").exists() else None


def _use_httpx_test_client() -> None:
    """Put a `TestClient` built on httpx in place of the current one, until `_restore_test_client`."""
    for name in TEST_CLIENT_MODULES:
        _set_aside[name] = sys.modules.pop(name, None)
    if not _httpx_test_client:
        httpx2 = sys.modules.get("httpx2")
        sys.modules["httpx2"] = None  # type: ignore[assignment]  # `import httpx2` fails: Starlette takes httpx
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                for name in TEST_CLIENT_MODULES:
                    _httpx_test_client[name] = importlib.import_module(name)
        finally:
            if httpx2 is None:
                del sys.modules["httpx2"]
            else:
                sys.modules["httpx2"] = httpx2
    sys.modules.update(_httpx_test_client)


def _restore_test_client() -> None:
    for name, module in _set_aside.items():
        if module is None:
            sys.modules.pop(name, None)
        else:
            sys.modules[name] = module
    _set_aside.clear()


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
    _use_httpx_test_client()


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if _set_aside:
        _restore_test_client()


@pytest.fixture(autouse=True)
def _in_the_server_folder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    folder = _plain_server_folder(Path(str(request.path)))
    if folder is not None:
        monkeypatch.chdir(folder)
    yield
