"""The FastAPI server base every server shares: config validation, lifecycle, /health, errors, hot routes."""

from __future__ import annotations

import difflib
import inspect
import json
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, ClassVar, Literal, get_args

import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from nemo_gym.config.errors import ConfigError
from nemo_gym.config.secrets import Redactor, collect_secrets
from nemo_gym.config.types import GlobalConfig, InstanceSpec
from nemo_gym.http.lean_client import PeerPool
from nemo_gym.http.server_client import (
    OUTAGE_FLAG,
    UNAVAILABLE_ERROR,
    ServerCallError,
    ServerClient,
    registry_from_config,
)
from nemo_gym.protocol.types import JSONObject

logger = logging.getLogger(__name__)

KEEP_ALIVE_S = 75
"""Longer than the clients' keep-alive expiry (nemo_gym.http, 60 s), so a server never closes a connection that
a client is about to reuse (that race surfaces as a ReadError on a perfectly healthy server)."""

ServerType = Literal["responses_api_models", "resources_servers", "responses_api_agents"]


class ServerRef(BaseModel):
    """A reference from one instance's config to another: `{type: resources_servers, name: simple_weather}`."""

    model_config = ConfigDict(extra="forbid")
    type: ServerType
    name: str


class StartupError(Exception):
    """A server cannot start for a reason the user must fix; reported as one message, without a traceback."""


class RayResources(BaseModel):
    """Per-replica Ray resources: Ray places each replica on a node that has them."""

    model_config = ConfigDict(extra="forbid")
    num_cpus: float = Field(default=1.0, ge=0, description="CPUs each replica reserves")
    num_gpus: float = Field(default=0.0, ge=0, description="GPUs each replica reserves")
    resources: dict[str, float] = Field(default_factory=dict, description="Custom Ray resources, e.g. {node_a: 1}")
    max_restarts: int = Field(default=-1, ge=-1, description="How often Ray restarts a replica that died (-1: always)")


class BaseServerConfig(BaseModel):
    """Keys every instance accepts. Unknown keys are errors, so typos fail at start-up, not mid-run."""

    model_config = ConfigDict(extra="forbid")
    entrypoint: str = "app.py"
    host: str = "127.0.0.1"
    port: int | None = None
    num_workers: int = Field(
        default=1,
        ge=1,
        description="Processes serving this instance behind its one port "
        "(SO_REUSEPORT); for servers that keep no state between requests",
    )
    num_replicas: int = Field(
        default=1,
        ge=1,
        description="Copies of this instance, each on its own address (Ray "
        "actors with +ray_address); calls spread over them, a rollout's session stays on one",
    )
    ray: RayResources = Field(
        default_factory=lambda: RayResources(),
        description="What each replica reserves on a Ray cluster (+ray_address only)",
    )
    # What NeMo Gym's config files say about an environment: accepted so its configs load unchanged, not acted on.
    domain: str | None = Field(default=None, description="NeMo Gym: the environment's domain (math, agent, ...)")
    verified: bool | None = Field(default=None, description="NeMo Gym: whether the environment was verified")
    verified_url: str | None = Field(default=None, description="NeMo Gym: where its verification is shown")
    description: str | None = Field(default=None, description="NeMo Gym: what the environment is")
    value: str | None = Field(default=None, description="NeMo Gym: what training on it improves")
    datasets: list[dict[str, Any]] | None = Field(
        default=None, description="NeMo Gym: the datasets of an agent ({name, type, jsonl_fpath, ...})"
    )


def _fields_at(model: type[BaseModel], loc: tuple[Any, ...]) -> dict[str, FieldInfo] | None:
    """The fields of the (nested) pydantic model at `loc` within `model`, if it is one."""
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            args = get_args(current)
            current = args[0] if args else None
            continue
        if not (isinstance(current, type) and issubclass(current, BaseModel)) or part not in current.model_fields:
            return None
        current = current.model_fields[str(part)].annotation
    if isinstance(current, type) and issubclass(current, BaseModel):
        return dict(current.model_fields)
    return None


class JSONResponse(Response):
    """orjson-encoded JSON: several times faster than the stdlib on rollout-sized payloads."""

    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def error_body(message: str, error_type: str, **extra: Any) -> JSONObject:
    return {"error": {"message": message, "type": error_type, **extra}}


async def read_json_object(request: Request) -> JSONObject | JSONResponse:
    """The request's JSON object body, or the 400 response that says why it is not one."""
    raw = await request.body()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        try:  # what orjson refuses but JSON allows (integers beyond 64 bits)
            body = json.loads(raw)
        except ValueError:
            return JSONResponse(error_body("The request body is not valid JSON.", "invalid_request"), 400)
    if not isinstance(body, dict):
        return JSONResponse(error_body("The request body must be a JSON object.", "invalid_request"), 400)
    return body


