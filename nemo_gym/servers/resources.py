"""The resources-server base: per-rollout sessions, tool endpoints and `/verify`.

A rollout opens a session with `POST /seed_session` (the input row), calls tools with `POST /<tool>` carrying the
session id in the `X-NeMo-Gym-Session` header, and ends with `POST /verify`, which scores it and frees the session
(a rollout that fails before /verify frees it with `POST /close_session`).
An environment subclasses `BaseResourcesServer`, declares its tools as pydantic argument models, and implements
`call_tool` and `verify`; the HTTP plumbing, session bookkeeping and error shapes live here.
"""

from __future__ import annotations

import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, ClassVar

from fastapi import FastAPI, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from nemo_gym.http.server_client import SESSION_HEADER
from nemo_gym.protocol.conversion import content_text
from nemo_gym.protocol.types import JSONObject
from nemo_gym.servers.base import (
    BaseServer,
    BaseServerConfig,
    Handler,
    JSONResponse,
    error_body,
    post_route,
    read_json_object,
)


class ResourcesServerConfig(BaseServerConfig):
    session_ttl_s: float = Field(default=3600.0, gt=0, description="Sessions idle this long are dropped")
    max_sessions: int = Field(default=100_000, gt=0, description="Oldest sessions are dropped beyond this")


@dataclass
class Session:
    """What one rollout did in this server: its input row, tool calls so far, and environment state."""

    id: str
    row: JSONObject
    state: JSONObject = field(default_factory=dict)
    tool_calls: list[JSONObject] = field(default_factory=list)
    last_used: float = field(default_factory=time.monotonic)


class VerifyRequest(BaseModel):
    """The agent sends the input row and the final response (its `output` is the whole trajectory)."""

    model_config = ConfigDict(extra="allow")
    row: JSONObject = Field(default_factory=dict)
    response: JSONObject


class VerifyResponse(BaseModel):
    """`reward` plus any extra fields the environment reports (reasons, what was expected, what happened)."""

    model_config = ConfigDict(extra="allow")
    reward: float


def final_assistant_text(output: list[Any]) -> str | None:
    """The text of a trajectory's final answer: its last item if that is an assistant message (trailing reasoning
    items skipped); None when it ends otherwise (a tool call, a user message, nothing)."""
    for item in reversed(output):
        if not isinstance(item, dict) or item.get("type") == "reasoning":
            continue
        if item.get("type", "message") == "message" and item.get("role") == "assistant":
            return content_text(item.get("content"))
        return None
    return None


class UnknownSession(Exception):
    """A call names a session this server does not hold; every endpoint answers it with 404."""


class ToolError(Exception):
    """A tool call that cannot be answered; the message goes back to the model, so make it instructive.

    Raised from `seed_session` or `verify`, it means the row cannot be used and becomes a 422 `invalid_row`."""


