"""`ng_demo [+environment=simple_weather] [+limit=N] [+num_repeats=K] [+output_jsonl_fpath=...]
[+return_token_id_information=true]`: the whole job offline, no key needed.

Starts `ng_run` with the bundled local model (local_model) and an environment (`resources_servers/<environment>`,
default simple_weather), collects rollouts from its `data/example.jsonl` with `ng_collect_rollouts`, prints the
metrics, and stops the servers. It runs the same commands a user would, as subprocesses, so it also shows them.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from nemo_gym.config.paths import project_root
from nemo_gym.console import fail, overrides_or_fail, print_flushed
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port

LOCAL_MODEL_CONFIG = "responses_api_models/local_model/configs/local_model.yaml"
DEFAULT_ENVIRONMENT = "simple_weather"
DEFAULTS = {"num_samples_in_parallel": 4}
STARTUP_TIMEOUT_S = 600.0


def main(argv: Sequence[str] | None = None) -> None:
    overrides = overrides_or_fail(argv)
    environment = str(overrides.pop("environment", DEFAULT_ENVIRONMENT))
    # A model server setting, not a collection one: it goes to ng_run.
    token_info = overrides.pop("return_token_id_information", None)
    folder = project_root() / "resources_servers" / environment
    if not (folder / "configs" / f"{environment}.yaml").is_file():
        known = sorted(
            p.parent.parent.name
            for p in (project_root() / "resources_servers").glob("*/configs/*.yaml")
            if p.stem == p.parent.parent.name
        )
        fail(
            f"+environment={environment}: no resources_servers/{environment}/configs/{environment}.yaml. "
            f"Environments: {', '.join(known)}."
        )
    head_port = free_port()
    config_paths = f"{LOCAL_MODEL_CONFIG}, resources_servers/{environment}/configs/{environment}.yaml"
    run_cmd = ["ng_run", f"+config_paths=[{config_paths}]", f"+head_server.port={head_port}"]
    if token_info is not None:
        setting = str(token_info).lower() if isinstance(token_info, bool) else token_info
        run_cmd.append(f"+policy_model.responses_api_models.local_model.return_token_id_information={setting}")
    output = (
        "results/demo_rollouts.jsonl"
        if environment == DEFAULT_ENVIRONMENT
        else f"results/demo_{environment}_rollouts.jsonl"
    )
    collect_settings = {**DEFAULTS, "output_jsonl_fpath": output, **overrides}
    collect_cmd = [
        "ng_collect_rollouts",
        f"+agent_name={environment}_simple_agent",
        f"+input_jsonl_fpath=resources_servers/{environment}/data/example.jsonl",
        f"+head_server.port={head_port}",
        "+overwrite=true",
        *(f"+{key}={value}" for key, value in collect_settings.items()),
    ]

    print_flushed(f"$ {shlex.join(run_cmd)}")
    started = time.perf_counter()
    servers = CommandProcess(run_cmd, cwd=project_root())
    code = 1
    try:
        if not servers.wait_for("ng_run ready", STARTUP_TIMEOUT_S):
            print_flushed(servers.output, err=True)
            fail("ng_run did not become ready; its output is above.", code=1)
        print_flushed(f"ng_run ready after {time.perf_counter() - started:.1f}s")
        print_flushed(f"$ {shlex.join(collect_cmd)}")
        code = subprocess.call(collect_cmd, cwd=project_root(), stdin=subprocess.DEVNULL)
    except KeyboardInterrupt:
        code = 130
    finally:
        servers.send(signal.SIGINT)
        try:
            servers.wait(30)
        finally:
            servers.close()
    sys.exit(code)


if __name__ == "__main__":
    main()
