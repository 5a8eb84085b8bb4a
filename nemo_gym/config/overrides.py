"""Command-line overrides in Hydra's grammar (`+a.b=1`, `+xs=[a, b]`) turned into a nested mapping."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # imported where configs are loaded: a server process, given its resolved config, needs neither
    pass
from nemo_gym.config.errors import ConfigError

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
            hint = (
                'Overrides look like +key=value, +nested.key=value or "+config_paths=[a.yaml, b.yaml]"; '
                "quote values containing spaces or shell characters."
            )
            if "${" in text:
                hint += (
                    " `${name}` refers to another key and must be closed with `}`; write a literal '${' inside "
                    "quotes and escaped, e.g. +key='a\\${b'."
                )
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
