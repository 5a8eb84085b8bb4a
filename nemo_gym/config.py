"""The global configuration: config files < env.yaml < command-line overrides, then `${...}` interpolation.

Every command (ng_run, ng_collect_rollouts, ng_dump_config, ...) resolves its configuration through
`load_global_config`, so the precedence rules and error messages are the same everywhere.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where configs are loaded: a server process, given its resolved config, needs neither
    import yaml

SERVER_TYPES: tuple[str, ...] = ("responses_api_models", "resources_servers", "responses_api_agents")
ENV_YAML_NAME = "env.yaml"
DEFAULT_HEAD_HOST = "127.0.0.1"
DEFAULT_HEAD_PORT = 11000
# Keys that configure the tool itself rather than a server instance.
RESERVED_KEYS = frozenset({"config_paths", "head_server"})
COMMAND_LINE = "the command line"


class ConfigError(Exception):
    """A configuration problem the user must fix; the message says what, where and how."""


def project_root() -> Path:
    """The checkout this package lives in: server folders and their configs are found relative to it."""
    return Path(__file__).resolve().parent.parent


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
            int(spec.config.get("num_replicas") or 1) > 1 for spec in self.instances.values())

    @property
    def head_host(self) -> str:
        return str((self.data.get("head_server") or {}).get("host", DEFAULT_HEAD_HOST))

    @property
    def head_port(self) -> int:
        return int((self.data.get("head_server") or {}).get("port", DEFAULT_HEAD_PORT))

    @property
    def head_url(self) -> str:
        return f"http://{self.head_host}:{self.head_port}"


# --------------------------------------------------------------------------- command-line overrides


def normalize_override(arg: str) -> str:
    """Undo shell line continuations left inside quotes, so the seed's multi-line form parses."""
    return arg.replace("\\\r\n", " ").replace("\\\n", " ").replace("\r\n", " ").replace("\n", " ").strip()


def parse_overrides(args: Iterable[str]) -> dict[str, Any]:
    """Parse Hydra-grammar `+key=value` / `key=value` / `~key` overrides into a nested dict.

    Hydra's own parser does the work, so lists (`[a.yaml, b.yaml]`), quoting and model ids such as
    `meta-llama/llama-3.1-8b-instruct:free` follow the grammar users know from Hydra.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    parser = OverridesParser.create()
    result: dict[str, Any] = {}
    for raw in args:
        text = normalize_override(raw)
        if not text:
            continue
        try:
            (override,) = parser.parse_overrides([text])
        except OverrideParseException as exc:
            hint = ("Overrides look like +key=value, +nested.key=value or \"+config_paths=[a.yaml, b.yaml]\"; "
                    "quote values containing spaces or shell characters.")
            if "${" in text:
                hint += (" `${name}` refers to another key and must be closed with `}`; write a literal '${' inside "
                         "quotes and escaped, e.g. +key='a\\${b'.")
            raise ConfigError(f"Cannot parse the command-line override {raw!r}: {exc}\n{hint}") from None
        key = override.key_or_group
        if override.is_delete():
            _set_dotted(result, key, None)
            continue
        value = override.value()
        _set_dotted(result, key, _plain(value))
    return result


def _plain(value: Any) -> Any:
    """Hydra returns its own list/dict types for some values; make them plain containers."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def _set_dotted(target: dict[str, Any], dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = target
    for part in parts[:-1]:
        child = node.get(part)
        if not isinstance(child, dict):
            child = node[part] = {}
        node = child
    node[parts[-1]] = value


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


