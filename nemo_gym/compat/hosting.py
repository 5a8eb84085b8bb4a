"""Serving a NeMo Gym resources server on our server base, so `ng_run` starts it like any of ours.

`hosted_class(Env)` is a `BaseServer` whose app is the environment's own (`Env.setup_webserver()`), with our
`/health`, error shapes, lifecycle and redaction around it, and a translation for our agents' bodies:
`/seed_session` gets `{"row": row}` and answers `{"session_id": ...}`; `/verify` gets `{"row": row, "response": r}`,
which a NeMo Gym verifier expects as `{**row, "response": r}`. The verify answer gains what its judge calls cost
(`judge_usage`, `judge_cost_by_model`), and a judge that failed makes it a `judge_error`, so the rollout is recorded
as failed rather than scored 0. Our own servers never pass through here: the native path is unchanged.
"""

from __future__ import annotations

import contextlib
import typing
from collections import OrderedDict
from pathlib import Path
from typing import Any, ClassVar

import orjson
from fastapi import FastAPI, Request
from omegaconf import OmegaConf
from pydantic import BaseModel
from starlette.types import Message, Receive, Scope, Send

from nemo_gym.compat.configs import BaseRunServerInstanceConfig
from nemo_gym.compat.global_keys import set_global_config_dict
from nemo_gym.compat.judge import FAILURE_CLASS_KEY, FAILURE_JUDGE_ERROR_KEY, JUDGE_FAILED, JudgeError
from nemo_gym.compat.judge_meter import JudgeMeter, current_meter
from nemo_gym.compat.server_client import ServerClient, SimpleServer
from nemo_gym.compat.sessions import SESSION_HEADER_BYTES
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.types import GlobalConfig, InstanceSpec
from nemo_gym.servers.base import BaseServer, BaseServerConfig, JSONResponse, StartupError, error_body

JUDGE_ERROR = "judge_error"
ROW_PATHS = ("/seed_session", "/verify")
_hosted: dict[type, type[BaseServer]] = {}


def hosted_class(environment: type[SimpleServer]) -> type[BaseServer]:
    """The `BaseServer` that serves `environment` (one class per environment class)."""
    if environment not in _hosted:
        config_class = environment.model_fields["config"].annotation
        if not (isinstance(config_class, type) and issubclass(config_class, BaseRunServerInstanceConfig)):
            raise ConfigError(
                f"{environment.__module__}.{environment.__name__}.config is annotated as {config_class!r}; a NeMo "
                "Gym server's `config` must be a BaseResourcesServerConfig subclass "
                "(from nemo_gym.base_resources_server)."
            )
        _hosted[environment] = type(
            f"Hosted{environment.__name__}",
            (HostedNeMoGymServer,),
            {
                "environment_class": environment,
                "config_class": config_class,
                "tools": _tool_routes(environment, config_class),
                "row_fields": _row_fields(environment),
                "__module__": __name__,
            },
        )
    return _hosted[environment]


BASE_ROUTES = frozenset({"/seed_session", "/verify", "/aggregate_metrics", "/close_session"})


def _tool_routes(
    environment: type[SimpleServer], config_class: type[BaseRunServerInstanceConfig]
) -> dict[str, None] | None:
    """The tools an environment serves (its POST routes beyond the base ones), for `ng_test`'s data check; None
    when they cannot be known without running it (a catch-all route, or a setup that needs a real config)."""
    try:
        probe = environment.model_construct(config=config_class.model_construct(name=""), server_client=ServerClient())
        app = probe.setup_webserver()
    except Exception:  # noqa: BLE001 - the data check then skips tool names rather than guessing
        return None
    paths = [
        path
        for route in app.routes
        if "POST" in (getattr(route, "methods", None) or ()) and (path := getattr(route, "path", "")) not in BASE_ROUTES
    ]
    if any("{" in path for path in paths):
        return None
    return dict.fromkeys(path.lstrip("/") for path in paths)


def _row_fields(environment: type[SimpleServer]) -> tuple[str, ...]:
    """The dataset fields the environment's verify request requires (beyond the request and the response)."""
    try:
        hints = typing.get_type_hints(environment.verify)  # type: ignore[attr-defined]
    except Exception:  # noqa: BLE001 - unresolvable annotations: nothing to check
        return ()
    body = next(
        (t for name, t in hints.items() if name != "return" and isinstance(t, type) and issubclass(t, BaseModel)), None
    )
    if body is None:
        return ()
    return tuple(
        name
        for name, field in body.model_fields.items()
        if field.is_required() and name not in ("responses_create_params", "response")
    )


