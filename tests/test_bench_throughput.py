"""bench/throughput.py runs from a fresh clone: its quick mode starts the stub, ng_run and the collector, and
writes every figure the README's table quotes. (No speed is asserted here: targets live in the benchmark.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_gym.config.paths import project_root

pytestmark = pytest.mark.slow


def test_quick_mode_measures_every_figure_and_leaves_nothing_running(tmp_path: Path) -> None:
    output = tmp_path / "throughput.json"
    result = subprocess.run(
        [sys.executable, "bench/throughput.py", "+quick=true", f"+output={output}"],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(output.read_text())
    assert figures["stub_ceiling_requests_per_s"] > 0 and figures["ng_run_ready_s"] > 0
    (zero,) = figures["zero_latency"]
    assert zero["in_flight"] == 16 and zero["rollouts"] == 300 and zero["failed"] == 0
    assert zero["rollouts_per_s"] > 0 and zero["cpu_ms_per_rollout"] > 0
    servers = {"policy_model", "simple_weather", "simple_weather_simple_agent"}
    assert servers <= set(zero["cpu_ms_per_rollout_by_process"])
    latency = figures["latency"]
    assert latency["rollouts"] == 400 and latency["failed"] == 0 and latency["share_of_ideal"] > 0
    assert figures["peak_rss_mb"]["head_and_servers_total"] > 0
    assert "rollouts/s, 16 in flight, 0 ms upstream" in result.stdout
    leftovers = subprocess.run(["pgrep", "-f", "nemo_gym.testing.fast_upstream"], capture_output=True, text=True)
    assert leftovers.stdout.strip() == "", "the benchmark left its stub upstream running"
