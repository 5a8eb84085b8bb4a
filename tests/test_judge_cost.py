"""An LLM judge's tokens and dollars, as a resources server reports them from /verify (`judge_usage`,
`judge_cost_by_model`), in every place cost is counted: the record (beside the policy's, inside `cost_usd`), the
metrics, `+max_cost_usd`, the model servers' ledger check, ng_compare_models and the viewer.

The end-to-end tests run simple_weather on the OpenRouter emulator with its verifier swapped for one that also asks a
judge model server (a dearer model than the policy's) once per rollout, through real HTTP, as a judging environment
does; a judge that fails answers /verify with the agreed 502 `judge_error` body.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest

from nemo_gym.collection.metrics import Metrics
from nemo_gym.collection.records import build_record
from nemo_gym.collection.run import collect, format_by_agent, settings_from
from nemo_gym.compare.report import JUDGE_COLUMN, columns, usd, write_report
from nemo_gym.compare.statistics import Comparison, summarize
from nemo_gym.config.types import GlobalConfig
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.protocol.types import RECORD_KEYS, CollectionSummary, JSONObject, RolloutRecord, Usage
from nemo_gym.protocol.usage import NO_JUDGE, JudgeSpend, add_usage, empty_usage, judge_spend_of
from nemo_gym.servers.base import BaseServer
from nemo_gym.servers.head import build_head_app
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.resources import BaseResourcesServer, Session, VerifyRequest, VerifyResponse
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.browser import headless_chromium, require_browser
from nemo_gym.testing.cluster import openai_model_block, serve_config, simple_weather_blocks
from nemo_gym.testing.emulated import EMULATOR_KEEP_ALIVE_S, EMULATOR_KEY, write_rows
from nemo_gym.viewer import RolloutIndex, build_app

AGENT = "simple_weather_simple_agent"
POLICY = "openai/gpt-4o-mini"
JUDGE = "openai/gpt-4-turbo"
"""Some 60 times the policy's price per token: the judge's dollars are most of a rollout's, as they often are."""
JUDGE_SERVER = "judge_model"


def usage(input_tokens: int, output_tokens: int, cost: float | None, *, calls: int = 1) -> Usage:
    spent = add_usage(empty_usage(), {"input_tokens": input_tokens, "output_tokens": output_tokens, "cost": cost})
    return {**spent, "total_tokens": input_tokens + output_tokens, "calls": calls}


def policy_response(cost: float | None) -> JSONObject:
    """A final response as simple_agent returns it: usage summed, one turn on the policy model."""
    return {
        "model": POLICY,
        "output": [],
        "usage": usage(100, 20, cost, calls=2),
        "nemo_gym": {
            "models": [POLICY],
            "retries": 0,
            "turns": [{"model": POLICY, "cost": None if cost is None else cost / 2}] * 2,
        },
    }


ROW: JSONObject = {"responses_create_params": {"input": "Weather in Paris?"}, "expected_cities": ["Paris"]}


def record_of(verdict: JSONObject, **extra: Any) -> dict[str, Any]:
    return dict(
        build_record(row=ROW, row_index=0, repeat_index=0, agent_name=AGENT, result=verdict, error=None, latency_s=1.0)
        if not extra
        else build_record(row=ROW, row_index=0, repeat_index=0, agent_name=AGENT, latency_s=1.0, **extra)
    )


# ---------------------------------------------------------------- the record


def test_a_record_without_a_judge_has_null_judge_fields_and_the_policys_cost() -> None:
    record = record_of({"reward": 1.0, "reasons": ["ok"], "response": policy_response(0.0003)})
    assert list(record)[: len(RECORD_KEYS) - 2] == list(RECORD_KEYS[:-2])  # the record's own keys, in order
    assert list(record)[-3:] == ["reasons", "response", "input"]
    assert list(RECORD_KEYS).index("judge_usage") == list(RECORD_KEYS).index("cost_usd") + 1
    assert record["judge_usage"] is None and record["judge_cost_usd"] is None
    assert record["cost_usd"] == 0.0003 == record["usage"]["cost"]  # exactly the policy's: not re-rounded
    assert record["cost_by_model"] == {POLICY: 0.0003}


