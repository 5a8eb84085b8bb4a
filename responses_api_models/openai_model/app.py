"""Model server for OpenRouter and any OpenAI-compatible endpoint.

Serves the Responses API (what agents call) and Chat Completions, forwarding to `base_url` with `api_key` and
`model`. The upstream may speak either API; requests and responses are converted as needed, and every answer
carries what cost and debugging need under `nemo_gym` (served model, provider, latency, upstream API).
"""

from __future__ import annotations

import logging
from typing import Literal
from urllib.parse import urlparse

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

from nemo_gym.config.types import GlobalConfig
from nemo_gym.http.lean_client import UpstreamPool
from nemo_gym.http.pool import make_http_client
from nemo_gym.http.server_client import OUTAGE_FLAG
from nemo_gym.protocol import token_ids
from nemo_gym.protocol.conversion import (
    chat_to_responses_payload,
    chat_to_responses_request,
    responses_to_chat_payload,
    responses_to_chat_request,
)
from nemo_gym.protocol.token_ids import TokenInfo
from nemo_gym.protocol.types import JSONObject, ModelCallMetadata, TokenInfoStatus
from nemo_gym.servers.base import (
    BaseServerConfig,
    JSONResponse,
    StartupError,
    error_body,
)
from nemo_gym.servers.model import BaseModelServer, InvalidRequest
from nemo_gym.upstream.catalog import Catalog, CatalogError, ModelPrice, fetch_catalog, load_cache
from nemo_gym.upstream.cost_meter import BudgetExhausted, CostMeter
from nemo_gym.upstream.endpoint import UpstreamAPI, UpstreamEndpoint, UpstreamError, default_api, is_openrouter
from nemo_gym.upstream.openrouter import PreflightError, openrouter_config_problems, preflight
from nemo_gym.upstream.ratelimit import AdaptiveLimiter
from nemo_gym.upstream.retry import RetryPolicy
from nemo_gym.upstream.routing import RoutedCall, Router, Target, targets_for
from nemo_gym.upstream.token_fields import (
    TokenSource,
    chat_request_fields,
    complete,
    missing_detail,
    responses_request_fields,
    vllm_prompt_ids,
)

logger = logging.getLogger(__name__)


class FallbackEndpoint(BaseModel):
    """Another endpoint to use when the primary is exhausted, e.g. a provider's own API when OpenRouter is down."""

    model_config = ConfigDict(extra="forbid")
    base_url: str
    api_key: str | None = None
    model: str
    fallback_models: list[str] = Field(default_factory=list)
    headers: dict[str, str] = Field(default_factory=dict)


class OpenAIModelConfig(BaseServerConfig):
    base_url: str = Field(description="OpenAI-compatible base URL, e.g. https://openrouter.ai/api/v1")
    api_key: str | None = Field(default=None, description="Bearer key; OpenRouter keys start with sk-or-")
    model: str = Field(description="Model id sent upstream, e.g. openai/gpt-4-turbo")
    api: Literal["auto", "chat_completions", "responses"] = Field(
        default="auto", description="Upstream API; auto = Chat Completions except for api.openai.com"
    )
    timeout_s: float = Field(default=600.0, gt=0, description="Longest one upstream attempt may take, in total")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    extra_body: JSONObject = Field(
        default_factory=dict, description="Merged into every upstream body, e.g. OpenRouter's provider"
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers, e.g. HTTP-Referer, X-Title")
    fallback_models: list[str] = Field(
        default_factory=list, description="Models to try after `model` (OpenRouter: its native `models`)"
    )
    fallbacks: list[FallbackEndpoint] = Field(
        default_factory=list, description="Other endpoints, tried when the primary is exhausted"
    )
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    max_concurrent_requests: int = Field(default=256, ge=1, description="Upstream calls in flight at most")
    adaptive_concurrency: bool = Field(default=True, description="Halve the limit on 429s, grow it back on success")
    openrouter: bool | None = Field(
        default=None,
        description="Speak OpenRouter's extensions; default: detect from "
        "base_url (openrouter.ai or an .../api/v1 path)",
    )
    preflight: bool | None = Field(
        default=None, description="Check the key and model ids once at start-up; default: on for OpenRouter"
    )
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict,
        description="USD per million tokens by model id ({prompt: .., completion: ..}), to "
        "estimate cost where the endpoint reports none; the endpoint's catalog prices are used otherwise",
    )
    max_cost_usd: float | None = Field(
        default=None,
        gt=0,
        description="Refuse new calls (HTTP 402) once this "
        "server's spend plus its calls in flight would pass this (USD)",
    )
    return_token_id_information: bool = Field(
        default=False,
        description="Ask the upstream for token ids and logprobs and record them on each call's last output item "
        "as prompt_token_ids, generation_token_ids, generation_log_probs (NeMo Gym's names)",
    )
    upstream_flavor: Literal["auto", "openai", "vllm"] = Field(
        default="auto",
        description="Which token fields the upstream speaks: openai (logprobs and token strings only), vllm "
        "(exact ids via return_token_ids); auto = openai for OpenRouter and api.openai.com, vllm otherwise",
    )

    @model_validator(mode="after")
    def _check_openrouter_settings(self) -> OpenAIModelConfig:
        problems = []
        chains = [(self.base_url, self.api_key, [self.model, *self.fallback_models], self.openrouter)]
        chains += [(f.base_url, f.api_key, [f.model, *f.fallback_models], None) for f in self.fallbacks]
        for base_url, api_key, models, flag in chains:
            if not (is_openrouter(base_url) if flag is None else flag):
                continue
            problems += openrouter_config_problems(api_key, models)
        if problems:
            raise ValueError(" ".join(problems))
        return self


