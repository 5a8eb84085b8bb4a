"""The three NeMo Gym-style tool environments (warehouse_inventory, unit_conversion_chain, meeting_scheduler) run
end to end on the OpenRouter emulator: model server, the environment's own unchanged server folder, simple_agent and
the collector, in one process. The emulator's scripted model calls a tool once per proper noun of the request when
the tool takes a single string argument, and never calls tools with several or non-string arguments, so each test
pins down what such a model earns and that the records carry the environment's own verifier fields.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest

from nemo_gym.base_resources_server import AggregateMetricsRequest
from nemo_gym.config.paths import project_root
from nemo_gym.protocol.types import JSONObject
from nemo_gym.server_utils import ServerClient
from nemo_gym.testing.emulated import collect_environment_on_emulator
from resources_servers.meeting_scheduler.app import (
    MeetingSchedulerResourcesServer,
    MeetingSchedulerResourcesServerConfig,
)

MODEL = "openai/gpt-4o-mini"


def collect(environment: str, tmp_path: Path) -> list[JSONObject]:
    data = project_root() / "resources_servers" / environment / "data" / "example.jsonl"
    records = collect_environment_on_emulator(environment, MODEL, data, tmp_path / f"{environment}.jsonl")
    assert len(records) == 5
    for record in records:
        assert record["error"] is None, record["error"]
        assert 0.0 <= record["reward"] <= 1.0
    return sorted(records, key=lambda r: r["input"]["id"])


def function_calls(record: JSONObject, name: str) -> list[dict[str, Any]]:
    return [
        json.loads(item["arguments"])
        for item in record["response"]["output"]
        if item.get("type") == "function_call" and item.get("name") == name
    ]


def tool_outputs(record: JSONObject) -> list[str]:
    return [str(item["output"]) for item in record["response"]["output"] if item.get("type") == "function_call_output"]


def test_warehouse_inventory_records_show_the_operations_applied_in_each_session(tmp_path: Path) -> None:
    records = collect("warehouse_inventory", tmp_path)

    for record in records:
        operations = record["operations"]
        # The session logged exactly the calls the model made, in order: the emulator only reads stock.
        assert [op["item"] for op in operations] == [call["item"] for call in function_calls(record, "check_stock")]
        assert operations and {op["tool"] for op in operations} == {"check_stock"}
        assert record["final_stock"] == record["input"]["initial_stock"]
        assert record["reward"] == pytest.approx(record["items_correct"] / record["items_total"])

    by_id = {r["input"]["id"]: r for r in records}
    # A read-only request is solved by reading: full reward.
    assert by_id["wh-0"]["reward"] == 1.0 and by_id["wh-0"]["mismatched_items"] == []
    # "Oslo" is a store, not an item: the refusal reached the model and the session log.
    oslo = by_id["wh-2"]
    refusal = {"tool": "check_stock", "item": "Oslo", "quantity": None, "applied": False, "error_code": "unknown_item"}
    assert refusal in oslo["operations"]
    assert any("No item named 'Oslo'" in output for output in tool_outputs(oslo))
    # Requests that need shipping or restocking earn only partial credit from a model that never changes stock.
    assert all(r["reward"] < 1.0 for r in records if r["input"]["expected_stock"] != r["input"]["initial_stock"])


def test_unit_conversion_chain_scores_only_submitted_answers(tmp_path: Path) -> None:
    records = collect("unit_conversion_chain", tmp_path)

    for record in records:
        # The emulator knows the answer key and says it in text, but never calls submit_answer (a number argument)
        # nor get_conversion_factor (two arguments): a text answer earns nothing.
        text = "".join(
            part["text"]
            for item in record["response"]["output"]
            if item.get("type") == "message"
            for part in item["content"]
        )
        assert str(record["expected_answer"]) in text
        assert record["reward"] == 0.0
        assert (record["num_lookups"], record["num_submissions"]) == (0, 0)
        assert record["submitted_value"] is None and record["relative_error"] is None
        assert record["failure_reason"] == "The trajectory has no submit_answer call."


def test_meeting_scheduler_records_carry_each_reward_component_and_the_calendars_checked(tmp_path: Path) -> None:
    records = collect("meeting_scheduler", tmp_path)

    for record in records:
        components = record["reward_components"]
        assert set(components) == {"correctness", "schema_valid", "efficiency"}
        assert all(record[name] == value for name, value in components.items())
        # Every attendee named in the request was looked up in this session's calendars...
        assert record["people_checked"] == [call["person"] for call in function_calls(record, "get_busy_hours")]
        assert set(record["input"]["attendees"]) <= set(record["people_checked"])
        assert not any("Session not initialized" in output for output in tool_outputs(record))
        # ...but the emulator never calls book_meeting (several arguments): no component is earned.
        assert components == {"correctness": 0.0, "schema_valid": 0.0, "efficiency": 0.0}
        assert record["reward"] == 0.0 and record["num_bookings"] == 0
        assert record["correctness_failures"] == ["no valid booking: no book_meeting call"]

    lisbon = next(r for r in records if "Lisbon" in r["people_checked"])
    assert any("No calendar for 'Lisbon'. Calendars exist for: Farid, Lena." in o for o in tool_outputs(lisbon))

    # The environment's own metrics over these records headline the components and the reward.
    config = MeetingSchedulerResourcesServerConfig(host="127.0.0.1", port=0, entrypoint="", name="meeting_scheduler")
    server = MeetingSchedulerResourcesServer(config=config, server_client=MagicMock(spec=ServerClient))
    verify_responses = [
        {k: v for k, v in r.items() if k not in ("response", "input")} | {"_ng_task_index": i}
        for i, r in enumerate(records)
    ]
    metrics = asyncio.run(server.aggregate_metrics(AggregateMetricsRequest(verify_responses=verify_responses)))
    assert metrics.key_metrics == {
        "mean/correctness": 0.0,
        "mean/schema_valid": 0.0,
        "mean/efficiency": 0.0,
        "mean/reward": 0.0,
    }
