"""ng_compare_models: one dataset over several models with the same agent and resources server, a report whose
every figure follows from the rollout records, and a re-run that reuses what is done."""

from __future__ import annotations

import csv
import json
import math
import statistics
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from scipy import stats

from nemo_gym.compare.plan import ComparisonSettings, plan
from nemo_gym.compare.statistics import ModelSummary, mean_interval, recommend
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.loading import load_global_config
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.emulated import EMULATOR_KEY, EXAMPLES

MODELS = ["openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet", "meta-llama/llama-3.1-8b-instruct"]
CONFIG_PATHS = (
    "+config_paths=[responses_api_models/openai_model/configs/openai_model.yaml, "
    "resources_servers/simple_weather/configs/simple_weather.yaml]"
)


@pytest.fixture
def emulator_url() -> Iterator[tuple[OpenRouterEmulator, str]]:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], seed=3))
    with serve_in_thread(emulator.app()) as url:
        yield emulator, url + "/api/v1"


def compare_argv(base_url: str, output_dir: Path, *extra: str) -> list[str]:
    return [
        "ng_compare_models",
        CONFIG_PATHS,
        f"+policy_base_url={base_url}",
        f"+policy_api_key={EMULATOR_KEY}",
        f"+policy_model_name={MODELS[0]}",
        f"+models=[{', '.join(MODELS)}]",
        f"+input_jsonl_fpath={EXAMPLES}",
        f"+output_dir={output_dir}",
        "+num_samples_in_parallel=8",
        *extra,
    ]


def run(argv: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)


