import json
from typing import Any
from unittest.mock import MagicMock

import pytest
from app import (
    Booking,
    MeetingSchedulerResourcesServer,
    MeetingSchedulerResourcesServerConfig,
    MeetingSchedulerVerifyRequest,
    MeetingSchedulerVerifyResponse,
)
from fastapi import Request
from fastapi.testclient import TestClient
from pydantic import ValidationError

from nemo_gym.base_resources_server import AggregateMetricsRequest, BaseMultiRewardVerifyResponse
from nemo_gym.openai_utils import (
    NeMoGymResponse,
    NeMoGymResponseFunctionToolCall,
    NeMoGymResponseOutputMessage,
    NeMoGymResponseOutputText,
)
from nemo_gym.server_utils import SESSION_ID_KEY, ServerClient

# Free for both on Tuesday between 9 and 17: only 16-17.
CALENDARS = {
    "Priya": {"Tuesday": [[9, 12], [13, 15]], "Wednesday": [[10, 11]]},
    "Tomas": {"Tuesday": [[12, 13], [15, 16]]},
}
ROW: dict[str, Any] = {
    "responses_create_params": {
        "input": [{"role": "user", "content": "Find a one-hour slot on Tuesday for Priya and Tomas and book it."}]
    },
    "calendars": CALENDARS,
    "attendees": ["Priya", "Tomas"],
    "duration_hours": 1,
    "allowed_days": ["Tuesday"],
    "earliest_start_hour": 9,
    "latest_end_hour": 17,
    "tool_call_budget": 3,
}
GOOD_BOOKING = {"day": "Tuesday", "start_hour": 16, "duration_hours": 1, "attendees": ["Priya", "Tomas"]}


def _server(**weights: float) -> MeetingSchedulerResourcesServer:
    config = MeetingSchedulerResourcesServerConfig(host="0.0.0.0", port=8080, entrypoint="", name="", **weights)
    return MeetingSchedulerResourcesServer(config=config, server_client=MagicMock(spec=ServerClient))


def _request(session_id: str = "s1") -> Request:
    request = MagicMock(spec=Request)
    request.session = {SESSION_ID_KEY: session_id}
    return request


def _call(name: str, arguments: dict[str, Any] | str, index: int) -> NeMoGymResponseFunctionToolCall:
    text = arguments if isinstance(arguments, str) else json.dumps(arguments)
    return NeMoGymResponseFunctionToolCall(type="function_call", call_id=f"call_{index}", name=name, arguments=text)


def _trajectory(*bookings: dict[str, Any] | str, lookups: tuple[str, ...] = ("Priya", "Tomas")) -> list[Any]:
    calls = [_call("get_busy_hours", {"person": person}, i) for i, person in enumerate(lookups)]
    calls += [_call("book_meeting", booking, len(calls) + i) for i, booking in enumerate(bookings)]
    done = NeMoGymResponseOutputMessage(
        type="message",
        role="assistant",
        id="msg_done",
        content=[NeMoGymResponseOutputText(type="output_text", text="Booked.", annotations=[])],
    )
    return [*calls, done]


def _verify_request(output: list[Any], **row: Any) -> MeetingSchedulerVerifyRequest:
    response = NeMoGymResponse(
        id="resp_meeting",
        created_at=0.0,
        model="test-model",
        object="response",
        output=output,
        parallel_tool_calls=False,
        tool_choice="auto",
        tools=[],
    )
    return MeetingSchedulerVerifyRequest.model_validate({**ROW, **row, "response": response})


async def _verify(output: list[Any], server: MeetingSchedulerResourcesServer | None = None, **row: Any) -> Any:
    return await (server or _server()).verify(_request(), _verify_request(output, **row))


def _seeded_client(server: MeetingSchedulerResourcesServer, calendars: dict[str, Any]) -> TestClient:
    client = TestClient(server.setup_webserver())
    assert client.post("/seed_session", json={**ROW, "calendars": calendars}).status_code == 200
    return client


