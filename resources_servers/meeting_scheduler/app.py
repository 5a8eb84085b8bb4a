"""meeting_scheduler: book one meeting that fits everyone's calendar, scored by three reward components.

`/seed_session` loads the row's calendars into the session, so `get_busy_hours(person)` can answer from them. The
model books with `book_meeting(day, start_hour, duration_hours, attendees)`; the booking tool only checks the
arguments' types (like a calendar that lets you double-book), so finding a free slot is the model's job. `/verify`
scores the trajectory alone (the row carries the calendars), so a stored rollout can be scored again:

    correctness  = 1 if exactly one booking was made and it is free for every attendee and within the row's
                   constraints (day, hours window, duration, attendees), else 0
    schema_valid = 1 if the last book_meeting call's arguments parse and have the right types, else 0
    efficiency   = 0 without a book_meeting call; else 1 if the trajectory made at most `tool_call_budget` tool
                   calls, else tool_call_budget / (tool calls made)
    reward       = correctness_weight * correctness + schema_valid_weight * schema_valid
                   + efficiency_weight * efficiency      (default weights 0.7, 0.15, 0.15)
"""

import json
from typing import Any, ClassVar

from fastapi import FastAPI, HTTPException, Request
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nemo_gym.base_resources_server import (
    BaseMultiRewardVerifyResponse,
    BaseResourcesServerConfig,
    BaseRunRequest,
    BaseSeedSessionRequest,
    BaseSeedSessionResponse,
    BaseVerifyRequest,
    ReverifyMode,
    SimpleResourcesServer,
)
from nemo_gym.openai_utils import NeMoGymResponseFunctionToolCall
from nemo_gym.server_utils import SESSION_ID_KEY

BOOK_TOOL = "book_meeting"
LOOKUP_TOOL = "get_busy_hours"
COMPONENTS = ("correctness", "schema_valid", "efficiency")
BOOKING_FIELDS = {"day": str, "start_hour": int, "duration_hours": int, "attendees": list}

# person -> day -> busy intervals [start_hour, end_hour), hours of a 24-hour clock
Calendars = dict[str, dict[str, list[tuple[int, int]]]]


class MeetingSchedulerResourcesServerConfig(BaseResourcesServerConfig):
    REVERIFY_MODE: ClassVar[ReverifyMode] = ReverifyMode.STATELESS
    correctness_weight: float = Field(default=0.7, ge=0)
    schema_valid_weight: float = Field(default=0.15, ge=0)
    efficiency_weight: float = Field(default=0.15, ge=0)

    @model_validator(mode="after")
    def _weights_sum_to_one(self) -> "MeetingSchedulerResourcesServerConfig":
        total = self.correctness_weight + self.schema_valid_weight + self.efficiency_weight
        if abs(total - 1.0) > 1e-9:
            raise ValueError(
                f"correctness_weight + schema_valid_weight + efficiency_weight must add up to 1 (so the reward "
                f"stays in [0, 1]); they add up to {total:g}. Adjust them in the meeting_scheduler config block."
            )
        return self


# ----------------------------------------------------------------------------------------------------- tool models


class GetBusyHoursRequest(BaseModel):
    person: str


class BusyInterval(BaseModel):
    day: str
    start_hour: int
    end_hour: int


class BusyHoursResponse(BaseModel):
    person: str
    busy: list[BusyInterval]
    note: str = "Busy intervals run from start_hour up to (not including) end_hour. Hours not listed are free."


class ToolErrorResponse(BaseModel):
    error: str


class BookMeetingRequest(BaseModel):
    """Any JSON object: the tool reports type problems itself, as the model would read them."""

    model_config = ConfigDict(extra="allow")


class BookMeetingResponse(BaseModel):
    status: str
    day: str
    start_hour: int
    end_hour: int
    attendees: list[str]


class Booking(BaseModel):
    day: str
    start_hour: int
    duration_hours: int
    attendees: list[str]


# ------------------------------------------------------------------------------------------------ rollout models


class MeetingSchedulerSeedSessionRequest(BaseSeedSessionRequest):
    calendars: Calendars


class MeetingSchedulerRunRequest(BaseRunRequest):
    calendars: Calendars
    attendees: list[str]
    duration_hours: int = Field(gt=0)
    allowed_days: list[str]
    earliest_start_hour: int = Field(ge=0, le=24)
    latest_end_hour: int = Field(ge=0, le=24)
    tool_call_budget: int = Field(gt=0)


