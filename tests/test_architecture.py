"""The layout is the architecture: packages by concern, imports pointing down, a thin `cli`, a curated public API.

Read from the source, so a lazy import inside a function counts as much as one at the top of a module.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import nemo_gym
from nemo_gym.testing.import_graph import ImportGraph, build_graph

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = (
    "config",
    "protocol",
    "http",
    "upstream",
    "servers",
    "collection",
    "compare",
    "training",
    "compat",
    "emulator",
    "viewer",
    "cli",
)
NEMO_GYM_API = (
    "base_resources_server",
    "openai_utils",
    "server_utils",
    "config_types",
    "global_config",
    "reward_profile",
    "judge",
    "prompt",
)
"""NeMo Gym's module names, which its environments import: thin re-exports of `nemo_gym.compat`."""


@pytest.fixture(scope="module")
def graph() -> ImportGraph:
    return build_graph(ROOT)


def package_of(module: str) -> str:
    parts = module.split(".")
    return ".".join(parts[:2]) if parts[0] == "nemo_gym" and len(parts) > 1 else parts[0]


def test_the_graph_sees_every_shipped_module_and_their_imports(graph: ImportGraph) -> None:
    assert {"nemo_gym.collection.collector", "nemo_gym.cli.run", "responses_api_agents.simple_agent.app"} <= set(
        graph.edges
    )
    assert "nemo_gym.http.server_client" in graph.edges["nemo_gym.collection.collector"]
    # a lazy import inside a function is an edge too
    assert "nemo_gym.servers.ray_placement" in graph.edges["nemo_gym.collection.run"]


def test_no_module_imports_itself_back(graph: ImportGraph) -> None:
    assert graph.cycles() == []


def test_packages_form_layers_without_cycles(graph: ImportGraph) -> None:
    packages = ImportGraph(root=ROOT)
    for module, targets in graph.edges.items():
        if module.startswith("nemo_gym."):
            own = package_of(module)
            packages.edges.setdefault(own, set()).update(
                package_of(t) for t in targets if t.startswith("nemo_gym.") and package_of(t) != own
            )
    assert packages.cycles() == []
    assert packages.edges["nemo_gym.config"] == set(), "config is the bottom layer"


def test_a_cycle_is_found_when_there_is_one() -> None:
    looped = ImportGraph(root=ROOT, edges={"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert looped.cycles() == [["a", "b", "c"]]


def test_nothing_shipped_imports_the_test_helpers(graph: ImportGraph) -> None:
    offenders = {
        m: t for m, t in graph.importers_of("nemo_gym.testing").items() if not m.startswith("nemo_gym.testing")
    }
    assert offenders == {}


def test_cli_modules_import_the_library_never_each_other(graph: ImportGraph) -> None:
    for module, targets in graph.importers_of("nemo_gym.cli").items():
        if module.startswith("nemo_gym.cli."):
            pytest.fail(f"{module} imports {sorted(targets)}: cli modules are shells over the library")
        if module.startswith("nemo_gym."):
            pytest.fail(f"library module {module} imports {sorted(targets)}: the library never imports cli")
        # server folders start their process through `python app.py` -> nemo_gym.cli.serve, like a command does
        assert targets == {"nemo_gym.cli.serve"}, module


def test_the_library_is_grouped_into_packages_by_concern() -> None:
    for package in PACKAGES:
        assert (ROOT / "nemo_gym" / package / "__init__.py").is_file(), package
    loose = sorted(p.name for p in (ROOT / "nemo_gym").glob("*.py"))
    assert loose == sorted(["__init__.py", "console.py", "extras.py", *(f"{name}.py" for name in NEMO_GYM_API)])


def test_nemo_gyms_module_names_only_re_export_the_compat_package() -> None:
    for name in NEMO_GYM_API:
        tree = ast.parse((ROOT / "nemo_gym" / f"{name}.py").read_text())
        body = tree.body[1:] if ast.get_docstring(tree) else tree.body
        imported: set[str] = set()
        for node in body:
            if isinstance(node, ast.ImportFrom):
                assert (node.module or "").startswith("nemo_gym.compat."), (name, node.module)
                imported.update(alias.asname or alias.name for alias in node.names)
            else:
                assert isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == [
                    "__all__"
                ], f"nemo_gym/{name}.py defines more than re-exports (line {node.lineno})"
        module = importlib.import_module(f"nemo_gym.{name}")
        assert sorted(module.__all__) == sorted(imported), name


def test_the_public_api_is_curated_typed_and_resolves() -> None:
    assert (ROOT / "nemo_gym" / "py.typed").is_file()
    assert sorted(nemo_gym.__all__) == sorted(nemo_gym._EXPORTS)
    for name in nemo_gym.__all__:
        value = getattr(nemo_gym, name)
        defining = importlib.import_module(nemo_gym._EXPORTS[name])
        assert value is getattr(defining, name)
    with pytest.raises(AttributeError, match="no attribute 'collect_all'"):
        _ = nemo_gym.collect_all


def test_every_server_folder_subclasses_its_public_base() -> None:
    from nemo_gym.servers.agent import BaseAgentServer
    from nemo_gym.servers.model import BaseModelServer
    from nemo_gym.servers.resources import BaseResourcesServer
    from resources_servers.simple_weather.app import SimpleWeatherServer
    from responses_api_agents.simple_agent.app import SimpleAgentServer
    from responses_api_models.openai_model.app import OpenAIModelServer

    assert issubclass(SimpleAgentServer, BaseAgentServer)
    assert issubclass(OpenAIModelServer, BaseModelServer)
    assert issubclass(SimpleWeatherServer, BaseResourcesServer)
