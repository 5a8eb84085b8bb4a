"""unit_conversion_chain: answer a unit conversion by chaining factor lookups, then submit the number.

The factor table links only neighbouring units (mile-kilometer, kilometer-meter, ...), so every question needs two
or more `get_conversion_factor` lookups multiplied together. The model ends with `submit_answer(value)`. `/verify`
reads the arguments of the last `submit_answer` call in the trajectory (the tools are stateless, so the trajectory
is all it needs and a stored rollout can be scored again) and accepts a relative error up to 1%.
"""

import json
import math
from typing import Any, ClassVar

from fastapi import FastAPI
from pydantic import BaseModel, Field

from nemo_gym.base_resources_server import (
    BaseResourcesServerConfig,
    BaseRunRequest,
    BaseVerifyRequest,
    BaseVerifyResponse,
    ReverifyMode,
    SimpleResourcesServer,
)
from nemo_gym.openai_utils import NeMoGymResponseFunctionToolCall

# 1 <from> = factor <to>. Only these neighbours are linked (each also answers in the reverse direction, as 1/factor).
DIRECT_FACTORS: dict[tuple[str, str], float] = {
    ("mile", "kilometer"): 1.609344,
    ("kilometer", "meter"): 1000.0,
    ("meter", "centimeter"): 100.0,
    ("yard", "foot"): 3.0,
    ("foot", "inch"): 12.0,
    ("inch", "centimeter"): 2.54,
    ("stone", "pound"): 14.0,
    ("pound", "ounce"): 16.0,
    ("pound", "kilogram"): 0.45359237,
    ("kilogram", "gram"): 1000.0,
    ("gallon", "liter"): 3.785411784,
    ("liter", "milliliter"): 1000.0,
    ("cup", "milliliter"): 236.5882365,
    ("week", "day"): 7.0,
    ("day", "hour"): 24.0,
    ("hour", "minute"): 60.0,
    ("minute", "second"): 60.0,
}
KNOWN_UNITS: tuple[str, ...] = tuple(sorted({unit for pair in DIRECT_FACTORS for unit in pair}))
ALIASES = {
    "feet": "foot",
    "inches": "inch",
    "metre": "meter",
    "kilometre": "kilometer",
    "centimetre": "centimeter",
    "litre": "liter",
    "millilitre": "milliliter",
}
LOOKUP_TOOL = "get_conversion_factor"
SUBMIT_TOOL = "submit_answer"


class UnitConversionChainResourcesServerConfig(BaseResourcesServerConfig):
    REVERIFY_MODE: ClassVar[ReverifyMode] = ReverifyMode.STATELESS
    relative_tolerance: float = Field(default=0.01, gt=0, description="Largest relative error that earns reward 1.0")


class GetConversionFactorRequest(BaseModel):
    from_unit: str
    to_unit: str


class GetConversionFactorResponse(BaseModel):
    from_unit: str
    to_unit: str
    factor: float


class ConversionError(BaseModel):
    """A lookup that the table cannot answer, with what it can answer instead."""

    error: str
    known_units: list[str]
    linked_units: list[str] = Field(default_factory=list, description="Units directly linked to from_unit")


class SubmitAnswerRequest(BaseModel):
    value: Any = None


class SubmitAnswerResponse(BaseModel):
    received: float | None
    message: str


class UnitConversionChainRunRequest(BaseRunRequest):
    expected_answer: float
    source_value: float | None = None
    source_unit: str | None = None
    target_unit: str | None = None


class UnitConversionChainVerifyRequest(UnitConversionChainRunRequest, BaseVerifyRequest):
    pass


class UnitConversionChainVerifyResponse(BaseVerifyResponse):
    submitted_value: float | None
    relative_error: float | None
    num_lookups: int
    num_submissions: int