class TestApp:
    def test_sanity(self) -> None:
        config = _server().config
        assert (config.correctness_weight, config.schema_valid_weight, config.efficiency_weight) == (0.7, 0.15, 0.15)

    def test_weights_that_do_not_add_up_to_one_are_rejected_with_how_to_fix(self) -> None:
        with pytest.raises(ValidationError, match="must add up to 1 .* they add up to 1.2"):
            MeetingSchedulerResourcesServerConfig(
                host="0.0.0.0", port=8080, entrypoint="", name="", correctness_weight=0.9
            )

    async def test_reverify_mode_is_stateless(self) -> None:
        assert TestClient(_server().setup_webserver()).get("/reverify_mode").json() == "stateless"

    def test_the_verify_response_is_a_multi_reward_response(self) -> None:
        assert issubclass(MeetingSchedulerVerifyResponse, BaseMultiRewardVerifyResponse)

    # ---------------------------------------------------------------------------------------------------- tools

    async def test_get_busy_hours_lists_the_seeded_calendar_whatever_the_case_of_the_name(self) -> None:
        client = _seeded_client(_server(), CALENDARS)
        answer = client.post("/get_busy_hours", json={"person": " priya "}).json()
        assert answer["person"] == "Priya"
        assert answer["busy"] == [
            {"day": "Tuesday", "start_hour": 9, "end_hour": 12},
            {"day": "Tuesday", "start_hour": 13, "end_hour": 15},
            {"day": "Wednesday", "start_hour": 10, "end_hour": 11},
        ]
        assert "not including" in answer["note"]

    async def test_get_busy_hours_of_an_unknown_person_names_the_known_calendars(self) -> None:
        client = _seeded_client(_server(), CALENDARS)
        answer = client.post("/get_busy_hours", json={"person": "Lisbon"})
        assert answer.status_code == 200
        assert answer.json() == {"error": "No calendar for 'Lisbon'. Calendars exist for: Priya, Tomas."}

    async def test_get_busy_hours_before_seed_session_is_rejected_with_how_to_fix(self) -> None:
        answer = TestClient(_server().setup_webserver()).post("/get_busy_hours", json={"person": "Priya"})
        assert answer.status_code == 400
        assert "POST /seed_session" in answer.json()["detail"]

    async def test_two_sessions_see_only_their_own_calendars(self) -> None:
        server = _server()
        first = _seeded_client(server, CALENDARS)
        second = _seeded_client(server, {"Priya": {"Friday": [[8, 9]]}})
        assert len(first.post("/get_busy_hours", json={"person": "Priya"}).json()["busy"]) == 3
        assert second.post("/get_busy_hours", json={"person": "Priya"}).json()["busy"] == [
            {"day": "Friday", "start_hour": 8, "end_hour": 9}
        ]
        assert "error" in second.post("/get_busy_hours", json={"person": "Tomas"}).json()

    async def test_book_meeting_confirms_well_formed_arguments(self) -> None:
        client = TestClient(_server().setup_webserver())
        assert client.post("/book_meeting", json=GOOD_BOOKING).json() == {
            "status": "booked",
            "day": "Tuesday",
            "start_hour": 16,
            "end_hour": 17,
            "attendees": ["Priya", "Tomas"],
        }

    async def test_book_meeting_refuses_malformed_arguments_and_lists_every_problem(self) -> None:
        client = TestClient(_server().setup_webserver())
        arguments = {"day": "Tuesday", "start_hour": "16", "duration_hours": True, "room": "Lisbon"}
        answer = client.post("/book_meeting", json=arguments)
        assert answer.status_code == 200
        assert answer.json() == {
            "error": (
                'Not booked: missing attendees; unknown argument room; start_hour must be an integer, got "16"; '
                "duration_hours must be an integer, got true. Call book_meeting again."
            )
        }

    # --------------------------------------------------------------------------------------------------- verify

    async def test_a_free_slot_within_the_constraints_earns_every_component(self) -> None:
        result = await _verify(_trajectory(GOOD_BOOKING))
        assert result.reward == pytest.approx(1.0)
        assert result.reward_components == {"correctness": 1.0, "schema_valid": 1.0, "efficiency": 1.0}
        assert (result.correctness, result.schema_valid, result.efficiency) == (1.0, 1.0, 1.0)
        assert result.booking == Booking(**GOOD_BOOKING)
        assert (result.num_bookings, result.num_tool_calls) == (1, 3)
        assert result.people_checked == ["Priya", "Tomas"]
        assert result.correctness_failures == [] and result.schema_errors == []

    async def test_names_and_days_are_compared_without_regard_to_case(self) -> None:
        booking = {**GOOD_BOOKING, "day": "tuesday", "attendees": ["tomas", "PRIYA"]}
        assert (await _verify(_trajectory(booking))).correctness == 1.0

    async def test_a_slot_that_clashes_with_a_calendar_is_not_correct(self) -> None:
        result = await _verify(_trajectory({**GOOD_BOOKING, "start_hour": 14, "duration_hours": 2}))
        assert result.correctness == 0.0
        assert result.correctness_failures == [
            "lasts 2 h instead of 1 h",
            "Priya is busy 13-15 on Tuesday",
            "Tomas is busy 15-16 on Tuesday",
        ]
        assert (result.schema_valid, result.efficiency) == (1.0, 1.0)
        assert result.reward == pytest.approx(0.3)

    @pytest.mark.parametrize(
        ("change", "failure"),
        [
            ({"day": "Wednesday"}, "Wednesday is not an allowed day (Tuesday)"),
            ({"start_hour": 8}, "8-9 is outside 9-17"),
            ({"start_hour": 17}, "17-18 is outside 9-17"),
            ({"attendees": ["Priya"]}, "attendees ['Priya'] are not ['Priya', 'Tomas']"),
        ],
    )
    async def test_each_broken_constraint_is_named(self, change: dict[str, Any], failure: str) -> None:
        result = await _verify(_trajectory({**GOOD_BOOKING, **change}))
        assert result.correctness == 0.0
        assert failure in result.correctness_failures
        assert result.schema_valid == 1.0

    async def test_booking_two_meetings_is_not_correct(self) -> None:
        result = await _verify(_trajectory(GOOD_BOOKING, GOOD_BOOKING))
        assert result.correctness == 0.0
        assert result.correctness_failures == ["2 meetings were booked; the task asks for one"]
        assert result.num_bookings == 2

    async def test_a_refused_booking_followed_by_a_good_one_counts_as_one_booking(self) -> None:
        malformed = {**GOOD_BOOKING, "start_hour": "16"}
        result = await _verify(_trajectory(malformed, GOOD_BOOKING))
        assert result.correctness == 1.0 and result.schema_valid == 1.0
        assert result.num_bookings == 1 and result.num_tool_calls == 4
        assert result.efficiency == pytest.approx(0.75)
        assert result.reward == pytest.approx(0.7 + 0.15 + 0.15 * 0.75)

    async def test_a_malformed_last_booking_fails_the_schema_and_correctness(self) -> None:
        result = await _verify(_trajectory({**GOOD_BOOKING, "attendees": "Priya, Tomas"}))
        assert (result.correctness, result.schema_valid, result.efficiency) == (0.0, 0.0, 1.0)
        assert result.schema_errors == ['attendees must be a list of names, got "Priya, Tomas"']
        assert result.booking is None and result.num_bookings == 0
        assert result.reward == pytest.approx(0.15)

    @pytest.mark.parametrize(
        ("arguments", "error"),
        [
            ("{not json", "arguments must be a JSON object, got str"),
            ("[1, 2]", "arguments must be a JSON object, got list"),
            (json.dumps({**GOOD_BOOKING, "attendees": []}), "attendees must be a non-empty list of names"),
            (json.dumps({**GOOD_BOOKING, "duration_hours": 0}), "duration_hours must be at least 1"),
            (json.dumps({**GOOD_BOOKING, "start_hour": 25}), "start_hour must be an hour from 0 to 23"),
            (json.dumps({**GOOD_BOOKING, "day": " "}), "day must name a day, e.g. Tuesday"),
        ],
    )
    async def test_schema_errors_are_reported(self, arguments: str, error: str) -> None:
        result = await _verify(_trajectory(arguments))
        assert result.schema_valid == 0.0
        assert error in result.schema_errors

    async def test_no_booking_earns_nothing_not_even_efficiency(self) -> None:
        result = await _verify(_trajectory())
        assert result.reward == 0.0
        assert result.reward_components == {"correctness": 0.0, "schema_valid": 0.0, "efficiency": 0.0}
        assert result.correctness_failures == ["no valid booking: no book_meeting call"]
        assert result.people_checked == ["Priya", "Tomas"]

    async def test_efficiency_falls_as_tool_calls_exceed_the_budget(self) -> None:
        lookups = ("Priya", "Tomas", "Priya", "Tomas", "Priya")
        result = await _verify(_trajectory(GOOD_BOOKING, lookups=lookups))
        assert result.num_tool_calls == 6
        assert result.efficiency == pytest.approx(3 / 6)
        assert result.reward == pytest.approx(0.7 + 0.15 + 0.15 * 0.5)

    async def test_a_lucky_booking_without_lookups_is_still_correct(self) -> None:
        result = await _verify(_trajectory(GOOD_BOOKING, lookups=()))
        assert result.correctness == 1.0 and result.people_checked == []

    async def test_the_weights_come_from_the_config(self) -> None:
        server = _server(correctness_weight=0.5, schema_valid_weight=0.5, efficiency_weight=0.0)
        result = await _verify(_trajectory({**GOOD_BOOKING, "start_hour": 9}), server=server)
        assert result.reward == pytest.approx(0.5)

    async def test_verify_releases_the_session_and_scores_from_the_body_alone(self) -> None:
        server = _server()
        client = _seeded_client(server, CALENDARS)
        body = _verify_request(_trajectory(GOOD_BOOKING)).model_dump(mode="json")
        first = client.post("/verify", json=body).json()
        assert server.session_id_to_calendars == {}
        again = client.post("/verify", json=body).json()
        assert first["reward"] == again["reward"] == pytest.approx(1.0)
        assert again["reward_components"] == {"correctness": 1.0, "schema_valid": 1.0, "efficiency": 1.0}
        assert again["correctness"] == 1.0 and again["efficiency"] == 1.0

    # -------------------------------------------------------------------------------------------------- metrics

    def test_compute_metrics_reports_the_mean_of_each_component(self) -> None:
        tasks = [
            [{"reward_components": {"correctness": 1.0, "schema_valid": 1.0, "efficiency": 1.0}, "reward": 1.0}],
            [
                {"reward_components": {"correctness": 0.0, "schema_valid": 1.0, "efficiency": 0.5}, "reward": 0.225},
                {"correctness": 0.0, "schema_valid": 0.0, "efficiency": 0.0, "reward": 0.0},
            ],
        ]
        assert _server().compute_metrics(tasks) == {
            "mean/correctness": pytest.approx(1 / 3),
            "mean/schema_valid": pytest.approx(2 / 3),
            "mean/efficiency": pytest.approx(0.5),
        }
        assert _server().compute_metrics([]) == {}

    def test_get_key_metrics_keeps_the_components_and_the_mean_reward(self) -> None:
        agent_metrics = {
            "mean/correctness": 0.5,
            "mean/schema_valid": 1.0,
            "mean/efficiency": 0.75,
            "mean/reward": 0.6625,
            "mean/num_tool_calls": 3.0,
            "std/reward": 0.1,
        }
        assert _server().get_key_metrics(agent_metrics) == {
            "mean/correctness": 0.5,
            "mean/schema_valid": 1.0,
            "mean/efficiency": 0.75,
            "mean/reward": 0.6625,
        }

    async def test_aggregate_metrics_over_http_headlines_the_components(self) -> None:
        server = _server()
        good = await _verify(_trajectory(GOOD_BOOKING))
        clash = await _verify(_trajectory({**GOOD_BOOKING, "start_hour": 9}))
        stripped = [
            {**r.model_dump(mode="json", exclude={"response", "responses_create_params"}), "_ng_task_index": i}
            for i, r in enumerate([good, clash])
        ]
        client = TestClient(server.setup_webserver())
        answer = client.post("/aggregate_metrics", json=AggregateMetricsRequest(verify_responses=stripped).model_dump())
        key_metrics = answer.json()["key_metrics"]
        assert key_metrics == {
            "mean/correctness": pytest.approx(0.5),
            "mean/schema_valid": pytest.approx(1.0),
            "mean/efficiency": pytest.approx(1.0),
            "mean/reward": pytest.approx((1.0 + 0.3) / 2),
        }
