"""The trainer-facing API: a batch of rows in, the records ng_collect_rollouts would write out (as they finish), with
its failure, outage and budget rules; group advantages; servers the library starts; the GRPO example end to end."""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import nemo_gym
from nemo_gym.collection.advantages import group_advantages, group_records
from nemo_gym.collection.inputs import InputError
from nemo_gym.collection.run import RunStopped, collect, settings_from
from nemo_gym.collection.stream import BudgetReached, RolloutClient, launch_servers, rollouts
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.paths import project_root
from nemo_gym.config.secrets import REDACTED
from nemo_gym.config.types import GlobalConfig
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.protocol.types import RolloutRecord
from nemo_gym.servers.head import build_head_app
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.cluster import openai_model_block, serve_config, simple_weather_blocks
from nemo_gym.testing.emulated import EMULATOR_KEY, FAST_RETRY, emulated_cluster, write_rows
from nemo_gym.testing.local_model import HAS_LOCAL_EXTRA
from nemo_gym.testing.stub_upstream import StubUpstream

AGENT = "simple_weather_simple_agent"
EXAMPLES = project_root() / "resources_servers/simple_weather/data/example.jsonl"
API_KEY = "sk-or-v1-trainer-api-test-key-4242"
STUB_ROLLOUT_USD = 0.0002
"""Two model calls at the stub's $0.0001 each, for a row naming one known city."""


def example_rows(count: int) -> list[dict[str, Any]]:
    return [json.loads(line) for line in EXAMPLES.read_text().splitlines() if line.strip()][:count]


@pytest.fixture(scope="module")
def stub() -> StubUpstream:
    return StubUpstream(api_key=API_KEY)


@pytest.fixture(scope="module")
def running(stub: StubUpstream) -> Iterator[GlobalConfig]:
    """Stub upstream, model server, simple_weather, agent and a head server, all on loopback."""
    with serve_in_thread(stub.app()) as upstream_url:
        data = {"policy_model": openai_model_block(upstream_url + "/v1", api_key=API_KEY), **simple_weather_blocks()}
        with serve_config(data) as (config, _servers):
            head_port = free_port()
            with serve_in_thread(build_head_app(config), port=head_port):
                yield GlobalConfig(data={**config.data, "head_server": {"port": head_port}}, origins={})


async def batch(client: RolloutClient, rows: list[dict[str, Any]], **overrides: Any) -> list[RolloutRecord]:
    return [record async for record in client.rollouts(rows, **overrides)]


def comparable(record: dict[str, Any]) -> dict[str, Any]:
    """A record without what differs between two runs of the same rollout (timing, response ids)."""
    kept = {k: v for k, v in record.items() if k not in ("latency_s", "response")}
    kept["trajectory"] = [(item["type"], item.get("name")) for item in record["response"]["output"]]
    return kept


def test_the_iterator_yields_the_records_ng_collect_rollouts_writes(running: GlobalConfig, tmp_path: Path) -> None:
    output = tmp_path / "cli.jsonl"
    cli = GlobalConfig(
        data={
            **running.data,
            "agent_name": AGENT,
            "input_jsonl_fpath": str(EXAMPLES),
            "output_jsonl_fpath": str(output),
            "limit": 6,
            "num_repeats": 2,
        },
        origins={},
    )
    asyncio.run(collect(cli, settings_from(cli)))
    written = [json.loads(line) for line in output.read_text().splitlines()]

    async def stream() -> list[RolloutRecord]:
        return [r async for r in rollouts(example_rows(6), config=running, agent_name=AGENT, num_repeats=2)]

    yielded = asyncio.run(stream())

    def key(record: dict[str, Any]) -> tuple[int, int]:
        return record["row_index"], record["repeat_index"]

    assert len(yielded) == 12
    assert [comparable(r) for r in sorted(yielded, key=key)] == [comparable(r) for r in sorted(written, key=key)]


def test_a_step_groups_by_row_with_advantages(running: GlobalConfig) -> None:
    rows = example_rows(8)

    async def step() -> tuple[list[RolloutRecord], list[RolloutRecord]]:
        async with RolloutClient(config=running, agent_name=AGENT, num_repeats=3) as client:
            first = await batch(client, rows)
            second = await batch(client, rows[:2], num_repeats=1)
            return first, second

    first, second = asyncio.run(step())
    groups = group_records(reversed(first))  # in any order, as rollouts finish
    assert [g.row_index for g in groups] == list(range(8))
    for group in groups:
        assert [r["repeat_index"] for r in group.records] == [0, 1, 2] and group.failed == []
        assert group.rewards == [r["reward"] for r in group.records]
        assert group.advantages == group_advantages(group.rewards)
        assert {r["input"]["id"] for r in group.records} == {rows[group.row_index]["id"]}
    assert {r["row_index"] for r in second} == {0, 1} and len(second) == 2, "per-call num_repeats"


