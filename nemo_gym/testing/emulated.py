"""The OpenRouter emulator wired to a whole cluster in one process, and a collection run with injected faults.

Used by the reliability tests (does every row complete?) and by `bench/fault_run.py` (how many retries, how long).
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nemo_gym.collection.run import collect, settings_from
from nemo_gym.config.paths import project_root
from nemo_gym.config.types import GlobalConfig
from nemo_gym.emulator import EmulatorConfig, FaultRates, OpenRouterEmulator
from nemo_gym.protocol.types import CollectionSummary, JSONObject
from nemo_gym.servers.head import build_head_app
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.cluster import environment_blocks, openai_model_block, serve_config, simple_weather_blocks

EMULATOR_KEEP_ALIVE_S = 75
EMULATOR_KEY = "sk-or-v1-emulator-fault-run-0000"
EXAMPLES = project_root() / "resources_servers/simple_weather/data/example.jsonl"
# Shares of the injected fault rate, so every kind shows up.
FAULT_MIX = {
    "rate_limit": 0.2,
    "rate_limit_no_retry_after": 0.1,
    "server_error": 0.1,
    "bad_gateway": 0.1,
    "unavailable": 0.1,
    "timeout": 0.1,
    "hang": 0.05,
    "drop_connection": 0.1,
    "error_in_200": 0.1,
    "finish_reason_error": 0.05,
}
FAST_RETRY = {
    "max_attempts": 12,
    "max_elapsed_s": 60,
    "initial_backoff_s": 0.01,
    "max_backoff_s": 0.2,
    "retry_after_cap_s": 0.2,
}


def mixed_faults(rate: float, *, retry_after_s: float = 0.05, hang_s: float = 8.0) -> FaultRates:
    return FaultRates(
        **{kind: rate * share for kind, share in FAULT_MIX.items()}, retry_after_s=retry_after_s, hang_s=hang_s
    )


def write_rows(path: Path, count: int) -> Path:
    """`count` distinct rows cycled from simple_weather's examples."""
    examples = [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()]
    with path.open("w") as handle:
        for i in range(count):
            handle.write(json.dumps({**examples[i % len(examples)], "id": f"fault-run-{i:06d}"}) + "\n")
    return path


@contextmanager
def emulated_cluster(
    emulator: OpenRouterEmulator, *, environment: Mapping[str, Any] | None = None, **model_config: Any
) -> Iterator[GlobalConfig]:
    """The emulator, openai_model pointed at it, an environment (default simple_weather: its resources server and
    agent blocks, e.g. `environment_blocks("math_verify")`) and a head server, all on loopback."""
    with serve_in_thread(emulator.app(), keep_alive_s=EMULATOR_KEEP_ALIVE_S) as url:
        block = openai_model_block(
            url + "/api/v1", api_key=EMULATOR_KEY, **{"model": "openai/gpt-4o-mini", **model_config}
        )
        blocks = dict(environment) if environment is not None else simple_weather_blocks()
        with serve_config({"policy_model": block, **blocks}) as (config, _servers):
            head_port = free_port()
            with serve_in_thread(build_head_app(config), port=head_port):
                yield GlobalConfig(data={**config.data, "head_server": {"port": head_port}}, origins={})


def collect_rows(config: GlobalConfig, rows_path: Path, output: Path, **settings: Any) -> CollectionSummary:
    """Run ng_collect_rollouts' collection in-process; `agent_name` defaults to simple_weather's agent."""
    data = {
        **config.data,
        "agent_name": "simple_weather_simple_agent",
        "input_jsonl_fpath": str(rows_path),
        "output_jsonl_fpath": str(output),
        **settings,
    }
    cfg = GlobalConfig(data=data, origins={})
    return asyncio.run(collect(cfg, settings_from(cfg)))


def collect_environment_on_emulator(environment: str, model: str, data: Path, output: Path) -> list[JSONObject]:
    """One collection of `environment`'s agent over `data` with the emulator playing `model`, which knows the
    answers in `data` (`answer_keys`) and gets them right as often as its quality says; the records."""
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], answer_keys=[data]))
    with emulated_cluster(emulator, environment=environment_blocks(environment), model=model) as config:
        collect_rows(config, data, output, agent_name=f"{environment}_simple_agent")
    return [json.loads(line) for line in output.read_text().splitlines()]


def fault_run(
    rows: int, fault_rate: float, *, parallel: int = 64, seed: int = 0, workdir: Path | None = None
) -> JSONObject:
    """Collect `rows` rollouts with `fault_rate` of upstream attempts failing; returns figures for a report."""
    emulator = OpenRouterEmulator(
        EmulatorConfig(keys=[EMULATOR_KEY], seed=seed, default_faults=mixed_faults(fault_rate))
    )
    with tempfile.TemporaryDirectory() as scratch:
        base = workdir or Path(scratch)
        rows_path = write_rows(base / "rows.jsonl", rows)
        output = base / "rollouts.jsonl"
        started = time.perf_counter()
        with emulated_cluster(emulator, timeout_s=4.0, retry=FAST_RETRY) as config:
            summary = collect_rows(config, rows_path, output, num_samples_in_parallel=parallel)
        records = [json.loads(line) for line in output.read_text().splitlines()]
    return {
        "rows": rows,
        "fault_rate": fault_rate,
        "records": len(records),
        "unique_rows": len({(r["row_hash"], r["repeat_index"]) for r in records}),
        "failed": sum(r["error"] is not None for r in records),
        "upstream_requests": sum(1 for r in emulator.requests if r.path.endswith("/chat/completions")),
        "faults_injected": dict(emulator.faults_injected),
        "retries": summary["upstream_retries"],
        "mean_reward": summary["mean_reward"],
        "wall_time_s": round(time.perf_counter() - started, 2),
        "rollouts_per_s": summary["this_run"]["rollouts_per_s"],
    }