class BaseServer:
    """One running server instance: its name, validated config, the global config and a pooled client."""

    config_class: ClassVar[type[BaseServerConfig]] = BaseServerConfig
    single_process_reason: ClassVar[str | None] = None
    """Why this server cannot run as several worker processes (e.g. it holds per-rollout state), or None."""

    def __init__(self, name: str, config: BaseServerConfig, global_config: GlobalConfig) -> None:
        self.name = name
        self.config = config
        self.global_config = global_config
        self.redactor = Redactor(collect_secrets(global_config.data))
        self._http: PeerPool | None = None
        self._servers: ServerClient | None = None

    # ---------------------------------------------------------------- construction

    @classmethod
    def validate_config(cls, spec: InstanceSpec) -> BaseServerConfig:
        """Validate an instance block, turning pydantic's errors into one actionable message."""
        try:
            config = cls.config_class.model_validate(spec.config)
        except ValidationError as exc:
            problems = []
            for err in exc.errors():
                key = ".".join(str(p) for p in err["loc"]) or "(block)"
                fields = _fields_at(cls.config_class, err["loc"][:-1])
                if err["type"] == "extra_forbidden":
                    allowed = sorted(fields) if fields else sorted(cls.config_class.model_fields)
                    near = difflib.get_close_matches(str(err["loc"][-1]), allowed, n=1)
                    hint = f"did you mean '{near[0]}'? " if near else ""
                    problems.append(f"unknown key '{key}' ({hint}allowed keys: {', '.join(allowed)})")
                elif err["type"] == "missing":
                    field = (fields or {}).get(str(err["loc"][-1]))
                    about = f" ({field.description})" if field is not None and field.description else ""
                    problems.append(f"missing required key '{key}'{about}: add `{err['loc'][-1]}: ...` to the block")
                elif not err["loc"]:  # a check across keys: its message says what is wrong; the input is the block
                    problems.append(str(err["msg"]).removeprefix("Value error, "))
                else:
                    problems.append(f"key '{key}': {err['msg']} (got {err.get('input')!r})")
            where = f"{spec.name}.{spec.server_type}.{spec.impl}"
            redactor = Redactor(collect_secrets(spec.config))
            raise ConfigError(
                redactor.text(
                    f"Invalid config for instance '{spec.name}' ({where}, from {spec.origin}): " + "; ".join(problems)
                )
            ) from None
        cls.check_workers(spec, config)
        return config

    @classmethod
    def check_workers(cls, spec: InstanceSpec, config: BaseServerConfig) -> None:
        if config.num_workers > 1 and cls.single_process_reason:
            raise ConfigError(
                f"Instance '{spec.name}' (from {spec.origin}) sets num_workers: {config.num_workers}, but "
                f"{spec.server_type}/{spec.impl} {cls.single_process_reason}. Remove num_workers from its block."
            )

    @classmethod
    def working_directory(cls, spec: InstanceSpec) -> Path | None:
        """The directory a process serving this server must run in (None: wherever ng_run was started)."""
        return None

    @classmethod
    def from_global_config(cls, name: str, global_config: GlobalConfig) -> BaseServer:
        spec = global_config.instances[name]
        return cls(name, cls.validate_config(spec), global_config)

    # ---------------------------------------------------------------- lifecycle

    @property
    def http(self) -> PeerPool:
        """The connection pool for calls to the other NeMo Gym servers."""
        if self._http is None:
            raise RuntimeError("The HTTP client exists only while the server is running.")
        return self._http

    @property
    def servers(self) -> ServerClient:
        if self._servers is None:
            head_url = self.global_config.head_url if self.global_config.replicated else None
            self._servers = ServerClient(registry_from_config(self.global_config), self.http, head_url=head_url)
        return self._servers

    async def startup(self) -> None:
        """Open resources. Subclasses extend this (and call super) to start children or load data."""
        self._http = PeerPool()

    async def shutdown(self) -> None:
        if self._servers is not None:
            await self._servers.aclose()
        if self._http is not None:
            await self._http.aclose()
            self._http = None
            self._servers = None

    def add_routes(self, app: FastAPI) -> None:
        """Subclasses add their endpoints here."""

    def health_details(self) -> JSONObject:
        """Extra fields for `GET /health` (e.g. a resources server's session counts)."""
        return {}

    def build_app(self) -> HotRoutes:
        """The server's ASGI app: the FastAPI app behind a front that serves the hot endpoints directly."""
        return HotRoutes(self.build_fastapi_app())

    def new_app(self) -> FastAPI:
        """The FastAPI app this server's routes go on (a hosted server's own app, for one written for NeMo Gym)."""
        return FastAPI(title=f"{type(self).__name__} ({self.name})", default_response_class=JSONResponse)

    def build_fastapi_app(self) -> FastAPI:
        app = self.new_app()
        app_lifespan = app.router.lifespan_context  # the app's own start-up and shutdown, run inside ours

        @asynccontextmanager
        async def lifespan(inner: FastAPI) -> AsyncIterator[None]:
            try:
                await self.startup()
            except StartupError:
                await self.shutdown()  # close what startup opened before it failed
                raise
            try:
                async with app_lifespan(inner):
                    yield
            finally:
                await self.shutdown()

        app.router.lifespan_context = lifespan

        @app.get("/health")
        async def health() -> JSONObject:
            return {"status": "ok", "name": self.name, "pid": os.getpid(), **self.health_details()}

        self._add_error_handlers(app)
        self.add_routes(app)
        return app

    def _add_error_handlers(self, app: FastAPI) -> None:
        redact = self.redactor.text

        @app.exception_handler(RequestValidationError)
        async def invalid_request(_: Request, exc: RequestValidationError) -> JSONResponse:
            problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
            return JSONResponse(error_body(redact(f"Invalid request body: {problems}"), "invalid_request"), 422)

        @app.exception_handler(StarletteHTTPException)
        async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
            return JSONResponse(error_body(redact(str(exc.detail)), "http_error"), exc.status_code)

        @app.exception_handler(ServerCallError)
        async def downstream_error(_: Request, exc: ServerCallError) -> JSONResponse:
            return JSONResponse(*self.error_content(exc))

        @app.exception_handler(Exception)
        async def unexpected(_: Request, exc: Exception) -> JSONResponse:
            return JSONResponse(*self.error_content(exc))

    def error_content(self, exc: Exception) -> tuple[JSONObject, int]:
        """The error body and status a call that raised `exc` is answered with: a failed call to another server keeps
        its status (and says whether the system was down); anything else is this server's own 500."""
        redact = self.redactor.text
        if isinstance(exc, ServerCallError):
            if exc.unavailable:  # a replica behind this server went away: the caller may redo the whole rollout
                return error_body(redact(str(exc)), UNAVAILABLE_ERROR), 503
            status = exc.status_code if exc.status_code and exc.status_code >= 400 else 502
            passed_on: dict[str, Any] = {OUTAGE_FLAG: True} if exc.outage else {}
            if isinstance(code := exc.detail.get("code"), str):  # what the server that refused said it was
                passed_on["code"] = code
            return error_body(redact(str(exc)), "downstream_error", **passed_on), status
        logger.exception("Unhandled error in %s", self.name)
        return error_body(redact(f"{type(exc).__name__}: {exc}"), "internal_error"), 500


