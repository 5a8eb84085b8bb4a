"""The model catalog of an OpenAI-compatible endpoint (OpenRouter's `GET /models`): prices, context, tool support.

Prices are kept in USD per token, as OpenRouter lists them (decimal strings parsed exactly), and shown per million
tokens. A fetched catalog is cached on disk with its date, so cost estimates and `ng_models` work offline, and say
how old their prices are.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx
from pydantic import BaseModel, ConfigDict, Field

logger = logging.getLogger(__name__)

PER_MILLION = 1_000_000
CACHE_DIR_ENV_VAR = "NEMO_GYM_CACHE_DIR"
DYNAMIC_VARIANTS = frozenset({"nitro", "floor", "online", "exacto"})
"""OpenRouter variants that route the same model differently; they are billed at the base model's prices."""


class CatalogError(Exception):
    """No catalog could be had: the endpoint is unreachable and nothing is cached (the message says what to do)."""


class ModelPrice(BaseModel):
    """USD per million tokens, the unit people compare prices in (configured `prices:` use it too)."""

    model_config = ConfigDict(extra="forbid")
    prompt: float = Field(ge=0, description="USD per million input tokens")
    completion: float = Field(ge=0, description="USD per million output tokens")

    def cost_usd(self, input_tokens: int, output_tokens: int) -> float:
        cost = (
            Decimal(input_tokens) * Decimal(repr(self.prompt)) + Decimal(output_tokens) * Decimal(repr(self.completion))
        ) / PER_MILLION
        return float(cost)


class CatalogModel(BaseModel):
    """One model of a catalog, with only the facts cost and model choice need."""

    model_config = ConfigDict(frozen=True)
    id: str
    canonical_slug: str | None = Field(None, description="The dated slug answers may name instead of the id")
    name: str = ""
    prompt_price: float | None = Field(None, description="USD per token; None when the catalog gives no price")
    completion_price: float | None = None
    context_length: int | None = None
    supports_tools: bool | None = Field(None, description="None when the catalog does not list its parameters")

    @property
    def price(self) -> ModelPrice | None:
        if self.prompt_price is None or self.completion_price is None:
            return None
        return ModelPrice(prompt=_per_million(self.prompt_price), completion=_per_million(self.completion_price))


class Catalog(BaseModel):
    """A catalog as fetched (or read back from the cache) with where and when it came from."""

    base_url: str
    fetched_at: datetime
    models: list[CatalogModel]
    source: str = Field("live", description="live, or cache when read back from disk")

    def find(self, model_id: str) -> CatalogModel | None:
        """The entry for an id, a dynamic variant (`:nitro`) of a listed id, or None."""
        by_id = {m.id: m for m in self.models}
        if model_id in by_id:
            return by_id[model_id]
        base, _, variant = model_id.partition(":")
        return by_id.get(base) if variant in DYNAMIC_VARIANTS else None

    def prices(self) -> dict[str, ModelPrice]:
        """By id, and by canonical slug (OpenRouter answers may name the dated slug of the model that served)."""
        prices = {m.canonical_slug: m.price for m in self.models if m.price is not None and m.canonical_slug}
        prices.update({m.id: m.price for m in self.models if m.price is not None})
        return prices

    @property
    def age_label(self) -> str:
        return self.fetched_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def parse_models(payload: Any) -> list[CatalogModel]:
    """The `data` list of a `/models` answer; entries without an id are skipped, missing facts become None."""
    data = payload.get("data") if isinstance(payload, Mapping) else payload
    if not isinstance(data, list):
        return []
    models = []
    for entry in data:
        if not isinstance(entry, Mapping) or not isinstance(entry.get("id"), str):
            continue
        pricing = entry.get("pricing")
        if not isinstance(pricing, Mapping):
            pricing = {}
        parameters = entry.get("supported_parameters")
        models.append(
            CatalogModel(
                id=entry["id"],
                name=str(entry.get("name") or ""),
                canonical_slug=entry["canonical_slug"] if isinstance(entry.get("canonical_slug"), str) else None,
                prompt_price=_price(pricing.get("prompt")),
                completion_price=_price(pricing.get("completion")),
                context_length=entry.get("context_length") if isinstance(entry.get("context_length"), int) else None,
                supports_tools=("tools" in parameters) if isinstance(parameters, list) else None,
            )
        )
    return models


