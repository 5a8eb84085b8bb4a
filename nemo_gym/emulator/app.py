"""The offline OpenRouter: its HTTP surface under /api/v1 and the state tests and demos inspect.

Requests go through the same steps as on OpenRouter: auth, validation, credits, then routing over `model` and
its `models` fallbacks (a fault before the first byte falls through to the next model), then an answer from the
scripted policy, billed from the catalog's prices. `inject` forces faults; `requests`, `served` and `spent_usd`
show what happened.
"""

from __future__ import annotations

import logging
import random
import string
import time
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from nemo_gym.config.paths import resolve_input_path
from nemo_gym.emulator import billing, logprobs, routing
from nemo_gym.emulator.catalog import key_status, model_entry
from nemo_gym.emulator.config import ROUTING_FAULTS, EmulatedModel, EmulatorConfig, FaultKind
from nemo_gym.emulator.errors import NO_AUTH, NO_CREDITS, UNKNOWN_KEY, USER_ID, EmulatorError, error_body
from nemo_gym.emulator.faults import FaultSchedule, in_band_error, routing_fault_error
from nemo_gym.emulator.policy import ScriptedPolicy, Turn, load_answer_keys
from nemo_gym.emulator.scripted_replies import load_scripted_replies
from nemo_gym.emulator.transport import RawResponse, chat_stream, dropped_json, padded_json, sleep_unless_disconnected
from nemo_gym.protocol.conversion import chat_to_responses_response, responses_to_chat_request
from nemo_gym.protocol.types import JSONObject
from nemo_gym.servers.base import JSONResponse

logger = logging.getLogger(__name__)

API_PREFIX = "/api/v1"
_NATIVE_FINISH = {
    "Anthropic": {"stop": "end_turn", "tool_calls": "tool_use", "length": "max_tokens"},
    "Google AI Studio": {"stop": "STOP", "tool_calls": "STOP", "length": "MAX_TOKENS"},
}
_ID_ALPHABET = string.ascii_letters + string.digits


@dataclass
class RecordedRequest:
    """One request as it arrived: `path`, lower-case `headers`, parsed JSON `body` (None for GET). Reads as
    attributes or as `record["path"]`."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)


@dataclass
class Generation:
    """A model's answer, before it is written as Chat Completions, Responses or a stream."""

    model: EmulatedModel
    completion: JSONObject
    fault: FaultKind | None

    @property
    def headers(self) -> dict[str, str]:
        return {
            "X-Generation-Id": self.completion["id"],
            "X-Provider-Name": self.model.provider_name,
            "Access-Control-Expose-Headers": "X-Generation-Id,X-Provider-Name",
        }


class ClientGone(Exception):
    """The client hung up while its request was held (a `hang` fault); nobody reads the answer."""