Handler = Callable[[Request], Awaitable[Response]]


def post_route(app: FastAPI, path: str, *, name: str | None = None) -> Callable[[Handler], Handler]:
    """Register `handler(request) -> Response` as a hot endpoint: a plain Starlette route of the app, which the
    `HotRoutes` front also calls directly. The hot endpoints read their JSON and build their responses themselves,
    so FastAPI's dependency-injection layer, middleware stack and router would only add CPU to every hop (profiled:
    a fifth of a server's time under load, then another tenth). The app's exception handlers still apply."""

    def register(handler: Handler) -> Handler:
        app.add_route(path, handler, methods=["POST"], name=name or handler.__name__)
        hot_routes(app)[path] = handler
        return handler

    return register


def hot_routes(app: FastAPI) -> dict[str, Handler]:
    if not hasattr(app.state, "hot_routes"):
        app.state.hot_routes = {}
    routes: dict[str, Handler] = app.state.hot_routes
    return routes


class HotRoutes:
    """ASGI front of a server's FastAPI app: a POST to a hot endpoint goes straight to its handler; everything else
    (other routes, lifespan, errors of the framework itself) goes to the app. An exception from a hot handler is
    answered by the app's own exception handler for it, so errors look the same either way."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.routes = hot_routes(app)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            handler = self.routes.get(scope["path"])
            if handler is not None:
                request = Request(scope, receive)
                try:
                    response = await handler(request)
                except Exception as exc:  # noqa: BLE001 - answered as the app answers it
                    response = await self._answer_error(request, exc)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)

    async def _answer_error(self, request: Request, exc: Exception) -> Response:
        for kind in type(exc).__mro__:
            handler = self.app.exception_handlers.get(kind)
            if handler is not None:
                answer = handler(request, exc)
                return await answer if inspect.isawaitable(answer) else answer
        raise exc
