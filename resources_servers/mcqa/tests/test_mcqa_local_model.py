"""The README's offline command for mcqa, end to end on the real bundled model: ng_demo starts ng_run with
local_model and mcqa, collects three scored rollouts and stops everything."""

from __future__ import annotations

from pathlib import Path

import pytest

from nemo_gym.testing.local_model import NEEDS_LOCAL_MODEL, run_demo

pytestmark = [*NEEDS_LOCAL_MODEL, pytest.mark.slow]


def test_demo_scores_the_local_model_on_mcqa(tmp_path: Path) -> None:
    output = tmp_path / "mcqa.jsonl"
    result, records = run_demo(output, "+environment=mcqa", "+limit=3")

    assert len(records) == 3
    for record in records:
        assert record["error"] is None, record["error"]
        assert record["reward"] in (0.0, 1.0)
        assert record["expected_answer"] in "ABCDE"
        assert record["extracted_answer"] in (None, "A", "B", "C", "D", "E")
        assert (record["reward"] == 1.0) == (record["extracted_answer"] == record["expected_answer"])
        assert record["reasons"] and record["models"] == ["SmolLM2-135M-Instruct"]
