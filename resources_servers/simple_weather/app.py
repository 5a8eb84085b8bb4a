"""simple_weather: one tool, `get_weather(city)`, and a verifier that checks the agent looked up every city asked
about and answered with it. Copy this folder as the template for a new environment.

Reward (documented in README.md):
    reward = 0.6 * coverage + 0.2 * answered + 0.2 * mentioned
    coverage  = share of expected cities for which get_weather was called
    answered  = 1 if the trajectory ends with a non-empty assistant message, else 0
    mentioned = share of expected cities named in that final message
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel, Field, field_validator

from nemo_gym.servers.resources import (
    BaseResourcesServer,
    Session,
    ToolError,
    VerifyRequest,
    VerifyResponse,
    final_assistant_text,
)

CONDITIONS = (
    "sunny",
    "partly cloudy",
    "overcast",
    "light rain",
    "heavy rain",
    "thunderstorms",
    "snow",
    "foggy",
    "windy",
    "clear",
)
WEIGHT_COVERAGE, WEIGHT_ANSWERED, WEIGHT_MENTIONED = 0.6, 0.2, 0.2


class GetWeatherArguments(BaseModel):
    """Get the current weather for a city."""

    city: str = Field(min_length=1, description="City name, e.g. Paris")

    @field_validator("city")
    @classmethod
    def _has_a_name(cls, city: str) -> str:
        if not normalize_city(city):
            raise ValueError('must contain a city name, e.g. {"city": "Paris"}')
        return city


def normalize_city(name: str) -> str:
    """Case, spacing and punctuation don't matter: 'new  york!' == 'New York'."""
    return re.sub(r"[^a-z0-9]+", " ", name.casefold()).strip()


def weather_for(city: str) -> str:
    """A deterministic description: the same city always has the same weather, so rewards are reproducible."""
    digest = hashlib.sha256(normalize_city(city).encode()).digest()
    condition = CONDITIONS[digest[0] % len(CONDITIONS)]
    temperature_c = digest[1] % 45 - 10
    wind_kmh = digest[2] % 60
    return f"The weather in {city.strip()} is {condition}, {temperature_c}°C, wind {wind_kmh} km/h."


class SimpleWeatherServer(BaseResourcesServer):
    tools = {"get_weather": GetWeatherArguments}
    row_fields = ("expected_cities",)

    async def call_tool(self, session: Session, name: str, arguments: BaseModel) -> Any:
        if not isinstance(arguments, GetWeatherArguments):
            raise ToolError(f"Unknown tool {name}")
        city = arguments.city.strip()
        return {"city": city, "weather": weather_for(city)}

    async def verify(self, session: Session, request: VerifyRequest) -> VerifyResponse:
        row = session.row or request.row
        expected = [str(c) for c in row.get("expected_cities") or []]
        if not expected:
            raise ToolError("This row has no `expected_cities`; every simple_weather row needs that list.")
        output = request.response.get("output") or []
        called = _called_cities(session, output)
        expected_norm = {normalize_city(c): c for c in expected}
        covered = [c for n, c in expected_norm.items() if n in called]
        missing = [c for n, c in expected_norm.items() if n not in called]
        unexpected = sorted(c for n, c in called.items() if n not in expected_norm)
        final_text = final_assistant_text(output) or ""  # a trailing tool call means no answer
        answered = 1.0 if final_text.strip() else 0.0
        final_norm = f" {normalize_city(final_text)} "
        mentioned = [c for n, c in expected_norm.items() if f" {n} " in final_norm]

        coverage = len(covered) / len(expected_norm)
        mention_share = len(mentioned) / len(expected_norm)
        reward = WEIGHT_COVERAGE * coverage + WEIGHT_ANSWERED * answered + WEIGHT_MENTIONED * mention_share
        reasons = []
        if missing:
            reasons.append(f"get_weather was not called for {', '.join(missing)}")
        if not answered:
            reasons.append("the trajectory does not end with an assistant answer")
        elif len(mentioned) < len(expected_norm):
            reasons.append(
                "the answer does not name " + ", ".join(c for c in expected_norm.values() if c not in mentioned)
            )
        if unexpected:
            reasons.append(f"get_weather was also called for {', '.join(unexpected)}")
        return VerifyResponse(
            reward=round(reward, 6),
            expected_cities=expected,
            called_cities=sorted(called.values()),
            missing_cities=missing,
            unexpected_cities=unexpected,
            coverage=coverage,
            answered=bool(answered),
            mentioned_cities=mentioned,
            reasons=reasons or ["all expected cities looked up and named in the answer"],
        )


def _called_cities(session: Session, output: list[dict[str, Any]]) -> dict[str, str]:
    """Cities get_weather actually ran for in this session; without a session, the trajectory's calls."""
    calls = [c["arguments"].get("city", "") for c in session.tool_calls if c["name"] == "get_weather" and "output" in c]
    if not session.id:
        calls = [
            _city_argument(item)
            for item in output
            if item.get("type") == "function_call" and item.get("name") == "get_weather"
        ]
    return {normalize_city(c): c.strip() for c in calls if c and normalize_city(c)}


def _city_argument(item: dict[str, Any]) -> str:
    try:
        arguments = json.loads(item.get("arguments") or "{}")
    except ValueError:
        return ""
    return str(arguments.get("city", "")) if isinstance(arguments, dict) else ""


if __name__ == "__main__":
    from nemo_gym.cli.serve import main

    main()
