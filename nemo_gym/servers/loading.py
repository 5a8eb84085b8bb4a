"""Find the server class an instance's `entrypoint` file defines, and check a whole config before starting it."""

from __future__ import annotations

import importlib
import importlib.util
import inspect
import json
import sys
import traceback
from pathlib import Path
from types import ModuleType

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.types import GlobalConfig, InstanceSpec
from nemo_gym.console import print_flushed
from nemo_gym.extras import folder_requirements_notice, folder_requirements_problem
from nemo_gym.servers.base import BaseServer
from nemo_gym.servers.processes import free_port


def import_entrypoint(path: Path) -> ModuleType:
    """Import `path` by its dotted name when it sits in a package (so sibling imports share one module); a folder
    that is not a package (a NeMo Gym server folder) goes on sys.path, as `python app.py` run there would have it."""
    path = path.resolve()
    if not path.is_file():
        raise ConfigError(f"Entrypoint file not found: {path}")
    parts = [path.stem]
    parent = path.parent
    while (parent / "__init__.py").exists():
        parts.insert(0, parent.name)
        parent = parent.parent
    try:
        if len(parts) > 1:
            if str(parent) not in sys.path:
                sys.path.insert(0, str(parent))
            return importlib.import_module(".".join(parts))
        if str(path.parent) not in sys.path:
            sys.path.insert(0, str(path.parent))
        module_name = f"nemo_gym_entrypoint_{abs(hash(str(path)))}"
        spec = importlib.util.spec_from_file_location(module_name, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"Cannot import entrypoint {path}")
        module = importlib.util.module_from_spec(spec)
        sys.modules[module_name] = module
        spec.loader.exec_module(module)
        return module
    except (ImportError, AttributeError) as exc:
        raise ConfigError(missing_name_message(path, exc)) from exc


def missing_name_message(path: Path, exc: ImportError | AttributeError) -> str:
    """Which name the entrypoint needed and where, for an import that failed: a part of NeMo Gym's API this
    framework does not provide, or a library that is not installed."""
    line = next(
        (frame.lineno for frame in reversed(traceback.extract_tb(exc.__traceback__)) if Path(frame.filename) == path),
        None,
    )
    where = f"{path}:{line}" if line else str(path)
    if isinstance(exc, ModuleNotFoundError) and exc.name and not exc.name.startswith("nemo_gym"):
        return (
            f"{where} imports {exc.name}, which is not installed: list it in the folder's requirements.txt and run "
            f"pip install -r {path.parent / 'requirements.txt'} (or pip install {exc.name.split('.')[0]})."
        )
    provided = "NeMo Gym's API as provided here" if "nemo_gym" in str(exc) else "what it imports"
    return (
        f"{where} needs a name that {provided} does not have: {exc}. See docs/porting_nemo_gym_environments.md for "
        "what works unchanged and what does not."
    )


def server_class_of(module: ModuleType) -> type[BaseServer]:
    """The one server class the module itself defines (imported base classes don't count): a BaseServer subclass,
    or a NeMo Gym server, which names the BaseServer that hosts it (`native_server_class`)."""
    found = [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and (issubclass(obj, BaseServer) or callable(getattr(obj, "native_server_class", None)))
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
        and not obj.__name__.startswith("_")
    ]
    if len(found) != 1:
        names = ", ".join(c.__name__ for c in found) or "none"
        raise ConfigError(
            f"{module.__file__} must define exactly one server class (a BaseServer subclass); found {names}."
        )
    if not issubclass(found[0], BaseServer):
        hosted: type[BaseServer] = found[0].native_server_class()  # type: ignore[attr-defined]
        return hosted
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
        notice = folder_requirements_notice(spec.server_dir, f"{spec.server_type}/{spec.impl}")
        if notice is not None:
            print_flushed(notice, err=True)
    data = json.loads(json.dumps(config.data))
    taken = {int(spec.config["port"]) for spec in instances.values() if spec.config.get("port") is not None}
    for name, spec in instances.items():
        block = data[name][spec.server_type][spec.impl]
        if block.get("port") is None:
            block["port"] = free_port(str(block.get("host", "127.0.0.1")), exclude=taken)
            taken.add(block["port"])
    return GlobalConfig(data=data, origins=config.origins)
