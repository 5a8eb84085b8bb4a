"""Which models a request may be served by, in order: `model`, then the `models` fallbacks, filtered by
tool support and `provider` preferences, as OpenRouter routes before the first byte."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nemo_gym.emulator.config import EmulatedModel
from nemo_gym.emulator.errors import (
    NO_TOOL_ENDPOINTS,
    TOO_MANY_MODELS,
    EmulatorError,
    invalid_model,
    no_endpoints,
)

MAX_FALLBACK_MODELS = 3


def candidates(body: Mapping[str, Any], catalog: Mapping[str, EmulatedModel]) -> list[EmulatedModel]:
    """`[model] + models` without repeats; 400 for a long `models`, a missing or an unknown id."""
    fallbacks = body.get("models")
    if fallbacks is None:
        fallbacks = []
    if not isinstance(fallbacks, list) or not all(isinstance(m, str) for m in fallbacks):
        raise EmulatorError(400, "'models' must be an array of model ID strings.")
    if len(fallbacks) > MAX_FALLBACK_MODELS:
        raise EmulatorError(400, TOO_MANY_MODELS)
    primary = body.get("model")
    if primary is not None and not isinstance(primary, str):
        raise EmulatorError(400, "'model' must be a string.")
    ids = ([primary] if primary else []) + fallbacks
    if not ids:
        raise EmulatorError(400, "No model specified: set 'model' (the emulator has no account default).")
    chosen: list[EmulatedModel] = []
    for model_id in ids:
        if model_id not in catalog:
            raise EmulatorError(400, invalid_model(model_id))
        if catalog[model_id] not in chosen:
            chosen.append(catalog[model_id])
    return chosen


def provider_preferences(body: Mapping[str, Any]) -> Mapping[str, Any]:
    preferences = body.get("provider")
    if preferences is None:
        return {}
    if not isinstance(preferences, Mapping):
        raise EmulatorError(400, "'provider' must be an object.")
    for key in ("only", "ignore", "order"):
        value = preferences.get(key)
        if value is not None and not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise EmulatorError(400, f"'provider.{key}' must be an array of provider slugs.")
    return preferences


def _slugs(value: Any) -> set[str]:
    """Provider slugs, by their base part: "deepinfra/turbo" counts as "deepinfra"."""
    return {str(v).lower().split("/")[0] for v in value or []}


def ineligibility(model: EmulatedModel, body: Mapping[str, Any]) -> EmulatorError | None:
    """Why `model`'s (single) endpoint cannot serve this request, or None if it can."""
    if body.get("tools") and not model.supports_tools:
        return EmulatorError(404, NO_TOOL_ENDPOINTS)
    preferences = provider_preferences(body)
    slug = model.provider_slug
    only, ignore, order = (_slugs(preferences.get(k)) for k in ("only", "ignore", "order"))
    excluded = (preferences.get("only") is not None and slug not in only) or slug in ignore
    # `order` only ranks providers, unless fallbacks to unlisted ones are turned off.
    if preferences.get("order") and preferences.get("allow_fallbacks") is False and slug not in order:
        excluded = True
    return EmulatorError(404, no_endpoints(model.id)) if excluded else None