def test_a_judged_record_adds_the_judges_cost_to_the_rollouts_and_keeps_the_policys_usage_apart() -> None:
    judge = usage(900, 40, 0.0105, calls=2)
    verdict = {
        "reward": 0.8,
        "judge_usage": judge,
        "judge_cost_by_model": {JUDGE: 0.0105},
        "response": policy_response(0.0003),
    }
    record = record_of(verdict)
    assert record["usage"] == policy_response(0.0003)["usage"]  # the policy's alone
    assert record["judge_usage"] == judge
    assert record["judge_cost_usd"] == 0.0105
    assert record["cost_usd"] == pytest.approx(0.0108)
    assert record["cost_by_model"] == {POLICY: 0.0003, JUDGE: 0.0105}
    assert record["models"] == [POLICY]  # the models that played the policy
    assert "judge_cost_by_model" not in record  # not a verifier field either
    assert record["cost_estimated"] is False


def test_one_model_that_both_plays_and_judges_is_billed_once_per_dollar_in_cost_by_model() -> None:
    verdict = {
        "reward": 1.0,
        "judge_usage": {**usage(50, 5, 0.0001), "cost_estimated": True},
        "judge_cost_by_model": {POLICY: 0.0001},
        "response": policy_response(0.0003),
    }
    record = record_of(verdict)
    assert record["cost_by_model"] == {POLICY: pytest.approx(0.0004)}
    assert record["cost_estimated"] is True  # the judge's cost was estimated from prices


def test_a_judge_cost_given_only_per_model_is_the_judges_cost() -> None:
    verdict = {
        "reward": 1.0,
        "judge_usage": usage(50, 5, None),
        "judge_cost_by_model": {JUDGE: 0.002, POLICY: 0.0005},
        "response": policy_response(None),
    }
    record = record_of(verdict)
    assert record["judge_cost_usd"] == pytest.approx(0.0025) == record["judge_usage"]["cost"]
    assert record["cost_usd"] == pytest.approx(0.0025)  # the policy's cost is unknown: the known part


def test_a_failed_rollouts_record_carries_what_its_policy_and_judge_had_spent() -> None:
    spent = usage(300, 60, 0.0004, calls=3)
    judge = JudgeSpend(usage(800, 0, 0.008), {JUDGE: 0.008})
    record = record_of({}, result=None, error="ServerCallError: judge failed", spent=spent, judge=judge)
    assert record["reward"] is None and record["usage"] == spent
    assert record["judge_cost_usd"] == 0.008 and record["judge_usage"] == judge.usage
    assert record["cost_usd"] == pytest.approx(0.0084)
    assert record["cost_by_model"] == {JUDGE: 0.008}


@pytest.mark.parametrize(
    ("fields", "named"),
    [
        ({"judge_usage": "12 tokens"}, "`judge_usage` is a str, not a JSON object"),
        ({"judge_usage": {"input_tokens": -3, "cost": 0.1}}, "`input_tokens`: -3"),
        ({"judge_usage": {"cost": "0.01"}}, "`cost`: '0.01'"),
        ({"judge_usage": {"calls": True}}, "`calls`: True"),
        ({"judge_cost_by_model": [0.01]}, "`judge_cost_by_model` must be an object of served model id to USD"),
        ({"judge_cost_by_model": {JUDGE: None}}, "`judge_cost_by_model` must be an object"),
    ],
)
def test_a_judge_spend_of_another_shape_is_refused_saying_what_and_where(fields: JSONObject, named: str) -> None:
    with pytest.raises(ValueError) as caught:
        judge_spend_of({"reward": 1.0, **fields}, where="resources server 'weather' /verify")
    message = str(caught.value)
    assert message.startswith("resources server 'weather' /verify: ") and named in message
    assert "fix the resources server's /verify" in message


def test_a_verify_answer_without_judge_fields_has_no_judge_and_zero_calls_stay_zero() -> None:
    assert judge_spend_of({"reward": 1.0}, where="x") is NO_JUDGE
    assert judge_spend_of({"reward": 1.0, "judge_usage": None, "judge_cost_by_model": None}, where="x").empty
    idle = judge_spend_of({"judge_usage": {**usage(0, 0, None), "calls": 0}}, where="x")
    assert idle.usage is not None and idle.usage["calls"] == 0 and idle.cost_usd is None
    assert add_usage(empty_usage(), idle.usage)["calls"] == 0  # a sum of no calls adds none
    assert add_usage(empty_usage(), {"input_tokens": 5})["calls"] == 1  # one upstream call's usage is one call


# ---------------------------------------------------------------- metrics