class HostedNeMoGymServer(BaseServer):
    """Runs one NeMo Gym server object (`self.environment`) behind our lifecycle."""

    environment_class: ClassVar[type[SimpleServer]]
    single_process_reason = (
        "keeps each rollout's session in the process that opened it (use num_replicas instead: each replica has "
        "its own address, and a rollout's calls stay on the replica that opened its session)"
    )

    def __init__(self, name: str, config: BaseServerConfig, global_config: GlobalConfig) -> None:
        super().__init__(name, config, global_config)
        assert isinstance(config, BaseRunServerInstanceConfig)
        config.name = name
        set_global_config_dict(OmegaConf.create(global_config.data))
        client = ServerClient(global_config_dict=OmegaConf.create(global_config.data))
        client.use_resolver(self._base_url)
        try:
            # Built in its folder, as `python app.py` run there builds it: configs name files relative to it.
            with contextlib.chdir(global_config.instances[name].server_dir):
                self.environment = self.environment_class(config=config, server_client=client)
        except Exception as exc:  # an error in the environment's own construction: say whose and where
            raise StartupError(_construction_error(self.environment_class, name, exc)) from exc
        self._client = client

    @classmethod
    def working_directory(cls, spec: InstanceSpec) -> Path:
        """Its folder, as NeMo Gym runs each server (`python app.py` there): files its code opens by a relative path
        are found."""
        folder: Path = spec.server_dir
        return folder

    def _base_url(self, server_name: str) -> str:
        replica = self.servers.replicas(server_name).pick()
        if replica is None:
            raise ConfigError(f"Server instance '{server_name}' has no reachable replica.")
        return replica.url

    async def shutdown(self) -> None:
        await self._client.aclose()
        await super().shutdown()

    def health_details(self) -> dict[str, Any]:
        return {"environment": f"{self.environment_class.__module__}.{self.environment_class.__name__}"}

    def build_app(self) -> RowTranslator:  # type: ignore[override]
        return RowTranslator(self.build_fastapi_app(), max_sessions=int(getattr(self.config, "max_sessions", 100_000)))

    def new_app(self) -> FastAPI:
        try:
            return self.environment.setup_webserver()
        except Exception as exc:
            raise StartupError(_construction_error(self.environment_class, self.name, exc)) from exc

    def add_routes(self, app: FastAPI) -> None:
        @app.exception_handler(JudgeError)
        async def judge_failed(_: Request, exc: JudgeError) -> JSONResponse:
            return JSONResponse(error_body(self.redactor.text(f"The judge failed: {exc}"), JUDGE_ERROR), 502)


