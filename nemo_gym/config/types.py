"""The merged, resolved configuration and the server instances it declares."""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where configs are loaded: a server process, given its resolved config, needs neither
    pass
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.paths import SERVER_TYPES, available_impls, find_server_dir, project_root

DEFAULT_HEAD_HOST = "127.0.0.1"
DEFAULT_HEAD_PORT = 11000
# Keys that configure the tool itself rather than a server instance.
RESERVED_KEYS = frozenset({"config_paths", "head_server"})


@dataclass(frozen=True)
class InstanceSpec:
    """One server instance: `name: {server_type: {impl: {entrypoint: app.py, ...}}}`."""

    name: str
    server_type: str
    impl: str
    config: dict[str, Any]
    origin: str

    @property
    def server_dir(self) -> Path:
        return find_server_dir(self.server_type, self.impl)

    @property
    def entrypoint_path(self) -> Path:
        return self.server_dir / str(self.config.get("entrypoint", "app.py"))

    def url(self) -> str:
        return f"http://{self.config.get('host', '127.0.0.1')}:{self.config['port']}"


@dataclass
class GlobalConfig:
    """The merged and resolved configuration plus where each top-level key came from."""

    data: dict[str, Any]
    origins: dict[str, str] = field(default_factory=dict)

    @property
    def instances(self) -> dict[str, InstanceSpec]:
        return find_instances(self.data, self.origins)

    @property
    def replicated(self) -> bool:
        """Whether some instance runs as several replicas or on Ray: then the head server is the registry."""
        return bool(self.data.get("ray_address")) or any(
            int(spec.config.get("num_replicas") or 1) > 1 for spec in self.instances.values()
        )

    @property
    def head_host(self) -> str:
        return str((self.data.get("head_server") or {}).get("host", DEFAULT_HEAD_HOST))

    @property
    def head_port(self) -> int:
        return int((self.data.get("head_server") or {}).get("port", DEFAULT_HEAD_PORT))

    @property
    def head_url(self) -> str:
        return f"http://{self.head_host}:{self.head_port}"


def find_instances(data: Mapping[str, Any], origins: Mapping[str, str]) -> dict[str, InstanceSpec]:
    """Every top-level key shaped like a server instance, checked for structure."""
    instances: dict[str, InstanceSpec] = {}
    for name, value in data.items():
        if name in RESERVED_KEYS or not isinstance(value, Mapping):
            continue
        origin = origins.get(name, "the merged config")
        if not _looks_like_instance(value):
            continue
        (server_type, impls), *extra = value.items()
        if extra:
            raise ConfigError(
                f"Instance '{name}' (from {origin}) has several top-level keys {sorted(value)}; "
                f"an instance has exactly one server type, one of {', '.join(SERVER_TYPES)}. Split it into one "
                "instance per server and refer between them with {type: <server_type>, name: <instance>}."
            )
        if server_type not in SERVER_TYPES:
            raise ConfigError(
                f"Instance '{name}' (from {origin}) has unknown server type '{server_type}'; "
                f"use one of {', '.join(SERVER_TYPES)}."
            )
        if not isinstance(impls, Mapping) or len(impls) != 1:
            raise ConfigError(
                f"Instance '{name}' (from {origin}) must name exactly one implementation under "
                f"{server_type}, e.g. `{server_type}: {{<impl>: {{entrypoint: app.py}}}}`."
            )
        ((impl, block),) = impls.items()
        if not isinstance(block, Mapping) or "entrypoint" not in block:
            raise ConfigError(
                f"Instance '{name}' (from {origin}): {server_type}.{impl} is missing the required key "
                "'entrypoint' (usually `entrypoint: app.py`)."
            )
        if not find_server_dir(server_type, impl).is_dir():
            known = available_impls(server_type)
            near = difflib.get_close_matches(impl, known, n=1)
            raise ConfigError(
                f"Instance '{name}' (from {origin}): no server implementation folder {server_type}/{impl}/ "
                f"in {Path.cwd()} or {project_root()}. "
                + (f"Did you mean '{near[0]}'? " if near else "")
                + f"Available {server_type}: {', '.join(known) or 'none'}."
            )
        instances[name] = InstanceSpec(name, server_type, impl, dict(block), origin)
    _check_references(instances)
    return instances


def _looks_like_instance(value: Mapping[str, Any]) -> bool:
    """`{x: {y: {entrypoint: ...}}}`, or any value under a known server-type key."""
    if any(key in SERVER_TYPES for key in value):
        return True
    for impls in value.values():
        if isinstance(impls, Mapping):
            for block in impls.values():
                if isinstance(block, Mapping) and "entrypoint" in block:
                    return True
    return False


def _check_references(instances: Mapping[str, InstanceSpec]) -> None:
    """`{type: <server_type>, name: <instance>}` anywhere in an instance must name an existing instance."""
    for spec in instances.values():
        for path, ref in _iter_refs(spec.config, ()):
            target = instances.get(str(ref["name"]))
            if target is not None and target.server_type == ref["type"]:
                continue
            same_type = sorted(n for n, s in instances.items() if s.server_type == ref["type"])
            key = ".".join((spec.name, spec.server_type, spec.impl, *path))
            problem = "which is not configured" if target is None else f"which is a {target.server_type} instance"
            raise ConfigError(
                f"{key} (from {spec.origin}) refers to {ref['type']} instance '{ref['name']}', {problem}. "
                f"Configured {ref['type']}: {', '.join(same_type) or 'none'}. "
                "Add its config file to config_paths or fix the name."
            )


def _iter_refs(node: Any, path: tuple[str, ...]) -> Iterable[tuple[tuple[str, ...], Mapping[str, Any]]]:
    if isinstance(node, Mapping):
        if set(node) == {"type", "name"} and node.get("type") in SERVER_TYPES:
            yield path, node
            return
        for key, value in node.items():
            yield from _iter_refs(value, (*path, str(key)))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _iter_refs(value, (*path, str(index)))