def test_a_rows_own_failure_is_a_record_and_an_outage_past_its_timeout_stops_the_iterator(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], seed=2))
    emulator.inject("openai/gpt-4o-mini", ["finish_reason_error"] * 4)  # the provider breaks off twice per row
    rows = [json.loads(line) for line in write_rows(tmp_path / "rows.jsonl", 6).read_text().splitlines()]
    with emulated_cluster(emulator, retry={**FAST_RETRY, "max_attempts": 2}) as config:

        async def run() -> list[RolloutRecord]:
            async with RolloutClient(config=config, agent_name=AGENT, num_samples_in_parallel=1) as client:
                return await batch(client, rows)

        records = asyncio.run(run())
    assert len(records) == 6
    failed = [r for r in records if r["error"]]
    assert len(failed) == 2 and all(r["reward"] is None and "failed mid-answer" in r["error"] for r in failed)
    assert group_records(records)[failed[0]["row_index"]].failed == [failed[0]]

    dead_upstream = f"http://127.0.0.1:{free_port()}/v1"
    data = {
        "policy_model": openai_model_block(dead_upstream, api_key=API_KEY, retry={"max_attempts": 1}),
        **simple_weather_blocks(),
    }
    with serve_config(data) as (config, _servers):
        head_port = free_port()
        with serve_in_thread(build_head_app(config), port=head_port):
            yielded: list[RolloutRecord] = []

            async def down() -> None:
                head_url = f"http://127.0.0.1:{head_port}"
                async with RolloutClient(head_url=head_url, agent_name=AGENT, outage_timeout_s=1) as client:
                    async for record in client.rollouts(rows[:3]):
                        yielded.append(record)

            with pytest.raises(RunStopped) as stopped:
                asyncio.run(down())
    assert yielded == [], "an outage is never a sample"
    message = str(stopped.value)
    assert "Cannot connect" in message and "ask for the rollouts again" in message and API_KEY not in message


def test_the_budget_spans_every_batch_of_a_client(running: GlobalConfig) -> None:
    row = example_rows(1)
    spent: list[float] = []

    async def steps() -> list[int]:
        counts = []
        async with RolloutClient(config=running, agent_name=AGENT, num_repeats=2, max_cost_usd=0.0011) as client:
            for _ in range(4):
                records: list[RolloutRecord] = []
                try:
                    async for record in client.rollouts(row):
                        records.append(record)
                except BudgetReached as exc:
                    assert "Raise max_cost_usd to continue" in str(exc)
                    counts.append(-len(records))  # negative: the batch ended on the budget
                else:
                    counts.append(len(records))
                spent.append(client.spent_usd)
        return counts

    counts = asyncio.run(steps())
    assert counts == [2, 2, -1, 0], "the third batch has room for one rollout, the fourth for none"
    assert spent[-1] == pytest.approx(5 * STUB_ROLLOUT_USD) and spent[-1] <= 0.0011


def test_bad_rows_and_agents_are_refused_before_any_rollout(running: GlobalConfig, stub: StubUpstream) -> None:
    good = example_rows(2)
    calls = len(stub.requests)

    async def refused(rows: list[Any], **settings: Any) -> None:
        async with RolloutClient(config=running, **settings) as client:
            await batch(client, rows)

    with pytest.raises(InputError, match=r"rows\[1\]: the row has no `responses_create_params`"):
        asyncio.run(refused([good[0], {"question": "weather?"}], agent_name=AGENT))
    with pytest.raises(InputError, match=r"2 of 2 rows name no agent .* rows\[0\], rows\[1\]\. Required: agent_name="):
        asyncio.run(refused(good))
    with pytest.raises(ConfigError, match=rf"1 row\(s\) name agent 'nope' in `agent_ref`.*rows\[1\]\. Agents: {AGENT}"):
        asyncio.run(refused([good[0], {**good[1], "agent_ref": "nope"}], agent_name=AGENT))
    with pytest.raises(ConfigError, match="RolloutClient settings are invalid: num_repeats"):
        RolloutClient(config=running, num_repeats=0)
    assert len(stub.requests) == calls, "nothing ran"


def test_secrets_of_the_config_are_redacted_from_the_records(running: GlobalConfig) -> None:
    row = {**example_rows(1)[0], "note": f"key {API_KEY} pasted by mistake"}

    async def one() -> list[RolloutRecord]:
        async with RolloutClient(config=running, agent_name=AGENT) as client:
            return await batch(client, [row])

    (record,) = asyncio.run(one())
    assert record["input"]["note"] == f"key {REDACTED} pasted by mistake"
    assert row["note"].endswith("by mistake") and API_KEY in row["note"], "the caller's row is left as it was"


