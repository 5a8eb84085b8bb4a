"""ng_reverify: stored rollouts re-scored by the current verifier of a running resources server, with no model call;
new rewards beside the previous ones, a summary of what changed, failures and bad lines counted, resumable.

One collection (the stub upstream playing simple_weather's 24 examples, over real loopback HTTP) is re-verified
after the verifier is swapped, on the served server object, for one that scores differently (tests/reverify_*)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from nemo_gym.collection.inputs import InputError
from nemo_gym.collection.output_lock import OutputLock, OutputLocked
from nemo_gym.collection.reverify import ReverifySummary, reverify, settings_from, summary_path
from nemo_gym.collection.run import RunStopped, collect
from nemo_gym.collection.run import settings_from as collection_settings
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.paths import project_root
from nemo_gym.config.secrets import REDACTED
from nemo_gym.config.types import GlobalConfig
from nemo_gym.servers.base import BaseServer
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.head import build_head_app
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.cluster import openai_model_block, serve_config, simple_weather_blocks
from nemo_gym.testing.processes import wait_for_lines
from nemo_gym.testing.stub_upstream import StubUpstream
from tests.reverify_verifiers import (
    all_or_nothing,
    going_down_after,
    judged,
    other_weather,
    passing_mark,
    refusing,
    slowed,
)

EXAMPLES = project_root() / "resources_servers/simple_weather/data/example.jsonl"
API_KEY = "sk-or-v1-reverify-test-key-24680"
AGENT = "simple_weather_simple_agent"


@dataclass
class Cluster:
    config: GlobalConfig
    """The running servers' config plus the head server's port: what a command loads."""
    stub: StubUpstream
    servers: dict[str, BaseServer]
    rollouts: Path
    """simple_weather's 24 examples, collected once; read-only for the tests."""

    @property
    def head_port(self) -> int:
        return int(self.config.data["head_server"]["port"])

    @property
    def model_requests(self) -> int:
        return sum(1 for path, _headers, _body in self.stub.requests if path.endswith("/completions"))


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    stub = StubUpstream(api_key=API_KEY)
    rollouts = tmp_path_factory.mktemp("collected") / "rollouts.jsonl"
    with serve_in_thread(stub.app()) as upstream_url:
        data = {"policy_model": openai_model_block(upstream_url + "/v1", api_key=API_KEY), **simple_weather_blocks()}
        with serve_config(data) as (config, servers):
            head_port = free_port()
            with serve_in_thread(build_head_app(config), port=head_port):
                running = GlobalConfig(data={**config.data, "head_server": {"port": head_port}}, origins={})
                settings = {"agent_name": AGENT, "input_jsonl_fpath": str(EXAMPLES), "output_jsonl_fpath": rollouts}
                collecting = GlobalConfig(data={**running.data, **settings}, origins={})
                asyncio.run(collect(collecting, collection_settings(collecting)))
                yield Cluster(running, stub, servers, rollouts)


def run_reverify(cluster: Cluster, source: Path, output: Path, **settings: Any) -> ReverifySummary:
    data = {**cluster.config.data, "input_jsonl_fpath": str(source), "output_jsonl_fpath": str(output), **settings}
    config = GlobalConfig(data=data, origins={})
    return asyncio.run(reverify(config, settings_from(config)))


def records_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]  # every line must parse


def keyed(records: list[dict[str, Any]]) -> dict[tuple[str, int, str], dict[str, Any]]:
    keys = [(r["row_hash"], r["repeat_index"], r["agent_name"]) for r in records]
    assert len(keys) == len(set(keys)), "no rollout twice"
    return dict(zip(keys, records, strict=True))


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("".join(line + "\n" for line in lines))
    return path