class BaseResourcesServer(BaseServer):
    config_class: ClassVar[type[BaseServerConfig]] = ResourcesServerConfig
    config: ResourcesServerConfig
    tools: ClassVar[dict[str, type[BaseModel]]] = {}
    """Tool name → pydantic model of its arguments. Each becomes `POST /<name>`."""
    single_process_reason: ClassVar[str | None] = (
        "keeps each rollout's session in the process that opened it, so every call of a rollout must reach that "
        "process (use num_replicas instead: each replica has its own address, and a rollout's calls stay on "
        "the replica that opened its session)"
    )
    row_fields: ClassVar[tuple[str, ...]] = ()
    """Top-level fields every dataset row must carry for `verify` (e.g. `expected_answer`); `ng_test` checks the
    example data for them."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.sessions: OrderedDict[str, Session] = OrderedDict()
        """Least recently used first: a session moves to the end on each use, so stale ones gather at the front."""
        self.sessions_opened = 0

    # ------------------------------------------------------------------ what an environment implements

    async def seed_session(self, session: Session) -> None:
        """Prepare environment state for a new rollout (the row is on `session.row`)."""

    async def call_tool(self, session: Session, name: str, arguments: BaseModel) -> Any:
        raise NotImplementedError

    async def verify(self, session: Session, request: VerifyRequest) -> VerifyResponse:
        raise NotImplementedError

    # ------------------------------------------------------------------ sessions

    def open_session(self, row: JSONObject) -> Session:
        self._evict_stale()
        session = Session(id=uuid.uuid4().hex, row=row)
        self.sessions[session.id] = session
        self.sessions_opened += 1
        return session

    def health_details(self) -> JSONObject:
        return {"sessions_open": len(self.sessions), "sessions_opened": self.sessions_opened}

    def session_for(self, request: Request, *, pop: bool = False) -> Session:
        session_id = request.headers.get(SESSION_HEADER)
        if not session_id:
            # A call without a session still works (e.g. trying a tool by hand with curl); it just has no history.
            return Session(id="", row={})
        session = self.sessions.pop(session_id, None) if pop else self.sessions.get(session_id)
        if session is not None and not pop:
            self.sessions.move_to_end(session_id)
        if session is None:
            raise UnknownSession(
                f"Unknown or expired session '{session_id}': call /seed_session first "
                f"(sessions expire after {self.config.session_ttl_s:g}s idle)."
            )
        session.last_used = time.monotonic()
        return session

    def _evict_stale(self) -> None:
        now = time.monotonic()
        # Only the front can be stale (least recently used first): constant time per new session, not a scan of
        # every open one (which took a fifth of the server's CPU with 1,000 rollouts in flight).
        while self.sessions:
            oldest = next(iter(self.sessions.values()))
            if now - oldest.last_used <= self.config.session_ttl_s and len(self.sessions) < self.config.max_sessions:
                break
            self.sessions.popitem(last=False)

    # ------------------------------------------------------------------ HTTP

    def add_routes(self, app: FastAPI) -> None:
        @post_route(app, "/seed_session")
        async def seed_session(request: Request) -> JSONResponse:
            body = await read_json_object(request)
            if isinstance(body, JSONResponse):
                return body
            row = body.get("row", body)
            session = self.open_session(row if isinstance(row, dict) else {})
            try:
                await self.seed_session(session)
            except ToolError as exc:  # the row cannot start a rollout: the caller's data, not a server bug
                self.sessions.pop(session.id, None)
                return JSONResponse(error_body(str(exc), "invalid_row"), 422)
            return JSONResponse({"session_id": session.id})

        @app.exception_handler(UnknownSession)
        async def unknown_session(_: Request, exc: UnknownSession) -> JSONResponse:
            return JSONResponse(error_body(str(exc), "unknown_session"), 404)

        @post_route(app, "/verify")
        async def verify(request: Request) -> JSONResponse:
            body = await read_json_object(request)
            if isinstance(body, JSONResponse):
                return body
            try:
                verify_request = VerifyRequest.model_validate(body)
            except ValidationError as exc:
                return JSONResponse(error_body(f"Invalid /verify body: {exc}", "invalid_request"), 422)
            session = self.session_for(request, pop=True)
            if not session.row:
                session.row = verify_request.row
            try:
                result = await self.verify(session, verify_request)
            except ToolError as exc:  # e.g. the row lacks what the verifier needs: the caller's data, not a bug
                return JSONResponse(error_body(str(exc), "invalid_row"), 422)
            return JSONResponse(result.model_dump(mode="json"))

        @post_route(app, "/close_session")
        async def close_session(request: Request) -> JSONResponse:
            """Drop a session without scoring it: the rollout failed before /verify (e.g. a model error)."""
            session_id = request.headers.get(SESSION_HEADER)
            closed = self.sessions.pop(session_id, None) is not None if session_id else False
            return JSONResponse({"closed": closed})

        @app.get("/tools")
        async def list_tools() -> JSONObject:
            return {"tools": [self.tool_definition(name) for name in self.tools]}

        for tool_name in self.tools:
            post_route(app, f"/{tool_name}", name=tool_name)(self._tool_endpoint(tool_name))

    def _tool_endpoint(self, name: str) -> Handler:
        arguments_model = self.tools[name]

        async def endpoint(request: Request) -> JSONResponse:
            body = await read_json_object(request)
            if isinstance(body, JSONResponse):
                return body
            session = self.session_for(request)
            try:
                arguments = arguments_model.model_validate(body)
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
                )
                return JSONResponse(
                    error_body(
                        f"Invalid arguments for {name}: {problems}. Call {name} with a JSON "
                        f"object of its arguments: {self.arguments_summary(name)}.",
                        "invalid_arguments",
                    ),
                    422,
                )
            record: JSONObject = {"name": name, "arguments": arguments.model_dump(mode="json")}
            session.tool_calls.append(record)
            try:
                output = await self.call_tool(session, name, arguments)
            except ToolError as exc:
                record["error"] = str(exc)
                return JSONResponse(error_body(str(exc), "tool_error"), 400)
            record["output"] = output
            return JSONResponse(output)

        return endpoint

    def arguments_summary(self, name: str) -> str:
        """`city (string, required)`: what a tool's arguments are, for error messages a model can act on."""
        schema = self.tools[name].model_json_schema()
        required = set(schema.get("required", []))
        parts = [
            f"{prop} ({spec.get('type', 'any')}{', required' if prop in required else ''})"
            for prop, spec in schema.get("properties", {}).items()
        ]
        return ", ".join(parts) or "none"

    def tool_definition(self, name: str) -> JSONObject:
        """The Responses-API function tool for `name`, derived from its argument model."""
        model = self.tools[name]
        schema = model.model_json_schema()
        schema.pop("title", None)
        for prop in schema.get("properties", {}).values():
            prop.pop("title", None)
        return {
            "type": "function",
            "name": name,
            "description": (model.__doc__ or "").strip(),
            "parameters": schema,
            "strict": False,
        }
