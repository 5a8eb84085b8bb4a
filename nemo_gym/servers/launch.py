"""Starting a whole configuration: the head server and one process per instance (or Ray actors), watched until stopped.

Everything is validated before anything starts. Then each instance gets a free loopback port (unless its config
sets one), runs in its own process from this Python environment, and must answer `GET /health`. A table and a
flushed "ready" line follow; the runner then waits until Ctrl-C / SIGTERM (stopping every child within seconds) or
until a child dies (reported with its last log lines).
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType

import httpx

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.secrets import Redactor, collect_secrets
from nemo_gym.config.types import GlobalConfig, InstanceSpec
from nemo_gym.console import fail, print_columns, print_flushed
from nemo_gym.servers.head import build_head_app
from nemo_gym.servers.processes import free_port, spawn, stop
from nemo_gym.servers.serving import CONFIG_ENV_VAR, PORT_ENV_VAR, REPLICA_ENV_VAR, WORKER_ENV_VAR, serve_in_thread

LOG_TAIL_LINES = 40
DEFAULT_STARTUP_TIMEOUT_S = 600.0


@dataclass
class Child:
    spec: InstanceSpec
    process: subprocess.Popen[bytes]
    label: str
    """The instance name, with `[<replica>]` and `#<worker>` when it runs several replicas or worker processes."""
    url: str
    """This replica's address."""
    announced: threading.Event = field(default_factory=threading.Event)
    """Set when the child printed its ready line: the only way to know each worker of a shared port is up."""
    tail: collections.deque[str] = field(default_factory=lambda: collections.deque(maxlen=LOG_TAIL_LINES))


class Runner:
    """Owns the children: start, forward their output (prefixed, redacted), wait for health, stop."""

    def __init__(
        self, config: GlobalConfig, *, startup_timeout_s: float, log: Callable[[str], None] = print_flushed
    ) -> None:
        self.config = config
        self.log = log
        """Where the children's (prefixed, redacted) log lines go: the terminal for ng_run, a file elsewhere."""
        self.startup_timeout_s = startup_timeout_s
        self.redactor = Redactor(collect_secrets(config.data))
        self.children: dict[str, Child] = {}
        self.pids: dict[str, int] = {}
        self.replicas: dict[str, list[dict[str, object]]] = {}
        """instance -> its replicas' addresses, for the head server (filled in as they start)."""
        self.stop_requested = threading.Event()

    def request_stop(self, signum: int, _frame: FrameType | None) -> None:
        if not self.stop_requested.is_set():
            print_flushed(f"ng_run: {signal.Signals(signum).name} received, stopping all servers...")
        self.stop_requested.set()

    def start_children(self) -> None:
        env = {
            **os.environ,
            CONFIG_ENV_VAR: json.dumps({"data": self.config.data, "origins": self.config.origins}),
            "PYTHONUNBUFFERED": "1",
        }
        instances = self.config.instances
        taken = {int(spec.config["port"]) for spec in instances.values()}
        for name, spec in instances.items():
            workers = int(spec.config.get("num_workers") or 1)
            num_replicas = int(spec.config.get("num_replicas") or 1)
            for replica in range(1, num_replicas + 1):
                port = (
                    int(spec.config["port"])
                    if replica == 1
                    else free_port(str(spec.config.get("host", "127.0.0.1")), exclude=taken)
                )
                taken.add(port)
                url = f"http://{spec.config.get('host', '127.0.0.1')}:{port}"
                replica_label = name if num_replicas == 1 else f"{name}[{replica}]"
                for worker in range(1, workers + 1):
                    process = spawn(
                        [sys.executable, "-m", "nemo_gym.cli.serve", name],
                        env={
                            **env,
                            WORKER_ENV_VAR: str(worker),
                            REPLICA_ENV_VAR: str(replica),
                            PORT_ENV_VAR: str(port),
                        },
                    )
                    label = replica_label if workers == 1 else f"{replica_label}#{worker}"
                    child = Child(spec, process, label, url)
                    self.children[label] = child
                    self.pids.setdefault(name, process.pid)
                    if worker == 1:
                        self.replicas.setdefault(name, []).append(
                            {"replica": replica, "url": url, "pid": process.pid, "node": "local"}
                        )
                    threading.Thread(target=self._forward_output, args=(child,), daemon=True).start()

    def _forward_output(self, child: Child) -> None:
        assert child.process.stdout is not None
        for raw in child.process.stdout:
            line = self.redactor.text(raw.decode("utf-8", "replace").rstrip("\n"))
            child.tail.append(line)
            self.log(f"[{child.label}] {line}")
            if " ready at http" in line:  # after logging it: "ng_run ready" must follow every worker's ready line
                child.announced.set()

    def dead_child(self) -> Child | None:
        return next((c for c in self.children.values() if c.process.poll() is not None), None)

    def wait_until_healthy(self) -> bool:
        """True when every child answers /health; False if stopped, a child died, or time ran out."""
        pending = dict(self.children)
        deadline = time.monotonic() + self.startup_timeout_s
        with httpx.Client(timeout=2.0, trust_env=False) as client:
            while pending:
                if self.stop_requested.is_set():
                    return False
                if (dead := self.dead_child()) is not None:
                    self.report_death(dead, during_startup=True)
                    return False
                for name, child in list(pending.items()):
                    try:
                        if child.announced.is_set() and client.get(child.url + "/health").status_code == 200:
                            del pending[name]
                    except httpx.HTTPError:
                        pass
                if time.monotonic() > deadline:
                    print_flushed(
                        f"ng_run: error: {', '.join(pending)} did not become healthy within "
                        f"{self.startup_timeout_s:g}s (raise +startup_timeout_s=...).",
                        err=True,
                    )
                    for child in pending.values():
                        self._print_tail(child)
                    return False
                self.stop_requested.wait(0.1)
        return True

    def report_death(self, child: Child, *, during_startup: bool = False) -> None:
        time.sleep(0.3)  # let the output thread drain the last lines
        when = "while starting" if during_startup else "unexpectedly"
        print_flushed(
            f"ng_run: error: server '{child.label}' ({child.spec.server_type}/{child.spec.impl}) "
            f"exited {when} with status {child.process.returncode}.",
            err=True,
        )
        self._print_tail(child)

    def _print_tail(self, child: Child) -> None:
        print_flushed(f"--- last {len(child.tail)} log lines of '{child.label}' ---", err=True)
        for line in child.tail:
            print_flushed(f"    {line}", err=True)
        print_flushed("---", err=True)

    def print_table(self, head_url: str) -> None:
        rows = [("instance", "type", "impl", "url", "pid"), ("head", "head_server", "-", head_url, str(os.getpid()))]
        rows += [
            (label, c.spec.server_type, c.spec.impl, c.url, str(c.process.pid)) for label, c in self.children.items()
        ]
        print_columns(rows)

    def run_until_stopped(self) -> int:
        while not self.stop_requested.wait(0.2):
            if (dead := self.dead_child()) is not None:
                self.report_death(dead)
                return 1
        return 0

    def stop_all(self) -> None:
        stop([c.process for c in self.children.values()])