class UnitConversionChainResourcesServer(SimpleResourcesServer):
    config: UnitConversionChainResourcesServerConfig

    def setup_webserver(self) -> FastAPI:
        app = super().setup_webserver()
        app.post(f"/{LOOKUP_TOOL}")(self.get_conversion_factor)
        app.post(f"/{SUBMIT_TOOL}")(self.submit_answer)
        return app

    async def get_conversion_factor(
        self, body: GetConversionFactorRequest
    ) -> GetConversionFactorResponse | ConversionError:
        source, target = canonical_unit(body.from_unit), canonical_unit(body.to_unit)
        unknown = [name for name, unit in ((body.from_unit, source), (body.to_unit, target)) if unit is None]
        if unknown:
            return ConversionError(
                error=f"Unknown unit {', '.join(repr(u) for u in unknown)}. Use one of the known units (singular).",
                known_units=list(KNOWN_UNITS),
            )
        assert source is not None and target is not None
        factor = direct_factor(source, target)
        if factor is None:
            linked = linked_units(source)
            return ConversionError(
                error=(
                    f"No direct factor from {source} to {target}. Convert step by step through a linked unit: "
                    f"{source} links directly to {', '.join(linked)}."
                ),
                known_units=list(KNOWN_UNITS),
                linked_units=linked,
            )
        return GetConversionFactorResponse(from_unit=source, to_unit=target, factor=factor)

    async def submit_answer(self, body: SubmitAnswerRequest) -> SubmitAnswerResponse:
        """Acknowledges the answer; scoring happens in /verify from the trajectory."""
        value = parse_number(body.value)
        if value is None:
            return SubmitAnswerResponse(
                received=None,
                message=f"Not a number: {body.value!r}. Call submit_answer again with a plain number, e.g. 1609.344.",
            )
        return SubmitAnswerResponse(received=value, message="Answer recorded.")

    async def verify(self, body: UnitConversionChainVerifyRequest) -> UnitConversionChainVerifyResponse:
        calls = [item for item in body.response.output if isinstance(item, NeMoGymResponseFunctionToolCall)]
        submissions = [call for call in calls if call.name == SUBMIT_TOOL]
        submitted = _submitted_value(submissions[-1].arguments) if submissions else None
        relative_error = _relative_error(submitted, body.expected_answer) if submitted is not None else None
        reward = float(relative_error is not None and relative_error <= self.config.relative_tolerance)
        failure_reason = None
        if not submissions:
            failure_reason = "The trajectory has no submit_answer call."
        elif submitted is None:
            failure_reason = f"The last submit_answer call has no numeric value: {submissions[-1].arguments}"
        return UnitConversionChainVerifyResponse(
            **body.model_dump(),
            reward=reward,
            submitted_value=submitted,
            relative_error=relative_error,
            num_lookups=sum(call.name == LOOKUP_TOOL for call in calls),
            num_submissions=len(submissions),
            failure_reason=failure_reason,
        )


def canonical_unit(name: str) -> str | None:
    """The table's name for a unit: case and spacing ignored; plurals ("miles", "feet") and British spellings
    ("litre") accepted."""
    word = " ".join(name.lower().split())
    for candidate in (word, word.removesuffix("s")):
        if candidate in KNOWN_UNITS:
            return candidate
        if candidate in ALIASES:
            return ALIASES[candidate]
    return None


def direct_factor(source: str, target: str) -> float | None:
    if source == target:
        return 1.0
    if (source, target) in DIRECT_FACTORS:
        return DIRECT_FACTORS[(source, target)]
    if (target, source) in DIRECT_FACTORS:
        return 1.0 / DIRECT_FACTORS[(target, source)]
    return None


def linked_units(unit: str) -> list[str]:
    return sorted({b for a, b in DIRECT_FACTORS if a == unit} | {a for a, b in DIRECT_FACTORS if b == unit})


def parse_number(value: Any) -> float | None:
    """A finite number from a JSON number or a numeric string ("1,609.3"); None for anything else (bools too)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value.replace(",", "").strip())
        except ValueError:
            return None
    else:
        return None
    return number if math.isfinite(number) else None


def _submitted_value(arguments: str) -> float | None:
    try:
        parsed = json.loads(arguments)
    except ValueError:
        return None
    return parse_number(parsed.get("value")) if isinstance(parsed, dict) else None


def _relative_error(submitted: float, expected: float) -> float:
    """|submitted - expected| / |expected|; the absolute error when the expected answer is 0."""
    return abs(submitted - expected) / abs(expected) if expected != 0 else abs(submitted)


if __name__ == "__main__":
    UnitConversionChainResourcesServer.run_webserver()
