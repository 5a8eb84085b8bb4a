"""Throughput of the whole pipeline against a stub upstream: what the framework's own hops cost.

    python bench/throughput.py [+rows=2000] [+concurrency=[16,64,256]] [+latency_ms=500] [+latency_in_flight=1000]
                               [+latency_rows=10000] [+output=bench/results/throughput.json] [+quick=true]
                               [+num_workers=N]   (worker processes of the agent and the model server)
                               [+agent_replicas=N] [+ray_address=local]   (replicas of the agent; on Ray)

Measures, in one run on this machine: the stub upstream's own ceiling (requests/s it serves alone, driven by a
bare keep-alive client), `ng_run` time to ready, full-pipeline rollouts/s through `ng_run` + `ng_collect_rollouts`
on simple_weather at each concurrency with zero upstream latency (with CPU per rollout summed over every process,
and the upstream request rate as a share of the stub's ceiling), throughput with `latency_ms` of upstream latency at
`latency_in_flight` rollouts in flight against the ideal (in flight / (model calls per rollout x latency)), and the
peak RSS of the servers and the collector. Prints one table and writes the figures as JSON.
"""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from nemo_gym.config.overrides import parse_overrides
from nemo_gym.config.paths import project_root
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port, spawn
from nemo_gym.testing.emulated import write_rows

ENVIRONMENT_CONFIG = "resources_servers/simple_weather/configs/simple_weather.yaml"
AGENT = "simple_weather_simple_agent"
DEFAULTS: dict[str, Any] = {
    "rows": 2000,
    "concurrency": [16, 64, 256],
    "latency_ms": 500,
    "latency_in_flight": 1000,
    "latency_rows": 10000,
    "output": "bench/results/throughput.json",
    "quick": False,
    "num_workers": 1,
    "agent_replicas": 1,
    "ray_address": None,
}


# ------------------------------------------------------------------------------------------------ processes


@dataclass
class Usage:
    """CPU seconds and peak RSS of a set of process trees, sampled while they run."""

    cpu_s: dict[int, float] = field(default_factory=dict)
    names: dict[int, str] = field(default_factory=dict)
    peak_rss_mb: dict[int, float] = field(default_factory=dict)
    peak_total_rss_mb: float = 0.0


