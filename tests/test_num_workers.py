"""num_workers: a stateless server runs as several processes behind its one port (SO_REUSEPORT), every worker
serves, a collection through them loses nothing, and a server that keeps sessions refuses to be split."""

from __future__ import annotations

import signal
import subprocess
import time
from pathlib import Path

import psutil
import pytest

from nemo_gym.config.paths import project_root
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.emulated import write_rows
from nemo_gym.testing.fast_upstream import FastUpstream
from nemo_gym.testing.processes import collected_records, pid_alive

SIMPLE_WEATHER = str(project_root() / "resources_servers/simple_weather/configs/simple_weather.yaml")
AGENT = "simple_weather_simple_agent"


def model_config(tmp_path: Path, upstream: str, *, agent_workers: int, model_workers: int) -> Path:
    path = tmp_path / "model.yaml"
    path.write_text(
        "policy_model:\n  responses_api_models:\n    openai_model:\n      entrypoint: app.py\n"
        f"      base_url: {upstream}/v1\n      api_key: sk-workers-test-0001\n      model: stub/weather-model\n"
        f"      openrouter: false\n      preflight: false\n      num_workers: {model_workers}\n"
        f"{AGENT}:\n  responses_api_agents:\n    simple_agent:\n      num_workers: {agent_workers}\n"
    )
    return path


@pytest.mark.slow
def test_workers_share_the_port_all_serve_and_a_collection_loses_nothing(tmp_path: Path) -> None:
    head_port = free_port()
    with serve_in_thread(FastUpstream()) as upstream:
        config = model_config(tmp_path, upstream, agent_workers=2, model_workers=3)
        run = CommandProcess(
            ["ng_run", f"+config_paths=[{SIMPLE_WEATHER}, {config}]", f"+head_server.port={head_port}"], cwd=tmp_path
        )
        try:
            assert run.wait_for("ng_run ready", 90), run.output
            assert sum("policy_model (worker" in line and "ready at" in line for line in run.lines) == 3
            assert sum(f"{AGENT} (worker" in line and "ready at" in line for line in run.lines) == 2
            table = [line.split() for line in run.lines if line.startswith((f"{AGENT}#", "policy_model#"))]
            workers = {row[0]: int(row[-1]) for row in table}
            assert set(workers) == {f"{AGENT}#1", f"{AGENT}#2", "policy_model#1", "policy_model#2", "policy_model#3"}
            assert len({row[3] for row in table if row[0].startswith(AGENT)}) == 1  # one URL, one port
            before = {label: psutil.Process(pid).cpu_times().user for label, pid in workers.items()}

            rows, output = write_rows(tmp_path / "rows.jsonl", 800), tmp_path / "out.jsonl"
            records = collected_records(AGENT, rows, output, head_port=head_port, cwd=tmp_path, parallel=64)
            assert len(records) == 800 and all(r["error"] is None for r in records)
            assert len({(r["row_hash"], r["repeat_index"]) for r in records}) == 800
            busy = {label: psutil.Process(pid).cpu_times().user - before[label] for label, pid in workers.items()}
            # An idle worker's event loop costs well under 10 ms of CPU over the run; the kernel spreads the
            # connections by hash, so one worker may get fewer of them than another, but none gets none.
            assert all(seconds > 0.02 for seconds in busy.values()), f"a worker served nothing: {busy}"

            run.send(signal.SIGINT)
            assert run.wait(30) == 0
            deadline = time.monotonic() + 20
            while any(pid_alive(pid) for pid in workers.values()) and time.monotonic() < deadline:
                time.sleep(0.1)
            assert not any(pid_alive(pid) for pid in workers.values()), "a worker outlived ng_run"
        finally:
            run.close()


@pytest.mark.parametrize(
    ("instance", "expected"),
    [
        ("simple_weather.resources_servers.simple_weather", "keeps each rollout's session in the process"),
    ],
)
def test_a_server_that_keeps_sessions_refuses_several_workers(tmp_path: Path, instance: str, expected: str) -> None:
    config = model_config(tmp_path, "http://127.0.0.1:9", agent_workers=1, model_workers=1)
    result = subprocess.run(
        ["ng_run", f"+config_paths=[{SIMPLE_WEATHER}, {config}]", f"+{instance}.num_workers=2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 2
    assert expected in result.stderr and "num_workers" in result.stderr and "Traceback" not in result.stderr
