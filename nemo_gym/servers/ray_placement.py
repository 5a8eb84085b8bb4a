"""Placement on a Ray cluster (`ng_run +ray_address=...`): every instance as `num_replicas` Ray actors.

Each replica is an actor that serves its instance's FastAPI app on its node (the node's IP, a free port) and
reserves the CPUs, GPUs and custom resources of its instance's `ray:` block, so Ray decides where it runs. Ray
restarts a replica that dies (`ray.max_restarts`); ng_run polls every replica's address and keeps the head server's
list current, and clients re-read that list when a replica stops answering.

This module is imported only when `ray_address` is set: a run without Ray never imports it (Ray is the optional
`[ray]` extra). `+ray_address=local` starts a private cluster on this machine bound to 127.0.0.1 only (no dashboard,
no usage reporting) as ng_run's child process; any other value is the address of a running cluster
(`ray start --head`).
"""

from __future__ import annotations

import collections
import contextlib
import logging
import math
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.types import GlobalConfig, InstanceSpec
from nemo_gym.protocol.types import JSONObject

LOCAL = "local"
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
POLL_INTERVAL_S = 1.0
DEAD_AFTER_FAILURES = 5
STOP_GRACE_S = 15.0


def import_ray() -> Any:
    try:
        import ray
    except ImportError:
        raise ConfigError(
            "+ray_address needs Ray, which is not installed. Install the extra: pip install -e "
            "'.[ray]' (or pip install 'ray>=2.40'), or drop +ray_address to run on this machine "
            "only."
        ) from None
    return ray


def connect(address: str, *, log_to_driver: bool = True) -> Any:
    """Join the Ray cluster at `address` (a loopback one stays on loopback); returns the `ray` module."""
    loopback_environment(address)
    ray = import_ray()
    if ray.is_initialized():
        return ray
    logging.getLogger("ray").setLevel(logging.WARNING)
    try:
        ray.init(address=address, log_to_driver=log_to_driver, configure_logging=False)
    except ConnectionError as exc:
        raise ConfigError(
            f"Cannot connect to the Ray cluster at +ray_address={address}: {exc}. Start it with "
            "`ray start --head` (its output prints the address) or use +ray_address=local."
        ) from None
    return ray