class OpenAIModelServer(BaseModelServer):
    config_class = OpenAIModelConfig
    config: OpenAIModelConfig

    def __init__(self, name: str, config: OpenAIModelConfig, global_config: GlobalConfig) -> None:
        super().__init__(name, config, global_config)
        self._upstream_http: UpstreamPool | None = None
        self._control_http: httpx.AsyncClient | None = None
        """For the one-off calls (preflight, catalog), apart from the model calls' pool."""
        self._router: Router | None = None
        self.cost = CostMeter(config.prices, max_cost_usd=config.max_cost_usd, label=name)
        self.redactor.add(*(key for key in [config.api_key, *(f.api_key for f in config.fallbacks)] if key))
        self._warned_token_models: set[str] = set()
        """Models already reported for missing token information: once each, not once per row."""
        self._token_source: TokenSource | None = None
        """Fixed at start-up (local_model sets its base_url then); read on every call."""

    @property
    def upstream_api(self) -> UpstreamAPI:
        return default_api(self.config.base_url) if self.config.api == "auto" else self.config.api

    @property
    def speaks_openrouter(self) -> bool:
        return is_openrouter(self.config.base_url) if self.config.openrouter is None else self.config.openrouter

    @property
    def token_source(self) -> TokenSource:
        """Where token information comes from (see `nemo_gym/upstream/token_fields.py`)."""
        if self._token_source is not None:
            return self._token_source
        if self.upstream_api == "responses":
            return "responses_logprobs"
        flavor = self.config.upstream_flavor
        if flavor == "auto":
            official = urlparse(self.config.base_url).hostname == "api.openai.com"
            flavor = "openai" if self.speaks_openrouter or official else "vllm"
        return "vllm" if flavor == "vllm" else "chat_logprobs"

    @property
    def chat_path(self) -> str:
        """The upstream's Chat Completions path, under `base_url`."""
        return "chat/completions"

    def endpoint(self) -> UpstreamEndpoint:
        return UpstreamEndpoint(
            base_url=self.config.base_url,
            model=self.config.model,
            api_key=self.config.api_key,
            extra_headers=self.config.headers,
        )

    def targets(self) -> list[Target]:
        """The primary with its fallback models, then each fallback endpoint with its own."""
        targets = targets_for(self.endpoint(), self.config.fallback_models, openrouter=self.speaks_openrouter)
        for fallback in self.config.fallbacks:
            endpoint = UpstreamEndpoint(
                base_url=fallback.base_url,
                model=fallback.model,
                api_key=fallback.api_key,
                extra_headers={**self.config.headers, **fallback.headers},
            )
            targets += targets_for(endpoint, fallback.fallback_models)
        return targets

    @property
    def upstream_http(self) -> UpstreamPool:
        if self._upstream_http is None:
            raise RuntimeError("The upstream client exists only while the server is running.")
        return self._upstream_http

    @property
    def control_http(self) -> httpx.AsyncClient:
        if self._control_http is None:
            raise RuntimeError("The control client exists only while the server is running.")
        return self._control_http

    @property
    def router(self) -> Router:
        if self._router is None:
            raise RuntimeError("The router exists only while the server is running.")
        return self._router

    async def startup(self) -> None:
        await super().startup()
        self._upstream_http = UpstreamPool(
            max_connections=self.config.max_concurrent_requests,
            timeout=self.config.timeout_s,
            connect_timeout=self.config.connect_timeout_s,
        )
        self._control_http = make_http_client(
            max_connections=8, timeout=60.0, connect_timeout=self.config.connect_timeout_s
        )
        limiter = AdaptiveLimiter(
            self.config.max_concurrent_requests, adaptive=self.config.adaptive_concurrency, label=self.name
        )
        self._router = Router(
            self.targets(), self.config.retry, limiter, timeout_s=self.config.timeout_s, label=self.name
        )
        if self.config.preflight if self.config.preflight is not None else self.speaks_openrouter:
            await self._preflight()
        if self.config.return_token_id_information:
            self._token_source = self.token_source
            logger.info(
                "%s: recording token information from a %s upstream%s",
                self.name,
                self.token_source,
                "" if self.token_source in ("vllm", "llama_cpp") else " (logprobs and token strings; no token ids)",
            )

    async def _preflight(self) -> None:
        try:
            found = await preflight(
                self.control_http, self.endpoint(), [self.config.model, *self.config.fallback_models]
            )
        except PreflightError as exc:
            raise StartupError(self.redactor.text(f"{self.name}: {exc}")) from None
        self.cost.add_catalog(found["catalog"])
        key = found["key"]
        logger.info(
            "%s: preflight ok (key usage %s USD, limit %s USD; %d models in the catalog)",
            self.name,
            key.get("usage"),
            key.get("limit"),
            found["models_in_catalog"],
        )

    async def shutdown(self) -> None:
        if self._upstream_http is not None:
            await self._upstream_http.aclose()
            self._upstream_http = None
        if self._control_http is not None:
            await self._control_http.aclose()
            self._control_http = None
        await super().shutdown()

    # ------------------------------------------------------------------ the two APIs

    def _target_body(self, body: JSONObject, target: Target) -> JSONObject:
        routed = {**body, "model": target.model, **self.config.extra_body}
        if target.native_fallbacks:
            routed["models"] = list(target.native_fallbacks)
        return routed

    async def responses(self, params: JSONObject) -> JSONObject:
        """Answer a Responses `create` body, converting through Chat Completions when the upstream needs it."""
        _reject_streaming(params)
        async with self.cost.call():
            result, routed, tokens = await self._responses(params)
        await self._settle(result, routed)
        result["nemo_gym"] = self._metadata(routed, result, tokens)
        return result

    async def _responses(self, params: JSONObject) -> tuple[JSONObject, RoutedCall, TokenInfoStatus | None]:
        recording = self.config.return_token_id_information
        if self.upstream_api == "responses":
            body = {k: v for k, v in params.items() if k != "stream"}
            if "input" in body:
                body["input"] = token_ids.strip_items(body["input"])
            if recording:
                body.update(responses_request_fields(params))
            routed = await self.router.call(
                self.upstream_http, "responses", lambda target: self._target_body(body, target)
            )
            result = _complete_usage_details(dict(routed.call.body))
            if not recording:
                return result, routed, None
            info = token_ids.responses_token_info(result)
            token_ids.attach(result.get("output") or [], info)
            return result, routed, self._token_status(info, routed, result)
        chat_body = responses_to_chat_request(params, model=self.config.model, reasoning_field=self.speaks_openrouter)
        if recording:
            chat_body.update(chat_request_fields(self.token_source, params))
        routed = await self.router.call(
            self.upstream_http,
            self.chat_path,
            lambda target: self.adapt_chat_body(self._target_body(chat_body, target)),
        )
        result = chat_to_responses_payload(routed.call.body, params, token_info=recording)
        if not recording:
            return result, routed, None
        output = result.get("output") or []
        info = token_ids.call_info(output)
        if self.token_source == "vllm" and token_ids.GENERATION_TOKEN_IDS in info and not complete(info):
            prompt = await vllm_prompt_ids(
                self.upstream_http,
                routed.target.endpoint,
                {**chat_body, "model": routed.target.model},
                timeout_s=self.config.timeout_s,
            )
            if prompt is not None:
                info = {token_ids.PROMPT_TOKEN_IDS: prompt, **info}
                token_ids.attach(output, info)
        return result, routed, self._token_status(info, routed, result)

    def _token_status(self, info: TokenInfo, routed: RoutedCall, result: JSONObject) -> TokenInfoStatus:
        """What the call recorded; what an upstream failed to give is said in the record and, once per model, in
        the log (a run of thousands of rows gets one line, not thousands)."""
        provider = routed.call.body.get("provider") or routed.call.headers.get("x-provider-name")
        detail = missing_detail(self.token_source, info, provider if isinstance(provider, str) else None)
        if detail:
            model = str(result.get("model") or routed.target.model)
            if model not in self._warned_token_models:
                self._warned_token_models.add(model)
                logger.warning(
                    "%s: token information missing for model %s: %s. Records say so under "
                    "nemo_gym.token_info; this is reported once per model.",
                    self.name,
                    model,
                    detail,
                )
        return token_ids.status(info, self.token_source, detail=detail)

    def adapt_chat_body(self, body: JSONObject) -> JSONObject:
        """Last change to a Chat Completions body before it goes upstream; subclasses adapt to their server."""
        return body

    async def chat_completions(self, body: JSONObject) -> JSONObject:
        """Answer a Chat Completions body, converting through Responses when the upstream needs it."""
        _reject_streaming(body)
        async with self.cost.call():
            result, routed, tokens = await self._chat_completions(body)
        await self._settle(result, routed)
        result["nemo_gym"] = self._metadata(routed, result, tokens)
        return result

    async def _chat_completions(self, body: JSONObject) -> tuple[JSONObject, RoutedCall, TokenInfoStatus | None]:
        recording = self.config.return_token_id_information
        if self.upstream_api == "chat_completions":
            filled = _fill_null_assistant_content(body)
            stripped = token_ids.strip_items(filled.get("messages"))
            if stripped is not filled.get("messages"):
                filled = {**filled, "messages": stripped}
            if recording:
                filled = {**filled, **chat_request_fields(self.token_source, body)}
            routed = await self.router.call(
                self.upstream_http,
                self.chat_path,
                lambda target: self.adapt_chat_body(self._target_body(filled, target)),
            )
            result = dict(routed.call.body)
            if not recording:
                return result, routed, None
            info = token_ids.chat_token_info(result)
            token_ids.on_chat_message(result, info)
            return result, routed, self._token_status(info, routed, result)
        params = chat_to_responses_request(body, model=self.config.model)
        if recording:
            params.update(responses_request_fields(params))
        routed = await self.router.call(
            self.upstream_http, "responses", lambda target: self._target_body(params, target)
        )
        if not recording:
            return responses_to_chat_payload(routed.call.body), routed, None
        info = token_ids.responses_token_info(routed.call.body)
        result = responses_to_chat_payload(routed.call.body)
        token_ids.on_chat_message(result, info)
        return result, routed, self._token_status(info, routed, result)

    async def _settle(self, result: JSONObject, routed: RoutedCall) -> None:
        """Count the call's cost (estimated from prices when the endpoint reported none)."""
        models = [str(m) for m in (result.get("model"), routed.target.model) if m]
        base_urls = [routed.target.endpoint.base_url, *(t.endpoint.base_url for t in self.router.targets)]
        await self.cost.settle(result.get("usage"), models, list(dict.fromkeys(base_urls)), self._catalog_of)

    async def _catalog_of(self, base_url: str) -> Catalog | None:
        """An endpoint's live catalog, else its cached one (from ng_models), else None."""
        endpoint = next((t.endpoint for t in self.router.targets if t.endpoint.base_url.rstrip("/") == base_url), None)
        try:
            return await fetch_catalog(
                self.control_http,
                base_url,
                api_key=endpoint.api_key if endpoint else None,
                timeout_s=self.config.connect_timeout_s + 10,
            )
        except (httpx.HTTPError, CatalogError):
            return load_cache(base_url)

    def _metadata(self, routed: RoutedCall, result: JSONObject, tokens: TokenInfoStatus | None) -> ModelCallMetadata:
        call = routed.call
        served_model = result.get("model")
        metadata: ModelCallMetadata = {
            "requested_model": self.config.model,
            "served_model": served_model or routed.target.model,
            "provider": call.body.get("provider") or call.headers.get("x-provider-name"),
            "endpoint": urlparse(routed.target.endpoint.base_url).netloc,
            "upstream_api": self.upstream_api,
            "latency_s": round(call.latency_s, 4),
            "attempts": routed.stats.attempts,
            "retries": routed.stats.retries,
            "retry_wait_s": round(routed.stats.waited_s, 3),
            "errors": routed.stats.errors,
            "failovers": routed.failovers,
            "cost_estimated": bool((result.get("usage") or {}).get("cost_estimated")),
        }
        if tokens is not None:
            metadata["token_info"] = tokens
        return metadata

    def health_details(self) -> JSONObject:
        """What this server spent upstream since it started: a collector reads it before and after a run to count
        what no record holds (rollouts cancelled while their calls were in flight)."""
        meter = self.cost
        return {"spend": {"cost_usd": round(meter.spent_usd, 10), "calls": meter.calls, "in_flight": meter.in_flight}}

    @property
    def served_model(self) -> str:
        return self.config.model

    @property
    def served_models(self) -> list[str]:
        """`model`, its fallback models, then each fallback endpoint's: an answer may come from any of them, so a
        request may name any of them (it is still routed from `model` on, as configured)."""
        chain = [self.config.model, *self.config.fallback_models]
        for fallback in self.config.fallbacks:
            chain += [fallback.model, *fallback.fallback_models]
        return list(dict.fromkeys(chain))

    def error_answer(self, exc: Exception) -> JSONResponse | None:
        if isinstance(exc, UpstreamError):
            return JSONResponse(
                error_body(
                    self.redactor.text(str(exc)),
                    "upstream_error",
                    upstream_status=exc.upstream_status,
                    **({OUTAGE_FLAG: True} if exc.outage else {}),
                ),
                exc.status_code,
            )
        if isinstance(exc, BudgetExhausted):
            return JSONResponse(error_body(str(exc), "budget_exhausted"), 402)
        if isinstance(exc, ValueError):
            return JSONResponse(error_body(self.redactor.text(f"Cannot convert: {exc}"), "conversion_error"), 502)
        return super().error_answer(exc)


def _complete_usage_details(response: JSONObject) -> JSONObject:
    """Responses usage from servers that leave out token details gets zeros, so every answer is a valid Response."""
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return response
    inputs = {"cached_tokens": 0, "cache_write_tokens": 0, **(usage.get("input_tokens_details") or {})}
    outputs = {"reasoning_tokens": 0, **(usage.get("output_tokens_details") or {})}
    return {**response, "usage": {**usage, "input_tokens_details": inputs, "output_tokens_details": outputs}}


def _fill_null_assistant_content(body: JSONObject) -> JSONObject:
    """Assistant messages echoed back as `content: null` (how tool-call-only turns come out of Chat Completions)
    get `""`: several servers reject null there, which would break the second turn of every tool conversation."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    filled = [
        {**m, "content": ""}
        if isinstance(m, dict) and m.get("role") == "assistant" and "content" in m and m["content"] is None
        else m
        for m in messages
    ]
    return {**body, "messages": filled}


def _reject_streaming(body: JSONObject) -> None:
    if body.get("stream"):
        raise InvalidRequest(
            "stream=true is not supported by this model server: rollouts need whole responses. "
            "Remove `stream` from responses_create_params."
        )


if __name__ == "__main__":
    from nemo_gym.cli.serve import main

    main()
