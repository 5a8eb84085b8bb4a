"""simple_weather through real HTTP on loopback: the get_weather tool, sessions, /verify and the example data."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from nemo_gym.http.server_client import SESSION_HEADER
from nemo_gym.testing.cluster import assistant_message as message
from nemo_gym.testing.cluster import serve_resources_server

FOLDER = Path(__file__).resolve().parents[1]
EXAMPLE_DATA = FOLDER / "data" / "example.jsonl"
SAMPLE_CITIES = (
    "Paris",
    "London",
    "Tokyo",
    "Berlin",
    "Madrid",
    "Rome",
    "Sydney",
    "Cairo",
    "Toronto",
    "Mumbai",
    "Lagos",
    "Lima",
    "Oslo",
    "Seoul",
    "Nairobi",
    "Chicago",
    "Vienna",
    "Dublin",
    "Bangkok",
    "Lisbon",
)


@pytest.fixture(scope="module")
def client() -> Iterator[httpx.Client]:
    yield from serve_resources_server("simple_weather")


# ---------------------------------------------------------------------------------------------- helpers


def seed(client: httpx.Client, row: dict[str, Any]) -> str:
    response = client.post("/seed_session", json={"row": row})
    assert response.status_code == 200, response.text
    session_id = response.json()["session_id"]
    assert isinstance(session_id, str) and session_id
    return session_id


def get_weather(client: httpx.Client, city: Any, session_id: str | None = None) -> httpx.Response:
    headers = {SESSION_HEADER: session_id} if session_id else {}
    return client.post("/get_weather", json={"city": city}, headers=headers)


def verify(
    client: httpx.Client,
    output: list[dict[str, Any]],
    *,
    session_id: str | None = None,
    row: dict[str, Any] | None = None,
) -> httpx.Response:
    headers = {SESSION_HEADER: session_id} if session_id else {}
    return client.post("/verify", json={"row": row or {}, "response": {"output": output}}, headers=headers)


def function_call(city: str, call_id: str = "call_1", *, name: str = "get_weather") -> dict[str, Any]:
    return {"type": "function_call", "call_id": call_id, "name": name, "arguments": json.dumps({"city": city})}


def row_for(*cities: str) -> dict[str, Any]:
    return {
        "expected_cities": list(cities),
        "responses_create_params": {"input": [{"role": "user", "content": "Weather in " + " and ".join(cities)}]},
    }


def rollout(
    client: httpx.Client, expected: list[str], looked_up: list[str], output: list[dict[str, Any]]
) -> dict[str, Any]:
    """Seed a session for `expected`, call get_weather for `looked_up` in it, verify `output`; the verdict."""
    session_id = seed(client, row_for(*expected))
    for city in looked_up:
        assert get_weather(client, city, session_id).status_code == 200
    response = verify(client, output, session_id=session_id)
    assert response.status_code == 200, response.text
    return response.json()


# ---------------------------------------------------------------------------------------------- the tool


def test_health_and_tool_definition(client: httpx.Client) -> None:
    assert client.get("/health").json()["status"] == "ok"
    tools = client.get("/tools").json()["tools"]
    assert [t["name"] for t in tools] == ["get_weather"]
    tool = tools[0]
    assert tool["type"] == "function"
    assert tool["description"] == "Get the current weather for a city."
    assert tool["parameters"]["required"] == ["city"]
    assert tool["parameters"]["properties"]["city"]["type"] == "string"


def test_same_city_same_weather(client: httpx.Client) -> None:
    first = get_weather(client, "Paris").json()
    session_id = seed(client, row_for("Paris"))
    assert get_weather(client, "Paris", session_id).json() == first
    # Case, spacing and punctuation do not change the weather, only the echoed name.
    assert get_weather(client, "  paris  ", session_id).json()["weather"] == first["weather"].replace("Paris", "paris")
    assert first["city"] == "Paris"
    assert first["weather"].startswith("The weather in Paris is ")
    assert "°C" in first["weather"] and "km/h" in first["weather"]


def test_same_weather_across_server_restarts(client: httpx.Client) -> None:
    before = {city: get_weather(client, city).json()["weather"] for city in SAMPLE_CITIES[:5]}
    for other in serve_resources_server("simple_weather"):
        after = {city: get_weather(other, city).json()["weather"] for city in SAMPLE_CITIES[:5]}
    assert after == before


def test_different_cities_get_different_weather(client: httpx.Client) -> None:
    reports = [get_weather(client, city).json()["weather"].split(" is ", 1)[1] for city in SAMPLE_CITIES]
    # Weather is a hash of the city: a sample of 20 cities is not all alike, in any of its parts.
    assert len(set(reports)) > len(SAMPLE_CITIES) // 2
    conditions = {r.split(",")[0] for r in reports}
    temperatures = {r.split(",")[1] for r in reports}
    assert len(conditions) > 1 and len(temperatures) > 1


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, "city: Field required"),
        ({"city": ""}, "city: String should have at least 1 character"),
        ({"city": "   "}, "city: Value error, must contain a city name"),
        ({"city": "?!"}, "city: Value error, must contain a city name"),
        ({"city": 5}, "city: Input should be a valid string"),
        ({"town": "Paris"}, "city: Field required"),
    ],
)
def test_invalid_arguments_are_422_with_a_message(client: httpx.Client, body: dict[str, Any], expected: str) -> None:
    response = client.post("/get_weather", json=body)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_arguments"
    assert error["message"].startswith("Invalid arguments for get_weather: ")
    assert expected in error["message"]


def test_invalid_arguments_do_not_count_as_a_lookup(client: httpx.Client) -> None:
    session_id = seed(client, row_for("Paris"))
    assert get_weather(client, "", session_id).status_code == 422
    assert get_weather(client, " ", session_id).status_code == 422
    verdict = verify(client, [message("Paris is sunny.")], session_id=session_id).json()
    assert verdict["called_cities"] == []
    assert verdict["coverage"] == 0


@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]"])
def test_a_body_that_is_not_a_json_object_is_400(client: httpx.Client, content: bytes) -> None:
    for path in ("/get_weather", "/seed_session", "/verify"):
        response = client.post(path, content=content, headers={"content-type": "application/json"})
        assert response.status_code == 400, (path, response.text)
        assert response.json()["error"]["type"] == "invalid_request"


def test_unknown_session_is_404(client: httpx.Client) -> None:
    for response in (
        get_weather(client, "Paris", "no-such-session"),
        verify(client, [message("Paris")], session_id="no-such-session", row=row_for("Paris")),
    ):
        assert response.status_code == 404, response.text
        error = response.json()["error"]
        assert error["type"] == "unknown_session"
        assert "no-such-session" in error["message"] and "/seed_session" in error["message"]


# ---------------------------------------------------------------------------------------------- sessions


def test_seed_tool_verify_uses_the_session_tool_calls(client: httpx.Client) -> None:
    # The trajectory sent to /verify has no function_call items: what counts is what ran in the session.
    verdict = rollout(
        client, ["Paris", "Berlin"], ["Paris", "Berlin"], [message("Paris is sunny and Berlin is foggy.")]
    )
    assert verdict["reward"] == 1.0
    assert verdict["called_cities"] == ["Berlin", "Paris"]
    assert verdict["missing_cities"] == []
    assert verdict["reasons"] == ["all expected cities looked up and named in the answer"]


def test_with_a_session_claimed_calls_in_the_trajectory_do_not_count(client: httpx.Client) -> None:
    verdict = rollout(client, ["Paris"], [], [function_call("Paris"), message("Paris is sunny.")])
    assert verdict["called_cities"] == []
    assert verdict["coverage"] == 0
    assert verdict["reward"] == pytest.approx(0.4)


def test_the_row_comes_from_the_session(client: httpx.Client) -> None:
    session_id = seed(client, row_for("Oslo"))
    get_weather(client, "Oslo", session_id)
    # A different row in the /verify body does not change what the session was seeded with.
    verdict = verify(client, [message("Oslo: snow.")], session_id=session_id, row=row_for("Lima")).json()
    assert verdict["expected_cities"] == ["Oslo"]
    assert verdict["reward"] == 1.0


def test_seed_session_accepts_a_bare_row(client: httpx.Client) -> None:
    response = client.post("/seed_session", json=row_for("Rome"))
    session_id = response.json()["session_id"]
    get_weather(client, "Rome", session_id)
    assert verify(client, [message("Rome is clear.")], session_id=session_id).json()["reward"] == 1.0


def test_verify_pops_the_session(client: httpx.Client) -> None:
    session_id = seed(client, row_for("Paris"))
    get_weather(client, "Paris", session_id)
    assert verify(client, [message("Paris")], session_id=session_id).status_code == 200
    second = verify(client, [message("Paris")], session_id=session_id)
    assert second.status_code == 404
    assert second.json()["error"]["type"] == "unknown_session"
    assert get_weather(client, "Paris", session_id).status_code == 404


def test_close_session_drops_a_session_without_scoring_it(client: httpx.Client) -> None:
    session_id = seed(client, row_for("Paris"))
    close = client.post("/close_session", json={}, headers={SESSION_HEADER: session_id})
    assert close.status_code == 200 and close.json() == {"closed": True}
    assert get_weather(client, "Paris", session_id).status_code == 404
    again = client.post("/close_session", json={}, headers={SESSION_HEADER: session_id})
    assert again.json() == {"closed": False}
    assert client.post("/close_session", json={}).json() == {"closed": False}


def test_sessions_are_isolated(client: httpx.Client) -> None:
    first, second = seed(client, row_for("Paris")), seed(client, row_for("Tokyo"))
    get_weather(client, "Paris", first)
    get_weather(client, "Tokyo", second)
    get_weather(client, "Lima", second)
    one = verify(client, [message("Paris")], session_id=first).json()
    two = verify(client, [message("Tokyo")], session_id=second).json()
    assert one["called_cities"] == ["Paris"] and one["unexpected_cities"] == []
    assert two["called_cities"] == ["Lima", "Tokyo"] and two["unexpected_cities"] == ["Lima"]


def test_oldest_sessions_are_dropped_beyond_max_sessions() -> None:
    for client in serve_resources_server("simple_weather", max_sessions=2):
        first, second, third = (seed(client, row_for("Paris")) for _ in range(3))
        assert get_weather(client, "Paris", first).status_code == 404
        assert get_weather(client, "Paris", second).status_code == 200
        assert get_weather(client, "Paris", third).status_code == 200


def test_a_session_in_use_outlives_an_older_idle_one() -> None:
    for client in serve_resources_server("simple_weather", session_ttl_s=1.0):
        busy, idle = seed(client, row_for("Paris")), seed(client, row_for("Oslo"))
        for _ in range(6):  # `busy` is used every 0.25 s (room for a slow machine); `idle` is not, for 1.5 s
            time.sleep(0.25)
            assert get_weather(client, "Paris", busy).status_code == 200
        seed(client, row_for("Rome"))  # opening a session drops the stale ones
        assert get_weather(client, "Oslo", idle).status_code == 404
        assert get_weather(client, "Paris", busy).status_code == 200


def test_idle_sessions_expire() -> None:
    for client in serve_resources_server("simple_weather", session_ttl_s=0.2):
        stale = seed(client, row_for("Paris"))
        time.sleep(0.4)
        fresh = seed(client, row_for("Paris"))
        response = get_weather(client, "Paris", stale)
        assert response.status_code == 404
        assert "expire after 0.2s" in response.json()["error"]["message"]
        assert get_weather(client, "Paris", fresh).status_code == 200


# ---------------------------------------------------------------------------------------------- the reward


def test_reward_all_cities_looked_up_and_named(client: httpx.Client) -> None:
    verdict = rollout(
        client,
        ["Seoul", "Bangkok", "Mumbai"],
        ["Seoul", "Bangkok", "Mumbai"],
        [function_call("Seoul"), message("Seoul: rain. Bangkok: hot. Mumbai: humid.")],
    )
    assert verdict["reward"] == 1.0
    assert verdict["coverage"] == 1.0
    assert verdict["answered"] is True
    assert verdict["mentioned_cities"] == ["Seoul", "Bangkok", "Mumbai"]
    assert verdict["expected_cities"] == ["Seoul", "Bangkok", "Mumbai"]


@pytest.mark.parametrize(
    ("answer", "reward", "mentioned"),
    [
        ("Berlin is cloudy and Madrid is sunny.", 0.6 * 0.5 + 0.2 * 1 + 0.2 * 1.0, ["Berlin", "Madrid"]),
        ("Berlin is cloudy.", 0.6 * 0.5 + 0.2 * 1 + 0.2 * 0.5, ["Berlin"]),
    ],
)
def test_reward_one_of_two_cities_missing(
    client: httpx.Client, answer: str, reward: float, mentioned: list[str]
) -> None:
    verdict = rollout(client, ["Berlin", "Madrid"], ["Berlin"], [message(answer)])
    assert verdict["reward"] == pytest.approx(reward)
    assert verdict["coverage"] == 0.5
    assert verdict["missing_cities"] == ["Madrid"]
    assert verdict["mentioned_cities"] == mentioned
    assert "get_weather was not called for Madrid" in verdict["reasons"]


def test_no_final_answer_when_the_trajectory_ends_with_a_function_call(client: httpx.Client) -> None:
    output = [message("Let me check Paris."), function_call("Paris")]
    verdict = rollout(client, ["Paris"], ["Paris"], output)
    assert verdict["answered"] is False
    assert verdict["mentioned_cities"] == []
    assert verdict["reward"] == pytest.approx(0.6)
    assert "the trajectory does not end with an assistant answer" in verdict["reasons"]


@pytest.mark.parametrize(
    "output",
    [
        [],
        [message("   ")],
        [
            message("Paris is sunny."),
            function_call("Paris"),
            {"type": "function_call_output", "call_id": "call_1", "output": "Paris is sunny."},
        ],
        [{"role": "user", "content": "Paris?"}],
    ],
)
def test_no_final_answer_variants(client: httpx.Client, output: list[dict[str, Any]]) -> None:
    verdict = rollout(client, ["Paris"], ["Paris"], output)
    assert verdict["answered"] is False
    assert verdict["reward"] == pytest.approx(0.6)


def test_final_answer_forms(client: httpx.Client) -> None:
    # A trailing reasoning item is skipped; string content and Responses content parts both count.
    reasoning = {"type": "reasoning", "summary": [{"type": "summary_text", "text": "done"}]}
    for final in (message("PARIS: sunny!"), {"role": "assistant", "content": "it is sunny in paris"}):
        verdict = rollout(client, ["Paris"], ["Paris"], [final, reasoning])
        assert verdict["answered"] is True
        assert verdict["mentioned_cities"] == ["Paris"]
        assert verdict["reward"] == 1.0


def test_cities_match_whole_words_ignoring_case_and_punctuation(client: httpx.Client) -> None:
    verdict = rollout(client, ["New York", "Rome"], ["new-york", "ROME"], [message("NEW YORK is warm; Romeo is not.")])
    assert verdict["missing_cities"] == []
    assert verdict["mentioned_cities"] == ["New York"]
    assert verdict["reward"] == pytest.approx(0.6 + 0.2 + 0.2 * 0.5)
    assert "the answer does not name Rome" in verdict["reasons"]


def test_unexpected_city_is_reported(client: httpx.Client) -> None:
    verdict = rollout(client, ["Paris"], ["Paris", "Lyon", "Marseille"], [message("Paris is sunny.")])
    assert verdict["unexpected_cities"] == ["Lyon", "Marseille"]
    assert verdict["called_cities"] == ["Lyon", "Marseille", "Paris"]
    assert "get_weather was also called for Lyon, Marseille" in verdict["reasons"]
    assert verdict["reward"] == 1.0  # reported, not penalised


@pytest.mark.parametrize("row", [{}, {"expected_cities": []}, {"expected_cities": None}])
def test_a_row_without_expected_cities_is_a_clear_error(client: httpx.Client, row: dict[str, Any]) -> None:
    session_id = seed(client, row)
    response = verify(client, [message("Paris")], session_id=session_id)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_row"
    assert "no `expected_cities`" in error["message"]


def test_verify_without_a_session_uses_the_trajectory(client: httpx.Client) -> None:
    output = [
        function_call("Oslo", "c1"),
        {"type": "function_call", "call_id": "c2", "name": "get_weather", "arguments": "{not json"},
        function_call("Lisbon", "c3", name="get_time"),
        {"type": "function_call_output", "call_id": "c1", "output": "snow"},
        message("Oslo has snow."),
    ]
    response = verify(client, output, row=row_for("Oslo", "Lisbon"))
    assert response.status_code == 200, response.text
    verdict = response.json()
    assert verdict["called_cities"] == ["Oslo"]
    assert verdict["missing_cities"] == ["Lisbon"]
    assert verdict["reward"] == pytest.approx(0.6 * 0.5 + 0.2 + 0.2 * 0.5)


def test_verify_needs_a_response(client: httpx.Client) -> None:
    response = client.post("/verify", json={"row": row_for("Paris")})
    assert response.status_code == 422
    assert "response" in response.json()["error"]["message"]


# ---------------------------------------------------------------------------------------------- example data


def _example_rows() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EXAMPLE_DATA.read_text().splitlines() if line.strip()]


def test_example_data_rows_are_well_formed(client: httpx.Client) -> None:
    rows = _example_rows()
    assert len(rows) >= 20
    served_tool = client.get("/tools").json()["tools"][0]
    for row in rows:
        params = row["responses_create_params"]
        assert isinstance(params["input"], list) and params["input"], row
        assert any(item.get("role") == "user" and item.get("content") for item in params["input"]), row
        tools = {t["name"]: t for t in params["tools"] if t.get("type") == "function"}
        assert "get_weather" in tools, row
        assert tools["get_weather"]["parameters"]["required"] == served_tool["parameters"]["required"]
        cities = row["expected_cities"]
        assert isinstance(cities, list) and cities and all(isinstance(c, str) and c.strip() for c in cities), row
    sizes = {len(row["expected_cities"]) for row in rows}
    assert 1 in sizes and any(size > 1 for size in sizes)
    assert len({row["id"] for row in rows}) == len(rows)


def test_every_example_row_can_score_a_perfect_rollout(client: httpx.Client) -> None:
    for row in _example_rows():
        session_id = seed(client, row)
        for city in row["expected_cities"]:
            assert get_weather(client, city, session_id).status_code == 200
        answer = message("Weather: " + "; ".join(f"{c} is mild" for c in row["expected_cities"]))
        verdict = verify(client, [answer], session_id=session_id).json()
        assert verdict["reward"] == 1.0, (row["id"], verdict)
