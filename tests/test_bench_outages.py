"""bench/outages.py at a small size: for every fault it kills mid-run (the upstream, the model server, ng_run), the
collector records no junk failure, stops with exit 3 and the resume command, and the same command then completes the
run exactly; an upstream that comes back within seconds costs no stop and no failure. Starts real processes (the
emulator, ng_run, the collector) for about a minute and a half."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest

from nemo_gym.config.paths import project_root

pytestmark = pytest.mark.slow

ROWS = 40


def load_bench() -> ModuleType:
    path = project_root() / "bench" / "outages.py"
    spec = importlib.util.spec_from_file_location("bench_outages", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses and annotations look the module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    return load_bench().main([f"rows={ROWS}", "parallel=8", "outage_timeout_s=5"])


def by_name(figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["scenario"]: row for row in figures["scenarios"]}


def test_every_scenario_ran_and_left_nothing_running(figures: dict[str, Any]) -> None:
    scenarios = by_name(figures)
    assert set(scenarios) == {"upstream", "model_server", "ng_run", "upstream_blip"}
    for name, row in scenarios.items():
        assert "error" not in row, f"{name}: {row['error']}"
        assert row["left_running_after_cleanup"] == 0, f"{name}: processes outlived the scenario"


@pytest.mark.parametrize("name", ["upstream", "model_server", "ng_run"])
def test_a_kill_stops_the_run_without_junk_and_the_same_command_completes_it(
    figures: dict[str, Any], name: str
) -> None:
    row = by_name(figures)[name]
    assert "error" not in row, row.get("error")
    assert row["junk_failure_records"] == 0, row
    assert row["exit_code"] == 3, row.get("collector_output_tail")
    assert row["resume_command_in_message"] and row["outage_reported"], row.get("stop_message")
    assert 0 < row["rows_recorded_at_stop"] < ROWS
    assert row["metrics_at_stop"]["failed"] == 0 and row["metrics_at_stop"]["complete"] is False
    assert row["resumed_exit_code"] == 0, row.get("resumed_output_tail")
    check = row["resumed_check"]
    assert check["records"] == check["distinct"] == ROWS and check["errors"] == 0 and check["duplicates"] == 0
    assert row["resumed_complete_exactly"] is True
    if name != "upstream":
        assert row["servers_left_running"] == 0, "ng_run's servers outlived it"


def test_an_upstream_blip_completes_the_run_in_one_go(figures: dict[str, Any]) -> None:
    row = by_name(figures)["upstream_blip"]
    assert "error" not in row, row.get("error")
    assert row["exit_code"] == 0, row.get("collector_output_tail")
    assert row["junk_failure_records"] == 0 and row["complete_exactly"] is True, row["check"]
    assert row["run"]["outages"] == 1 and row["run"]["outage_wait_s"] > 0