def loopback_environment(address: str) -> dict[str, str]:
    """Set (and return) the environment that keeps Ray quiet and, for a loopback cluster, on loopback. Ray reads
    it when imported, so this comes first."""
    settings = {
        "RAY_USAGE_STATS_ENABLED": "0",  # never report usage anywhere
        "RAY_DEDUP_LOGS": "0",  # each replica's ready line is news, not a repeat
        "RAY_COLOR_PREFIX": "0",
    }  # plain log prefixes, as the rest of ng_run's output
    if address == LOCAL or _host_of(address) in LOOPBACK_HOSTS:
        # Ray takes this machine's outward address as the node IP unless told to stay on loopback; with this set,
        # every Ray process (GCS, raylet, object manager, workers) binds and connects to 127.0.0.1 only.
        settings["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    for key, value in settings.items():
        os.environ.setdefault(key, value)
    return settings


class LocalCluster:
    """`+ray_address=local`: a private one-node Ray cluster on 127.0.0.1, run as ng_run's own child process
    (`ray start --head --block`). It stops with ng_run however ng_run ends: on Ctrl-C or SIGTERM ng_run stops it,
    and if ng_run is killed the kernel sends the child SIGTERM (as for every server ng_run starts), on which
    `ray start --block` stops every Ray process it started. (A cluster started inside ng_run's own process leaves
    Ray's per-node agents behind when ng_run is killed.)"""

    def __init__(self, num_cpus: float) -> None:
        self.num_cpus = num_cpus
        self.process: subprocess.Popen[bytes] | None = None
        self.tail: collections.deque[str] = collections.deque(maxlen=40)

    def start(self, timeout_s: float = 120.0) -> str:
        """Start the cluster and return its address once it runs."""
        from nemo_gym.servers.processes import free_port, spawn

        # Token authentication on both sides (the token at Ray's default place, ~/.ray/auth_token, unless
        # RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH says otherwise); set before Ray is imported, which reads these once.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
        env = {**os.environ, **loopback_environment(LOCAL)}
        import_ray()
        self._ensure_token(env)
        port = free_port()
        self.process = spawn(
            [
                sys.executable,
                "-m",
                "ray.scripts.scripts",
                "start",
                "--head",
                "--block",
                "--node-ip-address=127.0.0.1",
                f"--port={port}",
                "--include-dashboard=false",
                "--disable-usage-stats",
                f"--num-cpus={self.num_cpus:g}",
            ],
            env=env,
        )
        started = threading.Event()
        threading.Thread(target=self._read_output, args=(started,), daemon=True).start()
        deadline = time.monotonic() + timeout_s
        while not started.wait(0.2):
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise ConfigError(
                    "Could not start a local Ray cluster (ray start --head). Its last lines:\n  "
                    + "\n  ".join(self.tail)
                )
        return f"127.0.0.1:{port}"

    @staticmethod
    def _ensure_token(env: dict[str, str]) -> None:
        """`ray start` needs a token that exists; Ray's own command makes one at Ray's default place
        (~/.ray/auth_token) when there is none, where every driver on this machine (ng_run, a sharded
        ng_collect_rollouts) finds it. Its output is the token itself, so it is not shown."""
        if (
            env.get("RAY_AUTH_MODE", "").lower() != "token"
            or env.get("RAY_AUTH_TOKEN")
            or env.get("RAY_AUTH_TOKEN_PATH")
        ):
            return
        result = subprocess.run(
            [sys.executable, "-m", "ray.scripts.scripts", "get-auth-token", "--generate"],
            env=env,
            capture_output=True,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        if result.returncode != 0:
            raise ConfigError(
                "Could not create a Ray authentication token (ray get-auth-token --generate failed). "
                "Create one with that command, or set RAY_AUTH_TOKEN."
            )

    def _read_output(self, started: threading.Event) -> None:
        assert self.process is not None and self.process.stdout is not None
        for raw in self.process.stdout:
            line = raw.decode("utf-8", "replace").rstrip()
            self.tail.append(line)
            if "Ray runtime started" in line:
                started.set()

    def stop(self) -> None:
        """SIGTERM to `ray start` alone, which stops its Ray processes in order; then whatever is left of its
        process group. (SIGTERM to the whole group at once makes Ray's processes race each other's shutdown.)"""
        from nemo_gym.servers.processes import stop

        if self.process is not None:
            self.process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=STOP_GRACE_S)
            stop([self.process], grace_s=2.0)
            self.process = None


def _host_of(address: str) -> str | None:
    if "://" not in address:
        address = "ray://" + address
    return urlsplit(address).hostname


def cluster_address() -> str:
    """The address other drivers (e.g. a sharded ng_collect_rollouts) use to join the cluster this process is on."""
    ray = import_ray()
    return str(ray.get_runtime_context().gcs_address)


def check_ray_config(config: GlobalConfig) -> None:
    """What Ray placement cannot do, said before anything starts."""
    for spec in config.instances.values():
        if int(spec.config.get("num_workers") or 1) > 1:
            raise ConfigError(
                f"Instance '{spec.name}' (from {spec.origin}) sets num_workers, which shares one port "
                "on one machine; on Ray use num_replicas instead (each replica is an actor with its "
                "own address)."
            )


def local_cpus(config: GlobalConfig) -> float:
    """CPUs to give a `local` cluster: this machine's, or what the replicas ask for if that is more (servers wait
    on the network most of the time; Ray's CPU counts are for placement only)."""
    asked = sum(
        _resources(spec).num_cpus * int(spec.config.get("num_replicas") or 1) for spec in config.instances.values()
    )
    return float(max(os.cpu_count() or 1, math.ceil(asked)))


def _resources(spec: InstanceSpec) -> Any:
    from nemo_gym.servers.base import RayResources

    return RayResources.model_validate(spec.config.get("ray") or {})


def replica_label(name: str, replica: int, num_replicas: int) -> str:
    """As ng_run names replicas without Ray: the instance name, with `[k]` when there are several."""
    return name if num_replicas == 1 else f"{name}[{replica}]"


class ReplicaServer:
    """One replica, as a Ray actor: serves the instance's app on its node until the actor is killed."""

    def __init__(self, name: str, config_data: JSONObject, origins: dict[str, str], replica: int) -> None:
        import ray

        from nemo_gym.config.secrets import install_log_redaction
        from nemo_gym.servers.gc_tuning import tune_for_many_in_flight
        from nemo_gym.servers.loading import load_server_class
        from nemo_gym.servers.processes import free_port
        from nemo_gym.servers.serving import serve_in_thread

        global_config = GlobalConfig(data=config_data, origins=origins)
        spec = global_config.instances[name]
        server = load_server_class(spec).from_global_config(name, global_config)
        host: str = ray.util.get_node_ip_address()  # type: ignore[no-untyped-call]  # ray leaves it unannotated
        server.config.host, server.config.port = host, free_port(host)
        label = replica_label(name, replica, server.config.num_replicas)
        logging.basicConfig(
            level=logging.INFO, format=f"%(asctime)s {label} %(levelname)s %(name)s: %(message)s", force=True
        )
        install_log_redaction(server.redactor)
        tune_for_many_in_flight()
        self._serving = serve_in_thread(server.build_app(), host=host, port=server.config.port)
        self.url = self._serving.__enter__()
        self.entry = {
            "replica": replica,
            "url": self.url,
            "pid": os.getpid(),
            "node": ray.get_runtime_context().get_node_id(),
        }
        print(f"{label} ready at {self.url}", flush=True)

    def address(self) -> JSONObject:
        return self.entry


@dataclass
class Replica:
    instance: str
    index: int
    actor: Any
    entry: JSONObject | None = None
    """What the head server lists for this replica; None while it starts or restarts."""
    served: str | None = None
    """The last address it served at."""
    pending: Any = None
    """An `address()` call not answered yet (the actor is starting or being restarted)."""
    failures: int = 0
    """`address()` calls failed in a row: one when the replica dies (Ray restarts it), many when it stays dead."""
    lost: str | None = field(default=None)


class RayPlacement:
    """Starts every replica as an actor, waits for them, keeps `replicas` (the head server's table) current."""

    def __init__(self, config: GlobalConfig, replicas: dict[str, list[JSONObject]], log: Callable[[str], None]) -> None:
        self.config = config
        self.table = replicas
        self.log = log
        self.members: list[Replica] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        ray = import_ray()
        actor_class = ray.remote(ReplicaServer)
        for name, spec in self.config.instances.items():
            resources = _resources(spec)
            for index in range(1, int(spec.config.get("num_replicas") or 1) + 1):
                actor = actor_class.options(
                    num_cpus=resources.num_cpus,
                    num_gpus=resources.num_gpus,
                    resources=resources.resources or None,
                    max_restarts=resources.max_restarts,
                    max_task_retries=0,
                    name=None,
                ).remote(name, self.config.data, self.config.origins, index)
                self.members.append(Replica(name, index, actor))

    def poll(self, timeout_s: float = 0.0) -> list[Replica]:
        """Ask every replica for its address (answered once it serves); update the table; return lost replicas."""
        ray = import_ray()
        for member in self.members:
            if member.pending is None and member.lost is None:
                member.pending = member.actor.address.remote()
        refs = [m.pending for m in self.members if m.pending is not None]
        ready, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s) if refs else ([], [])
        ready_ids = {ref.hex() for ref in ready}
        lost = []
        for member in self.members:
            if member.pending is None or member.pending.hex() not in ready_ids:
                continue
            ref, member.pending = member.pending, None
            try:
                entry = ray.get(ref)
            except ray.exceptions.RayActorError as exc:
                # The replica died: stop listing its address. Ray restarts it (calls then wait for the new
                # process), unless its restarts are used up, when every call fails at once.
                member.entry, member.failures = None, member.failures + 1
                if member.failures >= DEAD_AFTER_FAILURES:
                    member.lost = str(exc).splitlines()[0]
                    lost.append(member)
                continue
            member.failures = 0
            if entry != member.entry:
                if member.served is not None and member.served != entry["url"]:
                    self.log(
                        f"ng_run: {member.instance}[{member.index}] is serving again at {entry['url']} "
                        f"(was {member.served}); the head server lists the new address."
                    )
                member.entry, member.served = entry, entry["url"]
        self._publish()
        return lost

    def _publish(self) -> None:
        with self._lock:
            for name in self.config.instances:
                entries = [m.entry for m in self.members if m.instance == name and m.entry and m.lost is None]
                self.table[name] = sorted(entries, key=lambda e: e["replica"])

    def wait_until_ready(self, timeout_s: float, stop: threading.Event) -> bool:
        deadline = time.monotonic() + timeout_s
        while not stop.is_set():
            lost = self.poll(timeout_s=0.5)
            if lost:
                for member in lost:
                    self.log(f"ng_run: error: replica {member.instance}[{member.index}] failed to start: {member.lost}")
                return False
            if all(m.entry is not None for m in self.members):
                return True
            failed = next((m for m in self.members if m.failures), None)
            if failed is not None:  # a replica that cannot start will not start on Ray's next try either
                self.log(
                    f"ng_run: error: replica {failed.instance}[{failed.index}] failed to start (its error is above)."
                )
                return False
            if time.monotonic() > deadline:
                waiting = [f"{m.instance}[{m.index}]" for m in self.members if m.entry is None]
                self.log(
                    f"ng_run: error: {', '.join(waiting)} did not start within {timeout_s:g}s. Does the cluster "
                    "have the CPUs, GPUs and resources their `ray:` blocks ask for? (`ray status` shows what "
                    "it has.)"
                )
                return False
        return False

    def watch(self, stop: threading.Event) -> int:
        """Keep the table current until stopped (0); 1 when an instance has no replica left that Ray restarts."""
        while not stop.wait(POLL_INTERVAL_S):
            for member in self.poll():
                self.log(
                    f"ng_run: replica {member.instance}[{member.index}] is gone and Ray will not restart it "
                    f"(ray.max_restarts): {member.lost}"
                )
            for name in self.config.instances:
                if all(m.lost is not None for m in self.members if m.instance == name):
                    self.log(f"ng_run: error: instance '{name}' has no replicas left.")
                    return 1
        return 0

    def rows(self) -> list[tuple[str, str, str, str, str, str]]:
        specs = self.config.instances
        return [
            (
                replica_label(m.instance, m.index, int(specs[m.instance].config.get("num_replicas") or 1)),
                specs[m.instance].server_type,
                specs[m.instance].impl,
                str(m.entry["url"]),
                str(m.entry["pid"]),
                str(m.entry["node"])[:12],
            )
            for m in self.members
            if m.entry is not None
        ]

    def stop(self) -> None:
        ray = import_ray()
        for member in self.members:
            with contextlib.suppress(Exception):  # an actor already gone needs no stopping
                ray.kill(member.actor, no_restart=True)
        ray.shutdown()
