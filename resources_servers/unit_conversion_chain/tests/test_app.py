import json
from pathlib import Path
from typing import Any
from unittest.mock import MagicMock

import pytest
from app import (
    DIRECT_FACTORS,
    KNOWN_UNITS,
    UnitConversionChainResourcesServer,
    UnitConversionChainResourcesServerConfig,
    UnitConversionChainVerifyRequest,
    UnitConversionChainVerifyResponse,
    linked_units,
)
from fastapi.testclient import TestClient

from nemo_gym.openai_utils import (
    NeMoGymResponse,
    NeMoGymResponseFunctionToolCall,
    NeMoGymResponseOutputMessage,
    NeMoGymResponseOutputText,
)
from nemo_gym.server_utils import ServerClient

EXAMPLES = Path(__file__).resolve().parents[1] / "data" / "example.jsonl"
MILES_TO_METERS = 3.5 * 1.609344 * 1000  # 5632.704


def _server(relative_tolerance: float = 0.01) -> UnitConversionChainResourcesServer:
    config = UnitConversionChainResourcesServerConfig(
        host="0.0.0.0", port=8080, entrypoint="", name="", relative_tolerance=relative_tolerance
    )
    return UnitConversionChainResourcesServer(config=config, server_client=MagicMock(spec=ServerClient))


def _call(name: str, arguments: dict[str, Any] | str, call_id: str) -> NeMoGymResponseFunctionToolCall:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return NeMoGymResponseFunctionToolCall(type="function_call", call_id=call_id, name=name, arguments=text)


def _lookup(source: str, target: str, call_id: str) -> NeMoGymResponseFunctionToolCall:
    return _call("get_conversion_factor", {"from_unit": source, "to_unit": target}, call_id)


def _message(text: str) -> NeMoGymResponseOutputMessage:
    return NeMoGymResponseOutputMessage(
        type="message",
        role="assistant",
        id="msg_1",
        content=[NeMoGymResponseOutputText(type="output_text", text=text, annotations=[])],
    )


def _verify_request(output: list[Any], expected_answer: float = MILES_TO_METERS) -> UnitConversionChainVerifyRequest:
    response = NeMoGymResponse(
        id="resp_units",
        created_at=0.0,
        model="test-model",
        object="response",
        output=output,
        parallel_tool_calls=False,
        tool_choice="auto",
        tools=[],
    )
    return UnitConversionChainVerifyRequest(
        responses_create_params={"input": [{"role": "user", "content": "How many meters are in 3.5 miles?"}]},
        response=response,
        expected_answer=expected_answer,
        source_value=3.5,
        source_unit="mile",
        target_unit="meter",
    )


def _chained_solution(value: float) -> list[Any]:
    return [
        _lookup("mile", "kilometer", "c1"),
        _lookup("kilometer", "meter", "c2"),
        _call("submit_answer", {"value": value}, "c3"),
        _message(f"3.5 miles is {value} meters."),
    ]


