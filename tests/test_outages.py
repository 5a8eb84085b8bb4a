"""An outage is not a sample: when a server or the upstream goes away, the collector records nothing for the rollouts
it broke, waits a bounded time for the system, carries on when it is back and otherwise stops with the command that
resumes. A rollout that fails on its own (a row the provider always refuses) is still recorded. And what a rollout
spent is counted even when it produced no usable sample."""

from __future__ import annotations

import asyncio
import io
import json
import os
import signal
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml
from fastapi import FastAPI, Request

from nemo_gym.collection.collector import CollectionSettings, Collector
from nemo_gym.collection.metrics import Metrics
from nemo_gym.collection.run import Interrupted, RunStopped, metrics_path
from nemo_gym.config.secrets import Redactor
from nemo_gym.config.types import GlobalConfig
from nemo_gym.emulator import EmulatorConfig, OpenRouterEmulator
from nemo_gym.http.lean_client import PeerPool
from nemo_gym.http.server_client import InstanceAddress, ServerClient
from nemo_gym.servers.base import JSONResponse, error_body
from nemo_gym.servers.commands import CommandProcess
from nemo_gym.servers.head import build_head_app
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread
from nemo_gym.testing.cluster import openai_model_block, serve_config, simple_weather_blocks
from nemo_gym.testing.emulated import EMULATOR_KEY, FAST_RETRY, collect_rows, emulated_cluster, write_rows
from nemo_gym.testing.processes import collector_argv, wait_for_lines

AGENT = "simple_weather_simple_agent"
MODEL = "openai/gpt-4o-mini"
QUICK_RETRY = {**FAST_RETRY, "max_attempts": 2, "max_elapsed_s": 5}


def records_of(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def keys_of(records: list[dict[str, Any]]) -> set[tuple[str, int]]:
    return {(r["row_hash"], r["repeat_index"]) for r in records}


class Upstream:
    """The emulator on a fixed port, which a test can take down and bring back (the model server keeps its URL)."""

    def __init__(self, emulator: OpenRouterEmulator) -> None:
        self.emulator = emulator
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/api/v1"
        self._running: ExitStack | None = None

    def start(self) -> None:
        stack = ExitStack()
        stack.enter_context(serve_in_thread(self.emulator.app(), port=self.port))
        self._running = stack

    def stop(self) -> None:
        if self._running is not None:
            self._running.close()
            self._running = None


@contextmanager
def cluster_on(upstream: Upstream) -> Iterator[GlobalConfig]:
    """openai_model pointed at `upstream`, simple_weather and a head server, in this process."""
    upstream.start()
    try:
        block = openai_model_block(upstream.url, api_key=EMULATOR_KEY, model=MODEL, retry=QUICK_RETRY)
        with serve_config({"policy_model": block, **simple_weather_blocks()}) as (config, _servers):
            head_port = free_port()
            with serve_in_thread(build_head_app(config), port=head_port):
                yield GlobalConfig(data={**config.data, "head_server": {"port": head_port}}, origins={})
    finally:
        upstream.stop()


def test_an_upstream_that_goes_away_and_comes_back_breaks_no_rollout(tmp_path: Path) -> None:
    upstream = Upstream(OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], latency_ms=40)))
    rows, output = write_rows(tmp_path / "rows.jsonl", 40), tmp_path / "out.jsonl"
    with cluster_on(upstream) as config:

        def outage() -> None:
            wait_for_lines(output, 5)
            upstream.stop()
            time.sleep(2.0)
            upstream.start()

        fault = threading.Thread(target=outage)
        fault.start()
        summary = collect_rows(config, rows, output, num_samples_in_parallel=4, outage_timeout_s=60)
        fault.join()
    records = records_of(output)
    assert len(records) == len(keys_of(records)) == 40, "every row exactly once"
    assert all(r["error"] is None for r in records), [r["error"] for r in records if r["error"]][:2]
    this_run = summary["this_run"]
    assert this_run["outages"] >= 1 and this_run["rollouts_rerun_after_outage"] >= 1
    assert this_run["outage_wait_s"] >= 1.0