def judged_record(reward: float | None, policy: float, judge: float | None, *, error: str | None = None) -> JSONObject:
    verdict: JSONObject = {"response": policy_response(policy)}
    if reward is not None:
        verdict["reward"] = reward
    if judge is not None:
        verdict |= {"judge_usage": usage(1000, 10, judge), "judge_cost_by_model": {JUDGE: judge}}
    if error is None:
        return record_of(verdict)
    spent = policy_response(policy)["usage"]
    spend = judge_spend_of(verdict, where="test")
    return record_of({}, result=None, error=error, spent=spent, judge=spend)


def test_metrics_count_the_judges_dollars_in_every_cost_figure_and_its_tokens_apart() -> None:
    metrics = Metrics()
    for record in (
        judged_record(1.0, 0.001, 0.01),
        judged_record(0.5, 0.001, 0.02),
        judged_record(1.0, 0.001, None),  # a rollout the verifier scored without its judge
        judged_record(None, 0.002, 0.03, error="ServerCallError: the judge failed"),
        judged_record(0.0, 0.001, None),
    ):
        metrics.add(record)
    summary = metrics.summary()
    assert summary["input_tokens"] == 5 * 100 and summary["model_calls"] == 5 * 2  # the policy's alone
    assert (
        summary["judge_calls"] == 3 and summary["judge_input_tokens"] == 3000 and summary["judge_output_tokens"] == 30
    )
    assert summary["judge_cost_usd"] == pytest.approx(0.06)
    assert summary["cost_usd"] == pytest.approx(0.006 + 0.06)
    assert summary["failed_cost_usd"] == pytest.approx(0.032)  # the failed rollout's judge too
    assert summary["cost_per_rollout_usd"] == pytest.approx(0.066 / 5)
    assert summary["cost_per_reward_point_usd"] == pytest.approx(0.066 / 2.5)
    assert metrics.run_figures()["cost_usd"] == summary["cost_usd"]
    assert metrics.run_figures()["judge_cost_usd"] == summary["judge_cost_usd"]
    metrics.add_unrecorded_judge(JudgeSpend(None, {JUDGE: 0.004}))
    assert metrics.spent_usd == pytest.approx(0.066 + 0.004)  # what +max_cost_usd counts
    assert metrics.run_figures()["unrecorded_cost_usd"] == pytest.approx(0.004)


def test_metrics_without_a_judge_keep_their_figures() -> None:
    metrics = Metrics()
    for policy in (0.001, 0.002):
        metrics.add(judged_record(1.0, policy, None))
    summary = metrics.summary()
    assert summary["cost_usd"] == metrics.usage["cost"] == pytest.approx(0.003)
    assert (summary["judge_cost_usd"], summary["judge_calls"], summary["judge_input_tokens"]) == (None, 0, 0)


def test_the_by_agent_table_shows_the_judges_cost_only_when_some_agent_had_one() -> None:
    plain = Metrics()
    plain.add(judged_record(1.0, 0.001, None))
    judged = Metrics()
    judged.add(judged_record(1.0, 0.001, 0.01))
    without = format_by_agent({"a": plain.summary()})
    assert "judge_cost_usd" not in without
    table = format_by_agent({"a": plain.summary(), "b": judged.summary()}).splitlines()
    assert table[0].split() == ["agent", "rollouts", "failed", "mean_reward", "pass_rate", "cost_usd", "judge_cost_usd"]
    assert table[1].split()[-1] == "None" and table[2].split()[-2:] == ["0.011", "0.01"]


# ---------------------------------------------------------------- end to end: a judging environment


class JudgeFailed(Exception):
    """The judge's model call failed after others of the same rollout had been billed."""

    def __init__(self, spend: JSONObject, *, outage: bool = False) -> None:
        super().__init__("the judge model failed")
        self.spend = spend
        self.outage = outage


