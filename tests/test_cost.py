"""Cost in every record: reported by OpenRouter, or estimated from prices (and marked so) when the endpoint reports
only tokens; and a model server that holds itself to its own max_cost_usd."""

from __future__ import annotations

import asyncio
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from nemo_gym.collection.run import RunStopped
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.testing.emulated import EMULATOR_KEY, collect_rows, emulated_cluster, write_rows
from nemo_gym.upstream.catalog import Catalog, CatalogModel, ModelPrice
from nemo_gym.upstream.cost_meter import BudgetExhausted, CostMeter

MINI_PROMPT, MINI_COMPLETION = Decimal("0.00000015"), Decimal("0.0000006")  # openai/gpt-4o-mini per token


def records_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def turn_costs(record: dict[str, Any]) -> list[float]:
    return [t["cost"] for t in record["response"]["nemo_gym"]["turns"]]


def test_reported_cost_is_taken_as_is_and_not_marked_estimated(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], seed=1))
    # Prices far from the emulator's: a cost re-estimated from them could not match what the emulator billed.
    prices = {"openai/gpt-4o-mini": {"prompt": 100.0, "completion": 200.0}}  # USD per million tokens
    with emulated_cluster(emulator, prices=prices) as config:
        collect_rows(config, write_rows(tmp_path / "rows.jsonl", 6), tmp_path / "out.jsonl")
    records = records_of(tmp_path / "out.jsonl")
    assert len(records) == 6
    assert [r["error"] for r in records] == [None] * 6
    assert all(r["cost_estimated"] is False for r in records)
    assert emulator.spent_usd > 0
    assert sum(r["cost_usd"] for r in records) == pytest.approx(emulator.spent_usd)


def test_missing_cost_is_estimated_from_the_catalog_prices_and_marked(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], seed=1, report_cost=False))
    with emulated_cluster(emulator) as config:
        summary = collect_rows(config, write_rows(tmp_path / "rows.jsonl", 8), tmp_path / "out.jsonl")
    records = records_of(tmp_path / "out.jsonl")
    for record in records:
        usage = record["usage"]
        expected = usage["input_tokens"] * MINI_PROMPT + usage["output_tokens"] * MINI_COMPLETION
        assert record["cost_usd"] == pytest.approx(float(expected), rel=1e-9)
        assert record["cost_estimated"] is True
        assert all(t["cost_estimated"] for t in record["response"]["nemo_gym"]["turns"])
        assert sum(turn_costs(record)) == pytest.approx(record["cost_usd"])
    # The emulator billed the same tokens at the same prices, so the estimate matches what it charged.
    assert sum(r["cost_usd"] for r in records) == pytest.approx(emulator.spent_usd)
    assert summary["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in records))
    assert summary["cost_estimated"] is True


def test_configured_prices_win_over_the_catalog(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], seed=1, report_cost=False))
    prices = {"openai/gpt-4o-mini": {"prompt": 1.0, "completion": 2.0}}  # USD per million tokens
    with emulated_cluster(emulator, prices=prices) as config:
        collect_rows(config, write_rows(tmp_path / "rows.jsonl", 4), tmp_path / "out.jsonl")
    records = records_of(tmp_path / "out.jsonl")
    assert len(records) == 4
    assert [r["error"] for r in records] == [None] * 4
    for record in records:
        usage = record["usage"]
        expected = (usage["input_tokens"] * 1.0 + usage["output_tokens"] * 2.0) / 1_000_000
        assert record["cost_usd"] == pytest.approx(expected, rel=1e-9)
        assert record["cost_estimated"] is True


def test_a_model_server_budget_stops_the_run_and_keeps_every_finished_row(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], seed=2))
    rows, output = write_rows(tmp_path / "rows.jsonl", 300), tmp_path / "out.jsonl"
    with emulated_cluster(emulator, model="openai/gpt-4-turbo") as config:
        probe = collect_rows(config, write_rows(tmp_path / "probe.jsonl", 4), tmp_path / "probe.out.jsonl")
    per_call = probe["cost_usd"] / probe["model_calls"]
    budget = probe["cost_usd"] + per_call * 60
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], seed=2))
    with (
        emulated_cluster(emulator, model="openai/gpt-4-turbo", max_cost_usd=budget) as config,
        pytest.raises(RunStopped) as stopped,
    ):
        collect_rows(config, rows, output, num_samples_in_parallel=4)
    message = str(stopped.value)
    assert "max_cost_usd" in message and "policy_model" in message and "re-run the same command" in message
    records = records_of(output)
    assert 5 < len(records) < 300
    assert all(r["error"] is None for r in records), "a refused call must not be recorded as a failed rollout"
    # Spend stops within the calls that were in flight when the budget was reached (4 rollouts, 1 call each).
    assert emulator.spent_usd <= budget + 4 * max(c for r in records for c in turn_costs(r))
    assert sum(r["cost_usd"] for r in records) <= emulator.spent_usd + 1e-12