def load_yaml_file(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(
            f"Config file not found: {path}\n"
            f"Paths are looked up relative to the working directory ({Path.cwd()}) and then to the project "
            f"root ({project_root()}); check the spelling in config_paths."
        ) from None
    except OSError as exc:
        reason = "it is a directory" if path.is_dir() else (exc.strerror or str(exc))
        raise ConfigError(f"Cannot read config file {path}: {reason}. config_paths must list readable YAML files, "
                          "e.g. +config_paths=[configs/my_env.yaml].") from None
    import yaml

    try:
        loaded = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(_yaml_error_message(path, exc)) from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(
            f"{path} must contain a YAML mapping at the top level, not a {type(loaded).__name__}. Write `key: value` "
            "lines, e.g. `policy_model_name: openai/gpt-4-turbo` or `my_instance: {resources_servers: {...}}`."
        )
    return loaded


def _yaml_error_message(path: Path, exc: yaml.YAMLError) -> str:
    """`file:line:column: problem`, pointing at the line to fix (PyYAML's own text points at "<unicode string>")."""
    mark = getattr(exc, "problem_mark", None)
    if mark is None:
        return f"{path} is not valid YAML: {exc}. Fix its syntax (indent with spaces, close quotes and brackets)."
    problem = getattr(exc, "problem", None) or "syntax error"
    context, context_mark = getattr(exc, "context", None), getattr(exc, "context_mark", None)
    if context and context_mark is not None and context_mark.line != mark.line:
        problem += f" ({context} started at line {context_mark.line + 1})"
    elif context:
        problem += f" ({context})"
    lines = mark.buffer.splitlines() if isinstance(getattr(mark, "buffer", None), str) else []
    shown = f"\n    {lines[mark.line].rstrip()}\n    {' ' * mark.column}^" if mark.line < len(lines) else ""
    return (f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {problem}.{shown}\n"
            "Fix the syntax at that line or just before it: indent with spaces (not tabs), close every quote and "
            "bracket, and quote values that contain ': ' or start with a special character.")


def _as_path_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [p.strip() for p in normalize_override(value).split(",") if p.strip()]
    if isinstance(value, list | tuple):
        return [str(p).strip() for p in value if str(p).strip()]
    raise ConfigError(f"config_paths in {where} must be a list of file paths, got {value!r}. Write it as "
                      "`config_paths: [a.yaml, b.yaml]` in a file or \"+config_paths=[a.yaml, b.yaml]\" on the "
                      "command line.")


def _load_with_includes(
    path: Path, origins: dict[str, str], stack: tuple[Path, ...], cwd: Path
) -> dict[str, Any]:
    """Load one config file after the files it lists in its own `config_paths` (the file itself wins)."""
    resolved = path.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack, resolved))
        raise ConfigError(f"config_paths include cycle: {chain}. Remove {path} from the config_paths of "
                          f"{stack[-1] if stack else path}; a file must not include itself, directly or indirectly.")
    content = load_yaml_file(path)
    merged: dict[str, Any] = {}
    for include in _as_path_list(content.pop("config_paths", None), str(path)):
        included = _load_with_includes(
            _resolve_include(include, path, cwd), origins, (*stack, resolved), cwd
        )
        merged = _merge(merged, included, str(include))
    display = _display_path(path, cwd)
    _note_origins(origins, content, display)
    return _merge(merged, content, display)


def _resolve_include(include: str, parent: Path, cwd: Path) -> Path:
    sibling = parent.parent / include
    if not Path(include).is_absolute() and sibling.exists():
        return sibling
    return resolve_input_path(include, cwd=cwd)


def _display_path(path: Path, cwd: Path) -> str:
    for base in (cwd, project_root()):
        try:
            return str(path.resolve().relative_to(base.resolve()))
        except ValueError:
            continue
    return str(path)


def _note_origins(origins: dict[str, str], layer: Mapping[str, Any], source: str) -> None:
    """Record where each top-level key of `layer` came from; a mapping merged into an earlier one keeps both."""
    for key, value in layer.items():
        previous = origins.get(key)
        if previous and previous != source and isinstance(value, Mapping):
            origins[key] = f"{previous}, then {source}"
        else:
            origins[key] = source


def _merge(base: Mapping[str, Any], layer: Mapping[str, Any], source: str) -> dict[str, Any]:
    """`layer` (from `source`) merged over `base`: mappings merge key by key, other values are replaced."""
    from omegaconf import OmegaConf
    from omegaconf.errors import GrammarParseError, OmegaConfBaseException

    try:
        merged = OmegaConf.merge(OmegaConf.create(dict(base)), OmegaConf.create(dict(layer)))
    except GrammarParseError as exc:
        raise ConfigError(
            f"{getattr(exc, 'full_key', None) or '?'} (from {source}) is not a valid ${{...}} interpolation: "
            f"{str(exc).splitlines()[0]}. Write a literal '${{' as '\\${{'."
        ) from None
    except OmegaConfBaseException as exc:
        key = _type_conflict(base, layer) or getattr(exc, "full_key", None) or "?"
        raise ConfigError(
            f"Cannot merge {key} from {source} into the configuration so far: {str(exc).splitlines()[0]} "
            "(a mapping and a list cannot be merged; use the same shape in every source)."
        ) from None
    return OmegaConf.to_container(merged, resolve=False)  # type: ignore[return-value]


