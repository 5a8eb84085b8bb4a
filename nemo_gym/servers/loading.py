"""Find the server class an instance's `entrypoint` file defines, and check a whole config before starting it."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
from pathlib import Path
from types import ModuleType

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.types import GlobalConfig, InstanceSpec
from nemo_gym.extras import folder_requirements_problem
from nemo_gym.servers.base import BaseServer
from nemo_gym.servers.processes import free_port


def import_entrypoint(path: Path) -> ModuleType:
    """Import `path` by its dotted name when it sits in a package (so sibling imports share one module)."""
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"Entrypoint file not found: {path}")
    parts = [path.stem]
    parent = path.parent
    while (parent / "__init__.py").exists():
        parts.insert(0, parent.name)
        parent = parent.parent
    if len(parts) > 1:
        if str(parent) not in sys.path:
            sys.path.insert(0, str(parent))
        return importlib.import_module(".".join(parts))
    module_name = f"nemo_gym_entrypoint_{abs(hash(str(path)))}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"Cannot import entrypoint {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def server_class_of(module: ModuleType) -> type[BaseServer]:
    """The one BaseServer subclass the module itself defines (imported base classes don't count)."""
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, BaseServer)
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
        and not obj.__name__.startswith("_")
    ]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise ConfigError(
            f"{module.__file__} must define exactly one server class (a BaseServer subclass); found {names}."
        )
    return found[0]


def load_server_class(spec: InstanceSpec) -> type[BaseServer]:
    path = spec.entrypoint_path
    if not path.is_file():
        candidates = sorted(p.name for p in spec.server_dir.glob("*.py") if p.name != "__init__.py")
        raise ConfigError(
            f"Instance '{spec.name}' (from {spec.origin}): {spec.name}.{spec.server_type}.{spec.impl}.entrypoint "
            f"is '{spec.config.get('entrypoint')}', but there is no file {path}. Set `entrypoint:` to one of the "
            f"files in {spec.server_dir}: {', '.join(candidates) or 'none'} (usually `entrypoint: app.py`)."
        )
    missing = folder_requirements_problem(spec.server_dir, f"{spec.server_type}/{spec.impl}")
    if missing is not None:
        raise ConfigError(f"Instance '{spec.name}' (from {spec.origin}): {missing}")
    return server_class_of(import_entrypoint(path))


def prepare(config: GlobalConfig) -> GlobalConfig:
    """Validate every instance (imports its server class) and assign free ports; nothing is started."""
    instances = config.instances
    if not instances:
        raise ConfigError(
            "No server instances are configured. Pass config files, e.g. "
            'ng_run "+config_paths=[responses_api_models/openai_model/configs/openai_model.yaml, '
            'resources_servers/simple_weather/configs/simple_weather.yaml]"'
        )
    for spec in instances.values():
        load_server_class(spec).validate_config(spec)
    data = json.loads(json.dumps(config.data))
    taken = {int(spec.config["port"]) for spec in instances.values() if spec.config.get("port") is not None}
    for name, spec in instances.items():
        block = data[name][spec.server_type][spec.impl]
        if block.get("port") is None:
            block["port"] = free_port(str(block.get("host", "127.0.0.1")), exclude=taken)
            taken.add(block["port"])
    return GlobalConfig(data=data, origins=config.origins)
