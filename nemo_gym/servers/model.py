"""The model-server base: OpenAI's `POST /v1/responses` and `POST /v1/chat/completions`, and `GET /v1/models`.

Subclasses implement the two calls (`openai_model` forwards them to an OpenAI-compatible endpoint) and may map their
own exceptions to answers in `error_answer`; an `InvalidRequest` is answered 400 with its message, so an SDK user
learns what to change.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable

from fastapi import FastAPI, Request

from nemo_gym.protocol.types import JSONObject
from nemo_gym.servers.base import BaseServer, JSONResponse, error_body, post_route, read_json_object

ModelCall = Callable[[JSONObject], Awaitable[JSONObject]]


class InvalidRequest(Exception):
    """The request asks for something this model server does not do; the message says what to change."""


class BaseModelServer(BaseServer, ABC):
    @property
    @abstractmethod
    def served_model(self) -> str:
        """The model id this server answers for (what `GET /v1/models` lists)."""

    @abstractmethod
    async def responses(self, params: JSONObject) -> JSONObject:
        """Answer a Responses API `create` body with a Response (plus its `nemo_gym` metadata)."""

    @abstractmethod
    async def chat_completions(self, body: JSONObject) -> JSONObject:
        """Answer a Chat Completions body with a chat completion."""

    def error_answer(self, exc: Exception) -> JSONResponse | None:
        """The answer for an exception of a call, or None to leave it to the server base's error handlers."""
        if isinstance(exc, InvalidRequest):
            return JSONResponse(error_body(str(exc), "invalid_request"), 400)
        return None

    def add_routes(self, app: FastAPI) -> None:
        @post_route(app, "/v1/responses")
        async def responses(request: Request) -> JSONResponse:
            return await self._answer(request, self.responses)

        @post_route(app, "/v1/chat/completions")
        async def chat_completions(request: Request) -> JSONResponse:
            return await self._answer(request, self.chat_completions)

        @app.get("/v1/models")
        async def models() -> JSONObject:
            return {"object": "list", "data": [{"id": self.served_model, "object": "model", "owned_by": self.name}]}

    async def _answer(self, request: Request, call: ModelCall) -> JSONResponse:
        body = await read_json_object(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            return JSONResponse(await call(body))
        except Exception as exc:
            answer = self.error_answer(exc)
            if answer is None:
                raise
            return answer