def test_an_unchanged_verifier_gives_every_reward_again_without_a_model_call(cluster: Cluster, tmp_path: Path) -> None:
    before = cluster.model_requests
    output = tmp_path / "rescored.jsonl"

    summary = run_reverify(cluster, cluster.rollouts, output)

    assert cluster.model_requests == before, "no model call"
    assert summary["cost_usd"] == 0.0 and summary["model_calls"] == 0 and summary["model_servers_cost_usd"] == 0.0
    originals, rescored = keyed(records_of(cluster.rollouts)), keyed(records_of(output))
    assert rescored.keys() == originals.keys()
    for key, record in rescored.items():
        original = originals[key]
        assert record["reward"] == record["previous_reward"] == original["reward"]
        assert record["reverified"]["changed"] is False and record["reverified"]["resources_server"] == "simple_weather"
        assert record["called_cities"] == original["called_cities"], "the replayed lookups are the rollout's"
        assert record["response"] == original["response"] and record["input"] == original["input"]
        assert record["usage"] == original["usage"] and record["fingerprint"] == original["fingerprint"]
    assert (summary["rescored"], summary["unchanged"], summary["changed"], summary["failed_now"]) == (24, 24, 0, 0)
    assert summary["replayed_tool_calls"] > 0 and summary["differing_tool_outputs"] == 0
    assert summary["mean_reward_before"] == summary["mean_reward_after"]