def _price(value: Any) -> float | None:
    """OpenRouter's decimal strings ("0.00000015"); "-1" marks a variable-priced router, which has no price."""
    if value is None or isinstance(value, bool):
        return None
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    return float(price) if price.is_finite() and price >= 0 else None


def _per_million(price: float) -> float:
    return float(Decimal(repr(price)) * PER_MILLION)


def default_cache_dir() -> Path:
    configured = os.environ.get(CACHE_DIR_ENV_VAR)
    if configured:
        return Path(configured)
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "nemo_gym"


def cache_file(base_url: str, cache_dir: Path | None = None) -> Path:
    """One file per endpoint: `openrouter.ai_api_v1.models.json`."""
    slug = re.sub(r"[^A-Za-z0-9.-]+", "_", base_url.split("://", 1)[-1].strip("/")) or "endpoint"
    return (cache_dir or default_cache_dir()) / "catalog" / f"{slug}.models.json"


def save_cache(catalog: Catalog, cache_dir: Path | None = None) -> Path:
    """Written atomically, so a crash never leaves a half cache that would be read as the truth."""
    path = cache_file(catalog.base_url, cache_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(catalog.model_dump_json(exclude={"source"}, indent=1), encoding="utf-8")
    scratch.replace(path)
    return path


def load_cache(base_url: str, cache_dir: Path | None = None) -> Catalog | None:
    path = cache_file(base_url, cache_dir)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return Catalog.model_validate({**data, "source": "cache"})
    except (OSError, ValueError):
        return None


async def fetch_catalog(
    http: httpx.AsyncClient, base_url: str, *, api_key: str | None = None, timeout_s: float = 20.0
) -> Catalog:
    """GET `{base_url}/models` (no key needed on OpenRouter; sent when given, for endpoints that want one)."""
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    response = await http.get(base_url.rstrip("/") + "/models", headers=headers, timeout=timeout_s)
    response.raise_for_status()
    try:
        payload = response.json()
    except ValueError:
        raise CatalogError(
            f"{base_url}/models answered with something that is not JSON; is base_url the API root "
            "(e.g. https://openrouter.ai/api/v1)?"
        ) from None
    return Catalog(base_url=base_url, fetched_at=datetime.now(UTC), models=parse_models(payload))


async def load_catalog(
    http: httpx.AsyncClient,
    base_url: str,
    *,
    api_key: str | None = None,
    offline: bool = False,
    cache_dir: Path | None = None,
) -> tuple[Catalog, str | None]:
    """The live catalog (and refresh the cache), else the cached one; the second value says why the cache was used."""
    if not offline:
        try:
            catalog = await fetch_catalog(http, base_url, api_key=api_key)
        except (httpx.HTTPError, CatalogError) as exc:
            reason = f"{base_url}/models could not be fetched ({type(exc).__name__}: {str(exc)[:160]})"
        else:
            try:
                save_cache(catalog, cache_dir)
            except OSError as exc:  # the live catalog is still good; only the offline copy is missing
                logger.warning(
                    "Cannot write the catalog cache under %s (%s); set %s to a writable directory.",
                    cache_dir or default_cache_dir(),
                    exc.strerror or exc,
                    CACHE_DIR_ENV_VAR,
                )
            return catalog, None
    else:
        reason = "offline mode"
    cached = load_cache(base_url, cache_dir)
    if cached is None:
        raise CatalogError(
            f"No model catalog for {base_url}: {reason}, and there is no cached copy at "
            f"{cache_file(base_url, cache_dir)}. Run once with network access to fill the cache."
        )
    return cached, reason


def price_lookup(configured: Mapping[str, ModelPrice], catalogs: Iterable[Catalog]) -> dict[str, ModelPrice]:
    """Configured prices win over catalog prices (a negotiated rate, a self-hosted model's cost)."""
    prices: dict[str, ModelPrice] = {}
    for catalog in catalogs:
        prices.update(catalog.prices())
    prices.update(configured)
    return prices


def find_price(prices: Mapping[str, ModelPrice], model_id: str) -> ModelPrice | None:
    """The price of an id or of the base model of a dynamic variant."""
    if model_id in prices:
        return prices[model_id]
    base, _, variant = model_id.partition(":")
    return prices.get(base) if variant in DYNAMIC_VARIANTS else None