def test_leaving_the_loop_early_cancels_the_rollouts_still_running(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], latency_ms=300))
    rows = [json.loads(line) for line in write_rows(tmp_path / "rows.jsonl", 10).read_text().splitlines()]
    with emulated_cluster(emulator) as config:

        async def first_only() -> tuple[RolloutRecord, int, int]:
            async with RolloutClient(config=config, agent_name=AGENT, num_samples_in_parallel=2) as client:
                async with contextlib.aclosing(client.rollouts(rows)) as stream:
                    first = await anext(stream)
                await asyncio.sleep(0.5)  # for the agents to see their callers hang up
                calls = len(emulator.requests)  # the client stays open: only closing the iterator stopped them
                await asyncio.sleep(1.5)
                return first, calls, len(emulator.requests)

        first, calls_at_close, calls_later = asyncio.run(first_only())
    assert first["error"] is None
    assert calls_later == calls_at_close < 2 * len(rows), "no model call after the iterator was closed"


def test_an_unreachable_head_server_says_how_to_point_at_one() -> None:
    async def connect() -> None:
        async with RolloutClient(head_url=f"http://127.0.0.1:{free_port()}", agent_name=AGENT):
            pass

    with pytest.raises(ConfigError, match=r"Cannot reach the ng_run head server .*RolloutClient\(head_url=\.\.\.\)"):
        asyncio.run(connect())


def test_servers_the_library_starts_serve_rollouts_and_stop_with_the_block(
    stub: StubUpstream, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # no env.yaml of the developer's
    configs = [
        "responses_api_models/openai_model/configs/openai_model.yaml",
        "resources_servers/simple_weather/configs/simple_weather.yaml",
    ]
    with serve_in_thread(stub.app()) as upstream_url:
        overrides = [
            f"+policy_base_url={upstream_url}/v1",
            f"+policy_api_key={API_KEY}",
            "+policy_model_name=stub/weather-model",
        ]
        with launch_servers(configs, *overrides) as config:

            async def step() -> list[RolloutRecord]:
                async with nemo_gym.RolloutClient(config=config, agent_name=AGENT, num_repeats=2) as client:
                    return await batch(client, example_rows(3))

            records = asyncio.run(step())
            head = config.head_url
            agent_url = config.instances[AGENT].url()
    assert len(records) == 6 and all(r["error"] is None for r in records)
    for url in (head + "/instances", agent_url + "/health"):
        with pytest.raises(httpx.TransportError):
            httpx.get(url, timeout=2)


@pytest.mark.parametrize(
    ("rewards", "normalize_std", "expected"),
    [
        ([1.0, 0.0, 0.0, 1.0], True, [1.0, -1.0, -1.0, 1.0]),
        ([1.0, 0.0, 0.0, 1.0], False, [0.5, -0.5, -0.5, 0.5]),
        ([0.2, 0.8], True, [-1.0, 1.0]),
        ([0.7, 0.7, 0.7], True, [0.0, 0.0, 0.0]),
        ([0.4], True, [0.0]),
        ([], True, []),
    ],
)
def test_group_advantages(rewards: list[float], normalize_std: bool, expected: list[float]) -> None:
    assert group_advantages(rewards, normalize_std=normalize_std) == pytest.approx(expected, abs=1e-5)


def test_group_advantages_are_centred_and_scaled_to_unit_std() -> None:
    advantages = group_advantages([0.1, 0.4, 0.9, 1.0, 0.0], eps=0.0)
    assert math.fsum(advantages) == pytest.approx(0.0, abs=1e-12)
    assert math.sqrt(math.fsum(a * a for a in advantages) / 5) == pytest.approx(1.0)


@pytest.mark.parametrize("bad", [None, float("nan"), float("inf"), "1.0", True])
def test_group_advantages_refuse_what_is_not_a_reward(bad: Any) -> None:
    with pytest.raises(ValueError, match="leave failed rollouts .* out of the group"):
        group_advantages([1.0, bad])


@pytest.mark.slow
@pytest.mark.local_model
@pytest.mark.skipif(not HAS_LOCAL_EXTRA, reason="needs the [local] extra")
def test_the_grpo_example_runs_two_steps_on_the_bundled_model(tmp_path: Path) -> None:
    script = project_root() / "docs/examples/grpo_loop.py"
    result = subprocess.run(
        [sys.executable, str(script), "--steps", "2", "--rows-per-step", "2", "--num-repeats", "2"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stdout.splitlines()
    steps = [line for line in lines if line.startswith("step ")]
    assert [line.split(":")[0] for line in steps] == ["step 1", "step 2"]
    for line in steps:
        mean = float(line.split("mean reward ")[1].split()[0])
        assert 0.0 <= mean <= 1.0 and "over 4 rollouts" in line
    groups = [line for line in lines if line.startswith("  row weather-")]
    assert len(groups) == 4
    for line in groups:
        rewards = json.loads(line.split("rewards ")[1].split("  ")[0])
        advantages = json.loads(line.split("advantages ")[1].replace("+", ""))
        assert len(rewards) == len(advantages) == 2
        assert advantages == pytest.approx(group_advantages(rewards), abs=0.01)
