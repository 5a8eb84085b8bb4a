"""The OpenRouter emulator wired to a whole cluster in one process, and a collection run with injected faults.

Used by the reliability tests (does every row complete?), by `bench/fault_run.py` (how many retries, how long) and by
the environments' end-to-end tests (`collect_environment_on_emulator`), where the emulator also plays an LLM judge.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from nemo_gym.collection.run import collect, settings_from
from nemo_gym.config.paths import find_server_dir, project_root
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
JUDGE_INSTANCE = "judge_model"
"""The model server instance an LLM-judge environment names in `judge_model_server` (as `ng_demo` provides it)."""
JUDGE_MODEL = "openai/gpt-4o-mini"
"""The emulated model that plays the judge unless told otherwise (ng_demo's)."""
JUDGE_REPLIES = "judge_replies.jsonl"
"""An environment's scripted verdicts: `resources_servers/<env>/data/judge_replies.jsonl`."""
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
    emulator: OpenRouterEmulator,
    *,
    environment: Mapping[str, Any] | None = None,
    judge_model: str | None = None,
    **model_config: Any,
) -> Iterator[GlobalConfig]:
    """The emulator, openai_model pointed at it, an environment (default simple_weather: its resources server and
    agent blocks, e.g. `environment_blocks("math_verify")`) and a head server, all on loopback. With `judge_model`
    (an emulated model id), a second openai_model instance named `judge_model` on the same emulator plays the judge."""
    with serve_in_thread(emulator.app(), keep_alive_s=EMULATOR_KEEP_ALIVE_S) as url:
        block = openai_model_block(
            url + "/api/v1", api_key=EMULATOR_KEY, **{"model": "openai/gpt-4o-mini", **model_config}
        )
        blocks = dict(environment) if environment is not None else simple_weather_blocks()
        if judge_model is not None:
            blocks[JUDGE_INSTANCE] = openai_model_block(url + "/api/v1", api_key=EMULATOR_KEY, model=judge_model)
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


def references_instance(config: Any, instance: str) -> bool:
    """True when some mapping in the (nested) config is `{type: responses_api_models, name: <instance>, ...}`, as a
    resources server's `judge_model_server` is."""
    if isinstance(config, Mapping):
        if config.get("type") == "responses_api_models" and config.get("name") == instance:
            return True
        return any(references_instance(value, instance) for value in config.values())
    if isinstance(config, list):
        return any(references_instance(item, instance) for item in config)
    return False


def judge_replies_of(environment: str) -> Path | None:
    """The environment's scripted verdicts (`data/judge_replies.jsonl`), if it has them."""
    path = find_server_dir("resources_servers", environment) / "data" / JUDGE_REPLIES
    return path if path.is_file() else None


def collect_environment_on_emulator(
    environment: str,
    model: str,
    data: Path,
    output: Path,
    *,
    judge_model: str = JUDGE_MODEL,
    judge_replies: Path | None = None,
    policy_replies: Sequence[Path] = (),
    **settings: Any,
) -> list[JSONObject]:
    """One collection of `environment`'s agent over `data` with the emulator playing `model`, which knows the
    answers in `data` (`answer_keys`) and gets them right as often as its quality says; the records.

    An environment whose config names the `judge_model` instance gets one: openai_model on the same emulator,
    serving `judge_model`, with the environment's `data/judge_replies.jsonl` (or `judge_replies`) as scripted
    verdicts. `policy_replies`: more scripted-reply files, tried after the verdicts (e.g. fixed policy answers).
    `settings`: collection settings (`num_repeats`, `limit`, ...) over the defaults."""
    blocks = environment_blocks(environment)
    judged = references_instance(blocks, JUDGE_INSTANCE)
    if judge_replies is not None and not judged:
        raise ValueError(
            f"judge_replies={judge_replies} given, but {environment}'s config does not name the {JUDGE_INSTANCE!r} "
            "instance (judge_model_server: {type: responses_api_models, name: judge_model}); drop judge_replies"
        )
    verdicts = (judge_replies or judge_replies_of(environment)) if judged else None
    replies = [*([verdicts] if verdicts is not None else []), *policy_replies]
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], answer_keys=[data], scripted_replies=replies))
    with emulated_cluster(
        emulator, environment=blocks, model=model, judge_model=judge_model if judged else None
    ) as config:
        collect_rows(config, data, output, **{"agent_name": f"{environment}_simple_agent", **settings})
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
