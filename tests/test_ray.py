"""Ray placement, on loopback only: the seed's quickstart with +ray_address=local gives the same rows as without
Ray; on a two-node cluster (Ray's own test utilities, both nodes on 127.0.0.1) replicas go where their resources
say, calls spread over replicas and stay on their session's replica, a killed replica is replaced mid-run without
a lost rollout, and a collection sharded over collector actors writes every rollout exactly once."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml

from nemo_gym.config.paths import project_root
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.emulated import write_rows
from nemo_gym.testing.fast_upstream import FastUpstream
from nemo_gym.testing.processes import collect_rollouts
from nemo_gym.testing.stub_upstream import StubUpstream

pytestmark = pytest.mark.slow

if os.environ.get("CI") != "true":  # CI installs the [ray] extra; there a missing Ray is a failure, not a skip
    pytest.importorskip("ray")

LOOPBACK_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}
SIMPLE_WEATHER = str(project_root() / "resources_servers/simple_weather/configs/simple_weather.yaml")
AGENT = "simple_weather_simple_agent"
SECRET = "sk-or-v1-ray-test-0123456789abcdef"
SEED_NG_RUN = (
    'ng_run "+config_paths=[responses_api_models/openai_model/configs/openai_model.yaml, '
    'resources_servers/simple_weather/configs/simple_weather.yaml]"'
)
SEED_COLLECT = (
    "ng_collect_rollouts +agent_name=simple_weather_simple_agent "
    "+input_jsonl_fpath=resources_servers/simple_weather/data/example.jsonl "
    "+output_jsonl_fpath=results/openrouter_rollouts.jsonl +limit=10"
)


def non_loopback_listeners(pids: set[int]) -> list[str]:
    """Listening sockets of these processes bound anywhere but loopback."""
    found = []
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids and not is_loopback(conn.laddr.ip):
            found.append(f"pid {conn.pid} on {conn.laddr.ip}:{conn.laddr.port}")
    return found


def is_loopback(ip: str) -> bool:
    address = ipaddress.ip_address(ip)
    mapped = getattr(address, "ipv4_mapped", None)
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def process_tree(pid: int) -> set[int]:
    root = psutil.Process(pid)
    return {root.pid, *(child.pid for child in root.children(recursive=True))}


def ray_processes() -> set[int]:
    names = ("raylet", "gcs_server", "ray::")
    return {
        p.pid
        for p in psutil.process_iter(["name", "cmdline"])
        if any(n in (p.info["name"] or "") or n in " ".join(p.info["cmdline"] or []) for n in names)
    }


# ------------------------------------------------------------------------------------ the seed, with and without


def seed_rows(workdir: Path, *extra: str) -> tuple[list[dict[str, Any]], list[str]]:
    """Run the seed's quickstart (plus `extra` ng_run arguments) and its collection; the records and ng_run's
    output."""
    ng_run = CommandProcess(["bash", "-c", " ".join([SEED_NG_RUN, *extra])], cwd=workdir)
    try:
        assert ng_run.wait_for("ng_run ready", timeout_s=120), ng_run.output
        pids = process_tree(ng_run.process.pid) | ray_processes()
        assert not non_loopback_listeners(pids), non_loopback_listeners(pids)
        output = workdir / "results" / "openrouter_rollouts.jsonl"
        output.unlink(missing_ok=True)
        collect = subprocess.run(
            ["bash", "-c", SEED_COLLECT],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=180,
            stdin=subprocess.DEVNULL,
        )
        assert collect.returncode == 0, collect.stdout + collect.stderr
        ng_run.send(signal.SIGINT)
        assert ng_run.wait(60) == 0, ng_run.output
        return [json.loads(line) for line in output.read_text().splitlines()], ng_run.lines
    finally:
        ng_run.close()


def test_the_seed_quickstart_gives_the_same_rows_on_a_local_ray_cluster(tmp_path: Path) -> None:
    upstream = StubUpstream(api_key=SECRET)
    with serve_in_thread(upstream.app()) as url:
        env = {
            "policy_base_url": url + "/v1",
            "policy_api_key": SECRET,
            "policy_model_name": "meta-llama/llama-3.1-8b-instruct:free",
            "head_server": {"port": free_port()},
        }
        (tmp_path / "env.yaml").write_text(yaml.safe_dump(env))
        for folder in ("responses_api_models", "resources_servers", "responses_api_agents"):
            (tmp_path / folder).symlink_to(project_root() / folder)
        plain, _ = seed_rows(tmp_path)
        before = ray_processes()
        on_ray, lines = seed_rows(tmp_path, "+ray_address=local")

    def essence(record: dict[str, Any]) -> tuple[Any, ...]:
        """What a rollout did, without the ids that differ on every run (item ids, call ids)."""
        output = [
            {k: v for k, v in item.items() if k not in ("id", "call_id")} for item in record["response"]["output"]
        ]
        return (
            record["row_index"],
            record["reward"],
            record["error"],
            record["usage"]["input_tokens"],
            record["usage"]["output_tokens"],
            json.dumps(output, sort_keys=True),
        )

    assert len(plain) == len(on_ray) == 10
    assert sorted(map(essence, plain)) == sorted(map(essence, on_ray))
    assert any("servers on the Ray cluster at 127.0.0.1:" in line for line in lines)
    assert all(SECRET not in line for line in lines)
    deadline = time.monotonic() + 20  # the cluster ng_run started stops with it
    while ray_processes() - before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not ray_processes() - before, "ng_run left Ray processes behind"


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "killed"])
def test_the_local_cluster_stops_with_ng_run_however_it_ends(tmp_path: Path, how: signal.Signals) -> None:
    before = ray_processes()
    run = CommandProcess(
        [
            "ng_run",
            f"+config_paths=[{SIMPLE_WEATHER}, {model_block(tmp_path)}]",
            "+ray_address=local",
            f"+head_server.port={free_port()}",
        ],
        cwd=tmp_path,
    )
    try:
        assert run.wait_for("ng_run ready", 120), run.output
        started = ray_processes() - before
        assert started
        run.send(how)  # to ng_run alone, not its process group
        assert run.wait(60) == (0 if how == signal.SIGTERM else -signal.SIGKILL)
        deadline = time.monotonic() + 30
        while started & ray_processes() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not started & ray_processes(), f"left behind: {started & ray_processes()}"
    finally:
        run.close()


def model_block(directory: Path) -> Path:
    path = directory / "model.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "policy_model": {
                    "responses_api_models": {
                        "openai_model": {
                            "entrypoint": "app.py",
                            "base_url": "http://127.0.0.1:9/v1",
                            "api_key": SECRET,
                            "model": "m",
                            "openrouter": False,
                            "preflight": False,
                        }
                    }
                }
            }
        )
    )
    return path


def test_without_ray_address_nothing_imports_ray() -> None:
    code = (
        "import sys, nemo_gym.cli.run, nemo_gym.cli.collect_rollouts, nemo_gym.cli.serve, "
        "nemo_gym.collection.ray_sharding; from nemo_gym.servers.loading import load_server_class; "
        "sys.exit('ray' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], timeout=60).returncode == 0


# ------------------------------------------------------------------------------------------ a two-node cluster


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, str]]:
    """Two Ray nodes on 127.0.0.1 (no dashboard); the second has the custom resource `second_node`. Yields the
    cluster's address and the second node's id."""
    saved = {key: os.environ.get(key) for key in LOOPBACK_ENV}
    os.environ.update(LOOPBACK_ENV)
    from ray.cluster_utils import Cluster

    ray_cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 4, "include_dashboard": False, "node_ip_address": "127.0.0.1"}
    )
    try:
        second = ray_cluster.add_node(num_cpus=4, resources={"second_node": 4}, node_ip_address="127.0.0.1")
        ray_cluster.wait_for_nodes()
        yield ray_cluster.address, second.node_id
    finally:
        ray_cluster.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@pytest.fixture(scope="module")
def upstream() -> Iterator[str]:
    with serve_in_thread(FastUpstream(latency_s=0.1)) as url:
        yield url


@pytest.fixture(scope="module")
def placed(
    cluster: tuple[str, str], upstream: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[CommandProcess, str, Path]]:
    """ng_run on the two-node cluster: 2 model, 2 agent and 2 resources replicas, the latter on the second node."""
    workdir = tmp_path_factory.mktemp("ray")
    config = workdir / "replicas.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "policy_model": {
                    "responses_api_models": {
                        "openai_model": {
                            "entrypoint": "app.py",
                            "base_url": upstream + "/v1",
                            "api_key": SECRET,
                            "model": "stub/weather-model",
                            "openrouter": False,
                            "preflight": False,
                            "num_replicas": 2,
                            "ray": {"num_cpus": 0.5},
                        }
                    }
                },
                AGENT: {"responses_api_agents": {"simple_agent": {"num_replicas": 2, "ray": {"num_cpus": 0.5}}}},
                "simple_weather": {
                    "resources_servers": {
                        "simple_weather": {"num_replicas": 2, "ray": {"num_cpus": 0.5, "resources": {"second_node": 1}}}
                    }
                },
            }
        )
    )
    head = f"http://127.0.0.1:{free_port()}"
    run = CommandProcess(
        [
            "ng_run",
            f"+config_paths=[{SIMPLE_WEATHER}, {config}]",
            f"+ray_address={cluster[0]}",
            f"+head_server.port={head.rsplit(':', 1)[1]}",
        ],
        cwd=workdir,
        env=LOOPBACK_ENV,
    )
    try:
        assert run.wait_for("ng_run ready", 120), run.output
        yield run, head, workdir
        run.send(signal.SIGINT)
        assert run.wait(60) == 0, run.output[-3000:]
    finally:
        run.close()


def listing(head: str) -> dict[str, Any]:
    return httpx.get(head + "/instances", timeout=5).json()


def collect(workdir: Path, head: str, rows: int, output: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    path = write_rows(workdir / f"rows-{rows}.jsonl", rows)
    return collect_rollouts(
        AGENT,
        path,
        output,
        head_port=int(head.rsplit(":", 1)[1]),
        cwd=workdir,
        extra=extra,
        env=LOOPBACK_ENV,
        timeout_s=600,
    )


def records_of(output: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in output.read_text().splitlines()]


def test_replicas_are_placed_by_their_resources_and_listed_by_the_head_server(
    placed: tuple[CommandProcess, str, Path], cluster: tuple[str, str]
) -> None:
    run, head, _ = placed
    instances = listing(head)["instances"]
    assert listing(head)["ray"]["address"] == cluster[0]
    assert {name: len(entry["replicas"]) for name, entry in instances.items()} == {
        "policy_model": 2,
        AGENT: 2,
        "simple_weather": 2,
    }
    assert {r["node"] for r in instances["simple_weather"]["replicas"]} == {cluster[1]}  # where `second_node` is
    urls = [r["url"] for entry in instances.values() for r in entry["replicas"]]
    assert len(set(urls)) == 6 and all(u.startswith("http://127.0.0.1:") for u in urls)
    for entry in instances.values():
        for replica in entry["replicas"]:
            assert httpx.get(replica["url"] + "/health", timeout=5).json()["pid"] == replica["pid"]
    assert {f"simple_weather[{k}]" for k in (1, 2)} <= {line.split()[0] for line in run.lines if line.strip()}
    pids = {r["pid"] for entry in instances.values() for r in entry["replicas"]} | ray_processes()
    assert not non_loopback_listeners(pids), non_loopback_listeners(pids)


def test_calls_spread_over_replicas_and_each_rollout_stays_on_its_sessions_replica(
    placed: tuple[CommandProcess, str, Path],
) -> None:
    _, head, workdir = placed
    weather = [r["url"] for r in listing(head)["instances"]["simple_weather"]["replicas"]]
    opened_before = [httpx.get(u + "/health", timeout=5).json()["sessions_opened"] for u in weather]
    output = workdir / "spread.jsonl"
    result = collect(workdir, head, 80, output, "+num_samples_in_parallel=16")
    assert result.returncode == 0, result.stderr[-3000:]
    records = records_of(output)
    assert len(records) == 80 and all(r["error"] is None for r in records)
    assert not any("nknown or expired session" in json.dumps(r["response"]) for r in records)
    opened = [
        httpx.get(u + "/health", timeout=5).json()["sessions_opened"] - before
        for u, before in zip(weather, opened_before, strict=True)
    ]
    assert sum(opened) == 80 and min(opened) >= 20, opened


def test_a_killed_replica_is_replaced_mid_run_and_no_rollout_is_lost(placed: tuple[CommandProcess, str, Path]) -> None:
    run, head, workdir = placed
    before = listing(head)["instances"]
    victims = {AGENT: before[AGENT]["replicas"][0], "simple_weather": before["simple_weather"]["replicas"][0]}
    rows, output = write_rows(workdir / "kill-rows.jsonl", 500), workdir / "killed.jsonl"
    collector = subprocess.Popen(
        [
            "ng_collect_rollouts",
            f"+agent_name={AGENT}",
            f"+input_jsonl_fpath={rows}",
            f"+output_jsonl_fpath={output}",
            "+num_samples_in_parallel=32",
            f"+head_server.port={head.rsplit(':', 1)[1]}",
        ],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while (not output.exists() or len(output.read_text().splitlines()) < 100) and time.monotonic() < deadline:
        time.sleep(0.05)
    for victim in victims.values():
        os.kill(victim["pid"], signal.SIGKILL)
    stdout, stderr = collector.communicate(timeout=300)
    assert collector.returncode == 0, stderr[-3000:]
    records = records_of(output)
    assert len(records) == 500 and len({(r["row_hash"], r["repeat_index"]) for r in records}) == 500
    assert all(r["error"] is None for r in records), [r["error"] for r in records if r["error"]][:3]
    this_run = json.loads(output.with_name("killed.metrics.json").read_text())["this_run"]
    assert this_run["rollouts_restarted"] + this_run["rollouts_rerun_after_outage"] >= 1, "some had to run again"

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        now = listing(head)["instances"]
        replaced = {
            name: next((r for r in now[name]["replicas"] if r["replica"] == victim["replica"]), None)
            for name, victim in victims.items()
        }
        if all(r is not None and r["pid"] != victims[name]["pid"] for name, r in replaced.items()):
            break
        time.sleep(0.2)
    assert all(r is not None and r["pid"] != victims[name]["pid"] for name, r in replaced.items()), replaced
    for name, victim in victims.items():  # logged before the listing changed; our reader may still be behind
        assert run.wait_for(f"{name}[{victim['replica']}] is serving again at", 10), run.output[-3000:]


def test_a_collection_sharded_over_collector_actors_writes_each_rollout_once_and_resumes(
    placed: tuple[CommandProcess, str, Path],
) -> None:
    _, head, workdir = placed
    output = workdir / "sharded.jsonl"
    first = collect(
        workdir,
        head,
        150,
        output,
        "+ray_address=local",
        "+num_collectors=3",
        "+num_repeats=2",
        "+num_samples_in_parallel=48",
        "+limit=100",
        "+collector_num_cpus=0.5",
    )
    assert first.returncode == 0, first.stderr[-3000:]
    records = records_of(output)
    assert len(records) == 200 and len({(r["row_hash"], r["repeat_index"]) for r in records}) == 200
    assert {(r["row_index"], r["repeat_index"]) for r in records} == {(i, k) for i in range(100) for k in range(2)}
    assert all(r["error"] is None for r in records), [r["error"] for r in records if r["error"]][:3]

    again = collect(
        workdir,
        head,
        150,
        output,
        "+ray_address=local",
        "+num_collectors=3",
        "+num_repeats=2",
        "+num_samples_in_parallel=48",
        "+collector_num_cpus=0.5",
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert "200 rollouts already done" in again.stdout + again.stderr
    records = records_of(output)
    assert len(records) == 300 and len({(r["row_hash"], r["repeat_index"]) for r in records}) == 300
    assert {(r["row_index"], r["repeat_index"]) for r in records} == {(i, k) for i in range(150) for k in range(2)}
    metrics = json.loads(output.with_name("sharded.metrics.json").read_text())
    assert metrics["this_run"]["rollouts"] == 100 and metrics["this_run"]["skipped_already_done"] == 200
    assert metrics["rollouts"] == 300 and metrics["complete"] is True


def test_num_workers_on_ray_is_refused_with_what_to_use_instead(tmp_path: Path) -> None:
    config = model_block(tmp_path)
    result = subprocess.run(
        [
            "ng_run",
            f"+config_paths=[{SIMPLE_WEATHER}, {config}]",
            "+ray_address=local",
            "+policy_model.responses_api_models.openai_model.num_workers=2",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert "num_workers" in result.stderr and "num_replicas" in result.stderr and "Traceback" not in result.stderr


def test_ctrl_c_stops_a_sharded_collection_and_the_same_command_resumes_it(
    placed: tuple[CommandProcess, str, Path],
) -> None:
    _, head, workdir = placed
    rows, output = write_rows(workdir / "interrupt-rows.jsonl", 600), workdir / "interrupted.jsonl"
    argv = [
        "ng_collect_rollouts",
        f"+agent_name={AGENT}",
        f"+input_jsonl_fpath={rows}",
        f"+output_jsonl_fpath={output}",
        "+ray_address=local",
        "+num_collectors=2",
        "+collector_num_cpus=0.5",
        "+num_samples_in_parallel=16",
        f"+head_server.port={head.rsplit(':', 1)[1]}",
    ]
    run = CommandProcess(argv, cwd=workdir, env=LOOPBACK_ENV)
    try:
        deadline = time.monotonic() + 120
        while (not output.exists() or len(output.read_text().splitlines()) < 60) and time.monotonic() < deadline:
            time.sleep(0.05)
        run.send(signal.SIGINT)
        assert run.wait(60) == 130, run.output[-3000:]
    finally:
        run.close()
    assert "Resume with" in run.output
    first = records_of(output)
    assert 60 <= len(first) < 600 and len({(r["row_hash"], r["repeat_index"]) for r in first}) == len(first)

    resumed = subprocess.run(
        argv,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
        env={**os.environ, **LOOPBACK_ENV},
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    records = records_of(output)
    assert len(records) == 600 and len({(r["row_hash"], r["repeat_index"]) for r in records}) == 600
    assert all(r["error"] is None for r in records)