def records_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.mark.slow
def test_three_models_give_four_report_files_whose_figures_follow_from_the_records(
    emulator_url: tuple[OpenRouterEmulator, str], tmp_path: Path
) -> None:
    emulator, base_url = emulator_url
    out = tmp_path / "comparison"
    result = run(compare_argv(base_url, out), tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("comparison.md", "comparison.csv", "comparison.html", "comparison.png", "comparison.json"):
        assert (out / name).stat().st_size > 0, name
    assert EMULATOR_KEY not in result.stdout + result.stderr + (out / "servers.log").read_text()

    with (out / "comparison.csv").open() as handle:
        table = {row["label"]: row for row in csv.DictReader(handle)}
    assert list(table) == MODELS
    for model in MODELS:
        records = records_of(out / "rollouts" / f"{model.replace('/', '_')}.jsonl")
        assert len(records) == 24 and {r["models"][0] for r in records} == {model}
        rewards = [r["reward"] for r in records if r["error"] is None]
        row = table[model]
        assert float(row["mean_reward"]) == pytest.approx(statistics.fmean(rewards))
        half = stats.t.ppf(0.975, len(rewards) - 1) * statistics.stdev(rewards) / math.sqrt(len(rewards))
        assert float(row["ci_low"]) == pytest.approx(statistics.fmean(rewards) - half)
        assert float(row["ci_high"]) == pytest.approx(statistics.fmean(rewards) + half)
        assert float(row["pass_rate"]) == pytest.approx(sum(r >= 1 for r in rewards) / len(rewards))
        total = sum(r["cost_usd"] for r in records)
        assert float(row["total_cost_usd"]) == pytest.approx(total)
        assert float(row["cost_per_rollout_usd"]) == pytest.approx(total / 24)
        assert float(row["cost_per_reward_point_usd"]) == pytest.approx(total / sum(rewards))
        assert int(row["input_tokens"]) == sum(r["usage"]["input_tokens"] for r in records)
        assert int(row["output_tokens"]) == sum(r["usage"]["output_tokens"] for r in records)
        latencies = sorted(r["latency_s"] for r in records)
        assert float(row["p50_latency_s"]) == pytest.approx(latencies[11])
        assert float(row["p95_latency_s"]) == pytest.approx(latencies[22])
        assert int(row["failed"]) == 0
    assert sum(float(r["total_cost_usd"]) for r in table.values()) == pytest.approx(emulator.spent_usd)

    summary = json.loads((out / "comparison.json").read_text())
    recommended = summary["recommendation"]["cheapest_within_interval"]
    best = max(table.values(), key=lambda r: float(r["mean_reward"]))
    within = [r for r in table.values() if float(r["mean_reward"]) >= float(best["ci_low"])]
    assert recommended == min(within, key=lambda r: float(r["cost_per_rollout_usd"]))["label"]
    assert recommended in (out / "comparison.md").read_text().split("\n\n")[2]  # named above the table


@pytest.mark.slow
def test_a_rerun_reuses_finished_rollouts_and_report_only_runs_nothing(
    emulator_url: tuple[OpenRouterEmulator, str], tmp_path: Path
) -> None:
    emulator, base_url = emulator_url
    out = tmp_path / "comparison"
    first = run(compare_argv(base_url, out, "+limit=6"), tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    calls_after_first = len([r for r in emulator.requests if r.path.endswith("/chat/completions")])

    again = run(compare_argv(base_url, out, "+limit=10"), tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("4 rollouts this run (6 already done)") == 3
    for model in MODELS:
        records = records_of(out / "rollouts" / f"{model.replace('/', '_')}.jsonl")
        assert len({(r["row_hash"], r["repeat_index"]) for r in records}) == len(records) == 10

    calls_before_report = len([r for r in emulator.requests if r.path.endswith("/chat/completions")])
    assert calls_before_report > calls_after_first
    (out / "comparison.html").unlink()
    report_only = run(compare_argv(base_url, out, "+limit=6", "+report_only=true"), tmp_path)
    assert report_only.returncode == 0, report_only.stderr[-3000:]
    assert len([r for r in emulator.requests if r.path.endswith("/chat/completions")]) == calls_before_report
    assert (out / "comparison.html").exists()
    with (out / "comparison.csv").open() as handle:
        assert {int(row["rollouts"]) for row in csv.DictReader(handle)} == {6}  # only the rows asked for


# ------------------------------------------------------------------------------------------------ planning


def planned(tmp_path: Path, *overrides: str) -> tuple[Any, list[Any]]:
    config = load_global_config(
        [
            CONFIG_PATHS,
            "+policy_base_url=http://127.0.0.1:9/api/v1",
            f"+policy_api_key={EMULATOR_KEY}",
            "+policy_model_name=openai/gpt-4o-mini",
            *overrides,
        ],
        cwd=tmp_path,
    )
    settings = ComparisonSettings(
        input_jsonl_fpath=EXAMPLES,
        output_dir=tmp_path,
        **{k: v for k, v in config.data.items() if k in ("models", "model_servers")},
    )
    return plan(config, settings)


def test_each_model_gets_its_own_model_server_and_agent_and_nothing_else_changes(tmp_path: Path) -> None:
    cluster, variants = planned(
        tmp_path,
        "+models=[openai/gpt-4o-mini, google/gemini-pro]",
        "+policy_model.responses_api_models.openai_model.fallback_models=[a/b]",
    )
    assert [v.label for v in variants] == ["openai/gpt-4o-mini", "google/gemini-pro"]
    assert "policy_model" not in cluster.data and "simple_weather_simple_agent" not in cluster.data
    for variant in variants:
        model_block = cluster.data[variant.model_instance]["responses_api_models"]["openai_model"]
        agent_block = cluster.data[variant.agent_instance]["responses_api_agents"]["simple_agent"]
        assert model_block["model"] == variant.model and model_block["fallback_models"] == []
        assert model_block["api_key"] == EMULATOR_KEY
        assert agent_block["model_server"]["name"] == variant.model_instance
        assert agent_block["resources_server"]["name"] == "simple_weather" and agent_block["max_steps"] == 6
    assert set(cluster.instances) == {
        "simple_weather",
        *(v.model_instance for v in variants),
        *(v.agent_instance for v in variants),
    }


def test_whole_model_server_instances_are_compared_as_configured(tmp_path: Path) -> None:
    second = tmp_path / "cheap.yaml"
    second.write_text(
        "cheap_model:\n  responses_api_models:\n    openai_model:\n      entrypoint: app.py\n"
        "      base_url: ${policy_base_url}\n      api_key: ${policy_api_key}\n"
        "      model: google/gemini-pro\n      fallback_models: [openai/gpt-4o-mini]\n"
    )
    config_paths = CONFIG_PATHS.replace("]", f", {second}]")
    config = load_global_config(
        [
            config_paths,
            "+policy_base_url=http://127.0.0.1:9/api/v1",
            f"+policy_api_key={EMULATOR_KEY}",
            "+policy_model_name=openai/gpt-4o-mini",
        ],
        cwd=tmp_path,
    )
    settings = ComparisonSettings(
        input_jsonl_fpath=EXAMPLES, output_dir=tmp_path, model_servers=["policy_model", "cheap_model"]
    )
    cluster, variants = plan(config, settings)
    assert [(v.label, v.model) for v in variants] == [
        ("policy_model", "openai/gpt-4o-mini"),
        ("cheap_model", "google/gemini-pro"),
    ]
    cheap = cluster.data["cheap_model"]["responses_api_models"]["openai_model"]
    assert cheap["fallback_models"] == ["openai/gpt-4o-mini"]  # kept: the whole config is what is compared


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        ((), "Nothing to compare"),
        (("+model_servers=[simple_weather]",), "not a model-server instance"),
        (("+models=[a/b, a/b]",), "listed twice"),
    ],
)
def test_a_comparison_that_cannot_run_says_why(tmp_path: Path, overrides: tuple[str, ...], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        planned(tmp_path, *overrides)


# ------------------------------------------------------------------------------------------------ statistics


def summary(label: str, mean: float | None, low: float | None, cost: float | None, failed: int = 0) -> ModelSummary:
    return ModelSummary(
        label=label,
        model=label,
        rollouts=20,
        succeeded=20 - failed,
        failed=failed,
        mean_reward=mean,
        ci_low=low,
        ci_high=None if low is None else 2 * (mean or 0) - low,
        pass_rate=None,
        total_cost_usd=None if cost is None else cost * 20,
        cost_per_rollout_usd=cost,
        cost_per_reward_point_usd=None,
        cost_estimated=False,
        input_tokens=0,
        output_tokens=0,
        input_tokens_per_rollout=0,
        output_tokens_per_rollout=0,
        p50_latency_s=None,
        p95_latency_s=None,
    )


def test_the_interval_is_students_t() -> None:
    low, high = mean_interval([0.0, 1.0, 0.0, 1.0])
    assert (low, high) == pytest.approx((0.5 - 3.182446 * 0.288675, 0.5 + 3.182446 * 0.288675), abs=1e-5)
    assert mean_interval([0.4, 0.4, 0.4]) == pytest.approx((0.4, 0.4))
    assert mean_interval([1.0]) is None


def test_the_cheapest_model_within_the_best_interval_is_recommended() -> None:
    best = summary("best", 0.80, 0.70, 0.010)
    close_cheap = summary("close-cheap", 0.72, 0.60, 0.001)
    failing_cheaper = summary("failing", 0.75, 0.65, 0.0001, failed=5)  # 25% failed: no bargain
    unknown_cost = summary("unknown", 0.79, 0.69, None)
    far_cheapest = summary("far", 0.50, 0.40, 0.00001)
    choice = recommend([best, close_cheap, failing_cheaper, unknown_cost, far_cheapest])
    assert choice is not None
    assert (choice.best, choice.cheapest_within_interval) == ("best", "close-cheap")
    assert "10.0x cheaper" in choice.text
    assert recommend([summary("none", None, None, None)]) is None