class TestApp:
    def test_sanity(self) -> None:
        assert _server().config.relative_tolerance == 0.01

    async def test_reverify_mode_is_stateless(self) -> None:
        client = TestClient(_server().setup_webserver())
        assert client.get("/reverify_mode").json() == "stateless"

    # ---------------------------------------------------------------------------------------------------- tools

    async def test_lookup_returns_the_factor_of_a_linked_pair_in_either_direction(self) -> None:
        client = TestClient(_server().setup_webserver())
        forward = client.post("/get_conversion_factor", json={"from_unit": "mile", "to_unit": "kilometer"}).json()
        assert forward == {"from_unit": "mile", "to_unit": "kilometer", "factor": 1.609344}
        backward = client.post("/get_conversion_factor", json={"from_unit": "kilometer", "to_unit": "mile"}).json()
        assert backward["factor"] == pytest.approx(1 / 1.609344)

    async def test_lookup_accepts_plurals_capitals_and_british_spellings(self) -> None:
        client = TestClient(_server().setup_webserver())
        cases = [("Miles", "KILOMETERS", "mile", "kilometer"), ("feet", "inches", "foot", "inch")]
        cases.append(("litres", "Millilitre", "liter", "milliliter"))
        for source, target, canonical_source, canonical_target in cases:
            answer = client.post("/get_conversion_factor", json={"from_unit": source, "to_unit": target}).json()
            assert (answer["from_unit"], answer["to_unit"]) == (canonical_source, canonical_target)

    async def test_lookup_of_a_unit_to_itself_is_one(self) -> None:
        client = TestClient(_server().setup_webserver())
        answer = client.post("/get_conversion_factor", json={"from_unit": "gram", "to_unit": "grams"}).json()
        assert answer == {"from_unit": "gram", "to_unit": "gram", "factor": 1.0}

    async def test_unlinked_pair_is_refused_with_the_units_it_links_to(self) -> None:
        client = TestClient(_server().setup_webserver())
        answer = client.post("/get_conversion_factor", json={"from_unit": "mile", "to_unit": "meter"})
        assert answer.status_code == 200
        assert answer.json() == {
            "error": (
                "No direct factor from mile to meter. Convert step by step through a linked unit: mile links "
                "directly to kilometer."
            ),
            "known_units": list(KNOWN_UNITS),
            "linked_units": ["kilometer"],
        }

    async def test_unknown_units_are_refused_with_the_known_units(self) -> None:
        client = TestClient(_server().setup_webserver())
        answer = client.post("/get_conversion_factor", json={"from_unit": "furlong", "to_unit": "parsec"}).json()
        assert answer["error"] == "Unknown unit 'furlong', 'parsec'. Use one of the known units (singular)."
        assert answer["known_units"] == list(KNOWN_UNITS) and "mile" in answer["known_units"]
        assert answer["linked_units"] == []

    async def test_lookup_without_both_units_gets_a_422(self) -> None:
        client = TestClient(_server().setup_webserver())
        assert client.post("/get_conversion_factor", json={"from_unit": "mile"}).status_code == 422

    async def test_submit_answer_acknowledges_numbers_and_asks_again_for_anything_else(self) -> None:
        client = TestClient(_server().setup_webserver())
        assert client.post("/submit_answer", json={"value": 5632.704}).json() == {
            "received": 5632.704,
            "message": "Answer recorded.",
        }
        assert client.post("/submit_answer", json={"value": "5,632.7"}).json()["received"] == 5632.7
        refused = client.post("/submit_answer", json={"value": "about five thousand"}).json()
        assert refused["received"] is None
        assert "Call submit_answer again with a plain number" in refused["message"]
        assert client.post("/submit_answer", json={"value": True}).json()["received"] is None

    async def test_every_example_needs_at_least_two_lookups_and_the_chain_gives_its_answer(self) -> None:
        rows = [json.loads(line) for line in EXAMPLES.read_text().splitlines()]
        assert len(rows) == 5
        for row in rows:
            path = _shortest_path(row["source_unit"], row["target_unit"])
            assert len(path) >= 3, row["id"]  # two links or more
            value = row["source_value"]
            for source, target in zip(path, path[1:], strict=False):
                value *= _factor(source, target)
            assert value == pytest.approx(row["expected_answer"], rel=1e-6), row["id"]

    # --------------------------------------------------------------------------------------------------- verify

    async def test_chained_lookups_then_the_right_submission_earn_full_reward(self) -> None:
        result = await _server().verify(_verify_request(_chained_solution(5632.704)))
        assert isinstance(result, UnitConversionChainVerifyResponse)
        assert result.reward == 1.0
        assert result.submitted_value == 5632.704
        assert result.relative_error == pytest.approx(0.0, abs=1e-12)
        assert (result.num_lookups, result.num_submissions) == (2, 1)
        assert result.failure_reason is None
        assert result.expected_answer == MILES_TO_METERS

    async def test_a_relative_error_within_one_percent_still_earns_full_reward(self) -> None:
        result = await _server().verify(_verify_request(_chained_solution(5632.704 * 1.009)))
        assert result.reward == 1.0
        assert result.relative_error == pytest.approx(0.009)

    async def test_a_relative_error_beyond_one_percent_earns_nothing(self) -> None:
        result = await _server().verify(_verify_request(_chained_solution(5632.704 * 0.98)))
        assert result.reward == 0.0
        assert result.relative_error == pytest.approx(0.02)
        assert result.submitted_value == pytest.approx(5520.04992)

    async def test_the_tolerance_comes_from_the_config(self) -> None:
        result = await _server(relative_tolerance=0.05).verify(_verify_request(_chained_solution(5632.704 * 0.98)))
        assert result.reward == 1.0

    async def test_only_the_last_submission_counts(self) -> None:
        output = [*_chained_solution(5632.704), _call("submit_answer", {"value": 5.632704}, "c4")]
        result = await _server().verify(_verify_request(output))
        assert result.reward == 0.0
        assert result.submitted_value == 5.632704
        assert result.num_submissions == 2

    async def test_a_later_good_submission_replaces_an_earlier_bad_one(self) -> None:
        output = [_call("submit_answer", {"value": 1}, "c0"), *_chained_solution(5632.704)]
        result = await _server().verify(_verify_request(output))
        assert result.reward == 1.0 and result.num_submissions == 2

    async def test_a_numeric_string_submission_is_accepted(self) -> None:
        output = [_call("submit_answer", {"value": "5,632.704"}, "c1")]
        result = await _server().verify(_verify_request(output))
        assert result.reward == 1.0 and result.submitted_value == 5632.704
        assert result.num_lookups == 0

    async def test_an_answer_only_in_text_earns_nothing(self) -> None:
        output = [_lookup("mile", "kilometer", "c1"), _message("The answer is \\boxed{5632.704}.")]
        result = await _server().verify(_verify_request(output))
        assert result.reward == 0.0
        assert result.submitted_value is None and result.relative_error is None
        assert result.num_lookups == 1 and result.num_submissions == 0
        assert result.failure_reason == "The trajectory has no submit_answer call."

    @pytest.mark.parametrize("arguments", ['{"value": "lots"}', '{"value": true}', "{not json", "[5632.704]", "{}"])
    async def test_a_submission_without_a_numeric_value_earns_nothing_and_says_why(self, arguments: str) -> None:
        result = await _server().verify(_verify_request([_call("submit_answer", arguments, "c1")]))
        assert result.reward == 0.0
        assert result.submitted_value is None
        assert result.failure_reason == f"The last submit_answer call has no numeric value: {arguments}"

    async def test_an_expected_answer_of_zero_is_compared_by_absolute_error(self) -> None:
        request = _verify_request([_call("submit_answer", {"value": 0.004}, "c1")], expected_answer=0.0)
        result = await _server().verify(request)
        assert result.relative_error == pytest.approx(0.004)
        assert result.reward == 1.0

    async def test_verify_over_http_needs_no_session(self) -> None:
        client = TestClient(_server().setup_webserver())
        answer = client.post("/verify", json=_verify_request(_chained_solution(5632.704)).model_dump(mode="json"))
        assert answer.status_code == 200
        assert answer.json()["reward"] == 1.0
        assert answer.json()["num_lookups"] == 2


def _factor(source: str, target: str) -> float:
    return (
        DIRECT_FACTORS[(source, target)] if (source, target) in DIRECT_FACTORS else 1 / DIRECT_FACTORS[(target, source)]
    )


def _shortest_path(source: str, target: str) -> list[str]:
    frontier, seen = [[source]], {source}
    while frontier:
        path = frontier.pop(0)
        if path[-1] == target:
            return path
        for unit in linked_units(path[-1]):
            if unit not in seen:
                seen.add(unit)
                frontier.append([*path, unit])
    raise AssertionError(f"no chain from {source} to {target}")
