"""Model server for OpenRouter and any OpenAI-compatible endpoint.

Serves the Responses API (what agents call) and Chat Completions, forwarding to `base_url` with `api_key` and
`model`. The upstream may speak either API; requests and responses are converted as needed, and every answer
carries what cost and debugging need under `nemo_gym` (served model, provider, latency, upstream API).
"""

from __future__ import annotations

from typing import Any, Literal

import httpx
from fastapi import FastAPI, Request
from pydantic import Field

from nemo_gym.client import make_http_client
from nemo_gym.config import GlobalConfig
from nemo_gym.conversion import (
    chat_to_responses_request,
    chat_to_responses_response,
    responses_to_chat_request,
    responses_to_chat_response,
)
from nemo_gym.server import BaseServer, BaseServerConfig, JSONResponse, error_body, read_json_object
from nemo_gym.upstream import UpstreamAPI, UpstreamCall, UpstreamEndpoint, UpstreamError, default_api, is_openrouter


class InvalidRequest(Exception):
    """The request asks for something this server does not do; answered with 400 before any upstream call."""


class OpenAIModelConfig(BaseServerConfig):
    base_url: str = Field(description="OpenAI-compatible base URL, e.g. https://openrouter.ai/api/v1")
    api_key: str | None = Field(default=None, description="Bearer key; OpenRouter keys start with sk-or-")
    model: str = Field(description="Model id sent upstream, e.g. openai/gpt-4-turbo")
    api: Literal["auto", "chat_completions", "responses"] = Field(
        default="auto", description="Upstream API; auto = Chat Completions except for api.openai.com")
    timeout_s: float = Field(default=600.0, gt=0, description="Read timeout of one upstream call")
    connect_timeout_s: float = Field(default=10.0, gt=0)
    extra_body: dict[str, Any] = Field(default_factory=dict, description="Merged into every upstream body")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra headers, e.g. HTTP-Referer, X-Title")


