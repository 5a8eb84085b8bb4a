"""`ng_demo [+limit=N] [+num_repeats=K] [+output_jsonl_fpath=...]`: the whole job offline, no key needed.

Starts `ng_run` with the bundled local model (local_model) and simple_weather, collects rollouts from
simple_weather's examples with `ng_collect_rollouts`, prints the metrics, and stops the servers. It runs the same
commands a user would, as subprocesses, so it also shows them.
"""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Sequence

from nemo_gym.cli.common import fail, overrides_or_fail, print_flushed
from nemo_gym.config import project_root
from nemo_gym.processes import free_port
from nemo_gym.testing.processes import CommandProcess

CONFIG_PATHS = ("responses_api_models/local_model/configs/local_model.yaml, "
                "resources_servers/simple_weather/configs/simple_weather.yaml")
DEFAULTS = {"output_jsonl_fpath": "results/demo_rollouts.jsonl", "num_samples_in_parallel": 4}
STARTUP_TIMEOUT_S = 600.0


def main(argv: Sequence[str] | None = None) -> None:
    overrides = overrides_or_fail(argv)
    head_port = free_port()
    run_cmd = ["ng_run", f"+config_paths=[{CONFIG_PATHS}]", f"+head_server.port={head_port}"]
    collect_settings = {**DEFAULTS, **overrides}
    collect_cmd = ["ng_collect_rollouts", "+agent_name=simple_weather_simple_agent",
                   "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl",
                   f"+head_server.port={head_port}", "+overwrite=true",
                   *(f"+{key}={value}" for key, value in collect_settings.items())]

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