@dataclass
class Judging:
    """simple_weather served with a judge: the verifier's own reward, plus one judge call per rollout whose usage
    and cost it reports. `fail_first`: that many verifications fail after the judge was billed (judge_error 502);
    `outage`: those failures say the system was down. `spend_shape`: what to report instead of the real spend."""

    server: BaseResourcesServer
    fail_first: int = 0
    outage: bool = False
    spend_shape: JSONObject | None = None
    verified: int = 0
    judge_usd: float = 0.0

    async def verify(self, session: Session, request: VerifyRequest) -> VerifyResponse:
        verdict = await type(self.server).verify(self.server, session, request)
        answer = await self.server.servers.post(
            JUDGE_SERVER,
            "/v1/responses",
            {"input": f"Is this answer about {session.row.get('expected_cities')} right?"},
        )
        cost = float(answer["usage"]["cost"])
        self.judge_usd += cost
        spend: JSONObject = {
            "judge_usage": add_usage(empty_usage(), answer["usage"]),
            "judge_cost_by_model": {answer["nemo_gym"]["served_model"]: cost},
        }
        self.verified += 1
        if self.verified <= self.fail_first:
            raise JudgeFailed(spend, outage=self.outage)
        return VerifyResponse(**{**verdict.model_dump(), **(self.spend_shape or spend)})

    def error_content(self, exc: Exception) -> tuple[JSONObject, int]:
        """The agreed answer of a /verify whose judge failed; everything else as the server base answers it."""
        if isinstance(exc, JudgeFailed):
            flag = {"outage": True} if exc.outage else {}
            return {"error": {"message": str(exc), "type": "judge_error", **exc.spend, **flag}}, 502
        return BaseServer.error_content(self.server, exc)


@dataclass
class Cluster:
    emulator: OpenRouterEmulator
    config: GlobalConfig
    weather: BaseResourcesServer


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """The emulator playing both models; the policy and the judge each have their own model server."""
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], seed=3))
    with serve_in_thread(emulator.app(), keep_alive_s=EMULATOR_KEEP_ALIVE_S) as url:
        data = {
            "policy_model": openai_model_block(url + "/api/v1", api_key=EMULATOR_KEY, model=POLICY),
            JUDGE_SERVER: openai_model_block(url + "/api/v1", api_key=EMULATOR_KEY, model=JUDGE),
            **simple_weather_blocks(),
        }
        with serve_config(data) as (config, servers):
            head_port = free_port()
            with serve_in_thread(build_head_app(config), port=head_port):
                running = GlobalConfig(data={**config.data, "head_server": {"port": head_port}}, origins={})
                weather = servers["simple_weather"]
                assert isinstance(weather, BaseResourcesServer)
                yield Cluster(emulator, running, weather)


@contextmanager
def judging(cluster: Cluster, **settings: Any) -> Iterator[Judging]:
    judge = Judging(cluster.weather, **settings)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cluster.weather, "verify", judge.verify)
        patch.setattr(cluster.weather, "error_content", judge.error_content)
        yield judge


def collect_rows(cluster: Cluster, rows: Path, output: Path, **settings: Any) -> CollectionSummary:
    data = {
        **cluster.config.data,
        "agent_name": AGENT,
        "input_jsonl_fpath": str(rows),
        "output_jsonl_fpath": str(output),
        **settings,
    }
    config = GlobalConfig(data=data, origins={})
    return asyncio.run(collect(config, settings_from(config)))


def records_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def policy_usd(record: dict[str, Any]) -> float:
    return float((record["usage"] or {}).get("cost") or 0.0)


@pytest.fixture(scope="module")
def judged_output(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CollectionSummary]:
    """Eight judged rollouts, collected once for the tests that read them."""
    folder = tmp_path_factory.mktemp("judged")
    before = cluster.emulator.spent_usd
    with judging(cluster) as judge:
        summary = collect_rows(cluster, write_rows(folder / "rows.jsonl", 8), folder / "out.jsonl")
    assert judge.verified == 8
    assert cluster.emulator.spent_usd - before == pytest.approx(summary["this_run"]["cost_usd"])
    return folder / "out.jsonl", summary


