"""The import graph of the shipped code, read from the source (nothing is imported), for the architecture tests.

An edge is any import statement, at module level or inside a function: a lazy import is still a dependency.
`from package import name` counts as an import of `package.name` when that is a module, else of `package`.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SHIPPED_PACKAGES = ("nemo_gym", "responses_api_models", "resources_servers", "responses_api_agents")


@dataclass
class ImportGraph:
    root: Path
    edges: dict[str, set[str]] = field(default_factory=dict)
    """Module name -> the project modules it imports."""
    paths: dict[str, Path] = field(default_factory=dict)

    @property
    def edge_count(self) -> int:
        return sum(len(targets) for targets in self.edges.values())

    def importers_of(self, prefix: str) -> dict[str, set[str]]:
        """Modules importing `prefix` or anything under it, with what they import there."""
        found: dict[str, set[str]] = {}
        for module, targets in self.edges.items():
            hits = {t for t in targets if t == prefix or t.startswith(prefix + ".")}
            if hits:
                found[module] = hits
        return found

    def cycles(self) -> list[list[str]]:
        """Strongly connected components with more than one module (or a module importing itself)."""
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        found: list[list[str]] = []
        counter = 0

        def visit(start: str) -> None:  # iterative Tarjan: the graph is deep enough to worry a recursive one
            nonlocal counter
            work = [(start, iter(sorted(self.edges.get(start, ()))))]
            index[start] = low[start] = counter
            counter += 1
            stack.append(start)
            on_stack.add(start)
            while work:
                node, children = work[-1]
                for child in children:
                    if child not in self.edges:
                        continue
                    if child not in index:
                        index[child] = low[child] = counter
                        counter += 1
                        stack.append(child)
                        on_stack.add(child)
                        work.append((child, iter(sorted(self.edges.get(child, ())))))
                        break
                    if child in on_stack:
                        low[node] = min(low[node], index[child])
                else:
                    work.pop()
                    if work:
                        parent = work[-1][0]
                        low[parent] = min(low[parent], low[node])
                    if low[node] == index[node]:
                        component = []
                        while True:
                            member = stack.pop()
                            on_stack.discard(member)
                            component.append(member)
                            if member == node:
                                break
                        if len(component) > 1 or node in self.edges.get(node, ()):
                            found.append(sorted(component))

        for module in sorted(self.edges):
            if module not in index:
                visit(module)
        return found


def module_name(root: Path, path: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def build_graph(root: Path, packages: Iterable[str] = SHIPPED_PACKAGES) -> ImportGraph:
    graph = ImportGraph(root=root)
    for package in packages:
        for path in sorted((root / package).rglob("*.py")):
            if "tests" in path.relative_to(root).parts:
                continue
            graph.paths[module_name(root, path)] = path
    for module, path in graph.paths.items():
        graph.edges[module] = set(_imports(module, path, graph.paths.keys() | _packages(graph.paths)))
    return graph


def _packages(modules: Iterable[str]) -> set[str]:
    return {".".join(m.split(".")[:i]) for m in modules for i in range(1, m.count(".") + 1)}


def _imports(module: str, path: Path, known: set[str]) -> Iterable[str]:
    is_package = path.name == "__init__.py"
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name in known:
                    yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _absolute(module, is_package, node.module, node.level)
            if base not in known:
                continue
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                yield candidate if candidate in known else base


def _absolute(module: str, is_package: bool, name: str | None, level: int) -> str:
    if level == 0:
        return name or ""
    parts = module.split(".")
    anchor = parts if is_package else parts[:-1]
    anchor = anchor[: len(anchor) - (level - 1)]
    return ".".join([*anchor, name] if name else anchor)
