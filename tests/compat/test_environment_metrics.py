"""After a collection, a NeMo Gym environment's own `/aggregate_metrics` runs over the output's records: its key and
agent metrics go into the metrics file, its per-task metrics beside it; our own environments have none."""

from __future__ import annotations

import json
from pathlib import Path

from nemo_gym.collection.run import format_summary
from nemo_gym.config.paths import project_root
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.testing.cluster import environment_blocks
from nemo_gym.testing.emulated import EMULATOR_KEY, collect_rows, emulated_cluster


def test_a_nemo_gym_environments_aggregate_metrics_land_in_the_metrics_file(tmp_path: Path) -> None:
    data = project_root() / "resources_servers/meeting_scheduler/data/example.jsonl"
    output = tmp_path / "rollouts.jsonl"
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY]))
    with emulated_cluster(emulator, environment=environment_blocks("meeting_scheduler")) as config:
        summary = collect_rows(config, data, output, agent_name="meeting_scheduler_simple_agent", num_repeats=2)

    found = summary["environment_metrics"]["meeting_scheduler_simple_agent"]
    assert found["resources_server"] == "meeting_scheduler"
    records = [json.loads(line) for line in output.read_text().splitlines()]
    mean_reward = sum(r["reward"] for r in records) / len(records)
    assert abs(found["agent_metrics"]["mean/reward"] - mean_reward) < 1e-9
    assert set(found["key_metrics"]) == {"mean/reward", "mean/correctness", "mean/schema_valid", "mean/efficiency"}
    printed = format_summary(summary)  # what ng_collect_rollouts prints: the key metrics, the rest is in the file
    assert "mean/correctness" in printed and "median/reward" not in printed
    on_disk = json.loads((tmp_path / "rollouts.metrics.json").read_text())
    assert on_disk["environment_metrics"] == json.loads(json.dumps(summary["environment_metrics"]))

    (per_task,) = json.loads((tmp_path / "rollouts.aggregate_metrics.json").read_text())
    assert per_task["agent_ref"] == {"name": "meeting_scheduler_simple_agent"}
    rows = len(data.read_text().splitlines())
    assert [g["_ng_task_index"] for g in per_task["group_level_metrics"]] == list(range(rows))


def test_our_own_environments_have_no_environment_metrics(tmp_path: Path) -> None:
    data = project_root() / "resources_servers/simple_weather/data/example.jsonl"
    output = tmp_path / "rollouts.jsonl"
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY]))
    with emulated_cluster(emulator) as config:
        summary = collect_rows(config, data, output, limit=3)
    assert "environment_metrics" not in summary
    assert not (tmp_path / "rollouts.aggregate_metrics.json").exists()