def test_an_upstream_that_stays_down_stops_the_cli_run_and_the_same_command_then_completes_it(
    tmp_path: Path,
) -> None:
    upstream = Upstream(OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], latency_ms=40)))
    upstream.start()
    head_port = free_port()
    (tmp_path / "env.yaml").write_text(
        yaml.safe_dump(
            {
                "policy_base_url": upstream.url,
                "policy_api_key": EMULATOR_KEY,
                "policy_model_name": MODEL,
                "head_server": {"port": head_port},
            }
        )
    )
    ng_run = CommandProcess(
        [
            "ng_run",
            "+config_paths=[responses_api_models/openai_model/configs/openai_model.yaml,"
            " resources_servers/simple_weather/configs/simple_weather.yaml]",
            "+policy_model.responses_api_models.openai_model.retry.max_attempts=2",
            "+policy_model.responses_api_models.openai_model.retry.initial_backoff_s=0.05",
        ],
        cwd=tmp_path,
    )
    try:
        assert ng_run.wait_for("ng_run ready", 90), ng_run.output
        rows, output = write_rows(tmp_path / "rows.jsonl", 40), tmp_path / "out.jsonl"
        command = collector_argv(AGENT, rows, output, head_port, "+outage_timeout_s=3")
        collector = CommandProcess(command, cwd=tmp_path)
        wait_for_lines(output, 5)
        upstream.stop()
        started = time.monotonic()
        assert collector.wait(60) == 3, collector.output
        took = time.monotonic() - started
        assert took < 3 + 30, f"stopped {took:.1f}s after the upstream went away"
        assert "did not answer for" in collector.output and "+outage_timeout_s=3" in collector.output
        assert "re-run the same command to resume: ng_collect_rollouts" in collector.output
        kept = records_of(output)
        assert kept and all(r["error"] is None for r in kept), "no rollout the outage broke is recorded as failed"
        metrics = json.loads(metrics_path(output).read_text())
        assert metrics["rollouts"] == len(kept) and metrics["complete"] is False and metrics["failed"] == 0

        upstream.start()
        again = CommandProcess(command, cwd=tmp_path)
        assert again.wait(120) == 0, again.output
        records = records_of(output)
        assert len(records) == len(keys_of(records)) == 40 and all(r["error"] is None for r in records)
        assert json.loads(metrics_path(output).read_text())["complete"] is True
    finally:
        ng_run.close()
        upstream.stop()


# ------------------------------------------------------------------ telling an outage from a rollout's own failure


def outage_answer() -> JSONResponse:
    return JSONResponse(
        error_body("'policy_model' answered HTTP 503: upstream down", "downstream_error", outage=True), 503
    )


@contextmanager
def scripted_agent(answer: Any) -> Iterator[str]:
    """An agent on loopback whose `/run` answers each row as `answer(row)` says; yields its URL."""
    app = FastAPI()

    @app.post("/run")
    async def run(request: Request) -> Any:
        return answer(await request.json())

    with serve_in_thread(app) as url:
        yield url


async def run_collector(url: str, rows: list[dict[str, Any]], **settings: Any) -> tuple[Collector, list[dict]]:
    out = io.StringIO()
    async with PeerPool() as pool:
        servers = ServerClient({"agent": InstanceAddress("agent", "responses_api_agents", "x", url)}, pool)
        collector = Collector(
            CollectionSettings(
                agent_name="agent", input_jsonl_fpath=Path("in"), output_jsonl_fpath=Path("out"), **settings
            ),
            servers,
            Redactor([]),
        )
        await collector.run(rows, collector.plan(rows, set()), out)
    return collector, [json.loads(line) for line in out.getvalue().splitlines()]


def row(i: int) -> dict[str, Any]:
    return {"id": i, "responses_create_params": {"input": f"question {i}"}}


def test_a_row_that_always_fails_like_an_outage_while_others_pass_is_recorded_as_its_own_failure() -> None:
    def answer(body: dict[str, Any]) -> Any:
        if body["id"] == 3:
            return outage_answer()
        time.sleep(0.02)
        return {"reward": 1.0, "response": {"output": []}}

    with scripted_agent(answer) as url:
        collector, records = asyncio.run(
            run_collector(url, [row(i) for i in range(12)], num_samples_in_parallel=2, max_rollout_attempts=3)
        )
    assert collector.stop_reason is None and len(records) == 12
    (failed,) = [r for r in records if r["error"]]
    assert failed["input"]["id"] == 3 and "upstream down" in failed["error"]
    assert "failed this way 3 times while other rollouts got answers" in failed["error"]


