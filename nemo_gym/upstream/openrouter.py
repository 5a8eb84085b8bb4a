"""OpenRouter's own rules, checked before any rollout spends money: key format, model id format, and a one-time
preflight against `/key` and `/models` that turns a rejected key or an unknown model into one clear message."""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import httpx

from nemo_gym.protocol.types import JSONObject
from nemo_gym.upstream.catalog import DYNAMIC_VARIANTS, Catalog, parse_models
from nemo_gym.upstream.endpoint import UpstreamEndpoint

KEY_PREFIX = "sk-or-"
MODEL_ID = re.compile(r"^~?[A-Za-z0-9][\w.\-]*/[\w.\-]+(:[\w.\-]+)?$")
KEY_ADVICE = (
    "Verify the OpenRouter API key format starts with `sk-or-`, check the key is active in the OpenRouter "
    "dashboard, and ensure sufficient credits or a payment method are configured."
)
MODEL_ADVICE = (
    "Check the model identifier format `provider/model-name`, verify the model is available in "
    "OpenRouter's catalog (https://openrouter.ai/models), and ensure provider access is enabled."
)


class PreflightError(Exception):
    """The endpoint refused the key, knows none of the models, or has no credits: nothing would succeed."""


def openrouter_config_problems(api_key: str | None, models: Sequence[str]) -> list[str]:
    """What is wrong with an OpenRouter key and model ids on their face, before any call."""
    problems = []
    if not api_key:
        problems.append(
            "api_key is missing: set the key this instance's `api_key` reads in env.yaml (policy_api_key for "
            f"policy_model, judge_api_key for judge_model). {KEY_ADVICE}"
        )
    elif not api_key.startswith(KEY_PREFIX):
        problems.append(
            f"api_key does not look like an OpenRouter key (it should start with `{KEY_PREFIX}`). {KEY_ADVICE}"
        )
    for model in models:
        if not MODEL_ID.match(model):
            problems.append(
                f"model id '{model}' is not in the form provider/model-name[:variant] "
                f"(e.g. openai/gpt-4-turbo, meta-llama/llama-3.1-8b-instruct:free). {MODEL_ADVICE}"
            )
    return problems


def close_matches(model: str, known: Sequence[str], n: int = 3) -> list[str]:
    """Catalog ids a typo most likely meant, comparing whole ids and then the part after the provider."""
    found = difflib.get_close_matches(model, known, n=n, cutoff=0.6)
    if len(found) < n:
        tails = {k.split("/", 1)[-1]: k for k in known}
        found += [
            tails[t]
            for t in difflib.get_close_matches(model.split("/", 1)[-1], list(tails), n=n, cutoff=0.6)
            if tails[t] not in found
        ]
    return found[:n]


async def preflight(
    http: httpx.AsyncClient, endpoint: UpstreamEndpoint, models: Sequence[str], *, timeout_s: float = 20.0
) -> JSONObject:
    """Call `/key` and `/models` once; raise PreflightError with advice, or return what was learned."""
    base = endpoint.base_url.rstrip("/")
    try:
        key_answer = await http.get(f"{base}/key", headers=endpoint.headers(), timeout=timeout_s)
        models_answer = await http.get(f"{base}/models", timeout=timeout_s)
    except httpx.HTTPError as exc:
        raise PreflightError(
            f"Cannot reach {base} to check the API key and model ({type(exc).__name__}). Check "
            "policy_base_url and the network, or set `preflight: false` to skip this check."
        ) from None
    if key_answer.status_code in (401, 403):
        raise PreflightError(
            f"{base} rejected the API key (HTTP {key_answer.status_code}: {_message(key_answer)}). {KEY_ADVICE}"
        )
    key_info = _data(key_answer)
    remaining = key_info.get("limit_remaining")
    if isinstance(remaining, int | float) and remaining <= 0:
        raise PreflightError(
            f"The API key has no credits left (limit {key_info.get('limit')} USD, remaining "
            f"{remaining}). Add credits or raise the key's limit in the OpenRouter dashboard."
        )
    listed = parse_models(_json(models_answer))
    catalog = [m.id for m in listed]
    if catalog:
        unknown = [m for m in models if not _in_catalog(m, set(catalog))]
        if unknown:
            hints = []
            for model in unknown:
                near = close_matches(model, catalog)
                hints.append(f"'{model}'" + (f" (did you mean {', '.join(near)}?)" if near else ""))
            raise PreflightError(f"Model not available at {base}: {'; '.join(hints)}. {MODEL_ADVICE}")
    return {
        "key": key_info,
        "models_in_catalog": len(catalog),
        "catalog": Catalog(base_url=base, fetched_at=datetime.now(UTC), models=listed),
    }


def _in_catalog(model: str, catalog: set[str]) -> bool:
    """Listed, a dynamic variant (`:nitro`, `:floor`, ...) of a listed model, or a router/alias slug."""
    base, _, variant = model.partition(":")
    return (
        model in catalog or (base in catalog and variant in DYNAMIC_VARIANTS) or model.startswith(("openrouter/", "~"))
    )


def _message(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    error = body.get("error") if isinstance(body, dict) else None
    return str(error.get("message") if isinstance(error, dict) else body)[:200]


def _data(response: httpx.Response) -> JSONObject:
    try:
        body = response.json()
    except ValueError:
        return {}
    data = body.get("data") if isinstance(body, dict) else None
    return data if isinstance(data, dict) else {}


def _json(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None