class MeetingSchedulerVerifyRequest(MeetingSchedulerRunRequest, BaseVerifyRequest):
    pass


class MeetingSchedulerVerifyResponse(BaseMultiRewardVerifyResponse):
    correctness: float
    schema_valid: float
    efficiency: float
    booking: Booking | None
    num_bookings: int
    num_tool_calls: int
    people_checked: list[str]
    correctness_failures: list[str]
    schema_errors: list[str]


class MeetingSchedulerResourcesServer(SimpleResourcesServer):
    config: MeetingSchedulerResourcesServerConfig
    session_id_to_calendars: dict[str, Calendars] = Field(default_factory=dict)

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post(f"/{LOOKUP_TOOL}")(self.get_busy_hours)
        app.post(f"/{BOOK_TOOL}")(self.book_meeting)
        return app

    async def seed_session(self, request: Request, body: MeetingSchedulerSeedSessionRequest) -> BaseSeedSessionResponse:
        self.session_id_to_calendars[request.session[SESSION_ID_KEY]] = body.calendars
        return BaseSeedSessionResponse()

    async def get_busy_hours(
        self, request: Request, body: GetBusyHoursRequest
    ) -> BusyHoursResponse | ToolErrorResponse:
        calendars = self.session_id_to_calendars.get(request.session[SESSION_ID_KEY])
        if calendars is None:
            raise HTTPException(
                status_code=400,
                detail="Session not initialized: POST /seed_session with the row (its calendars) first.",
            )
        person = _match_name(calendars, body.person)
        if person is None:
            known = ", ".join(sorted(calendars))
            return ToolErrorResponse(error=f"No calendar for {body.person!r}. Calendars exist for: {known}.")
        busy = [
            BusyInterval(day=day, start_hour=start, end_hour=end)
            for day, intervals in calendars[person].items()
            for start, end in sorted(intervals)
        ]
        return BusyHoursResponse(person=person, busy=busy)

    async def book_meeting(self, body: BookMeetingRequest) -> BookMeetingResponse | ToolErrorResponse:
        booking, errors = parse_booking(body.model_dump())
        if booking is None:
            return ToolErrorResponse(error="Not booked: " + "; ".join(errors) + ". Call book_meeting again.")
        return BookMeetingResponse(
            status="booked",
            day=booking.day,
            start_hour=booking.start_hour,
            end_hour=booking.start_hour + booking.duration_hours,
            attendees=booking.attendees,
        )

    async def verify(self, request: Request, body: MeetingSchedulerVerifyRequest) -> MeetingSchedulerVerifyResponse:
        # Scoring reads only the body; the session's calendars are just released.
        self.session_id_to_calendars.pop(request.session[SESSION_ID_KEY], None)
        calls = [item for item in body.response.output if isinstance(item, NeMoGymResponseFunctionToolCall)]
        booking_calls = [call for call in calls if call.name == BOOK_TOOL]
        parsed = [parse_booking(_arguments(call.arguments)) for call in booking_calls]
        booking, schema_errors = parsed[-1] if parsed else (None, ["no book_meeting call"])
        num_bookings = sum(b is not None for b, _ in parsed)

        failures = self._correctness_failures(body, booking, schema_errors, num_bookings)
        correctness = float(not failures)
        schema_valid = float(booking is not None)
        # No booking means the task was not attempted: making few calls is then no merit.
        efficiency = min(1.0, body.tool_call_budget / len(calls)) if booking_calls else 0.0
        components = {"correctness": correctness, "schema_valid": schema_valid, "efficiency": efficiency}
        reward = (
            self.config.correctness_weight * correctness
            + self.config.schema_valid_weight * schema_valid
            + self.config.efficiency_weight * efficiency
        )
        return MeetingSchedulerVerifyResponse(
            **body.model_dump(),
            reward=reward,
            reward_components=components,
            **components,
            booking=booking,
            num_bookings=num_bookings,
            num_tool_calls=len(calls),
            people_checked=[_person_argument(call.arguments) for call in calls if call.name == LOOKUP_TOOL],
            correctness_failures=failures,
            schema_errors=schema_errors,
        )

    def _correctness_failures(
        self, body: MeetingSchedulerVerifyRequest, booking: Booking | None, schema_errors: list[str], num_bookings: int
    ) -> list[str]:
        """Why the booking is not correct (empty: it is)."""
        if booking is None:
            return ["no valid booking: " + "; ".join(schema_errors)]
        failures = []
        if num_bookings > 1:
            failures.append(f"{num_bookings} meetings were booked; the task asks for one")
        day = next((d for d in body.allowed_days if d.casefold() == booking.day.strip().casefold()), None)
        if day is None:
            failures.append(f"{booking.day} is not an allowed day ({', '.join(body.allowed_days)})")
        if booking.duration_hours != body.duration_hours:
            failures.append(f"lasts {booking.duration_hours} h instead of {body.duration_hours} h")
        end = booking.start_hour + booking.duration_hours
        if booking.start_hour < body.earliest_start_hour or end > body.latest_end_hour:
            failures.append(f"{booking.start_hour}-{end} is outside {body.earliest_start_hour}-{body.latest_end_hour}")
        invited = {" ".join(name.split()).casefold() for name in booking.attendees}
        required = {name.casefold() for name in body.attendees}
        if invited != required:
            failures.append(f"attendees {sorted(booking.attendees)} are not {sorted(body.attendees)}")
        for person in body.attendees:
            calendar = body.calendars.get(person, {})
            busy_days = [d for d in calendar if d.casefold() == booking.day.strip().casefold()]
            for busy_day in busy_days:
                for start, stop in calendar[busy_day]:
                    if start < end and booking.start_hour < stop:
                        failures.append(f"{person} is busy {start}-{stop} on {busy_day}")
        return failures

    def compute_metrics(self, tasks: list[list[dict[str, Any]]]) -> dict[str, Any]:
        """The mean of each reward component over every rollout (read from `reward_components`, falling back to
        the top-level copy), so the headline metrics show what part of the reward the model earns."""
        rollouts = [rollout for task in tasks for rollout in task]
        if not rollouts:
            return {}
        metrics: dict[str, Any] = {}
        for name in COMPONENTS:
            values = [float((r.get("reward_components") or {}).get(name, r.get(name, 0.0))) for r in rollouts]
            metrics[f"mean/{name}"] = sum(values) / len(values)
        return metrics

    def get_key_metrics(self, agent_metrics: dict[str, Any]) -> dict[str, Any]:
        keys = [f"mean/{name}" for name in COMPONENTS] + ["mean/reward"]
        return {key: agent_metrics[key] for key in keys if key in agent_metrics}