def test_judged_rollouts_record_the_judges_cost_and_every_dollar_the_upstream_billed(
    cluster: Cluster, judged_output: tuple[Path, CollectionSummary]
) -> None:
    output, summary = judged_output
    records = records_of(output)
    assert len(records) == 8 and all(r["error"] is None for r in records)
    for record in records:
        assert record["judge_usage"]["calls"] == 1 and record["judge_usage"]["input_tokens"] > 0
        assert record["judge_cost_usd"] == record["judge_usage"]["cost"] > 0
        assert record["cost_usd"] == pytest.approx(policy_usd(record) + record["judge_cost_usd"])
        assert record["cost_by_model"][JUDGE] == pytest.approx(record["judge_cost_usd"])
        assert sum(record["cost_by_model"].values()) == pytest.approx(record["cost_usd"])
        assert record["models"] == [POLICY] and "judge_cost_by_model" not in record
        assert record["judge_cost_usd"] > 10 * policy_usd(record)  # the dear judge
    assert summary["cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in records))
    assert summary["judge_cost_usd"] == pytest.approx(sum(r["judge_cost_usd"] for r in records))
    assert summary["judge_calls"] == 8
    assert summary["judge_input_tokens"] == sum(r["judge_usage"]["input_tokens"] for r in records)
    assert summary["model_calls"] == sum(r["usage"]["calls"] for r in records)  # the policy's calls
    # The judge's calls went through a model server, so its ledger holds them: the records account for all of it.
    this_run = summary["this_run"]
    assert this_run["model_servers_cost_usd"] == pytest.approx(this_run["cost_usd"])
    assert this_run["judge_cost_usd"] == pytest.approx(summary["judge_cost_usd"])
    written = json.loads(output.with_name("out.metrics.json").read_text())
    assert written["judge_cost_usd"] == summary["judge_cost_usd"]


def test_the_budget_counts_the_judges_dollars(
    cluster: Cluster, judged_output: tuple[Path, CollectionSummary], tmp_path: Path
) -> None:
    _, probe = judged_output
    assert probe["cost_usd"] is not None
    per_rollout = probe["cost_usd"] / probe["rollouts"]
    budget = per_rollout * 12
    with judging(cluster):
        summary = collect_rows(
            cluster,
            write_rows(tmp_path / "rows.jsonl", 80),
            tmp_path / "out.jsonl",
            num_samples_in_parallel=4,
            max_cost_usd=budget,
        )
    records = records_of(tmp_path / "out.jsonl")
    spent = sum(r["cost_usd"] for r in records)
    dearest = max(r["cost_usd"] for r in records)
    assert summary["stopped_early"] and "budget" in summary["stopped_early"]
    assert 6 <= len(records) < 80 and all(r["error"] is None for r in records)
    assert budget - dearest <= spent <= budget + dearest, (spent, budget, dearest)
    assert f"spent ${spent:.6f} of the ${budget:g} budget" in summary["stopped_early"]
    # Counting the policy alone, the run would have gone on: the judge's dollars are what stopped it.
    assert sum(policy_usd(r) for r in records) < budget / 4


def test_a_verify_whose_judge_failed_records_a_failed_rollout_with_the_judges_cost(
    cluster: Cluster, tmp_path: Path
) -> None:
    before = cluster.emulator.spent_usd
    with judging(cluster, fail_first=2) as judge:
        summary = collect_rows(
            cluster, write_rows(tmp_path / "rows.jsonl", 4), tmp_path / "out.jsonl", num_samples_in_parallel=1
        )
    records = records_of(tmp_path / "out.jsonl")
    failed = [r for r in records if r["error"] is not None]
    assert len(records) == 4 and len(failed) == 2
    for record in failed:
        assert "judge model failed" in record["error"] and record["reward"] is None
        assert record["usage"]["calls"] >= 1 and policy_usd(record) > 0  # the policy's spend (`spent`)
        assert record["judge_usage"]["calls"] == 1 and record["judge_cost_usd"] > 0
        assert record["cost_usd"] == pytest.approx(policy_usd(record) + record["judge_cost_usd"])
        assert set(record["cost_by_model"]) == {JUDGE}  # a failed rollout has no turns to name the policy's
    assert summary["failed_cost_usd"] == pytest.approx(sum(r["cost_usd"] for r in failed))
    assert summary["judge_cost_usd"] == pytest.approx(judge.judge_usd)
    assert summary["cost_usd"] == pytest.approx(cluster.emulator.spent_usd - before)


def test_a_judge_spend_that_cannot_be_read_fails_the_rollout_saying_why(cluster: Cluster, tmp_path: Path) -> None:
    with judging(cluster, spend_shape={"judge_usage": {"input_tokens": "many"}}):
        collect_rows(cluster, write_rows(tmp_path / "rows.jsonl", 1), tmp_path / "out.jsonl")
    (record,) = records_of(tmp_path / "out.jsonl")
    assert record["error"].startswith(f"BadVerifyResponse: the /verify answer that agent '{AGENT}' passed on: ")
    assert "`judge_usage` has `input_tokens`: 'many'" in record["error"]
    assert record["usage"]["calls"] >= 1 and record["cost_usd"] == policy_usd(record) > 0  # the policy's is kept


def test_a_rollout_an_outage_broke_at_its_judge_counts_the_judges_dollars_as_unrecorded(
    cluster: Cluster, tmp_path: Path
) -> None:
    before = cluster.emulator.spent_usd
    with judging(cluster, fail_first=1, outage=True) as judge:
        summary = collect_rows(
            cluster, write_rows(tmp_path / "rows.jsonl", 3), tmp_path / "out.jsonl", num_samples_in_parallel=1
        )
    records = records_of(tmp_path / "out.jsonl")
    assert len(records) == 3 and all(r["error"] is None for r in records)  # the broken rollout ran again
    this_run = summary["this_run"]
    assert this_run["rollouts_rerun_after_outage"] == 1
    recorded_judge = sum(r["judge_cost_usd"] for r in records)
    unrecorded, recorded = this_run["unrecorded_cost_usd"], this_run["cost_usd"]
    assert unrecorded is not None and recorded is not None
    assert unrecorded > judge.judge_usd - recorded_judge > 0  # its judge's and its policy's
    billed = cluster.emulator.spent_usd - before
    assert recorded + unrecorded == pytest.approx(billed)
    assert this_run["model_servers_cost_usd"] == pytest.approx(billed)


def test_the_agent_passes_the_judges_spend_on_with_its_failed_run(cluster: Cluster, tmp_path: Path) -> None:
    """The agent's /run error body itself, as the collector reads it: `spent` (the policy's) and the judge's."""
    row = json.loads(write_rows(tmp_path / "rows.jsonl", 1).read_text())
    with judging(cluster, fail_first=1), httpx.Client(trust_env=False, timeout=60) as client:
        answer = client.post(cluster.config.instances[AGENT].url() + "/run", json=row)
    assert answer.status_code == 502
    error = answer.json()["error"]
    assert error["type"] == "downstream_error" and "judge model failed" in error["message"]
    assert error["spent"]["calls"] >= 1 and error["spent"]["cost"] > 0
    assert error["judge_usage"]["calls"] == 1
    assert error["judge_cost_by_model"] == {JUDGE: error["judge_usage"]["cost"]}


# ---------------------------------------------------------------- ng_compare_models


def test_compare_statistics_and_report_show_the_judges_cost(
    judged_output: tuple[Path, CollectionSummary], tmp_path: Path
) -> None:
    output, _ = judged_output
    records = cast(list[RolloutRecord], records_of(output))
    judged = summarize("judged", POLICY, records)
    total = math.fsum(r["cost_usd"] or 0.0 for r in records)
    assert judged.judge_cost_usd == pytest.approx(sum(r["judge_cost_usd"] or 0.0 for r in records))
    assert judged.total_cost_usd == pytest.approx(total)
    assert judged.cost_per_rollout_usd == pytest.approx(total / len(records))  # the judge's dollars included
    without_judge: list[RolloutRecord] = [
        {**r, "judge_usage": None, "judge_cost_usd": None, "cost_usd": (r["usage"] or empty_usage())["cost"]}
        for r in records
    ]
    plain = summarize("plain", POLICY, without_judge)
    assert plain.judge_cost_usd is None
    assert JUDGE_COLUMN not in columns([plain])
    header = columns([judged, plain])
    assert header[header.index("Total cost (USD)") + 1] == JUDGE_COLUMN
    comparison = Comparison(
        title="judged",
        dataset="rows.jsonl",
        rows=8,
        num_repeats=1,
        created_at="2025-01-01T00:00:00Z",
        models=[judged, plain],
        recommendation=None,
    )
    files = write_report(comparison, tmp_path)
    table = [line for line in files.markdown.read_text().splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in table]
    at = cells[0].index(JUDGE_COLUMN)
    judged_row = next(row for row in cells if row[0] == "judged")
    plain_row = next(row for row in cells if row[0] == "plain")
    assert float(judged_row[at]) == pytest.approx(judged.judge_cost_usd, rel=0.01) and plain_row[at] == "–"
    assert "Costs include the LLM judge" in files.markdown.read_text()
    assert f'<th scope="col">{JUDGE_COLUMN}</th>' in files.html.read_text()
    assert "judge_cost_usd" in files.csv.read_text().splitlines()[0]
    only_plain = write_report(comparison.model_copy(update={"models": [plain]}), tmp_path / "plain")
    assert JUDGE_COLUMN not in only_plain.markdown.read_text() and "LLM judge" not in only_plain.html.read_text()


# ---------------------------------------------------------------- the viewer


def test_the_viewer_api_gives_each_rollouts_judge_cost_and_the_files_totals(
    judged_output: tuple[Path, CollectionSummary],
) -> None:
    output, summary = judged_output
    records = records_of(output)
    with (
        serve_in_thread(build_app(RolloutIndex.load(output))) as url,
        httpx.Client(base_url=url, timeout=10, trust_env=False) as api,
    ):
        rows = api.get("/api/rollouts", params={"limit": 100}).json()["rows"]
        meta = api.get("/api/meta").json()
    assert [r["judge_cost_usd"] for r in rows] == [r["judge_cost_usd"] for r in records]
    assert [r["cost_usd"] for r in rows] == [r["cost_usd"] for r in records]
    assert meta["judge_cost_usd"] == pytest.approx(summary["judge_cost_usd"])
    assert meta["cost_usd"] == pytest.approx(summary["cost_usd"])


@pytest.mark.slow
def test_the_viewer_page_shows_the_judges_cost_and_tokens_beside_the_policys(
    judged_output: tuple[Path, CollectionSummary], tmp_path: Path
) -> None:
    output, summary = judged_output  # collected before the browser starts (Playwright's loop would refuse asyncio.run)
    require_browser("viewer browser test")
    record = records_of(output)[0]
    judge, usage_of_policy = record["judge_usage"], record["usage"]
    with (
        serve_in_thread(build_app(RolloutIndex.load(output))) as url,
        headless_chromium() as browser,
    ):
        page = browser.new_page()
        page.route("**/*", lambda route: route.continue_() if "127.0.0.1" in route.request.url else route.abort())
        page.goto(url + "/", wait_until="load")
        page.locator("body[data-ready=true]").wait_for(state="attached")
        header = page.locator("#file-path").inner_text()
        assert header.endswith(f"· cost ${usd(summary['cost_usd'])} (judge ${usd(summary['judge_cost_usd'])})")
        cell = page.locator('#rollouts tbody tr[data-index="0"] td.cost')
        assert cell.inner_text() == usd(record["cost_usd"])
        assert cell.get_attribute("title") == f"judge ${usd(record['judge_cost_usd'])} of it"
        page.locator('#rollouts tbody tr[data-index="0"]').click()
        facts = page.locator('#detail[data-index="0"] #facts')
        facts.wait_for()
        assert facts.locator('dd[data-key="cost"]').inner_text() == (
            f"${usd(record['cost_usd'])} (policy ${usd(usage_of_policy['cost'])} + judge "
            f"${usd(record['judge_cost_usd'])})"
        )
        assert facts.locator('dt:has(+ dd[data-key="tokens"])').inner_text() == "policy tokens"
        assert facts.locator('dd[data-key="judge_tokens"]').inner_text() == (
            f"input {judge['input_tokens']:,} (cached 0) · output {judge['output_tokens']:,} (reasoning 0) · "
            f"total {judge['total_tokens']:,} · 1 model call"
        )
        assert facts.locator(f'dd[data-key="cost_by_model"] li:has-text("{JUDGE}")').count() == 1
        page.screenshot(path=str(tmp_path / "judged.png"), full_page=True)


def test_a_re_verification_reports_what_its_own_judge_cost_apart_from_the_rollouts() -> None:
    from nemo_gym.collection.rescoring import Replay, rescored_record

    original = {"reward": 1.0, "error": None, "cost_usd": 0.002, "judge_cost_usd": 0.001, "response": {}, "input": {}}
    judge = {**empty_usage(), "input_tokens": 40, "output_tokens": 5, "total_tokens": 45, "cost": 0.0007, "calls": 1}
    verdict = {"reward": 0.5, "judge_usage": judge, "judge_cost_by_model": {"openai/gpt-4o-mini": 0.0007}}
    out = rescored_record(original, "rubric_judge", verdict, None, Replay())
    assert out["reward"] == 0.5 and out["previous_reward"] == 1.0
    assert out["reverified"]["judge_cost_usd"] == 0.0007 and out["reverified"]["judge_usage"]["calls"] == 1
    assert out["cost_usd"] == 0.002 and out["judge_cost_usd"] == 0.001  # the rollout's own, unchanged
    assert "judge_usage" not in {k for k in out if k not in original} and "judge_cost_by_model" not in out
