"""`ng_demo +environment=math_verify` end to end on the real bundled model: ng_run starts local_model and the
math_verify server, three rows are collected and scored, and everything stops."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_gym.testing.local_model import NEEDS_LOCAL_MODEL, run_demo

pytestmark = [*NEEDS_LOCAL_MODEL, pytest.mark.slow]


def test_demo_scores_math_verify_rows_offline(tmp_path: Path) -> None:
    output = tmp_path / "math.jsonl"
    result, records = run_demo(output, "+environment=math_verify", "+limit=3")
    assert "ng_run ready" in result.stdout and "mean_reward" in result.stdout

    assert len(records) == 3
    assert all(r["error"] is None for r in records), [r["error"] for r in records]
    assert all(r["reward"] in (0.0, 1.0) for r in records)
    assert all(r["reasons"] and "gold" in r for r in records)
    assert all(r["models"] == ["SmolLM2-135M-Instruct"] for r in records)