def parse_booking(arguments: Any) -> tuple[Booking | None, list[str]]:
    """The booking the arguments describe, or None and what is wrong with them (strict JSON types: no bools for
    numbers, no numbers in strings, attendees a non-empty list of names, no unknown keys)."""
    if not isinstance(arguments, dict):
        return None, [f"arguments must be a JSON object, got {type(arguments).__name__}"]
    errors = [f"missing {name}" for name in BOOKING_FIELDS if name not in arguments]
    errors += [f"unknown argument {name}" for name in arguments if name not in BOOKING_FIELDS]
    for name, kind in BOOKING_FIELDS.items():
        value = arguments.get(name)
        if name in arguments and (not isinstance(value, kind) or isinstance(value, bool)):
            errors.append(f"{name} must be {_kind_name(kind)}, got {json.dumps(value)}")
    attendees = arguments.get("attendees")
    if isinstance(attendees, list) and not (attendees and all(isinstance(a, str) and a.strip() for a in attendees)):
        errors.append("attendees must be a non-empty list of names")
    if isinstance(arguments.get("day"), str) and not arguments["day"].strip():
        errors.append("day must name a day, e.g. Tuesday")
    if isinstance(arguments.get("duration_hours"), int) and arguments["duration_hours"] <= 0:
        errors.append("duration_hours must be at least 1")
    start = arguments.get("start_hour")
    if isinstance(start, int) and not isinstance(start, bool) and not 0 <= start <= 23:
        errors.append("start_hour must be an hour from 0 to 23")
    if errors:
        return None, errors
    return Booking.model_validate(arguments), []


def _kind_name(kind: type) -> str:
    return {str: "a string", int: "an integer", list: "a list of names"}[kind]


def _arguments(text: str) -> Any:
    """The call's JSON arguments; a string that is not JSON stays a string (and fails the schema check)."""
    try:
        return json.loads(text)
    except ValueError:
        return text


def _person_argument(text: str) -> str:
    arguments = _arguments(text)
    return str(arguments.get("person")) if isinstance(arguments, dict) else str(arguments)


def _match_name(calendars: Calendars, name: str) -> str | None:
    wanted = " ".join(name.split()).casefold()
    return next((person for person in calendars if person.casefold() == wanted), None)


if __name__ == "__main__":
    MeetingSchedulerResourcesServer.run_webserver()