# ------------------------------------------------------------------------------------------------ the meter itself


def settle(meter: CostMeter, usage: dict[str, Any] | None, fetched: list[str], catalog: Catalog | None = None) -> None:
    async def fetch(base_url: str) -> Catalog | None:
        fetched.append(base_url)
        await asyncio.sleep(0.01)
        return catalog

    asyncio.run(meter.settle(usage, ["vendor/model:nitro", "vendor/model"], ["http://127.0.0.1:1/v1/"], fetch))


def test_the_catalog_is_fetched_once_per_endpoint_and_variants_take_the_base_price() -> None:
    catalog = Catalog(
        base_url="http://127.0.0.1:1/v1",
        fetched_at="2026-11-01T00:00:00Z",
        models=[CatalogModel(id="vendor/model", prompt_price=0.000001, completion_price=0.000004)],
    )
    meter, fetched = CostMeter({}), []
    first = {"input_tokens": 1000, "output_tokens": 500}
    settle(meter, first, fetched, catalog)
    settle(meter, {"prompt_tokens": 10, "completion_tokens": 5}, fetched, catalog)
    assert fetched == ["http://127.0.0.1:1/v1"]
    assert first == {"input_tokens": 1000, "output_tokens": 500, "cost": pytest.approx(0.003), "cost_estimated": True}
    assert meter.spent_usd == pytest.approx(0.003 + 0.00003)
    assert meter.calls == 2


def test_an_unpriced_model_keeps_cost_unknown_and_says_how_to_price_it(caplog: pytest.LogCaptureFixture) -> None:
    meter, fetched = CostMeter({}, label="policy_model"), []
    usage: dict[str, Any] = {"input_tokens": 10, "output_tokens": 2}
    settle(meter, usage, fetched, None)
    assert "cost" not in usage and meter.spent_usd == 0
    assert "prices:" in caplog.text and "vendor/model" in caplog.text


def test_the_budget_counts_calls_in_flight_at_the_mean_cost_per_call() -> None:
    meter = CostMeter(
        {"vendor/model": ModelPrice(prompt=1.0, completion=0.0)}, max_cost_usd=0.005, label="policy_model"
    )

    async def scenario() -> None:
        async def fetch(_: str) -> None:
            return None

        for _ in range(3):  # 3 calls of $0.001 each
            async with meter.call():
                await meter.settle({"input_tokens": 1000, "output_tokens": 0}, ["vendor/model"], [], fetch)
        # $0.003 spent at $0.001 a call: two more may be in flight (0.005), a third would pass the cap.
        async with meter.call(), meter.call():
            assert meter.in_flight == 2
            with pytest.raises(BudgetExhausted, match=r"max_cost_usd budget of \$0.005"):
                async with meter.call():
                    pass
        assert meter.in_flight == 0

    asyncio.run(scenario())


def test_byok_calls_add_the_providers_inference_cost_to_openrouters_fee() -> None:
    meter, fetched = CostMeter({}), []
    usage = {
        "input_tokens": 10,
        "output_tokens": 2,
        "cost": 0.0001,
        "is_byok": True,
        "cost_details": {"upstream_inference_cost": 0.002},
    }
    settle(meter, usage, fetched)
    assert usage["cost"] == pytest.approx(0.0021) and meter.spent_usd == pytest.approx(0.0021)
    assert "cost_estimated" not in usage and fetched == []


def test_an_answer_naming_the_dated_canonical_slug_is_priced_by_the_catalog() -> None:
    catalog = Catalog(
        base_url="http://127.0.0.1:1/v1",
        fetched_at="2026-11-01T00:00:00Z",
        models=[
            CatalogModel(
                id="anthropic/claude-4.5-haiku",
                canonical_slug="anthropic/claude-4.5-haiku-20251001",
                prompt_price=0.000001,
                completion_price=0.000005,
            )
        ],
    )
    meter = CostMeter({})
    meter.add_catalog(catalog)

    async def no_fetch(_: str) -> None:
        raise AssertionError("the catalog is known already")

    usage: dict[str, Any] = {"input_tokens": 1000, "output_tokens": 100}
    asyncio.run(meter.settle(usage, ["anthropic/claude-4.5-haiku-20251001"], [], no_fetch))
    assert usage["cost"] == pytest.approx(0.0015)
