"""Reading one YAML config file, with errors that point at file:line:col and never quote a secret."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where configs are loaded: a server process, given its resolved config, needs neither
    import yaml
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.paths import project_root


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
        raise ConfigError(
            f"Cannot read config file {path}: {reason}. config_paths must list readable YAML files, "
            "e.g. +config_paths=[configs/my_env.yaml]."
        ) from None
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
    return (
        f"{path}:{mark.line + 1}:{mark.column + 1}: not valid YAML: {problem}.{shown}\n"
        "Fix the syntax at that line or just before it: indent with spaces (not tabs), close every quote and "
        "bracket, and quote values that contain ': ' or start with a special character."
    )