class RowTranslator:
    """ASGI front of a hosted environment for `/seed_session` and `/verify`: our agents' row envelopes in, session
    ids and the judge's cost out, a failed judge turned into a failed rollout. Model calls its tools make for a
    rollout (a simulated user, a model as a tool) are metered too and reported with the verdict's."""

    def __init__(self, app: FastAPI, max_sessions: int = 100_000) -> None:
        self.app = app
        self.max_sessions = max_sessions
        self.tool_meters: OrderedDict[str, JudgeMeter] = OrderedDict()
        """Per session (our agents' header), what its tool calls' model calls took, until its /verify."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        session_id = _session_header(scope)
        if scope["path"] not in ROW_PATHS:
            if session_id is None:
                await self.app(scope, receive, send)
                return
            if scope["path"] == "/close_session":
                self.tool_meters.pop(session_id, None)
                await self.app(scope, receive, send)
                return
            tool_meter = self.tool_meters.pop(session_id, None) or JudgeMeter()
            self.tool_meters[session_id] = tool_meter
            while len(self.tool_meters) > self.max_sessions:
                self.tool_meters.popitem(last=False)
            token = current_meter.set(tool_meter)
            try:
                await self.app(scope, receive, send)
            finally:
                current_meter.reset(token)
            return
        raw = await _read_body(receive)
        envelope = _envelope(raw)
        if envelope is not None:
            row = envelope["row"]
            body = row if scope["path"] == "/seed_session" else {**row, "response": envelope.get("response")}
            raw = orjson.dumps(body)
            # Our agents carry the session in their header only; a cookie their client kept must not join two rollouts.
            scope = {**scope, "headers": [(k, v) for k, v in scope.get("headers", []) if k != b"cookie"]}
        meter = JudgeMeter()
        if (
            scope["path"] == "/verify"
            and session_id is not None
            and (earlier := self.tool_meters.pop(session_id, None))
        ):
            meter.add_usage_of(earlier)  # usage only: a tool handles its own model call's failure
        token = current_meter.set(meter)
        start: Message = {}
        chunks: list[bytes] = []

        async def capture(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        sent = False

        async def replay() -> Message:
            nonlocal sent
            if sent:
                return await receive()
            sent = True
            return {"type": "http.request", "body": raw, "more_body": False}

        try:
            await self.app(scope, replay, capture)
        finally:
            current_meter.reset(token)
        status = int(start.get("status", 500))
        headers = [(k, v) for k, v in start.get("headers", []) if k not in (b"content-length", b"content-type")]
        answer = _json_or_none(b"".join(chunks))
        if scope["path"] == "/seed_session":
            if envelope is not None and status < 400 and isinstance(answer, dict):
                session_id = next((v.decode() for k, v in headers if k == SESSION_HEADER_BYTES), None)
                answer = {**answer, "session_id": session_id}
        else:
            status, answer = _scored(status, answer, meter, envelope is not None)
        await _send(send, status, headers, answer if answer is not None else b"".join(chunks))


def _scored(status: int, answer: Any, meter: JudgeMeter, from_agent: bool) -> tuple[int, Any]:
    """The verify answer as our collector reads it: with the judge's cost, or a judge_error when the judge failed."""
    judge = meter.report()
    failure = None
    if meter.failures:
        failure = "; ".join(meter.failures[-3:])
    elif (
        status < 400
        and isinstance(answer, dict)
        and JUDGE_FAILED in (answer.get(FAILURE_CLASS_KEY), answer.get("failure_kind"))
    ):
        failure = str(answer.get(FAILURE_JUDGE_ERROR_KEY) or answer.get("failure_reason") or "judge failed")
    if failure is not None:
        message = f"The judge failed: {failure}"
        return 502, error_body(message, JUDGE_ERROR, **judge)
    if status >= 400:
        if isinstance(answer, dict) and isinstance(answer.get("error"), dict) and judge:
            answer = {**answer, "error": {**answer["error"], **judge}}
        elif not isinstance(answer, dict) or "error" not in answer:
            answer = error_body(f"/verify answered {status}: {_shown(answer)}", "verify_error", **judge)
        return status, answer
    if isinstance(answer, dict):
        if from_agent:  # the record keeps the row and the response already; don't store them twice
            answer = {k: v for k, v in answer.items() if k not in ("responses_create_params", "response")}
        answer.update(judge)
    return status, answer


def _session_header(scope: Scope) -> str | None:
    for name, value in scope.get("headers", []):
        if name == SESSION_HEADER_BYTES:
            return str(value.decode("latin-1"))
    return None


def _envelope(raw: bytes) -> dict[str, Any] | None:
    """Our agents' body (`{"row": {...}}`, plus `response` for /verify), or None for a NeMo Gym-shaped one (which
    always has `responses_create_params` at the top)."""
    body = _json_or_none(raw)
    if isinstance(body, dict) and isinstance(body.get("row"), dict) and set(body) <= {"row", "response"}:
        return body
    return None


def _json_or_none(raw: bytes) -> Any:
    try:
        return orjson.loads(raw) if raw else None
    except orjson.JSONDecodeError:
        return None


def _shown(answer: Any) -> str:
    text = orjson.dumps(answer).decode() if answer is not None else "(no JSON body)"
    return text if len(text) <= 300 else text[:300] + "..."


async def _read_body(receive: Receive) -> bytes:
    parts = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(parts)


async def _send(send: Send, status: int, headers: list[tuple[bytes, bytes]], content: Any) -> None:
    if isinstance(content, bytes):
        body, media = content, b"application/json"
    else:
        body, media = orjson.dumps(content), b"application/json"
    headers = [*headers, (b"content-type", media), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _construction_error(environment: type, name: str, exc: Exception) -> str:
    where = f"{environment.__module__}.{environment.__name__}"
    if isinstance(exc, AttributeError | ImportError | NotImplementedError):
        return (
            f"Instance '{name}': {where} uses something this NeMo Gym API does not provide: {exc}. "
            "See docs/porting_nemo_gym_environments.md for what is supported."
        )
    return f"Instance '{name}': {where} failed to start: {type(exc).__name__}: {exc}"
