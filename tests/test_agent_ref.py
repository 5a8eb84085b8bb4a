"""Several environments in one collection: each row runs on the agent its `agent_ref` names (NeMo Gym's field),
`+agent_name` is only the default for rows naming none, the metrics come per agent as well as overall, and resume
and the settings check cover every agent. Over real HTTP: simple_weather and mcqa, each with its agent, on one
emulated upstream, in one cluster."""

from __future__ import annotations

import json
import subprocess
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from nemo_gym.collection.inputs import InputError
from nemo_gym.collection.resume import SettingsChanged
from nemo_gym.collection.run import format_summary, metrics_path
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.paths import project_root
from nemo_gym.config.types import GlobalConfig
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.cluster import environment_blocks, simple_weather_blocks
from nemo_gym.testing.emulated import EMULATOR_KEY, collect_rows, emulated_cluster

WEATHER, MCQA = "simple_weather_simple_agent", "mcqa_simple_agent"
WEATHER_DATA = project_root() / "resources_servers/simple_weather/data/example.jsonl"
MCQA_DATA = project_root() / "resources_servers/mcqa/data/example.jsonl"


def examples(path: Path, count: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()][:count]


def mixed_rows(path: Path, count: int = 4, *, weather_ref: Any = None, mcqa_ref: Any = None) -> Path:
    """`count` rows of each environment, interleaved; weather rows name their agent in NeMo Gym's object form,
    mcqa rows by name alone (the defaults; None leaves a row without agent_ref)."""
    weather_ref = {"type": "responses_api_agents", "name": WEATHER} if weather_ref is None else weather_ref
    mcqa_ref = MCQA if mcqa_ref is None else mcqa_ref
    rows = []
    for weather, mcqa in zip(examples(WEATHER_DATA, count), examples(MCQA_DATA, count), strict=True):
        rows += [{**weather, "agent_ref": weather_ref}, {**mcqa, "agent_ref": mcqa_ref}]
    rows = [{k: v for k, v in row.items() if v != "-"} for row in rows]  # "-": no agent_ref at all
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def records_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def both_environments(**agent_overrides: Any) -> dict[str, Any]:
    blocks = {**simple_weather_blocks(), **environment_blocks("mcqa")}
    blocks[MCQA]["responses_api_agents"]["simple_agent"].update(agent_overrides)
    return blocks


@pytest.fixture(scope="module")
def emulator() -> OpenRouterEmulator:
    return OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], answer_keys=[MCQA_DATA], seed=11))


@pytest.fixture(scope="module")
def cluster(emulator: OpenRouterEmulator) -> Iterator[GlobalConfig]:
    with emulated_cluster(emulator, environment=both_environments()) as config:
        yield config


