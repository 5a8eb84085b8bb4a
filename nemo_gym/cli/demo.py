"""`ng_demo [+environment=simple_weather] [+limit=N] [+num_repeats=K] [+output_jsonl_fpath=...]
[+return_token_id_information=true]`: the whole job offline, no key needed.

Starts `ng_run` with the bundled local model (local_model) and an environment (`resources_servers/<environment>`,
default simple_weather), collects rollouts from its `data/example.jsonl` with `ng_collect_rollouts`, prints the
metrics, and stops the servers. It runs the same commands a user would, as subprocesses, so it also shows them.

An environment with an LLM judge (its config names the model server instance `judge_model`) gets the offline
OpenRouter emulator as its judge: `ng_openrouter_emulator` starts first, with the environment's
`data/judge_replies.jsonl` as scripted verdicts when it has one, and `judge_model` (openai_model's
`configs/judge_model.yaml`) points at it; the judge calls still go through a real model server (retries, cost).
"""

from __future__ import annotations

import contextlib
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.paths import project_root
from nemo_gym.config.yaml_files import load_yaml_file
from nemo_gym.console import fail, overrides_or_fail, print_flushed
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port

LOCAL_MODEL_CONFIG = "responses_api_models/local_model/configs/local_model.yaml"
JUDGE_MODEL_CONFIG = "responses_api_models/openai_model/configs/judge_model.yaml"
JUDGE_INSTANCE = "judge_model"
JUDGE_MODEL_NAME = "openai/gpt-4o-mini"
JUDGE_KEY = "sk-or-v1-ng-demo-judge"
"""The only key the demo's emulator accepts: a made-up one, so a real OpenRouter key is never involved."""
EMULATOR_READY = "ng_openrouter_emulator ready at"
DEFAULT_ENVIRONMENT = "simple_weather"
DEFAULTS = {"num_samples_in_parallel": 4}
STARTUP_TIMEOUT_S = 600.0
EMULATOR_STARTUP_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0


def environment_config(environment: str) -> str:
    """The environment's own config file, relative to the project root."""
    return f"resources_servers/{environment}/configs/{environment}.yaml"


def references_judge_model(config: Any) -> bool:
    """True when some mapping in the (nested) config is `{type: responses_api_models, name: judge_model, ...}`, the
    reference a resources server's `judge_model_server` holds."""
    if isinstance(config, Mapping):
        if config.get("type") == "responses_api_models" and config.get("name") == JUDGE_INSTANCE:
            return True
        return any(references_judge_model(value) for value in config.values())
    if isinstance(config, list):
        return any(references_judge_model(item) for item in config)
    return False


def uses_judge(config_path: Path) -> bool:
    """Whether the environment config file asks the `judge_model` instance for verdicts."""
    return references_judge_model(load_yaml_file(config_path))


@dataclass(frozen=True)
class JudgePlan:
    """The offline judge of one demo: an emulator on `port`, accepting `key`, with `replies` as scripted verdicts
    (a path relative to the project root, or None for the scripted policy's answers)."""

    port: int
    key: str = JUDGE_KEY
    replies: str | None = None
    model_name: str = JUDGE_MODEL_NAME

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v1"

    def emulator_command(self) -> list[str]:
        command = ["ng_openrouter_emulator", f"+port={self.port}", f"+keys=[{self.key}]"]
        if self.replies is not None:
            command.append(f"+scripted_replies=[{self.replies}]")
        return command

    def run_overrides(self) -> list[str]:
        """What ng_run needs to point `judge_model` at the emulator (the env.yaml keys of judge_model.yaml)."""
        return [
            f"+judge_base_url={self.base_url}",
            f"+judge_api_key={self.key}",
            f"+judge_model_name={self.model_name}",
        ]


def plan_judge(environment: str, *, root: Path, exclude_ports: Collection[int] = ()) -> JudgePlan | None:
    """The emulator judge for an environment whose config references `judge_model`; None for the others."""
    if not uses_judge(root / environment_config(environment)):
        return None
    replies = f"resources_servers/{environment}/data/judge_replies.jsonl"
    return JudgePlan(port=free_port(exclude=exclude_ports), replies=replies if (root / replies).is_file() else None)


def run_command(
    environment: str, head_port: int, *, token_info: object = None, judge: JudgePlan | None = None
) -> list[str]:
    """ng_run with local_model as the policy and the environment (plus judge_model when it has a judge)."""
    config_paths = [LOCAL_MODEL_CONFIG, environment_config(environment)]
    if judge is not None:
        config_paths.append(JUDGE_MODEL_CONFIG)
    command = ["ng_run", f"+config_paths=[{', '.join(config_paths)}]", f"+head_server.port={head_port}"]
    if token_info is not None:
        setting = override_value(token_info)
        command.append(f"+policy_model.responses_api_models.local_model.return_token_id_information={setting}")
    if judge is not None:
        command += judge.run_overrides()
    return command


