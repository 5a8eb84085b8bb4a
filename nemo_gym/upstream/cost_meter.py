"""A model server's cost meter: fills in cost the endpoint did not report, and holds the server to its budget.

OpenRouter reports each call's USD cost in `usage.cost`; most other OpenAI-compatible servers report only tokens.
For those, cost is tokens × the model's prices (configured `prices`, else the endpoint's catalog, else its cached
catalog) and marked `cost_estimated`, so records never mix guesses with bills silently.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any

from nemo_gym.protocol.types import JSONObject
from nemo_gym.upstream.catalog import Catalog, ModelPrice, find_price

logger = logging.getLogger(__name__)

CatalogFetcher = Callable[[str], Awaitable[Catalog | None]]


class BudgetExhausted(Exception):
    """The server's own max_cost_usd would be passed by one more call; answered with HTTP 402."""


class CostMeter:
    """Spend so far, calls in flight, and the prices to estimate missing costs with."""

    def __init__(
        self, prices: Mapping[str, ModelPrice], *, max_cost_usd: float | None = None, label: str = "model server"
    ) -> None:
        self.prices: dict[str, ModelPrice] = dict(prices)
        self._configured = set(prices)
        self.max_cost_usd = max_cost_usd
        self.label = label
        self.spent_usd = 0.0
        self.calls = 0
        self.in_flight = 0
        self._catalogs_tried: set[str] = set()
        self._catalog_lock = asyncio.Lock()
        self._warned: set[str] = set()

    def add_catalog(self, catalog: Catalog) -> None:
        """Catalog prices, under any configured ones."""
        self._catalogs_tried.add(catalog.base_url.rstrip("/"))
        for model_id, price in catalog.prices().items():
            if model_id not in self._configured:
                self.prices[model_id] = price

    @asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        """One upstream call: refused up front when the budget would be passed, counted while in flight."""
        self._admit()
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def _admit(self) -> None:
        if self.max_cost_usd is None:
            return
        per_call = self.spent_usd / self.calls if self.calls else 0.0
        if self.spent_usd + (self.in_flight + 1) * per_call <= self.max_cost_usd and self.spent_usd < self.max_cost_usd:
            return
        raise BudgetExhausted(
            f"model server '{self.label}' reached its max_cost_usd budget of ${self.max_cost_usd:g}: spent "
            f"${self.spent_usd:.6f} over {self.calls} calls (about ${per_call:.6f} per call, {self.in_flight} in "
            f"flight). Raise max_cost_usd in its config (or +{self.label}.max_cost_usd=...) to continue."
        )

    async def settle(
        self,
        usage: JSONObject | None,
        models: Sequence[str],
        base_urls: Sequence[str],
        fetch_catalog: CatalogFetcher,
    ) -> None:
        """Count the call's cost, first estimating it from prices when the endpoint reported none.

        `models` are the ids to price by, most specific first (the served model, then the requested one)."""
        self.calls += 1
        if not isinstance(usage, dict):
            return
        _add_byok_inference_cost(usage)
        if usage.get("cost") is None:
            price = await self._price(models, base_urls, fetch_catalog)
            if price is None:
                self._warn_unpriced(models)
                return
            usage["cost"] = price.cost_usd(*_tokens(usage))
            usage["cost_estimated"] = True
        self.spent_usd += float(usage["cost"])

    async def _price(
        self, models: Sequence[str], base_urls: Sequence[str], fetch_catalog: CatalogFetcher
    ) -> ModelPrice | None:
        for model in models:
            if (price := find_price(self.prices, model)) is not None:
                return price
        async with self._catalog_lock:  # one catalog fetch per endpoint, however many calls are waiting
            for base_url in (b.rstrip("/") for b in base_urls):
                if base_url in self._catalogs_tried:
                    continue
                self._catalogs_tried.add(base_url)
                catalog = await fetch_catalog(base_url)
                if catalog is not None:
                    self.add_catalog(catalog)
        return next((p for p in (find_price(self.prices, m) for m in models) if p is not None), None)

    def _warn_unpriced(self, models: Sequence[str]) -> None:
        model = models[0] if models else "?"
        if model in self._warned:
            return
        self._warned.add(model)
        logger.warning(
            "%s: the endpoint reported no cost for %s and no price is known for it; its cost stays "
            "unknown. Set `prices: {%s: {prompt: <USD per 1M input tokens>, completion: <USD per 1M "
            "output tokens>}}` in this model server's config.%s",
            self.label,
            model,
            model,
            " Until then its max_cost_usd cannot count these calls." if self.max_cost_usd else "",
        )


def _tokens(usage: Mapping[str, Any]) -> tuple[int, int]:
    """Input and output tokens from Responses (`input_tokens`) or Chat Completions (`prompt_tokens`) usage."""
    inputs = usage.get("input_tokens", usage.get("prompt_tokens")) or 0
    outputs = usage.get("output_tokens", usage.get("completion_tokens")) or 0
    return int(inputs), int(outputs)


def _add_byok_inference_cost(usage: JSONObject) -> None:
    """With your own provider key (BYOK) OpenRouter's `cost` is only its fee; the provider bills
    `cost_details.upstream_inference_cost` on top. Records carry what the call cost in all."""
    details = usage.get("cost_details")
    upstream = details.get("upstream_inference_cost") if isinstance(details, Mapping) else None
    if usage.get("is_byok") and isinstance(upstream, int | float) and usage.get("cost") is not None:
        usage["cost"] = float(usage["cost"]) + float(upstream)