def _type_conflict(base: Any, layer: Any, path: str = "") -> str | None:
    """The dotted key where one source has a mapping and the other a list, if any."""
    if isinstance(base, Mapping) and isinstance(layer, Mapping):
        for key, value in layer.items():
            if key in base:
                found = _type_conflict(base[key], value, f"{path}.{key}" if path else str(key))
                if found:
                    return found
        return None
    if isinstance(base, Mapping | list) and isinstance(layer, Mapping | list) and type(base) is not type(layer):
        return path or None
    return None


# --------------------------------------------------------------------------- the whole thing


def load_global_config(args: Iterable[str] = (), *, cwd: Path | None = None) -> GlobalConfig:
    """Merge config files, env.yaml and overrides (later wins) and resolve `${...}` interpolations."""
    cwd = cwd or Path.cwd()
    overrides = parse_overrides(args)
    env_path = cwd / ENV_YAML_NAME
    env = load_yaml_file(env_path) if env_path.exists() else {}

    config_paths = _as_path_list(
        overrides.get("config_paths", env.get("config_paths")), "the command line or env.yaml"
    )
    origins: dict[str, str] = {}
    merged: dict[str, Any] = {}
    for config_path in config_paths:
        included = _load_with_includes(resolve_input_path(config_path, cwd=cwd), origins, (), cwd)
        merged = _merge(merged, included, config_path)
    _note_origins(origins, env, ENV_YAML_NAME)
    merged = _merge(merged, env, ENV_YAML_NAME)
    _note_origins(origins, overrides, COMMAND_LINE)
    merged = _merge(merged, overrides, COMMAND_LINE)
    merged["config_paths"] = config_paths
    data = _resolve(merged, origins)
    _check_top_level_keys(data, origins)
    return GlobalConfig(data=data, origins=origins)


def _check_top_level_keys(data: Mapping[str, Any], origins: Mapping[str, str]) -> None:
    """The tool's own top-level keys (`head_server`, `startup_timeout_s`) fail here, not as a traceback later."""
    head = data.get("head_server")
    if head is not None:
        where = origins.get("head_server", "the merged config")
        if not isinstance(head, Mapping):
            raise ConfigError(f"head_server (from {where}) must be a mapping such as "
                              f"{{host: {DEFAULT_HEAD_HOST}, port: {DEFAULT_HEAD_PORT}}}, got {head!r}.")
        port = head.get("port", DEFAULT_HEAD_PORT)
        if _as_number(port, int) is None or not 0 < int(port) < 65536:
            raise ConfigError(f"head_server.port (from {where}) must be a port number between 1 and 65535, got "
                              f"{port!r}. Set it with +head_server.port={DEFAULT_HEAD_PORT} (ng_run and "
                              "ng_collect_rollouts must use the same one).")
        host = head.get("host", DEFAULT_HEAD_HOST)
        if not isinstance(host, str) or not host:
            raise ConfigError(f"head_server.host (from {where}) must be a host name or address, got {host!r}. "
                              f"Set it with +head_server.host={DEFAULT_HEAD_HOST}.")
    if "startup_timeout_s" in data:
        value = data["startup_timeout_s"]
        number = _as_number(value, float)
        if number is None or number <= 0:
            where = origins.get("startup_timeout_s", "the merged config")
            raise ConfigError(f"startup_timeout_s (from {where}) must be a number of seconds greater than 0, got "
                              f"{value!r}. Set it with e.g. +startup_timeout_s=600.")


def _as_number(value: Any, kind: type[int] | type[float]) -> int | float | None:
    if isinstance(value, bool):
        return None
    try:
        return kind(value)
    except (TypeError, ValueError):
        return None


def _resolve(merged: dict[str, Any], origins: Mapping[str, str]) -> dict[str, Any]:
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    conf = OmegaConf.create(merged)
    try:
        return OmegaConf.to_container(conf, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        full_key = getattr(exc, "full_key", None) or "?"
        top = str(full_key).split(".")[0]
        where = origins.get(top, "the merged config")
        reason = str(exc).splitlines()[0]
        missing = re.search(r"Interpolation key '([^']+)' not found", reason)
        name = missing.group(1) if missing else "policy_api_key"
        raise ConfigError(
            f"Cannot resolve {full_key} (from {where}): {reason}.\n"
            f"Define the missing value in env.yaml (for example `{name}: ...`) or on the command line "
            f"(for example `+{name}=...`)."
        ) from None


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
