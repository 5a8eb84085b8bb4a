"""`ng_openrouter_emulator [+host=127.0.0.1] [+port=8080] [+config_path=emulator.yaml] [+key=value ...]`: serve the
offline OpenRouter emulator until Ctrl-C / SIGTERM.

Point `policy_base_url` at the printed URL to dry-run an environment at zero cost. `+config_path` names a YAML
file of EmulatorConfig keys (keys, credits_usd, seed, models, latency_ms, default_faults, answer_keys,
scripted_replies, ...); command-line `+key=value` overrides win over it, e.g.
`+scripted_replies=[judge_replies.jsonl]` for an LLM judge's verdicts.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any

import uvicorn
from pydantic import ValidationError

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.overrides import parse_overrides
from nemo_gym.config.paths import resolve_input_path
from nemo_gym.config.secrets import command_redactor
from nemo_gym.config.yaml_files import load_yaml_file
from nemo_gym.console import fail, print_flushed
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.emulator.app import API_PREFIX
from nemo_gym.protocol.types import JSONObject
from nemo_gym.servers.binding import exposure_warning, is_loopback
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import ReadyReportingServer

DEFAULT_HOST = "127.0.0.1"


def _deep_merge(base: Mapping[str, Any], layer: Mapping[str, Any]) -> JSONObject:
    merged = dict(base)
    for key, value in layer.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(overrides: Mapping[str, Any]) -> EmulatorConfig:
    """The YAML file's keys (if `config_path`), then the overrides; a readable error for anything invalid."""
    data: JSONObject = {}
    if overrides.get("config_path"):
        data = load_yaml_file(resolve_input_path(str(overrides["config_path"])))
    data = _deep_merge(data, {k: v for k, v in overrides.items() if k not in ("host", "port", "config_path")})
    try:
        return EmulatorConfig.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or '(config)'}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"Invalid emulator config: {problems}") from None


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        overrides = parse_overrides(args)
    except ConfigError as exc:  # the message quotes the override, which may be `+keys=[...]`
        fail(command_redactor(args).text(str(exc)))
    try:
        config = load_config(overrides)
    except ConfigError as exc:
        fail(str(exc))
    host = str(overrides.get("host") or DEFAULT_HOST)
    port = int(overrides.get("port") or free_port(host))
    if not is_loopback(host):
        print_flushed(f"ng_openrouter_emulator: {exposure_warning('the emulator', host)}", err=True)
    try:  # reads the answer_keys and scripted_replies files: a bad one stops it before it serves
        app = OpenRouterEmulator(config).app()
    except ConfigError as exc:
        fail(str(exc))
    except (OSError, ValueError) as exc:
        fail(f"cannot load answer_keys: {exc}")
    server = ReadyReportingServer(
        uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False),
        ready_line=f"ng_openrouter_emulator ready at http://{host}:{port}{API_PREFIX}",
    )
    if not server.run_until_signalled():
        fail(f"cannot serve on {host}:{port} (is the port in use?)", code=1)
    print_flushed("ng_openrouter_emulator stopped.")
    sys.exit(0)


if __name__ == "__main__":
    main()