def test_each_row_runs_on_the_agent_its_agent_ref_names_and_metrics_come_per_agent(
    cluster: GlobalConfig, tmp_path: Path
) -> None:
    rows, output = mixed_rows(tmp_path / "mixed.jsonl"), tmp_path / "out.jsonl"

    summary = collect_rows(cluster, rows, output, agent_name=None, num_repeats=2)

    records = records_of(output)
    assert len(records) == 16 and all(r["error"] is None for r in records)
    for record in records:
        named = record["input"]["agent_ref"]
        assert record["agent_name"] == (named if isinstance(named, str) else named["name"])
    weather = [r for r in records if r["agent_name"] == WEATHER]
    mcqa = [r for r in records if r["agent_name"] == MCQA]
    assert len(weather) == len(mcqa) == 8
    assert all("expected_cities" in r for r in weather) and not any("expected_cities" in r for r in mcqa)
    assert {r["fingerprint"] for r in weather} | {r["fingerprint"] for r in mcqa} == set(
        summary["fingerprints"].values()
    )
    assert len(summary["fingerprints"]) == 2, "each agent's records carry its own settings' fingerprint"

    assert summary["agent_name"] is None and summary["agents"] == [MCQA, WEATHER]
    assert (summary["rollouts"], summary["expected_rollouts"], summary["complete"]) == (16, 16, True)
    by_agent = summary["by_agent"]
    for agent, own in ((WEATHER, weather), (MCQA, mcqa)):
        assert by_agent[agent]["rollouts"] == 8
        assert by_agent[agent]["mean_reward"] == pytest.approx(sum(r["reward"] for r in own) / 8, abs=1e-4)
        assert by_agent[agent]["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in own))
    assert json.loads(metrics_path(output).read_text())["by_agent"] == by_agent
    printed = format_summary(summary)
    assert "by_agent:" in printed
    assert any(line.split()[:2] == [WEATHER, "8"] for line in printed.splitlines()), printed


def test_a_partial_run_resumes_across_both_agents(cluster: GlobalConfig, tmp_path: Path) -> None:
    rows, output = mixed_rows(tmp_path / "mixed.jsonl"), tmp_path / "out.jsonl"
    collect_rows(cluster, rows, output, agent_name=None, num_repeats=2)
    lines = output.read_text().splitlines()
    first_of = {
        agent: [line for line in lines if json.loads(line)["agent_name"] == agent][:count]
        for agent, count in ((WEATHER, 3), (MCQA, 2))
    }
    kept = [line for line in lines if line in first_of[WEATHER] + first_of[MCQA]]
    torn = next(line for line in lines if line not in kept)[:40]
    output.write_text("\n".join(kept) + "\n" + torn)  # lost 10 rollouts of both agents, tore one
    kept_by_agent = Counter(json.loads(line)["agent_name"] for line in kept)

    summary = collect_rows(cluster, rows, output, agent_name=None, num_repeats=2)

    assert summary["this_run"]["skipped_already_done"] == 5 and summary["this_run"]["rollouts"] == 11
    records = records_of(output)
    keys = [(r["row_hash"], r["repeat_index"]) for r in records]
    assert len(keys) == len(set(keys)) == 16
    assert records[:5] == [json.loads(line) for line in kept], "finished records are kept as they were"
    assert Counter(r["agent_name"] for r in records[5:]) == {
        WEATHER: 8 - kept_by_agent[WEATHER],
        MCQA: 8 - kept_by_agent[MCQA],
    }, "only the missing rollouts ran, each on its own agent"
    assert {a: s["rollouts"] for a, s in summary["by_agent"].items()} == {WEATHER: 8, MCQA: 8}


def test_a_changed_setting_of_either_agent_is_refused_on_resume(
    emulator: OpenRouterEmulator, cluster: GlobalConfig, tmp_path: Path
) -> None:
    rows, output = mixed_rows(tmp_path / "mixed.jsonl", 2), tmp_path / "out.jsonl"
    collect_rows(cluster, rows, output, agent_name=None)
    before = output.read_text()
    with (
        emulated_cluster(emulator, environment=both_environments(max_steps=3)) as changed,
        pytest.raises(SettingsChanged, match=r"agent\.max_steps: 2 -> 3") as refused,
    ):
        collect_rows(changed, rows, output, agent_name=None)
    assert "+overwrite=true" in str(refused.value)
    assert output.read_text() == before, "a refused run must not touch the output"


def test_rows_without_agent_ref_run_on_agent_name(cluster: GlobalConfig, tmp_path: Path) -> None:
    rows, output = mixed_rows(tmp_path / "mixed.jsonl", 2, weather_ref="-"), tmp_path / "out.jsonl"

    summary = collect_rows(cluster, rows, output, agent_name=WEATHER)

    assert Counter(r["agent_name"] for r in records_of(output)) == {WEATHER: 2, MCQA: 2}
    assert summary["agent_name"] == WEATHER and summary["agents"] == [MCQA, WEATHER]
    with pytest.raises(SettingsChanged, match=rf"rows without an `agent_ref` run by agent '{WEATHER}'.*'{MCQA}'"):
        collect_rows(cluster, rows, output, agent_name=MCQA)  # those rows would count as done, run elsewhere


def test_a_row_naming_an_agent_that_is_not_running_is_refused_before_any_rollout(
    emulator: OpenRouterEmulator, cluster: GlobalConfig, tmp_path: Path
) -> None:
    rows, output = mixed_rows(tmp_path / "mixed.jsonl", 3, mcqa_ref="mcqa_agent_typo"), tmp_path / "out.jsonl"
    calls_before = len(emulator.requests)

    with pytest.raises(ConfigError) as refused:
        collect_rows(cluster, rows, output, agent_name=None)

    message = str(refused.value)
    assert f"3 row(s) name agent 'mcqa_agent_typo' in `agent_ref`, which is not running: {rows}:2, {rows}:4" in message
    assert f"Agents: {MCQA}, {WEATHER}" in message and "Fix those rows' `agent_ref`" in message
    assert not output.exists() or output.read_text() == ""
    assert len(emulator.requests) == calls_before, "no rollout ran"


def test_a_row_without_agent_ref_and_no_agent_name_says_how_to_fix_it(tmp_path: Path) -> None:
    rows = mixed_rows(tmp_path / "mixed.jsonl", 2, mcqa_ref="-")
    nothing_listens = GlobalConfig(data={"head_server": {"port": free_port()}}, origins={})

    with pytest.raises(InputError) as refused:  # before the head server is even asked
        collect_rows(nothing_listens, rows, tmp_path / "out.jsonl", agent_name=None)

    message = str(refused.value)
    assert f"2 of 4 rows name no agent (no `agent_ref`) and no +agent_name was given: {rows}:2, {rows}:4" in message
    assert "Required: +agent_name=..." in message and '"agent_ref": {"type": "responses_api_agents"' in message


@pytest.mark.parametrize(
    "ref", [{"type": "resources_servers", "name": "mcqa"}, {"name": ""}, 7, ["mcqa_simple_agent"]], ids=str
)
def test_a_malformed_agent_ref_names_the_line_and_the_form(tmp_path: Path, ref: Any) -> None:
    rows = mixed_rows(tmp_path / "mixed.jsonl", 1, mcqa_ref=ref)
    nothing_listens = GlobalConfig(data={"head_server": {"port": free_port()}}, origins={})
    with pytest.raises(InputError, match=r"mixed\.jsonl:2: `agent_ref` must name an agent instance, as .*; got "):
        collect_rows(nothing_listens, rows, tmp_path / "out.jsonl", agent_name=WEATHER)


@pytest.mark.slow
def test_ng_collect_rollouts_over_one_ng_run_of_two_environments_prints_metrics_per_agent(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], answer_keys=[MCQA_DATA], seed=4))
    with serve_in_thread(emulator.app()) as url:
        head_port = free_port()
        (tmp_path / "env.yaml").write_text(
            yaml.safe_dump(
                {
                    "policy_base_url": url + "/api/v1",
                    "policy_api_key": EMULATOR_KEY,
                    "policy_model_name": "openai/gpt-4o-mini",
                    "head_server": {"port": head_port},
                }
            )
        )
        ng_run = CommandProcess(
            [
                "ng_run",
                "+config_paths=[responses_api_models/openai_model/configs/openai_model.yaml,"
                " resources_servers/simple_weather/configs/simple_weather.yaml,"
                " resources_servers/mcqa/configs/mcqa.yaml]",
            ],
            cwd=tmp_path,
        )
        try:
            assert ng_run.wait_for("ng_run ready", 90), ng_run.output
            rows, output = mixed_rows(tmp_path / "mixed.jsonl", 6), tmp_path / "out.jsonl"
            command = [
                "ng_collect_rollouts",
                f"+input_jsonl_fpath={rows}",
                f"+output_jsonl_fpath={output}",
                "+limit=7",
            ]
            first = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=120)
            assert first.returncode == 0, first.stderr[-3000:]
            assert len(records_of(output)) == 7
            second = subprocess.run(
                [*command[:-1], "+num_repeats=2"], cwd=tmp_path, capture_output=True, text=True, timeout=120
            )
        finally:
            ng_run.close()
    assert second.returncode == 0, second.stderr[-3000:]
    assert "Resuming" in second.stdout and "7 rollouts already done" in second.stdout
    table = second.stdout[second.stdout.index("by_agent:") :].splitlines()
    assert table[1].split() == ["agent", "rollouts", "failed", "mean_reward", "pass_rate", "cost_usd"]
    assert [line.split()[:2] for line in table[2:4]] == [[MCQA, "12"], [WEATHER, "12"]]
    records = records_of(output)
    assert len(records) == len({(r["row_hash"], r["repeat_index"]) for r in records}) == 24
    metrics = json.loads(metrics_path(output).read_text())
    assert metrics["complete"] is True and set(metrics["by_agent"]) == {MCQA, WEATHER}