class ProcessWatch:
    """Samples every process of the given trees every 100 ms: CPU time (kept after a process ends) and RSS."""

    def __init__(self, roots: list[int]) -> None:
        self.roots = roots
        self.usage = Usage()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Usage:
        self._thread.start()
        return self.usage

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            self._sample()

    def _sample(self) -> None:
        total = 0.0
        for process in self._processes():
            try:
                with process.oneshot():
                    cpu = process.cpu_times()
                    rss = process.memory_info().rss / 2**20
                    name = _label(process)
            except psutil.Error:
                continue
            self.usage.cpu_s[process.pid] = cpu.user + cpu.system
            self.usage.names[process.pid] = name
            self.usage.peak_rss_mb[process.pid] = max(self.usage.peak_rss_mb.get(process.pid, 0.0), rss)
            total += rss
        self.usage.peak_total_rss_mb = max(self.usage.peak_total_rss_mb, total)

    def _processes(self) -> list[psutil.Process]:
        found = []
        for pid in self.roots:
            try:
                root = psutil.Process(pid)
                found += [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
        return found


def _label(process: psutil.Process) -> str:
    argv = process.cmdline()
    if "nemo_gym.cli.serve" in argv:
        return argv[-1]
    if "-m" in argv[:-1]:
        return argv[argv.index("-m") + 1].rsplit(".", 1)[-1]
    return Path(argv[1]).name if len(argv) > 1 else process.name()


def cpu_between(before: Usage, after: Usage) -> dict[str, float]:
    """CPU seconds spent per process label between two snapshots."""
    spent: dict[str, float] = {}
    for pid, cpu in after.cpu_s.items():
        label = after.names.get(pid, str(pid))
        spent[label] = spent.get(label, 0.0) + cpu - before.cpu_s.get(pid, 0.0)
    return spent


def snapshot(roots: list[int]) -> Usage:
    watch = ProcessWatch(roots)
    watch._sample()
    return watch.usage


# ------------------------------------------------------------------------------------------------ the stub


def start_stub(latency_ms: float) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = spawn(
        [sys.executable, "-m", "nemo_gym.testing.fast_upstream", "--port", str(port), "--latency-ms", str(latency_ms)],
        capture=False,
    )  # dies with the benchmark, whatever happens
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            asyncio.run(_request(port, b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n"))
            return process, url
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError("the stub upstream did not start")


async def _request(port: int, raw: bytes) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(raw)
    await _read_response(reader)
    writer.close()


async def _read_response(reader: asyncio.StreamReader) -> bytes:
    head = await reader.readuntil(b"\r\n\r\n")
    length = next(
        int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:")
    )
    return await reader.readexactly(length)


def stub_ceiling(url: str, *, connections: int = 64, seconds: float = 5.0) -> float:
    """Requests/s the stub serves to a bare keep-alive client (a first model call of a weather question)."""
    port = int(url.rsplit(":", 1)[1])
    body = json.dumps(
        {
            "model": "stub/weather-model",
            "messages": [{"role": "user", "content": "What's the weather like in Paris today?"}],
            "tools": [
                {
                    "type": "function",
                    "function": {
                        "name": "get_weather",
                        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
                    },
                }
            ],
        }
    ).encode()
    request = (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
    )

    async def drive() -> int:
        deadline = time.perf_counter() + seconds
        done = 0

        async def connection() -> None:
            nonlocal done
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            while time.perf_counter() < deadline:
                writer.write(request)
                await _read_response(reader)
                done += 1
            writer.close()

        await asyncio.gather(*(connection() for _ in range(connections)))
        return done

    started = time.perf_counter()
    done = asyncio.run(drive())
    return done / (time.perf_counter() - started)


# ------------------------------------------------------------------------------------------------ the pipeline


def write_config(directory: Path, stub_url: str, settings: dict[str, Any]) -> Path:
    num_workers, replicas = settings["num_workers"], settings["agent_replicas"]
    path = directory / "bench_model.yaml"
    path.write_text(
        "policy_model:\n  responses_api_models:\n    openai_model:\n      entrypoint: app.py\n"
        f"      base_url: {stub_url}/v1\n      api_key: sk-bench-not-a-secret\n      model: stub/weather-model\n"
        "      api: chat_completions\n      openrouter: false\n      preflight: false\n"
        f"      max_concurrent_requests: 4096\n      num_workers: {num_workers}\n"
        f"simple_weather_simple_agent:\n  responses_api_agents:\n    simple_agent:\n      num_workers: {num_workers}\n"
        f"      num_replicas: {replicas}\n"
    )
    return path


def start_cluster(config: Path, ray_address: str | None = None) -> tuple[CommandProcess, int, float]:
    head_port = free_port()
    started = time.perf_counter()
    on_ray = [f"+ray_address={ray_address}"] if ray_address else []
    run = CommandProcess(
        ["ng_run", f"+config_paths=[{ENVIRONMENT_CONFIG}, {config}]", f"+head_server.port={head_port}", *on_ray],
        cwd=project_root(),
    )
    if not run.wait_for("ng_run ready", 120):
        run.send(signal.SIGINT)
        raise RuntimeError("ng_run did not become ready:\n" + run.output[-3000:])
    return run, head_port, time.perf_counter() - started


def stop_cluster(cluster: CommandProcess) -> None:
    cluster.send(signal.SIGINT)
    try:
        cluster.wait(30)
    finally:
        cluster.close()


def collect(head_port: int, rows: Path, output: Path, parallel: int, roots: list[int]) -> dict[str, Any]:
    """One ng_collect_rollouts run; its metrics plus CPU seconds per process and peak RSS while it ran."""
    argv = [
        "ng_collect_rollouts",
        f"+agent_name={AGENT}",
        f"+input_jsonl_fpath={rows}",
        f"+output_jsonl_fpath={output}",
        f"+num_samples_in_parallel={parallel}",
        "+overwrite=true",
        f"+head_server.port={head_port}",
    ]
    before = snapshot(roots)
    process = subprocess.Popen(
        argv, cwd=project_root(), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    with ProcessWatch([*roots, process.pid]) as usage, LineCounter(output) as progress:
        _, stderr = process.communicate()
    if process.returncode != 0:
        raise RuntimeError(f"ng_collect_rollouts failed ({process.returncode}):\n{stderr.decode()[-3000:]}")
    metrics = json.loads(output.with_name(output.stem + ".metrics.json").read_text())
    spent = cpu_between(before, usage)
    wall = metrics["this_run"]["wall_time_s"] or 1.0
    return {
        "metrics": metrics,
        "cpu_s": spent,
        "usage": usage,
        "steady_rollouts_per_s": progress.steady_rate(),
        "cores_busy_by_process": {k: round(v / wall, 2) for k, v in sorted(spent.items())},
    }


class LineCounter:
    """Samples how many records the output holds every 100 ms, for the steady-state rate between 25% and 75% of
    the run (the whole-run rate also counts the ramp-up of the first wave and the tail of the last)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> LineCounter:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            try:
                with self.path.open("rb") as handle:
                    count = sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b""))
            except OSError:
                continue
            self.samples.append((time.perf_counter(), count))

    def steady_rate(self) -> float | None:
        if not self.samples:
            return None
        final = self.samples[-1][1]
        window = [(t, n) for t, n in self.samples if 0.25 * final <= n <= 0.75 * final]
        if len(window) < 2 or window[-1][0] == window[0][0]:
            return None
        return round((window[-1][1] - window[0][1]) / (window[-1][0] - window[0][0]), 1)


def pipeline_row(result: dict[str, Any], parallel: int, ceiling: float, stub_pids: set[int]) -> dict[str, Any]:
    metrics, usage = result["metrics"], result["usage"]
    rollouts = metrics["rollouts"]
    framework_cpu = sum(v for k, v in result["cpu_s"].items() if k != "fast_upstream")
    calls = metrics["model_calls"] / rollouts
    return {
        "in_flight": parallel,
        "rollouts": rollouts,
        "failed": metrics["failed"],
        "rollouts_per_s": metrics["this_run"]["rollouts_per_s"],
        "model_calls_per_rollout": round(calls, 3),
        "upstream_requests_per_s": round(metrics["this_run"]["rollouts_per_s"] * calls, 1),
        "share_of_stub_ceiling": round(metrics["this_run"]["rollouts_per_s"] * calls / ceiling, 3),
        "cpu_ms_per_rollout": round(1000 * framework_cpu / rollouts, 2),
        "cpu_ms_per_rollout_by_process": {k: round(1000 * v / rollouts, 2) for k, v in sorted(result["cpu_s"].items())},
        "peak_rss_mb_by_process": _rss_by_label(usage),
        "cores_busy_by_process": result["cores_busy_by_process"],
    }


def _rss_by_label(usage: Usage) -> dict[str, float]:
    peaks: dict[str, float] = {}
    for pid, rss in usage.peak_rss_mb.items():  # an instance's workers share a label: their peaks add up
        label = usage.names.get(pid, str(pid))
        peaks[label] = round(peaks.get(label, 0.0) + rss, 1)
    return peaks


def run(settings: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "machine": {"cpus": psutil.cpu_count(), "python": sys.version.split()[0]},
        "settings": settings,
    }
    with tempfile.TemporaryDirectory() as scratch:
        directory = Path(scratch)
        stub, stub_url = start_stub(0)
        try:
            ceiling = stub_ceiling(stub_url, seconds=3 if settings["quick"] else 6)
            figures["stub_ceiling_requests_per_s"] = round(ceiling, 1)
            print(f"stub ceiling: {ceiling:.0f} requests/s", flush=True)
            cluster, head_port, ready_s = start_cluster(
                write_config(directory, stub_url, settings), settings["ray_address"]
            )
            figures["ng_run_ready_s"] = round(ready_s, 2)
            print(f"ng_run ready in {ready_s:.2f} s", flush=True)
            try:
                roots = [cluster.process.pid, stub.pid]
                rows = write_rows(directory / "rows.jsonl", settings["rows"])
                figures["zero_latency"] = []
                for parallel in settings["concurrency"]:
                    result = collect(head_port, rows, directory / "out.jsonl", parallel, roots)
                    row = pipeline_row(result, parallel, ceiling, {stub.pid})
                    figures["zero_latency"].append(row)
                    print(
                        f"  {parallel:>5} in flight: {row['rollouts_per_s']:.1f} rollouts/s, "
                        f"{row['cpu_ms_per_rollout']:.2f} ms CPU/rollout",
                        flush=True,
                    )
                figures["peak_rss_mb"] = _servers_rss(figures["zero_latency"])
            finally:
                stop_cluster(cluster)
        finally:
            stub.send_signal(signal.SIGINT)
            stub.wait(10)
        figures["latency"] = latency_run(directory, settings)
    return figures


def _servers_rss(rows: list[dict[str, Any]]) -> dict[str, float]:
    peaks: dict[str, float] = {}
    for row in rows:
        for label, rss in row["peak_rss_mb_by_process"].items():
            peaks[label] = max(peaks.get(label, 0.0), rss)
    servers = sum(v for k, v in peaks.items() if k != "fast_upstream" and not k.startswith("ng_collect"))
    collector = max((v for k, v in peaks.items() if k.startswith("ng_collect")), default=0.0)
    return {"head_and_servers_total": round(servers, 1), "collector": collector, "by_process": peaks}


def latency_run(directory: Path, settings: dict[str, Any]) -> dict[str, Any]:
    """`latency_in_flight` rollouts in flight against an upstream answering after `latency_ms`."""
    stub, stub_url = start_stub(settings["latency_ms"])
    try:
        cluster, head_port, _ = start_cluster(write_config(directory, stub_url, settings), settings["ray_address"])
        try:
            rows = write_rows(directory / "latency_rows.jsonl", settings["latency_rows"])
            result = collect(
                head_port,
                rows,
                directory / "latency_out.jsonl",
                settings["latency_in_flight"],
                [cluster.process.pid, stub.pid],
            )
        finally:
            stop_cluster(cluster)
    finally:
        stub.send_signal(signal.SIGINT)
        stub.wait(10)
    metrics = result["metrics"]
    calls = metrics["model_calls"] / metrics["rollouts"]
    ideal = settings["latency_in_flight"] / (calls * settings["latency_ms"] / 1000)
    steady = result["steady_rollouts_per_s"] or metrics["this_run"]["rollouts_per_s"]
    figures = {
        "latency_ms": settings["latency_ms"],
        "in_flight": settings["latency_in_flight"],
        "rollouts": metrics["rollouts"],
        "failed": metrics["failed"],
        "model_calls_per_rollout": round(calls, 3),
        "rollouts_per_s_whole_run": metrics["this_run"]["rollouts_per_s"],
        "rollouts_per_s": steady,
        "ideal_rollouts_per_s": round(ideal, 1),
        "share_of_ideal": round(steady / ideal, 3),
        "cpu_ms_per_rollout": round(
            1000 * sum(v for k, v in result["cpu_s"].items() if k != "fast_upstream") / metrics["rollouts"], 2
        ),
        "cores_busy_by_process": result["cores_busy_by_process"],
    }
    print(
        f"  {settings['latency_ms']} ms upstream, {settings['latency_in_flight']} in flight: {steady:.1f} "
        f"rollouts/s steady ({metrics['this_run']['rollouts_per_s']:.1f} over the whole run) of {ideal:.0f} ideal "
        f"({figures['share_of_ideal']:.0%})",
        flush=True,
    )
    return figures


def table(figures: dict[str, Any]) -> str:
    lines = [("measure", "value")]
    lines.append(("stub upstream ceiling", f"{figures['stub_ceiling_requests_per_s']:.0f} requests/s"))
    lines.append(("ng_run time to ready", f"{figures['ng_run_ready_s']:.2f} s"))
    for row in figures["zero_latency"]:
        lines.append(
            (
                f"rollouts/s, {row['in_flight']} in flight, 0 ms upstream",
                f"{row['rollouts_per_s']:.1f} ({row['cpu_ms_per_rollout']:.2f} ms CPU/rollout, "
                f"{row['share_of_stub_ceiling']:.0%} of the stub's ceiling, {row['failed']} failed)",
            )
        )
    latency = figures["latency"]
    lines.append(
        (
            f"rollouts/s, {latency['in_flight']} in flight, {latency['latency_ms']} ms upstream",
            f"{latency['rollouts_per_s']:.1f} steady of {latency['ideal_rollouts_per_s']:.0f} ideal "
            f"({latency['share_of_ideal']:.0%}; {latency['rollouts_per_s_whole_run']:.1f} over the whole run "
            f"with its ramp-up; {latency['failed']} failed)",
        )
    )
    rss = figures["peak_rss_mb"]
    lines.append(("peak RSS, head + 3 servers", f"{rss['head_and_servers_total']:.0f} MB"))
    lines.append(("peak RSS, collector", f"{rss['collector']:.0f} MB"))
    width = max(len(a) for a, _ in lines)
    return "\n".join(f"{a.ljust(width)}  {b}" for a, b in lines)


def main() -> None:
    settings = {**DEFAULTS, **parse_overrides(sys.argv[1:])}
    unknown = set(settings) - set(DEFAULTS)
    if unknown:
        sys.exit(f"unknown settings: {', '.join(sorted(unknown))}; known: {', '.join(DEFAULTS)}")
    if settings["quick"]:
        settings = {**settings, "rows": 300, "concurrency": [16], "latency_rows": 400, "latency_in_flight": 200}
    figures = run(settings)
    output = project_root() / settings["output"]
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(figures, indent=2) + "\n")
    print(table(figures))
    print(f"figures written to {output}")


if __name__ == "__main__":
    main()
