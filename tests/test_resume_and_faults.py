"""Nothing lost, nothing duplicated, nothing mixed: resume after kill -9 and Ctrl-C, failures kept and retried on
request, changed settings refused, a dying server reported, and 2,000 rollouts in flight at once."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from nemo_gym.collection.resume import SettingsChanged
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.emulated import EMULATOR_KEY, FAST_RETRY, collect_rows, emulated_cluster, write_rows
from nemo_gym.testing.processes import collector_argv as collector_argv_of
from nemo_gym.testing.processes import wait_for_lines

AGENT = "simple_weather_simple_agent"


def records_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]  # every line must parse


def keys_of(path: Path) -> list[tuple[str, int]]:
    return [(r["row_hash"], r["repeat_index"]) for r in records_of(path)]


@pytest.fixture
def slow_cluster() -> Iterator[tuple[OpenRouterEmulator, int]]:
    """The emulator answering in ~80 ms, the servers, and a head server on a port a subprocess can use."""
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], latency_ms=80, seed=5))
    with emulated_cluster(emulator, retry=FAST_RETRY) as config:
        yield emulator, int(config.data["head_server"]["port"])


def collector_argv(rows: Path, output: Path, head_port: int, *extra: str) -> list[str]:
    return collector_argv_of(AGENT, rows, output, head_port, *extra)


def collector_under_way(slow_cluster: tuple, tmp_path: Path, *, lines: int) -> tuple[int, Path, Path, CommandProcess]:
    """ng_collect_rollouts over 60 rows as a subprocess, returned once `lines` records are written."""
    _emulator, head_port = slow_cluster
    rows, output = write_rows(tmp_path / "rows.jsonl", 60), tmp_path / "out.jsonl"
    process = CommandProcess(collector_argv(rows, output, head_port), cwd=tmp_path)
    wait_for_lines(output, lines)
    return head_port, rows, output, process


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_gives_exactly_n_unique_rows(slow_cluster: tuple, tmp_path: Path) -> None:
    head_port, rows, output, first = collector_under_way(slow_cluster, tmp_path, lines=10)
    first.send(signal.SIGKILL)
    first.wait(10)
    assert 10 <= len(keys_of(output)) < 60

    rerun = subprocess.run(
        collector_argv(rows, output, head_port), cwd=tmp_path, capture_output=True, text=True, timeout=180
    )
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "Resuming" in rerun.stdout
    keys = keys_of(output)
    assert len(keys) == len(set(keys)) == 60


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_says_how_to_resume(slow_cluster: tuple, tmp_path: Path) -> None:
    head_port, rows, output, run = collector_under_way(slow_cluster, tmp_path, lines=8)
    run.send(signal.SIGINT)
    assert run.wait(30) == 130
    assert "Interrupted" in run.output and "Resume with: ng_collect_rollouts" in run.output
    done = keys_of(output)
    assert len(done) == len(set(done)) < 60
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    assert metrics["interrupted"] is True and metrics["rollouts"] == len(done)

    resume = run.output.split("Resume with: ", 1)[1].splitlines()[0]
    finish = subprocess.run(["bash", "-c", resume], cwd=tmp_path, capture_output=True, text=True, timeout=180)
    assert finish.returncode == 0, finish.stderr[-2000:]
    keys = keys_of(output)
    assert len(keys) == len(set(keys)) == 60


def test_failed_rows_are_kept_skipped_on_rerun_and_retried_on_request(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], seed=2))
    emulator.inject("openai/gpt-4o-mini", ["finish_reason_error"] * 4)  # the provider breaks off: this row's failure
    rows, output = write_rows(tmp_path / "rows.jsonl", 6), tmp_path / "out.jsonl"
    with emulated_cluster(emulator, retry={**FAST_RETRY, "max_attempts": 2}) as config:
        first = collect_rows(config, rows, output, num_samples_in_parallel=1)
        assert first["failed"] == 2 and first["succeeded"] == 4
        failed = {key for key, record in zip(keys_of(output), records_of(output), strict=True) if record["error"]}
        assert len(failed) == 2
        again = collect_rows(config, rows, output)
        assert again["this_run"]["rollouts"] == 0 and again["this_run"]["skipped_already_done"] == 6
        assert (again["rollouts"], again["failed"]) == (6, 2), "the metrics describe the whole file"
        retried = collect_rows(config, rows, output, retry_failed=True)
    assert retried["this_run"]["rollouts"] == 2 and retried["this_run"]["failed"] == 0
    assert (retried["rollouts"], retried["failed"], retried["complete"]) == (6, 0, True)
    records = records_of(output)
    assert len(records) == 6 and all(r["error"] is None for r in records)
    keys = keys_of(output)
    assert len(set(keys)) == 6
    assert set(keys[4:]) == failed, "the retry ran exactly the failed rollouts, appended after the kept ones"
    set_aside_path = tmp_path / "out.jsonl.retried_failures.jsonl"
    set_aside = set_aside_path.read_text().splitlines()
    assert len(set_aside) == 2 and all(json.loads(line)["error"] for line in set_aside)
    assert set(keys_of(set_aside_path)) == failed


def test_changed_settings_are_reported_not_mixed(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY]))
    rows, output = write_rows(tmp_path / "rows.jsonl", 3), tmp_path / "out.jsonl"
    with emulated_cluster(emulator) as config:
        collect_rows(config, rows, output, responses_create_params={"temperature": 0.2})
        before = output.read_text()
        with pytest.raises(SettingsChanged, match=r"responses_create_params\.temperature: 0\.2 -> 0\.9"):
            collect_rows(
                config, write_rows(tmp_path / "more.jsonl", 5), output, responses_create_params={"temperature": 0.9}
            )
        assert output.read_text() == before, "a refused run must not touch the output"
        summary = collect_rows(config, rows, output, responses_create_params={"temperature": 0.9}, overwrite=True)
    assert summary["rollouts"] == 3
    with (
        emulated_cluster(emulator, model="openai/gpt-4-turbo") as config,
        pytest.raises(SettingsChanged, match=r"model_server\.model: 'openai/gpt-4o-mini' -> 'openai/gpt-4-turbo'"),
    ):
        collect_rows(config, rows, output, responses_create_params={"temperature": 0.9})


@pytest.mark.slow
def test_a_resources_server_killed_mid_run_stops_ng_run_and_the_collector_without_junk(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], latency_ms=50))
    with serve_in_thread(emulator.app()) as url:
        head_port = free_port()
        (tmp_path / "env.yaml").write_text(
            yaml.safe_dump(
                {
                    "policy_base_url": url + "/api/v1",
                    "policy_api_key": EMULATOR_KEY,
                    "policy_model_name": "openai/gpt-4o-mini",
                    "head_server": {"port": head_port},
                }
            )
        )
        ng_run_argv = [
            "ng_run",
            "+config_paths=[responses_api_models/openai_model/configs/openai_model.yaml,"
            " resources_servers/simple_weather/configs/simple_weather.yaml]",
        ]
        ng_run = CommandProcess(ng_run_argv, cwd=tmp_path)
        try:
            assert ng_run.wait_for("ng_run ready", 90), ng_run.output
            instances = httpx.get(f"http://127.0.0.1:{head_port}/instances", timeout=5).json()["instances"]
            rows, output = write_rows(tmp_path / "rows.jsonl", 40), tmp_path / "out.jsonl"
            command = collector_argv(rows, output, head_port, "+outage_timeout_s=3")
            collector = CommandProcess(command, cwd=tmp_path)
            wait_for_lines(output, 5)
            os.kill(int(instances["simple_weather"]["pid"]), signal.SIGKILL)
            assert ng_run.wait(30) == 1
            assert "server 'simple_weather'" in ng_run.output and "exited unexpectedly" in ng_run.output
            assert "log lines of 'simple_weather'" in ng_run.output
            assert collector.wait(60) == 3, collector.output  # ng_run stopped every server: stop, do not hang
            assert "re-run the same command to resume" in collector.output
            records = records_of(output)
            assert len(records) == len(set(keys_of(output))) < 40
            assert not [r["error"] for r in records if r["error"]], "a dead server is no sample"
        finally:
            ng_run.close()
        ng_run = CommandProcess(ng_run_argv, cwd=tmp_path)
        try:
            assert ng_run.wait_for("ng_run ready", 90), ng_run.output
            again = CommandProcess(command, cwd=tmp_path)
            assert again.wait(120) == 0, again.output
        finally:
            ng_run.close()
    keys = keys_of(output)
    assert len(keys) == len(set(keys)) == 40 and not [r for r in records_of(output) if r["error"]]


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


@pytest.mark.slow
def test_two_thousand_rollouts_in_flight_against_a_slow_upstream(tmp_path: Path) -> None:
    """Servers as ng_run runs them (one process each), the collector as a user runs it, 2,000 at once."""
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], latency_ms=300, latency_jitter_ms=200))
    with serve_in_thread(emulator.app()) as url:
        head_port = free_port()
        (tmp_path / "env.yaml").write_text(
            yaml.safe_dump(
                {
                    "policy_base_url": url + "/api/v1",
                    "policy_api_key": EMULATOR_KEY,
                    "policy_model_name": "openai/gpt-4o-mini",
                    "head_server": {"port": head_port},
                }
            )
        )
        ng_run = CommandProcess(
            [
                "ng_run",
                "+config_paths=[responses_api_models/openai_model/configs/openai_model.yaml,"
                " resources_servers/simple_weather/configs/simple_weather.yaml]",
                "+policy_model.responses_api_models.openai_model.max_concurrent_requests=512",
            ],
            cwd=tmp_path,
        )
        try:
            assert ng_run.wait_for("ng_run ready", 90), ng_run.output
            instances = httpx.get(f"http://127.0.0.1:{head_port}/instances", timeout=5).json()["instances"]
            rows, output = write_rows(tmp_path / "rows.jsonl", 2000), tmp_path / "out.jsonl"
            argv = collector_argv(rows, output, head_port)
            argv[argv.index("+num_samples_in_parallel=4")] = "+num_samples_in_parallel=2000"
            collect = subprocess.run(argv, cwd=tmp_path, capture_output=True, text=True, timeout=900)
            collector_rss_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
            server_rss_mb = {name: peak_rss_mb(int(e["pid"])) for name, e in instances.items()}
        finally:
            ng_run.close()
    assert collect.returncode == 0, collect.stderr[-2000:]
    metrics = json.loads((tmp_path / "out.metrics.json").read_text())
    print(
        f"2000 in flight: {metrics['this_run']['wall_time_s']}s, collector {collector_rss_mb:.0f} MB, "
        f"servers {server_rss_mb}"
    )
    assert metrics["rollouts"] == 2000 and metrics["failed"] == 0, metrics["errors"]
    assert len(set(keys_of(output))) == 2000
    assert collector_rss_mb < 1024, f"collector peaked at {collector_rss_mb:.0f} MB"
    assert max(server_rss_mb.values()) < 1024, server_rss_mb


def test_a_budget_stops_within_one_rollouts_cost_and_keeps_every_row(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], seed=4))
    rows, output = write_rows(tmp_path / "rows.jsonl", 200), tmp_path / "out.jsonl"
    with emulated_cluster(emulator, model="openai/gpt-4-turbo") as config:
        probe = collect_rows(config, write_rows(tmp_path / "probe.jsonl", 4), tmp_path / "probe.jsonl.out")
        per_rollout = probe["cost_usd"] / 4
        budget = per_rollout * 40
        summary = collect_rows(config, rows, output, num_samples_in_parallel=8, max_cost_usd=budget)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    spent = sum(r["cost_usd"] for r in records)
    assert summary["stopped_early"] and "budget" in summary["stopped_early"]
    assert 10 < len(records) < 200 and all(r["error"] is None for r in records)
    assert spent == pytest.approx(summary["cost_usd"])
    dearest = max(r["cost_usd"] for r in records)
    assert budget - dearest <= spent <= budget + dearest, (spent, budget, dearest)
    assert f"spent ${spent:.6f} of the ${budget:g} budget over {len(records)} rollouts" in summary["stopped_early"]


def test_cost_figures_add_up_from_the_records(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], seed=6))
    emulator.inject("openai/gpt-4o-mini", ["unavailable"] * 3)
    rows, output = write_rows(tmp_path / "rows.jsonl", 12), tmp_path / "out.jsonl"
    with emulated_cluster(emulator, fallback_models=["anthropic/claude-3.5-sonnet"]) as config:
        summary = collect_rows(config, rows, output, num_samples_in_parallel=1)
    records = [json.loads(line) for line in output.read_text().splitlines()]
    total = sum(r["cost_usd"] for r in records)
    assert summary["cost_usd"] == pytest.approx(total) == pytest.approx(emulator.spent_usd)
    assert summary["cost_per_rollout_usd"] == pytest.approx(total / 12)
    assert summary["cost_per_reward_point_usd"] == pytest.approx(total / sum(r["reward"] for r in records))
    assert all(sum(r["cost_by_model"].values()) == pytest.approx(r["cost_usd"]) for r in records)
    assert any("anthropic/claude-3.5-sonnet" in r["cost_by_model"] for r in records)
    latencies = sorted(r["latency_s"] for r in records)
    assert summary["p50_latency_s"] == pytest.approx(latencies[5], abs=1e-4)
    assert summary["p95_latency_s"] == pytest.approx(latencies[11], abs=1e-4)
