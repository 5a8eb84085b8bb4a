"""The model-server base: OpenAI's `POST /v1/responses` and `POST /v1/chat/completions`, and `GET /v1/models`.

Subclasses implement the two calls (`openai_model` forwards them to an OpenAI-compatible endpoint) and may map their
own exceptions to answers in `error_answer`; an `InvalidRequest` is answered 400 with its message, so an SDK user
learns what to change. Before a call runs, `check_request` refuses what the server would otherwise answer as if it had
not been asked: a `model` it does not serve, and state it does not keep (`previous_response_id`, `store: true`, ...).
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable
from typing import Any, Literal

from fastapi import FastAPI, Request

from nemo_gym.http.server_client import MODEL_NOT_SERVED
from nemo_gym.protocol.types import JSONObject
from nemo_gym.servers.base import BaseServer, JSONResponse, error_body, post_route, read_json_object

ModelCall = Callable[[JSONObject], Awaitable[JSONObject]]
ModelAPI = Literal["responses", "chat_completions"]


class InvalidRequest(Exception):
    """The request asks for something this model server does not do; the message says what to change."""

    code: str | None = None


class ModelNotServed(InvalidRequest):
    """The request names a model this server does not serve: every request naming it would fail the same way."""

    code = MODEL_NOT_SERVED


class BaseModelServer(BaseServer, ABC):
    @property
    @abstractmethod
    def served_model(self) -> str:
        """The model id this server answers for (what `GET /v1/models` lists first)."""

    @property
    def served_models(self) -> list[str]:
        """Every model id a request may name, `served_model` first; subclasses that fall back to other models add
        them, since an answer may come from any of them."""
        return [self.served_model]

    @abstractmethod
    async def responses(self, params: JSONObject) -> JSONObject:
        """Answer a Responses API `create` body with a Response (plus its `nemo_gym` metadata)."""

    @abstractmethod
    async def chat_completions(self, body: JSONObject) -> JSONObject:
        """Answer a Chat Completions body with a chat completion."""

    def check_request(self, body: JSONObject, api: ModelAPI) -> None:
        """Raise `InvalidRequest` for what this server would silently ignore: an answer from another model than the
        one asked for, or a request that relies on stored state, would be misreported in every rollout record."""
        self._check_model(body.get("model"), api)
        _refuse_state(body, api)

    def _check_model(self, model: Any, api: ModelAPI) -> None:
        if model is None:
            return
        served = self.served_models
        if isinstance(model, str) and model in served:
            return
        primary, quoted = served[0], [f"'{m}'" for m in served]
        serves = quoted[0] + (f" (falling back to {', '.join(quoted[1:])})" if len(quoted) > 1 else "")
        if api == "responses":
            keep = (
                "drop `model` from the request (from the rows' `responses_create_params`, and "
                "`+responses_create_params.model` on the command line)"
            )
        else:
            keep = f"send `model: {primary}` (or no `model`)"
        if not isinstance(model, str):
            raise InvalidRequest(
                f"`model` must be a model id (a string), got {_quoted(model)}. Model server '{self.name}' serves "
                f"{serves}: {keep} to be answered by it."
            )
        model = model if len(model) <= 80 else model[:77] + "..."
        raise ModelNotServed(
            f"This request asks for model '{model}', which model server '{self.name}' does not serve: it serves "
            f"{serves}. To use '{model}', start a model server for it (an instance with `model: {model}`, and the "
            f"agent's `model_server` pointing at it) or change `model` in the config of '{self.name}'; to be "
            f"answered by '{primary}', {keep}."
        )

    def error_answer(self, exc: Exception) -> JSONResponse | None:
        """The answer for an exception of a call, or None to leave it to the server base's error handlers."""
        if isinstance(exc, InvalidRequest):
            code = {"code": exc.code} if exc.code else {}
            return JSONResponse(error_body(str(exc), "invalid_request", **code), 400)
        return None

    def add_routes(self, app: FastAPI) -> None:
        @post_route(app, "/v1/responses")
        async def responses(request: Request) -> JSONResponse:
            return await self._answer(request, "responses", self.responses)

        @post_route(app, "/v1/chat/completions")
        async def chat_completions(request: Request) -> JSONResponse:
            return await self._answer(request, "chat_completions", self.chat_completions)

        created = int(time.time())  # the models have no creation date of their own here; when this server started

        @app.get("/v1/models")
        async def models() -> JSONObject:
            """OpenAI's model list (what `openai.OpenAI().models.list()` validates), one entry per served model."""
            data = [{"id": m, "object": "model", "created": created, "owned_by": self.name} for m in self.served_models]
            return {"object": "list", "data": data}

    async def _answer(self, request: Request, api: ModelAPI, call: ModelCall) -> JSONResponse:
        body = await read_json_object(request)
        if isinstance(body, JSONResponse):
            return body
        try:
            self.check_request(body, api)
            return JSONResponse(await call(body))
        except Exception as exc:
            answer = self.error_answer(exc)
            if answer is None:
                raise
            return answer


def _refuse_state(body: JSONObject, api: ModelAPI) -> None:
    """Model servers are stateless and answer whole: parameters that ask otherwise are refused, never ignored."""
    conversation = "`input`" if api == "responses" else "`messages`"
    if api == "responses" and body.get("previous_response_id"):
        raise InvalidRequest(
            f"previous_response_id is not supported (got {_quoted(body['previous_response_id'])}): this model "
            "server is stateless and keeps no responses. Send the whole conversation in `input` (the earlier "
            "input items, then the previous response's `output` items, then the new ones) and drop "
            "`previous_response_id`."
        )
    if api == "responses" and body.get("conversation"):
        raise InvalidRequest(
            "conversation is not supported: this model server is stateless and keeps no conversations. Send the "
            "whole conversation in `input` and drop `conversation`."
        )
    if body.get("store"):
        raise InvalidRequest(
            "store=true is not supported: this model server is stateless and stores nothing, so a stored answer "
            "could never be retrieved or continued. Drop `store` (or set it to false) and keep the answer yourself "
            f"(rollout records keep every one); continue a conversation by sending all of it in {conversation}."
        )
    if api == "responses" and body.get("background"):
        raise InvalidRequest(
            "background=true is not supported: this model server answers every request with the whole response, "
            "and there is nothing to poll. Drop `background` (or set it to false) and wait for the answer."
        )


def _quoted(value: Any) -> str:
    """A request value as JSON in an error message, cut short: the message must stay readable."""
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 80 else text[:77] + "..."