def test_when_nothing_gets_through_nothing_is_recorded_and_the_run_stops_after_the_wait() -> None:
    with scripted_agent(lambda body: outage_answer()) as url:
        started = time.monotonic()
        collector, records = asyncio.run(
            run_collector(url, [row(i) for i in range(6)], num_samples_in_parallel=3, outage_timeout_s=2)
        )
    assert records == [], "an outage is never a sample"
    assert collector.stop_reason is not None and "did not answer for" in collector.stop_reason
    assert "upstream down" in collector.stop_reason and "re-run the same command" in collector.stop_hint
    assert 2 <= time.monotonic() - started < 15
    assert collector.metrics.requeued >= 3 and collector.metrics.outages == 1, "the 3 in flight, then probes"


def test_an_unreachable_agent_is_an_outage_not_a_failure() -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    collector, records = asyncio.run(
        run_collector(dead, [row(i) for i in range(3)], outage_timeout_s=1, max_rollout_attempts=2)
    )
    assert records == [] and collector.stop_reason is not None and "Cannot reach 'agent'" in collector.stop_reason


def test_a_rows_own_error_is_recorded_at_once() -> None:
    def answer(body: dict[str, Any]) -> Any:
        if body["id"] == 1:
            return JSONResponse(error_body("verifier crashed on this row", "downstream_error"), 500)
        return {"reward": 0.5, "response": {"output": []}}

    with scripted_agent(answer) as url:
        collector, records = asyncio.run(run_collector(url, [row(i) for i in range(4)]))
    assert len(records) == 4 and collector.metrics.requeued == 0
    assert [r["input"]["id"] for r in records if r["error"]] == [1]


# ------------------------------------------------------------------ every dollar counted


def test_a_failed_rollout_records_what_its_model_calls_spent(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY]))
    emulator.inject(MODEL, ["none", "finish_reason_error"])  # the first call is billed, the second breaks off
    rows, output = write_rows(tmp_path / "rows.jsonl", 1), tmp_path / "out.jsonl"
    with emulated_cluster(emulator, retry={**FAST_RETRY, "max_attempts": 1}) as config:
        summary = collect_rows(config, rows, output)
    (record,) = records_of(output)
    assert record["error"] and "failed mid-answer" in record["error"]
    assert record["usage"]["calls"] == 1 and record["cost_usd"] == pytest.approx(emulator.spent_usd)
    assert record["cost_usd"] > 0
    assert summary["failed_cost_usd"] == pytest.approx(record["cost_usd"])
    assert summary["wasted_cost_usd"] == pytest.approx(record["cost_usd"])
    assert summary["cost_usd"] == pytest.approx(emulator.spent_usd), "every dollar the upstream billed"


def test_what_rollouts_broken_by_an_outage_spent_is_counted_and_kept_across_runs(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY]))
    emulator.inject(MODEL, ["none", *["unavailable"] * 400])  # one billed call, then the provider is down
    rows, output = write_rows(tmp_path / "rows.jsonl", 1), tmp_path / "out.jsonl"
    with emulated_cluster(emulator, retry={**FAST_RETRY, "max_attempts": 2}) as config:
        with pytest.raises(RunStopped):
            collect_rows(config, rows, output, outage_timeout_s=1)
        spent = emulator.spent_usd
        metrics = json.loads(metrics_path(output).read_text())
        assert spent > 0 and records_of(output) == []
        assert metrics["this_run"]["unrecorded_cost_usd"] == pytest.approx(spent)
        assert metrics["unrecorded_cost_usd"] == metrics["wasted_cost_usd"] == pytest.approx(spent)
        assert emulator.clear_injected() > 0  # the provider is back
        summary = collect_rows(config, rows, output)
    assert summary["complete"] is True and summary["this_run"]["unrecorded_cost_usd"] is None
    assert summary["unrecorded_cost_usd"] == pytest.approx(spent), "the first run's waste is still counted"
    assert summary["cost_usd"] + summary["unrecorded_cost_usd"] == pytest.approx(emulator.spent_usd)


def test_the_budget_counts_what_unrecorded_rollouts_spent() -> None:
    metrics = Metrics()
    metrics.add({"error": None, "reward": 1.0, "usage": {"cost": 0.25, "calls": 1}, "cost_usd": 0.25})
    metrics.add_unrecorded({"cost": 0.5, "calls": 2})
    assert metrics.spent_usd == pytest.approx(0.75)
    assert metrics.run_figures()["unrecorded_cost_usd"] == pytest.approx(0.5)


