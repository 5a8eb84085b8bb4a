"""Loading the global configuration: config files < env.yaml < command-line overrides, then `${...}` interpolation."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where configs are loaded: a server process, given its resolved config, needs neither
    pass
from nemo_gym.config.errors import COMMAND_LINE, ConfigError
from nemo_gym.config.overrides import normalize_override, parse_overrides
from nemo_gym.config.paths import ENV_YAML_NAME, project_root, resolve_input_path
from nemo_gym.config.secrets import Redactor, collect_secrets, is_secret_key
from nemo_gym.config.types import DEFAULT_HEAD_HOST, DEFAULT_HEAD_PORT, GlobalConfig, _looks_like_instance
from nemo_gym.config.yaml_files import load_yaml_file


def _as_path_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [p.strip() for p in normalize_override(value).split(",") if p.strip()]
    if isinstance(value, list | tuple):
        return [str(p).strip() for p in value if str(p).strip()]
    raise ConfigError(
        f"config_paths in {where} must be a list of file paths, got {value!r}. Write it as "
        '`config_paths: [a.yaml, b.yaml]` in a file or "+config_paths=[a.yaml, b.yaml]" on the '
        "command line."
    )


Layers = list[tuple[str, Mapping[str, Any]]]
"""Each source's own top-level mapping and its name, in merge order: a typo is reported with the source it is in."""


def _load_with_includes(
    path: Path, origins: dict[str, str], stack: tuple[Path, ...], cwd: Path, layers: Layers
) -> dict[str, Any]:
    """Load one config file after the files it lists in its own `config_paths` (the file itself wins)."""
    resolved = path.resolve()
    if resolved in stack:
        chain = " -> ".join(str(p) for p in (*stack, resolved))
        raise ConfigError(
            f"config_paths include cycle: {chain}. Remove {path} from the config_paths of "
            f"{stack[-1] if stack else path}; a file must not include itself, directly or indirectly."
        )
    content = load_yaml_file(path)
    merged: dict[str, Any] = {}
    for include in _as_path_list(content.pop("config_paths", None), str(path)):
        included = _load_with_includes(_resolve_include(include, path, cwd), origins, (*stack, resolved), cwd, layers)
        merged = _merge(merged, included, str(include))
    display = _display_path(path, cwd)
    layers.append((display, content))
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

    config_paths = _as_path_list(overrides.get("config_paths", env.get("config_paths")), "the command line or env.yaml")
    origins: dict[str, str] = {}
    merged: dict[str, Any] = {}
    layers: Layers = []
    for config_path in config_paths:
        included = _load_with_includes(resolve_input_path(config_path, cwd=cwd), origins, (), cwd, layers)
        merged = _merge(merged, included, config_path)
    _note_origins(origins, env, ENV_YAML_NAME)
    merged = _merge(merged, env, ENV_YAML_NAME)
    _note_origins(origins, overrides, COMMAND_LINE)
    merged = _merge(merged, overrides, COMMAND_LINE)
    merged["config_paths"] = config_paths
    _check_misspelled_keys([*layers, (ENV_YAML_NAME, env), (COMMAND_LINE, overrides)], merged)
    data = _resolve(merged, origins)
    _check_top_level_keys(data, origins)
    return GlobalConfig(data=data, origins=origins)


def _check_top_level_keys(data: Mapping[str, Any], origins: Mapping[str, str]) -> None:
    """The tool's own top-level keys (`head_server`, `startup_timeout_s`) fail here, not as a traceback later."""
    head = data.get("head_server")
    if head is not None:
        where = origins.get("head_server", "the merged config")
        if not isinstance(head, Mapping):
            raise ConfigError(
                f"head_server (from {where}) must be a mapping such as "
                f"{{host: {DEFAULT_HEAD_HOST}, port: {DEFAULT_HEAD_PORT}}}, got {head!r}."
            )
        port = head.get("port", DEFAULT_HEAD_PORT)
        if _as_number(port, int) is None or not 0 < int(port) < 65536:
            raise ConfigError(
                f"head_server.port (from {where}) must be a port number between 1 and 65535, got "
                f"{port!r}. Set it with +head_server.port={DEFAULT_HEAD_PORT} (ng_run and "
                "ng_collect_rollouts must use the same one)."
            )
        host = head.get("host", DEFAULT_HEAD_HOST)
        if not isinstance(host, str) or not host:
            raise ConfigError(
                f"head_server.host (from {where}) must be a host name or address, got {host!r}. "
                f"Set it with +head_server.host={DEFAULT_HEAD_HOST}."
            )
    if "startup_timeout_s" in data:
        value = data["startup_timeout_s"]
        number = _as_number(value, float)
        if number is None or number <= 0:
            where = origins.get("startup_timeout_s", "the merged config")
            raise ConfigError(
                f"startup_timeout_s (from {where}) must be a number of seconds greater than 0, got "
                f"{value!r}. Set it with e.g. +startup_timeout_s=600."
            )