class OpenRouterEmulator:
    """One emulated OpenRouter account. `app()` serves it; the attributes below are what it has done so far."""

    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config if config is not None else EmulatorConfig()
        self.catalog: dict[str, EmulatedModel] = {m.id: m for m in self.config.models}
        self.answers = load_answer_keys(
            [resolve_input_path(p) for p in self.config.answer_keys], self.config.answer_field
        )
        self.scripted_replies = load_scripted_replies(
            [resolve_input_path(p) for p in self.config.scripted_replies], self.catalog
        )
        self.requests: list[RecordedRequest] = []
        self.served: Counter[str] = Counter()
        self.spent_usd: float = 0.0
        self.generations: dict[str, JSONObject] = {}
        self._faults = FaultSchedule(self.config)
        self.faults_injected = self._faults.counts
        self._ids = random.Random(f"{self.config.seed}:ids")
        self._latency = random.Random(f"{self.config.seed}:latency")

    def inject(self, model_id: str, faults: Iterable[str]) -> None:
        """Force the next attempts on `model_id` to hit `faults` (FaultRates field names), in order."""
        self._faults.inject(model_id, faults)

    def clear_injected(self) -> int:
        """Forget the injected faults not handed out yet (an outage ends); how many there were."""
        return self._faults.clear()

    # ---------------------------------------------------------------- the app

    def app(self) -> FastAPI:
        app = FastAPI(title="OpenRouter emulator", default_response_class=JSONResponse)
        router = APIRouter(prefix=API_PREFIX)

        @router.get("/models")
        async def models(request: Request, supported_parameters: str | None = None) -> JSONObject:
            await self._admit(request, auth=False)
            wanted = {p.strip() for p in (supported_parameters or "").split(",") if p.strip()}
            entries = [model_entry(m) for m in self.config.models]
            return {"data": [e for e in entries if wanted <= set(e["supported_parameters"])]}

        @router.get("/key")
        @router.get("/auth/key")
        async def key(request: Request) -> JSONObject:
            api_key, _ = await self._admit(request)
            return {"data": key_status(api_key, self.config.credits_usd, self.spent_usd)}

        @router.get("/credits")
        async def credits(request: Request) -> JSONObject:
            await self._admit(request)
            return {"data": {"total_credits": self.config.credits_usd or 0.0, "total_usage": self.spent_usd}}

        @router.get("/generation")
        async def generation(request: Request, id: str = "") -> JSONObject:
            await self._admit(request)
            if id not in self.generations:
                raise EmulatorError(404, f"Generation {id} not found")
            return {"data": self.generations[id]}

        @router.post("/chat/completions")
        async def chat_completions(request: Request) -> Response:
            _, body = await self._admit(request)
            stream = bool(body.get("stream"))
            generation = await self._generate(request, body, streamed=stream)
            if stream:
                choice = generation.completion["choices"][0]
                error = choice.get("error") or in_band_error(generation.model)
                chunks = chat_stream(
                    generation.completion,
                    fault=generation.fault,
                    error=error,
                    usage_chunk=self.config.stream_usage_chunk,
                )
                return RawResponse(chunks, media_type="text/event-stream", headers=generation.headers)
            return self._render(generation, generation.completion)

        @router.post("/responses")
        async def responses(request: Request) -> Response:
            _, body = await self._admit(request)
            if body.get("store") is True or body.get("previous_response_id") is not None:
                raise EmulatorError(
                    400,
                    "Only stateless requests are supported: send 'store': false and no "
                    "'previous_response_id', with the whole conversation in 'input'.",
                )
            if body.get("stream"):
                raise EmulatorError(
                    400, "The emulator's /responses does not stream; send 'stream': false (/chat/completions streams)."
                )
            if body.get("input") is None:
                raise EmulatorError(400, "'input' is required.")
            try:
                chat_body = responses_to_chat_request(body, reasoning_field=True)
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                raise EmulatorError(400, f"Invalid 'input': {exc}") from None
            generation = await self._generate(request, chat_body, streamed=False)
            response = chat_to_responses_response(generation.completion, body)
            return self._render(generation, response.model_dump(mode="json", exclude_unset=True))

        app.include_router(router)
        self._add_error_handlers(app)
        return app

    def _add_error_handlers(self, app: FastAPI) -> None:
        @app.exception_handler(EmulatorError)
        async def emulator_error(request: Request, exc: EmulatorError) -> JSONResponse:
            if self.config.echo_key_in_errors:
                echoed = f"{exc.message} (request Authorization: {request.headers.get('authorization')})"
                exc = EmulatorError(exc.code, echoed, exc.metadata, exc.headers)
            return JSONResponse(exc.body(), exc.code, headers=exc.headers)

        @app.exception_handler(ClientGone)
        async def client_gone(_: Request, __: ClientGone) -> Response:
            return Response(status_code=499)

        @app.exception_handler(StarletteHTTPException)
        async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
            return JSONResponse(error_body(exc.status_code, str(exc.detail)), exc.status_code)

        @app.exception_handler(Exception)
        async def unexpected(_: Request, exc: Exception) -> JSONResponse:
            logger.exception("OpenRouter emulator failed on a request")
            return JSONResponse(error_body(500, "Internal Server Error"), 500)

    # ---------------------------------------------------------------- request handling

    async def _admit(self, request: Request, *, auth: bool = True) -> tuple[str, JSONObject]:
        """Record the request, then check its key and parse its JSON body: (api key, body)."""
        raw = await request.body() if request.method == "POST" else b""
        body: Any = None
        problem = None
        if raw:
            try:
                body = orjson.loads(raw)
            except orjson.JSONDecodeError:
                body, problem = raw.decode("utf-8", "replace"), "The request body is not valid JSON."
        self.requests.append(RecordedRequest(request.method, request.url.path, dict(request.headers), body))
        api_key = self._api_key(request.headers.get("authorization")) if auth else ""
        if request.method == "POST":
            if problem is None and not isinstance(body, dict):
                problem = "The request body must be a JSON object."
            if problem:
                raise EmulatorError(400, problem)
        return api_key, body if isinstance(body, dict) else {}

    def _api_key(self, header: str | None) -> str:
        scheme, _, key = (header or "").strip().partition(" ")
        key = key.strip()
        if scheme.lower() != "bearer" or not key or " " in key:
            raise EmulatorError(401, NO_AUTH)
        accepted = key in self.config.keys if self.config.keys else key.startswith("sk-or-")
        if not accepted:
            raise EmulatorError(401, UNKNOWN_KEY)
        return key

    async def _generate(self, request: Request, body: JSONObject, *, streamed: bool) -> Generation:
        """Validate, check credits, route over the candidates and let the serving model answer."""
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            raise EmulatorError(400, "'messages' must be a non-empty array of message objects.")
        tools = body.get("tools")
        if tools is not None and not (isinstance(tools, list) and all(isinstance(t, dict) for t in tools)):
            raise EmulatorError(400, "'tools' must be an array of tool objects.")
        logprobs.validate(body)
        candidates = routing.candidates(body, self.catalog)
        routing.provider_preferences(body)
        credits = self.config.credits_usd
        if credits is not None and self.spent_usd >= credits:
            raise EmulatorError(402, NO_CREDITS)

        started = time.monotonic()
        last_error: EmulatorError | None = None
        for model in candidates:
            last_error = routing.ineligibility(model, body)
            if last_error is not None:
                continue
            fault = self._faults.next(model)
            if fault in ROUTING_FAULTS:
                last_error = routing_fault_error(fault, model, self.config.faults_of(model))
                continue
            await self._wait(request, model, fault)
            return self._answer(model, body, fault, streamed=streamed, started=started)
        raise last_error or EmulatorError(404, "No endpoints found.")

    async def _wait(self, request: Request, model: EmulatedModel, fault: FaultKind | None) -> None:
        delay_s = (self.config.latency_ms + self._latency.uniform(0.0, self.config.latency_jitter_ms)) / 1000.0
        if fault == "hang":
            delay_s += self.config.faults_of(model).hang_s
        if delay_s > 0 and not await sleep_unless_disconnected(request, delay_s):
            raise ClientGone()

    def _answer(
        self, model: EmulatedModel, body: Mapping[str, Any], fault: FaultKind | None, *, streamed: bool, started: float
    ) -> Generation:
        """The serving model's chat completion, billed and recorded unless a fault spoils it."""
        policy = ScriptedPolicy(model.id, model.quality, self.config.seed, self.answers, self.scripted_replies)
        turn = policy.answer(body)
        finish = turn.finish_reason
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and limit > 0 and turn.content and billing.completion_tokens(turn) > limit:
            turn, finish = Turn(turn.content[: limit * billing.CHARS_PER_TOKEN]), "length"
        failed = fault == "finish_reason_error"
        if failed and turn.content:
            turn, finish = Turn(turn.content[: max(1, len(turn.content) // 2)]), "error"
        elif failed:
            turn, finish = Turn(""), "error"
        prompt = billing.prompt_tokens(body)
        completion = billing.completion_tokens(turn)
        usage = billing.usage(model, prompt, completion, billed=not failed)
        native = _NATIVE_FINISH.get(model.provider_name, {}).get(finish, finish)
        message: JSONObject = {"role": "assistant", "content": turn.content, "refusal": None, "reasoning": None}
        if turn.tool_calls:
            message["tool_calls"] = [
                {
                    "index": i,
                    "id": self._new_id("call_", 24),
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for i, call in enumerate(turn.tool_calls)
            ]
        asked = body if model.supports_logprobs else {}  # OpenRouter drops what the provider does not support
        choice: JSONObject = {
            "index": 0,
            "logprobs": logprobs.choice_logprobs(turn, asked, model_id=model.id, seed=self.config.seed),
            "finish_reason": finish,
            "native_finish_reason": native,
            "message": message,
        }
        if failed:
            choice["error"] = in_band_error(model)
        created = int(time.time())
        completion_body = {
            "id": f"gen-{created}-{self._new_id('', 20)}",
            "provider": model.provider_name,
            "model": model.id,
            "object": "chat.completion",
            "created": created,
            "choices": [choice],
            "usage": usage,
        }
        if fault not in ("drop_connection", "error_in_200"):
            self._record(model, completion_body, body, streamed=streamed, started=started)
        if fault is None or fault == "hang":
            self.spent_usd += usage["cost"]
            self.served[model.id] += 1
        if not self.config.report_cost:
            for key in ("cost", "cost_details", "is_byok"):
                usage.pop(key)
        return Generation(model, completion_body, fault)

    def _render(self, generation: Generation, payload: JSONObject) -> Response:
        if generation.fault == "error_in_200":
            return padded_json({"error": in_band_error(generation.model), "user_id": USER_ID}, generation.headers)
        if generation.fault == "drop_connection":
            return dropped_json(payload, generation.headers)
        return JSONResponse(payload, headers=generation.headers)

    def _record(
        self,
        model: EmulatedModel,
        completion: Mapping[str, Any],
        body: Mapping[str, Any],
        *,
        streamed: bool,
        started: float,
    ) -> None:
        """What GET /generation?id= returns for this answer."""
        usage = completion["usage"]
        choice = completion["choices"][0]
        latency_ms = int((time.monotonic() - started) * 1000)
        self.generations[completion["id"]] = {
            "id": completion["id"],
            "upstream_id": None,
            "total_cost": usage["cost"],
            "cache_discount": None,
            "upstream_inference_cost": None,
            "created_at": datetime.now(UTC).isoformat(),
            "model": model.id,
            "app_id": None,
            "streamed": streamed,
            "cancelled": False,
            "provider_name": model.provider_name,
            "latency": latency_ms,
            "moderation_latency": None,
            "generation_time": latency_ms,
            "finish_reason": choice["finish_reason"],
            "native_finish_reason": choice["native_finish_reason"],
            "tokens_prompt": usage["prompt_tokens"],
            "tokens_completion": usage["completion_tokens"],
            "native_tokens_prompt": usage["prompt_tokens"],
            "native_tokens_completion": usage["completion_tokens"],
            "native_tokens_completion_images": 0,
            "native_tokens_reasoning": 0,
            "native_tokens_cached": 0,
            "num_media_prompt": None,
            "num_input_audio_prompt": None,
            "num_media_completion": 0,
            "num_search_results": None,
            "origin": "",
            "usage": usage["cost"],
            "is_byok": False,
            "external_user": body.get("user"),
            "api_type": "completions",
        }

    def _new_id(self, prefix: str, length: int) -> str:
        return prefix + "".join(self._ids.choices(_ID_ALPHABET, k=length))