def run_on_ray(config: GlobalConfig, address: str, startup_timeout_s: float) -> int:
    """Every instance as `num_replicas` Ray actors; the head server (here) lists them. Same lines as without Ray."""
    from nemo_gym.servers import ray_placement as ray_cluster

    local = ray_cluster.LocalCluster(ray_cluster.local_cpus(config)) if address == ray_cluster.LOCAL else None
    try:
        ray_cluster.check_ray_config(config)
        if local is not None:
            print_flushed("ng_run: starting a local Ray cluster on 127.0.0.1 ...")
            address = local.start()
        ray_cluster.connect(address)
    except ConfigError as exc:
        if local is not None:
            local.stop()
        fail(str(exc))
    stop_requested = threading.Event()

    def request_stop(signum: int, _frame: FrameType | None) -> None:
        if not stop_requested.is_set():
            print_flushed(f"ng_run: {signal.Signals(signum).name} received, stopping all servers...")
        stop_requested.set()

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # after ray.init, which sets its own
        signal.signal(sig, request_stop)
    replicas: dict[str, list[dict[str, object]]] = {}
    placement = ray_cluster.RayPlacement(config, replicas, print_flushed)
    cluster = {"address": ray_cluster.cluster_address()}
    code = 1
    try:
        with serve_in_thread(
            build_head_app(config, None, replicas, ray=cluster), host=config.head_host, port=config.head_port
        ) as head_url:
            placement.start()
            if placement.wait_until_ready(startup_timeout_s, stop_requested):
                rows = [
                    ("instance", "type", "impl", "url", "pid", "node"),
                    ("head", "head_server", "-", head_url, str(os.getpid()), "-"),
                    *placement.rows(),
                ]
                print_columns(rows)
                print_flushed(
                    f"ng_run ready: {len(placement.members)} servers on the Ray cluster at "
                    f"{cluster['address']}, head at {head_url}. Press Ctrl-C to stop."
                )
                code = placement.watch(stop_requested)
            elif stop_requested.is_set():
                code = 0
    except (RuntimeError, TimeoutError) as exc:
        print_flushed(
            f"ng_run: error: cannot start the head server on {config.head_host}:{config.head_port}: {exc}", err=True
        )
    finally:
        placement.stop()
        if local is not None:
            local.stop()
        print_flushed("ng_run: all servers stopped.")
    return code