def test_an_agent_abandons_a_rollout_whose_caller_hung_up(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], latency_ms=1500))
    rows = write_rows(tmp_path / "rows.jsonl", 1)
    row_body = rows.read_text().splitlines()[0].encode()
    with emulated_cluster(emulator) as config:
        port = int(config.data[AGENT]["responses_api_agents"]["simple_agent"]["port"])
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(
                b"POST /run HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                + f"Content-Length: {len(row_body)}\r\n\r\n".encode()
                + row_body
            )
            time.sleep(0.5)  # the first model call is under way
        time.sleep(3.0)  # long enough for the first call to end and a second to start, had the rollout gone on
        calls = [r for r in emulator.requests if r.path.endswith("/chat/completions")]
    assert len(calls) == 1, "no model call after the collector hung up"


def test_the_model_servers_ledger_counts_what_cancelled_rollouts_spent(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY], latency_ms=800))
    rows, output = write_rows(tmp_path / "rows.jsonl", 4), tmp_path / "out.jsonl"

    def interrupt_once_every_rollout_is_calling() -> None:
        deadline = time.monotonic() + 30
        while len(emulator.requests) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGINT)  # the collector's own handler: stop, and with no drain, cancel

    with emulated_cluster(emulator) as config:
        threading.Thread(target=interrupt_once_every_rollout_is_calling).start()
        with pytest.raises(Interrupted):
            collect_rows(config, rows, output, num_samples_in_parallel=4, drain_timeout_s=0)
        billed = emulator.spent_usd
    this_run = json.loads(metrics_path(output).read_text())["this_run"]
    assert records_of(output) == [] and this_run["cost_usd"] is None
    assert billed > 0 and this_run["model_servers_cost_usd"] == pytest.approx(billed)
    assert len([r for r in emulator.requests if r.path.endswith("/chat/completions")]) == 4, (
        "the agents abandoned the cancelled rollouts: no second call"
    )


def test_the_model_servers_ledger_agrees_with_the_records_of_a_clean_run(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY]))
    rows, output = write_rows(tmp_path / "rows.jsonl", 6), tmp_path / "out.jsonl"
    with emulated_cluster(emulator) as config:
        summary = collect_rows(config, rows, output)
    this_run = summary["this_run"]
    assert emulator.spent_usd > 0 and this_run["cost_usd"] == pytest.approx(emulator.spent_usd)
    assert this_run["model_servers_cost_usd"] == pytest.approx(this_run["cost_usd"])


def test_a_command_line_model_no_server_serves_stops_the_run_at_the_first_rollout(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY]))
    rows, output = write_rows(tmp_path / "rows.jsonl", 20), tmp_path / "out.jsonl"
    with emulated_cluster(emulator) as config, pytest.raises(RunStopped) as stopped:
        collect_rows(
            config, rows, output, num_samples_in_parallel=2, responses_create_params={"model": "acme/not-served"}
        )
    message = str(stopped.value)
    assert "asks for model 'acme/not-served'" in message and "Drop +responses_create_params.model" in message
    assert "re-run the same command" in message
    assert records_of(output) == [], "every row would fail the same way: none is recorded"
    assert not [r for r in emulator.requests if r.path.endswith("/chat/completions")], "nothing was paid for"


def test_a_model_named_by_a_row_is_that_rows_failure(tmp_path: Path) -> None:
    emulator = OpenRouterEmulator(EmulatorConfig(keys=[EMULATOR_KEY]))
    rows = write_rows(tmp_path / "rows.jsonl", 3)
    lines = [json.loads(line) for line in rows.read_text().splitlines()]
    lines[1]["responses_create_params"]["model"] = "acme/not-served"
    rows.write_text("".join(json.dumps(line) + "\n" for line in lines))
    output = tmp_path / "out.jsonl"
    with emulated_cluster(emulator) as config:
        summary = collect_rows(config, rows, output)
    assert summary["failed"] == 1 and summary["succeeded"] == 2
    (failed,) = [r for r in records_of(output) if r["error"]]
    assert "acme/not-served" in failed["error"] and failed["input"]["responses_create_params"]["model"]
