"""The agent-server base: `/v1/responses` runs the agent's loop for one Responses `create` body, `/run` is one scored
rollout of a dataset row (seed a session, run the loop, verify). Subclasses implement `respond` and `run`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from fastapi import FastAPI, Request
from pydantic import Field

from nemo_gym.protocol.types import JSONObject
from nemo_gym.servers.base import (
    BaseServer,
    BaseServerConfig,
    JSONResponse,
    ServerRef,
    error_body,
    post_route,
    read_json_object,
)


class BaseAgentConfig(BaseServerConfig):
    resources_server: ServerRef = Field(description="The resources server whose tools and /verify this agent uses")
    model_server: ServerRef = Field(description="The model server that plays the policy")


class BaseAgentServer(BaseServer, ABC):
    """An agent. A `ValueError` from `run` means the row itself is unusable and is answered 400 with its message;
    everything else is the server base's error handling (a failed downstream call keeps its status)."""

    config_class = BaseAgentConfig
    config: BaseAgentConfig

    @abstractmethod
    async def respond(self, params: JSONObject, *, session_id: str | None = None) -> JSONObject:
        """Run the loop for a Responses `create` body; the answer's `output` is every item after the input."""

    @abstractmethod
    async def run(self, row: JSONObject) -> JSONObject:
        """One scored rollout: the verifier's answer (with a numeric `reward`) plus the final `response`."""

    def add_routes(self, app: FastAPI) -> None:
        @post_route(app, "/v1/responses")
        async def responses(request: Request) -> JSONResponse:
            body = await read_json_object(request)
            return body if isinstance(body, JSONResponse) else JSONResponse(await self.respond(body))

        @post_route(app, "/run")
        async def run(request: Request) -> JSONResponse:
            body = await read_json_object(request)
            if isinstance(body, JSONResponse):
                return body
            try:
                return JSONResponse(await self.run(body))
            except ValueError as exc:
                return JSONResponse(error_body(str(exc), "invalid_request"), 400)
