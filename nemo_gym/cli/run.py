"""`ng_run "+config_paths=[a.yaml, b.yaml]" [+key=value ...]`: start the head server and one process per instance.

Everything is validated before anything starts. Then each instance gets a free loopback port (unless its config
sets one), runs in its own process from this Python environment, and must answer `GET /health`. A table and a
flushed "ready" line follow; ng_run then waits until Ctrl-C / SIGTERM (stopping every child within seconds) or
until a child dies (reported with its last log lines, exit status 1).
"""

from __future__ import annotations

import signal
import sys
from collections.abc import Sequence

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.loading import load_global_config
from nemo_gym.config.secrets import command_redactor
from nemo_gym.config.types import GlobalConfig
from nemo_gym.console import fail, print_flushed
from nemo_gym.servers.binding import warn_if_exposed
from nemo_gym.servers.head import build_head_app
from nemo_gym.servers.launch import DEFAULT_STARTUP_TIMEOUT_S, Runner, run_on_ray
from nemo_gym.servers.loading import prepare
from nemo_gym.servers.serving import serve_in_thread


def main(argv: Sequence[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    config: GlobalConfig | None = None
    try:
        config = load_global_config(args)
        startup_timeout_s = float(config.data.get("startup_timeout_s", DEFAULT_STARTUP_TIMEOUT_S))
        config = prepare(config)
    except ConfigError as exc:  # a value echoed in the message (an override, a wrongly typed key) may be a secret
        fail(command_redactor(args, config.data if config else None).text(str(exc)))
    warn_if_exposed(config)
    if config.data.get("ray_address"):
        sys.exit(run_on_ray(config, str(config.data["ray_address"]), startup_timeout_s))
    runner = Runner(config, startup_timeout_s=startup_timeout_s)
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        # Set explicitly: a shell starts background jobs with SIGINT ignored, and we must still stop on it.
        signal.signal(sig, runner.request_stop)
    try:
        with serve_in_thread(
            build_head_app(config, runner.pids, runner.replicas), host=config.head_host, port=config.head_port
        ) as head_url:
            runner.start_children()
            code = 1
            try:
                if runner.wait_until_healthy():
                    runner.print_table(head_url)
                    print_flushed(
                        f"ng_run ready: {len(runner.children)} servers, head at {head_url}. Press Ctrl-C to stop."
                    )
                    code = runner.run_until_stopped()
                elif runner.stop_requested.is_set():
                    code = 0
            finally:
                runner.stop_all()
                print_flushed("ng_run: all servers stopped.")
    except (RuntimeError, TimeoutError) as exc:
        fail(
            f"cannot start the head server on {config.head_host}:{config.head_port}: {exc} Another ng_run may "
            "be running; stop it or choose another port with +head_server.port=<port>."
        )
    sys.exit(code)


if __name__ == "__main__":
    main()