def test_a_verifier_that_asks_a_model_shows_in_the_model_servers_figures(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """reverify makes no model call itself; the model servers' ledgers (their /health `spend`) show any made while it
    ran, here by a judge-like verifier."""
    weather = cluster.servers["simple_weather"]
    monkeypatch.setattr(weather, "verify", judged(weather, "policy_model"))
    before = cluster.model_requests

    summary = run_reverify(cluster, cluster.rollouts, tmp_path / "o.jsonl", limit=3)

    assert cluster.model_requests - before == summary["model_calls"] == 3
    assert summary["model_servers_cost_usd"] > 0 and summary["cost_usd"] == 0.0, "no record's cost is the judge's"
    assert "The model servers served 3 calls while this ran" in capsys.readouterr().err


def test_without_replaying_the_tool_calls_a_session_verifier_sees_none(cluster: Cluster, tmp_path: Path) -> None:
    """Why the tool calls are replayed: simple_weather credits only lookups that ran in the session."""
    summary = run_reverify(cluster, cluster.rollouts, tmp_path / "o.jsonl", replay_tools=False)

    assert summary["replayed_tool_calls"] == 0 and summary["up"] == 0 and summary["down"] > 0
    assert all(r["called_cities"] == [] for r in records_of(tmp_path / "o.jsonl"))


def test_tool_calls_that_answer_otherwise_when_replayed_are_counted(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weather = cluster.servers["simple_weather"]
    monkeypatch.setattr(weather, "call_tool", other_weather(weather))

    summary = run_reverify(cluster, cluster.rollouts, tmp_path / "o.jsonl")

    assert summary["differing_tool_outputs"] == summary["replayed_tool_calls"] > 0
    for record in records_of(tmp_path / "o.jsonl"):
        calls = sum(item["type"] == "function_call" for item in record["response"]["output"])
        assert record["reverified"]["differing_tool_outputs"] == record["reverified"]["replayed_tool_calls"] == calls


def test_a_fixed_verifier_rescores_with_previous_rewards_and_a_summary_of_the_changes(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weather = cluster.servers["simple_weather"]
    monkeypatch.setattr(weather, "verify", all_or_nothing(weather))
    before, input_text = cluster.model_requests, cluster.rollouts.read_text()
    output = tmp_path / "rescored.jsonl"

    summary = run_reverify(cluster, cluster.rollouts, output)

    assert cluster.model_requests == before and summary["model_calls"] == 0
    assert cluster.rollouts.read_text() == input_text, "the input is left as it was"
    originals, rescored = keyed(records_of(cluster.rollouts)), keyed(records_of(output))
    old = [originals[k]["reward"] for k in rescored]
    assert sum(passing_mark(r) > r for r in old) > 0 and sum(passing_mark(r) < r for r in old) > 0, "both ways"
    for key, record in rescored.items():
        previous = originals[key]["reward"]
        assert record["previous_reward"] == previous and record["reward"] == passing_mark(previous)
        assert record["reverified"]["changed"] is (record["reward"] != previous)
        assert record["rule"] == "all_or_nothing", "the new verifier's fields are recorded"
        assert record["error"] is None and list(record)[-2:] == ["response", "input"]
    up = sum(passing_mark(r) > r for r in old)
    down = sum(passing_mark(r) < r for r in old)
    assert (summary["up"], summary["down"], summary["changed"]) == (up, down, up + down)
    assert summary["unchanged"] == 24 - up - down and summary["rescored"] == summary["records_read"] == 24
    assert summary["mean_reward_before"] == pytest.approx(sum(old) / 24, abs=1e-6)
    assert summary["mean_reward_after"] == pytest.approx(sum(map(passing_mark, old)) / 24, abs=1e-6)
    assert summary["complete"] is True and summary["skipped"] == {}
    assert json.loads(summary_path(output).read_text()) == summary
    assert summary_path(output).name == "rescored.reverify.json"


def test_failed_rollouts_are_copied_and_a_verify_that_fails_now_is_recorded_then_retried(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lines = cluster.rollouts.read_text().splitlines()
    failed = {**json.loads(lines[0]), "reward": None, "error": "ServerCallError: the provider broke off"}
    for name in ("expected_cities", "called_cities", "reasons"):
        failed.pop(name)
    source = write_lines(tmp_path / "in.jsonl", [json.dumps(failed), *lines[1:]])
    refused = {json.loads(lines[1])["input"]["id"], json.loads(lines[2])["input"]["id"]}
    weather = cluster.servers["simple_weather"]
    monkeypatch.setattr(weather, "verify", refusing(weather, refused))
    output = tmp_path / "out.jsonl"

    summary = run_reverify(cluster, source, output)

    records = keyed(records_of(output))
    assert len(records) == 24
    assert records[(failed["row_hash"], 0, AGENT)] == failed, "a failed rollout is copied through as it was"
    now_failed = [r for r in records.values() if (r.get("reverified") or {}).get("error")]
    assert {r["input"]["id"] for r in now_failed} == refused
    for record in now_failed:
        assert record["reward"] is None and record["previous_reward"] is not None, "never a silent 0"
        assert record["error"].startswith("ReverifyFailed: ") and "cannot score row" in record["error"]
    assert (summary["failed_now"], summary["copied_failed"], summary["rescored"]) == (2, 1, 21)

    again = run_reverify(cluster, source, output)
    assert again["this_run"]["skipped_already_done"] == 24 and again["this_run"]["rescored"] == 0

    monkeypatch.undo()  # the verifier works again
    retried = run_reverify(cluster, source, output, retry_failed=True)
    assert retried["this_run"]["rescored"] == 2 and retried["this_run"]["copied_failed"] == 1
    assert (retried["rescored"], retried["failed_now"], retried["copied_failed"]) == (23, 0, 1)
    records = keyed(records_of(output))
    assert len(records) == 24 and all(r["error"] is None for k, r in records.items() if k[0] != failed["row_hash"])
    for record in (r for r in records.values() if r["input"]["id"] in refused):
        assert record["reward"] == record["previous_reward"], "scored against the reward the rollout first had"
    assert len((tmp_path / "out.jsonl.retried_failures.jsonl").read_text().splitlines()) == 3


def test_an_interrupted_output_is_completed_by_a_rerun_without_losing_or_repeating_a_record(
    cluster: Cluster, tmp_path: Path
) -> None:
    output = tmp_path / "out.jsonl"
    run_reverify(cluster, cluster.rollouts, output, limit=10)
    lines = output.read_text().splitlines()
    output.write_text("\n".join(lines[:6]) + "\n" + lines[6][:40])  # a crash: 3 records lost, one torn

    summary = run_reverify(cluster, cluster.rollouts, output)

    assert summary["this_run"]["skipped_already_done"] == 6 and summary["this_run"]["rescored"] == 18
    assert summary["rescored"] == 24 and summary["complete"] is True, "the summary describes the whole output"
    assert keyed(records_of(output)).keys() == keyed(records_of(cluster.rollouts)).keys()
    assert records_of(output)[:6] == [json.loads(line) for line in lines[:6]], "done records are kept as they were"
    assert (tmp_path / "out.jsonl.torn").read_text() == lines[6][:40] + "\n"

    fresh = run_reverify(cluster, cluster.rollouts, output, overwrite=True, limit=5)
    assert fresh["rescored"] == 5 and len(records_of(output)) == 5


def test_an_unreachable_resources_server_stops_the_run_without_recording_it_as_failures(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    weather = cluster.servers["simple_weather"]
    monkeypatch.setattr(weather, "verify", going_down_after(weather, 5))
    output = tmp_path / "out.jsonl"

    with pytest.raises(RunStopped) as stopped:
        run_reverify(cluster, cluster.rollouts, output, num_samples_in_parallel=1)

    message = str(stopped.value)
    assert "went away" in message and "resume with: ng_reverify" in message and "Interrupted" not in message
    records = records_of(output)
    assert len(records) == 5 and all(r["error"] is None for r in records), "an outage is not the records' failure"
    assert json.loads(summary_path(output).read_text())["stopped_early"]
    monkeypatch.undo()
    assert run_reverify(cluster, cluster.rollouts, output)["rescored"] == 24


def test_bad_lines_are_counted_and_explained_and_the_rest_is_rescored(
    cluster: Cluster, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = cluster.rollouts.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    without_response = {**records[2], "response": None}
    foreign_agent = {**records[3], "agent_name": "math_simple_agent"}
    source = write_lines(
        tmp_path / "in.jsonl",
        [
            lines[0],
            json.dumps(records[1]["input"]),  # a dataset row, not a record
            json.dumps(without_response),
            json.dumps(foreign_agent),
            lines[0],  # the same rollout again
            "[1, 2, 3]",
            "",  # a blank line is no problem
            "{not JSON",
            *lines[4:],
            lines[1][:50],  # a run was writing the file: its last line is torn
        ],
    )
    source.write_text(source.read_text().rstrip("\n"))
    output = tmp_path / "out.jsonl"

    summary = run_reverify(cluster, source, output)

    assert summary["rescored"] == 1 + 20 and summary["records_read"] == 1 + 2 + 1 + 20
    skipped = summary["skipped"]
    assert skipped["lines that are not rollout records, having no row_hash"] == 2
    assert skipped["records without the `input` row or the `response` to verify"] == 1
    assert skipped["records repeating a rollout another record of the input holds"] == 1
    assert skipped["torn last line (a run was writing the file)"] == 1
    assert skipped["lines that are not JSON"] == 1 and len(skipped) == 6, "a blank line is not skipped as a problem"
    unknown = next(reason for reason in skipped if "math_simple_agent" in reason)
    assert "does not configure" in unknown and "+resources_server=" in unknown and "simple_weather" in unknown
    err = capsys.readouterr().err
    assert f"Skipped in {source}:" in err and "[lines 2, 6]" in err, "where each problem is"
    assert "[line 3]" in err and "[line 8]" in err

    with_override = run_reverify(cluster, source, tmp_path / "all.jsonl", resources_server="simple_weather")
    assert with_override["rescored"] == 22, "+resources_server verifies the unknown agent's records too"
    with pytest.raises(ConfigError, match="nope is not a running resources server. Running: simple_weather"):
        run_reverify(cluster, source, tmp_path / "x.jsonl", resources_server="nope")
    with pytest.raises(InputError, match="(?s)holds no rollout records.*not its dataset"):
        run_reverify(cluster, EXAMPLES, tmp_path / "y.jsonl")
    with pytest.raises(InputError, match="does not exist"):
        run_reverify(cluster, tmp_path / "missing.jsonl", tmp_path / "z.jsonl")
    with pytest.raises(InputError, match="is the input file"):
        run_reverify(cluster, source, source)


def test_secrets_in_a_record_are_redacted_in_the_output(cluster: Cluster, tmp_path: Path) -> None:
    record = json.loads(cluster.rollouts.read_text().splitlines()[0])
    record["response"]["output"][-1]["content"][0]["text"] += f" (my key is {API_KEY})"
    output = tmp_path / "out.jsonl"

    run_reverify(cluster, write_lines(tmp_path / "in.jsonl", [json.dumps(record)]), output)

    assert API_KEY not in output.read_text() and REDACTED in output.read_text()


def test_the_output_has_one_writer_and_the_servers_must_be_running(cluster: Cluster, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    with OutputLock.acquire(output, command="another ng_reverify"), pytest.raises(OutputLocked, match="another"):
        run_reverify(cluster, cluster.rollouts, output)
    nowhere = GlobalConfig(
        data={"head_server": {"port": free_port()}, "input_jsonl_fpath": str(cluster.rollouts)}, origins={}
    )
    nowhere.data["output_jsonl_fpath"] = str(output)
    with pytest.raises(ConfigError, match="Cannot reach the ng_run head server"):
        asyncio.run(reverify(nowhere, settings_from(nowhere)))


def reverify_command(cluster: Cluster, output: Path, *extra: str, source: Path | None = None) -> list[str]:
    return [
        sys.executable,
        "-m",
        "nemo_gym.cli.reverify",
        f"+input_jsonl_fpath={source or cluster.rollouts}",
        f"+output_jsonl_fpath={output}",
        f"+head_server.port={cluster.head_port}",
        *extra,
    ]


def command_env() -> dict[str, str]:
    """This checkout first on the path, whatever checkout is installed."""
    return {"PYTHONPATH": os.pathsep.join([str(project_root()), os.environ.get("PYTHONPATH", "")])}


def run_command(command: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=120, env={**os.environ, **command_env()}
    )


def test_the_command_prints_the_summary_and_refuses_bad_settings(cluster: Cluster, tmp_path: Path) -> None:
    output = tmp_path / "out.jsonl"
    done = run_command(reverify_command(cluster, output, "+limit=3"), tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Summary (also in" in done.stdout and "rescored" in done.stdout and len(records_of(output)) == 3

    typo = run_command(reverify_command(cluster, output, "+replay_tool=false"), tmp_path)
    assert typo.returncode == 2 and "did you mean +replay_tools?" in typo.stderr and "Traceback" not in typo.stderr

    ghost = {**records_of(cluster.rollouts)[0], "agent_name": "ghost_agent"}
    source = write_lines(tmp_path / "ghost_in.jsonl", [json.dumps(ghost)])
    nothing = run_command(reverify_command(cluster, tmp_path / "ghost.jsonl", source=source), tmp_path)
    assert nothing.returncode == 1, "nothing could be re-scored"
    assert "agent 'ghost_agent', which the running ng_run does not configure" in nothing.stderr


@pytest.mark.slow
@pytest.mark.parametrize("how", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=lambda s: s.name)
def test_a_stopped_or_killed_run_is_completed_by_the_same_command(
    cluster: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: signal.Signals
) -> None:
    weather = cluster.servers["simple_weather"]
    monkeypatch.setattr(weather, "verify", slowed(weather, 0.25))
    output = tmp_path / "out.jsonl"
    command = reverify_command(cluster, output, "+num_samples_in_parallel=2")
    run = CommandProcess(command, cwd=tmp_path, env=command_env())
    try:
        wait_for_lines(output, 4)
        run.send(how)
        status = run.wait(30)
    finally:
        run.close()
    if how == signal.SIGKILL:
        assert status == -signal.SIGKILL
    else:
        assert status == 130, run.output
        assert "Stopping: no new records" in run.output and "resume with: ng_reverify" in run.output
        assert json.loads(summary_path(output).read_text())["interrupted"] is True
    done = output.read_text().count("\n")
    assert 4 <= done < 24

    monkeypatch.undo()
    finish = run_command(command, tmp_path)
    assert finish.returncode == 0, finish.stderr[-2000:]
    assert "Resuming" in finish.stdout
    assert keyed(records_of(output)).keys() == keyed(records_of(cluster.rollouts)).keys()
    summary = json.loads(summary_path(output).read_text())
    assert summary["rescored"] == 24 and summary["complete"] is True and summary["model_calls"] == 0