class OpenAIModelServer(BaseServer):
    config_class = OpenAIModelConfig
    config: OpenAIModelConfig

    def __init__(self, name: str, config: OpenAIModelConfig, global_config: GlobalConfig) -> None:
        super().__init__(name, config, global_config)
        self._upstream_http: httpx.AsyncClient | None = None
        if config.api_key:
            self.redactor.add(config.api_key)

    @property
    def upstream_api(self) -> UpstreamAPI:
        return default_api(self.config.base_url) if self.config.api == "auto" else self.config.api

    def endpoint(self) -> UpstreamEndpoint:
        return UpstreamEndpoint(base_url=self.config.base_url, model=self.config.model,
                                api_key=self.config.api_key, extra_headers=self.config.headers)

    @property
    def upstream_http(self) -> httpx.AsyncClient:
        if self._upstream_http is None:
            raise RuntimeError("The upstream client exists only while the server is running.")
        return self._upstream_http

    async def startup(self) -> None:
        await super().startup()
        self._upstream_http = make_http_client(timeout=self.config.timeout_s,
                                               connect_timeout=self.config.connect_timeout_s)

    async def shutdown(self) -> None:
        if self._upstream_http is not None:
            await self._upstream_http.aclose()
            self._upstream_http = None
        await super().shutdown()

    # ------------------------------------------------------------------ the two APIs

    async def responses(self, params: dict[str, Any]) -> dict[str, Any]:
        """Answer a Responses `create` body, converting through Chat Completions when the upstream needs it."""
        _reject_streaming(params)
        endpoint = self.endpoint()
        if self.upstream_api == "responses":
            body = {**params, "model": endpoint.model, **self.config.extra_body}
            body.pop("stream", None)
            call = await endpoint.post(self.upstream_http, "responses", body)
            result = _complete_usage_details(dict(call.body))
        else:
            chat_body = responses_to_chat_request(
                params, model=endpoint.model, reasoning_field=is_openrouter(endpoint.base_url))
            call = await endpoint.post(self.upstream_http, "chat/completions",
                                       self.adapt_chat_body({**chat_body, **self.config.extra_body}))
            result = chat_to_responses_response(call.body, params).model_dump(mode="json", exclude_unset=True)
        result["nemo_gym"] = self._metadata(call, result.get("model"))
        return result

    def adapt_chat_body(self, body: dict[str, Any]) -> dict[str, Any]:
        """Last change to a Chat Completions body before it goes upstream; subclasses adapt to their server."""
        return body

    async def chat_completions(self, body: dict[str, Any]) -> dict[str, Any]:
        """Answer a Chat Completions body, converting through Responses when the upstream needs it."""
        _reject_streaming(body)
        endpoint = self.endpoint()
        if self.upstream_api == "chat_completions":
            call = await endpoint.post(self.upstream_http, "chat/completions",
                                       self.adapt_chat_body({**_fill_null_assistant_content(body),
                                                             "model": endpoint.model, **self.config.extra_body}))
            result = dict(call.body)
        else:
            params = {**chat_to_responses_request(body, model=endpoint.model), **self.config.extra_body}
            call = await endpoint.post(self.upstream_http, "responses", params)
            result = responses_to_chat_response(call.body).model_dump(mode="json", exclude_unset=True)
        result["nemo_gym"] = self._metadata(call, result.get("model"))
        return result

    def _metadata(self, call: UpstreamCall, served_model: Any) -> dict[str, Any]:
        return {
            "requested_model": self.config.model,
            "served_model": served_model or self.config.model,
            "provider": call.body.get("provider"),
            "upstream_api": self.upstream_api,
            "latency_s": round(call.latency_s, 4),
            "attempts": call.attempts,
        }

    def add_routes(self, app: FastAPI) -> None:
        @app.post("/v1/responses")
        async def responses(request: Request) -> JSONResponse:
            return await self._answer(request, self.responses)

        @app.post("/v1/chat/completions")
        async def chat_completions(request: Request) -> JSONResponse:
            return await self._answer(request, self.chat_completions)

        @app.get("/v1/models")
        async def models() -> dict[str, Any]:
            return {"object": "list", "data": [{"id": self.config.model, "object": "model",
                                                "owned_by": self.name}]}

    async def _answer(self, request: Request, handler: Any) -> JSONResponse:
        body = await read_json_object(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            return JSONResponse(await handler(body))
        except UpstreamError as exc:
            return JSONResponse(error_body(self.redactor.text(str(exc)), "upstream_error",
                                           upstream_status=exc.upstream_status), exc.status_code)
        except InvalidRequest as exc:
            return JSONResponse(error_body(str(exc), "invalid_request"), 400)
        except ValueError as exc:
            return JSONResponse(error_body(self.redactor.text(f"Cannot convert: {exc}"), "conversion_error"), 502)


def _complete_usage_details(response: dict[str, Any]) -> dict[str, Any]:
    """Responses usage from servers that leave out token details gets zeros, so every answer is a valid Response."""
    usage = response.get("usage")
    if not isinstance(usage, dict):
        return response
    inputs = {"cached_tokens": 0, "cache_write_tokens": 0, **(usage.get("input_tokens_details") or {})}
    outputs = {"reasoning_tokens": 0, **(usage.get("output_tokens_details") or {})}
    return {**response, "usage": {**usage, "input_tokens_details": inputs, "output_tokens_details": outputs}}


def _fill_null_assistant_content(body: dict[str, Any]) -> dict[str, Any]:
    """Assistant messages echoed back as `content: null` (how tool-call-only turns come out of Chat Completions)
    get `""`: several servers reject null there, which would break the second turn of every tool conversation."""
    messages = body.get("messages")
    if not isinstance(messages, list):
        return body
    filled = [{**m, "content": ""} if isinstance(m, dict) and m.get("role") == "assistant" and "content" in m
              and m["content"] is None else m for m in messages]
    return {**body, "messages": filled}


def _reject_streaming(body: dict[str, Any]) -> None:
    if body.get("stream"):
        raise InvalidRequest("stream=true is not supported by this model server: rollouts need whole responses. "
                             "Remove `stream` from responses_create_params.")


if __name__ == "__main__":
    from nemo_gym.cli.serve import main

    main()