OWN_TOP_LEVEL_KEYS = frozenset({"config_paths", "head_server", "ray_address", "startup_timeout_s"})
"""The top-level keys that configure the tool itself; any other is an instance or a value for `${...}`."""
HEAD_SERVER_KEYS = ("host", "port")
TYPO_CUTOFF = 0.75
"""How close (difflib's ratio) to one of the tool's own keys a name must be to be taken for its typo. Below it stay
names users give their own values (`timeout_s`: 0.69) and the commands' settings (`drain_timeout_s`, `model_servers`),
which those commands check themselves."""
_INTERPOLATION = re.compile(r"\$\{\s*\.*([^.}:\[\s]+)")
_OWN_KEYS_NOTE = (
    "The tool's own top-level keys are config_paths, head_server, ray_address and startup_timeout_s; any other "
    "must be a server instance or a value that a ${...} interpolation uses, so a name this close to an own key is "
    "taken for its typo instead of being silently ignored."
)


def _check_misspelled_keys(layers: Layers, merged: Mapping[str, Any]) -> None:
    """A misspelled `head_server`, `startup_timeout_s`, `ray_address` or `config_paths` (or a key under head_server
    other than host and port) would be ignored and the run would use the default: refuse it, naming the source.
    A name close to an own key is still fine when it is an instance or a value some `${...}` uses."""
    used = _interpolated_names(merged)
    problems: list[str] = []
    note = ""
    for source, layer in layers:
        for key, value in layer.items():
            name = str(key)
            if name == "head_server" and isinstance(value, Mapping):
                problems += [
                    _head_server_key_problem(str(sub), sub_value, source)
                    for sub, sub_value in value.items()
                    if str(sub) not in HEAD_SERVER_KEYS
                ]
            elif value is not None and name not in OWN_TOP_LEVEL_KEYS | used and not _is_instance(merged.get(name)):
                near = _misspelled_own_key(name)
                if near:
                    problems.append(_top_level_key_problem(name, near, value, source))
                    note = _OWN_KEYS_NOTE
    if problems:
        redactor = Redactor(collect_secrets(merged))  # a value shown in the fix must not be a secret either
        raise ConfigError(redactor.text("\n".join([*problems, note]).strip()))


def _misspelled_own_key(name: str) -> str | None:
    """The own key `name` is a typo of, if any. The last words of an own key are a name of their own (`address`,
    `server`, `timeout_s` are not `ray_address`, `head_server`, `startup_timeout_s` misspelled)."""
    lowered = name.lower()
    near = difflib.get_close_matches(lowered, sorted(OWN_TOP_LEVEL_KEYS), n=len(OWN_TOP_LEVEL_KEYS), cutoff=TYPO_CUTOFF)
    return next((key for key in near if not key.endswith("_" + lowered)), None)


def _top_level_key_problem(name: str, near: str, value: Any, source: str) -> str:
    if source == COMMAND_LINE:
        return (
            f"Unknown top-level key '{name}' (from the command line: {_as_overrides(name, value)}): "
            f"did you mean {_as_overrides(near, value)}?"
        )
    return (
        f"Unknown top-level key '{name}' (from {source}): did you mean '{near}'? "
        f"Rename `{name}:` to `{near}:` in {source}."
    )


def _head_server_key_problem(key: str, value: Any, source: str) -> str:
    near = difflib.get_close_matches(key.lower(), HEAD_SERVER_KEYS, n=1)
    where = f"Unknown key 'head_server.{key}'"
    if source == COMMAND_LINE:
        fix = f"did you mean {_as_overrides(f'head_server.{near[0]}', value)}?" if near else "remove it;"
        return (
            f"{where} (from the command line: {_as_overrides(f'head_server.{key}', value)}): {fix} head_server "
            f"takes only host and port, e.g. +head_server.port={DEFAULT_HEAD_PORT}."
        )
    fix = f"did you mean `{near[0]}:`? Rename it" if near else "remove it"
    return (
        f"{where} (from {source}): {fix} under head_server in {source}; head_server takes only host and port, e.g. "
        f"`head_server: {{host: {DEFAULT_HEAD_HOST}, port: {DEFAULT_HEAD_PORT}}}`."
    )


def _as_overrides(key: str, value: Any) -> str:
    """`value` under `key` written back as the command-line overrides that set it (`+head_server.port=12000`)."""
    return " ".join(f"+{path}={_override_text(path, leaf)}" for path, leaf in _leaves(key, value))


def _leaves(path: str, value: Any) -> Iterable[tuple[str, Any]]:
    if isinstance(value, Mapping) and value:
        for key, child in value.items():
            yield from _leaves(f"{path}.{key}", child)
    else:
        yield path, value


def _override_text(path: str, value: Any) -> str:
    if any(is_secret_key(part) for part in path.split(".")):
        return "..."
    if isinstance(value, bool) or value is None:
        return "null" if value is None else str(value).lower()
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_override_text(path, v) for v in value) + "]"
    return str(value)


def _interpolated_names(node: Any) -> set[str]:
    """The top-level names `${...}` interpolations refer to anywhere in the (unresolved) configuration."""
    if isinstance(node, str):
        return set(_INTERPOLATION.findall(node)) if "${" in node else set()
    if isinstance(node, Mapping):
        return set().union(*(_interpolated_names(v) for v in node.values()))
    if isinstance(node, list | tuple):
        return set().union(*(_interpolated_names(v) for v in node))
    return set()


def _is_instance(value: Any) -> bool:
    """Shaped like a server instance (which may have any name), as `find_instances` decides."""
    return isinstance(value, Mapping) and _looks_like_instance(value)


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
