"""bench/export.py runs from a fresh clone and reports sane figures: every record read, the rows each format makes of
them, a rate and a peak RSS per run. (No speed is asserted here: the target lives in the benchmark.)"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nemo_gym.config.paths import project_root

pytestmark = pytest.mark.slow


def test_a_small_run_reports_rate_and_memory_for_every_format(tmp_path: Path) -> None:
    output = tmp_path / "export.json"
    result = subprocess.run(
        [
            sys.executable,
            "bench/export.py",
            "+records=2000",
            "+small_records=400",
            "+runs=[read,sft:jsonl,dpo:parquet,rl:jsonl]",
            f"+work_dir={tmp_path}",
            f"+output={output}",
        ],
        cwd=project_root(),
        capture_output=True,
        text=True,
        timeout=600,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(output.read_text())

    assert figures["records"] == 2000 and 1000 <= figures["mean_record_bytes"] <= 2048, "records of 1-2 KB"
    runs = {(r["format"], r["output_format"]): r for r in figures["runs"]}
    assert set(runs) == {("read", ""), ("sft", "jsonl"), ("dpo", "parquet"), ("rl", "jsonl")}
    assert all(r["lines"] == 2000 for r in runs.values())
    # 4 rollouts per row, rewards 0, 0.5 and 1 in every row: a conversation each, one pair and one line per row
    assert runs["sft", "jsonl"]["rows_written"] == 2000
    assert runs["dpo", "parquet"]["rows_written"] == runs["rl", "jsonl"]["rows_written"] == 500
    assert runs["read", ""]["rows_written"] == 500, "the reader alone: one group per row"
    for run in [*runs.values(), figures["memory"]["small"]]:
        assert run["records_per_s"] > 0 and run["records_per_cpu_s"] > 0 and run["output_mb"] >= 0
        assert run["wall_time_s"] > 0 and run["cpu_time_s"] > 0
        assert 0 < run["baseline_rss_mb"] <= run["peak_rss_mb"] < 2048
    small = figures["memory"]["small"]
    assert small["lines"] == 400 and (small["format"], small["output_format"]) == ("sft", "jsonl")
    assert "records/s" in result.stdout and "peak RSS" in result.stdout
    assert [p.name for p in tmp_path.iterdir()] == ["export.json"], "the benchmark's files are cleaned up"