def override_value(value: object) -> str:
    """A parsed override written back as the user typed it: `true`, not Python's `True`."""
    return str(value).lower() if isinstance(value, bool) else str(value)


def collect_command(environment: str, head_port: int, overrides: Mapping[str, Any]) -> list[str]:
    """ng_collect_rollouts over the environment's examples; `overrides` (the user's +key=value) win."""
    output = (
        "results/demo_rollouts.jsonl"
        if environment == DEFAULT_ENVIRONMENT
        else f"results/demo_{environment}_rollouts.jsonl"
    )
    settings = {**DEFAULTS, "output_jsonl_fpath": output, **overrides}
    return [
        "ng_collect_rollouts",
        f"+agent_name={environment}_simple_agent",
        f"+input_jsonl_fpath=resources_servers/{environment}/data/example.jsonl",
        f"+head_server.port={head_port}",
        "+overwrite=true",
        *(f"+{key}={override_value(value)}" for key, value in settings.items()),
    ]


def start_emulator(plan: JudgePlan, *, cwd: Path, timeout_s: float = EMULATOR_STARTUP_TIMEOUT_S) -> CommandProcess:
    """`ng_openrouter_emulator` running and ready to answer; a RuntimeError (with its output) if it is not ready
    in time. Nothing is left running when it fails or is interrupted."""
    emulator = CommandProcess(plan.emulator_command(), cwd=cwd)
    try:
        if not emulator.wait_for(EMULATOR_READY, timeout_s):
            raise RuntimeError(f"ng_openrouter_emulator did not become ready:\n{emulator.output}")
    except BaseException:
        stop(emulator)
        raise
    return emulator


def stop(process: CommandProcess, timeout_s: float = STOP_TIMEOUT_S) -> None:
    """Ctrl-C, as a user stops the command, then make sure nothing of it is left running."""
    process.send(signal.SIGINT)
    try:
        process.wait(timeout_s)
    finally:
        process.close()


def main(argv: Sequence[str] | None = None) -> None:
    overrides = overrides_or_fail(argv)
    environment = str(overrides.pop("environment", DEFAULT_ENVIRONMENT))
    # A model server setting, not a collection one: it goes to ng_run.
    token_info = overrides.pop("return_token_id_information", None)
    root = project_root()
    if not (root / environment_config(environment)).is_file():
        known = sorted(
            p.parent.parent.name
            for p in (root / "resources_servers").glob("*/configs/*.yaml")
            if p.stem == p.parent.parent.name
        )
        fail(f"+environment={environment}: no {environment_config(environment)}. Environments: {', '.join(known)}.")
    head_port = free_port()
    try:
        judge = plan_judge(environment, root=root, exclude_ports={head_port})
    except ConfigError as exc:
        fail(str(exc))
    run_cmd = run_command(environment, head_port, token_info=token_info, judge=judge)
    collect_cmd = collect_command(environment, head_port, overrides)

    code = 1
    try:
        with contextlib.ExitStack() as running:  # stops what started, last first, whatever happens
            if judge is not None:
                print_flushed(f"$ {shlex.join(judge.emulator_command())}")
                try:
                    running.callback(stop, start_emulator(judge, cwd=root))
                except RuntimeError as exc:
                    fail(str(exc), code=1)
                verdicts = f"scripted verdicts from {judge.replies}" if judge.replies else "no judge_replies.jsonl"
                print_flushed(
                    f"judge: {JUDGE_INSTANCE} is the offline OpenRouter emulator at {judge.base_url} "
                    f"({judge.model_name}, {verdicts})"
                )
            print_flushed(f"$ {shlex.join(run_cmd)}")
            started = time.perf_counter()
            servers = CommandProcess(run_cmd, cwd=root)
            running.callback(stop, servers)
            if not servers.wait_for("ng_run ready", STARTUP_TIMEOUT_S):
                print_flushed(servers.output, err=True)
                fail("ng_run did not become ready; its output is above.", code=1)
            print_flushed(f"ng_run ready after {time.perf_counter() - started:.1f}s")
            print_flushed(f"$ {shlex.join(collect_cmd)}")
            code = subprocess.call(collect_cmd, cwd=root, stdin=subprocess.DEVNULL)
    except KeyboardInterrupt:
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
