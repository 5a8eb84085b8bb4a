"""The agent-server base: `/v1/responses` runs the agent's loop for one Responses `create` body, `/run` is one scored
rollout of a dataset row (seed a session, run the loop, verify). Subclasses implement `respond` and `run`.

What a rollout spent is never lost with it: model calls made through `call_model` are tallied per `/run`, and a
rollout that fails answers its error with `spent` (the usage and USD cost of its calls so far), which the collector
records; when it failed at a /verify whose LLM judge had run, the judge's `judge_usage` and `judge_cost_by_model` from
that error are passed on beside it, so the judge's dollars are counted too. A `/run` whose caller hung up (a
cancelled rollout) is abandoned at once rather than run on at a cost.
"""

from __future__ import annotations

import asyncio
import contextlib
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI, Request
from pydantic import Field

from nemo_gym.http.server_client import SPENT_KEY, ServerCallError
from nemo_gym.protocol.types import JSONObject, Usage
from nemo_gym.protocol.usage import JUDGE_KEYS, add_usage, empty_usage
from nemo_gym.servers.base import (
    BaseServer,
    BaseServerConfig,
    JSONResponse,
    ServerRef,
    error_body,
    post_route,
    read_json_object,
)

_rollout_usage: ContextVar[list[Usage] | None] = ContextVar("nemo_gym_rollout_usage", default=None)
"""The usage of the `/run` being served in this task, in a one-item list so `call_model` can add to it."""


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

    async def call_model(self, path: str, body: JSONObject) -> JSONObject:
        """POST to the configured model server (`/v1/responses`, `/v1/chat/completions`), counting the answer's
        usage towards the rollout being run, so a rollout that fails later still reports what it spent."""
        answer: JSONObject = await self.servers.post(self.config.model_server.name, path, body)
        tally = _rollout_usage.get()
        if tally is not None:
            tally[0] = add_usage(tally[0], (answer.get("usage") or {"calls": 1}) if isinstance(answer, dict) else None)
        return answer

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
            tally = [empty_usage()]
            token = _rollout_usage.set(tally)
            try:
                return JSONResponse(await _unless_caller_leaves(request, self.run(body)))
            except CallerLeft:
                content, status = error_body("The caller hung up; the rollout was abandoned.", "caller_left"), 499
            except ValueError as exc:
                content, status = error_body(str(exc), "invalid_request"), 400
            except Exception as exc:  # noqa: BLE001 - answered as the server base answers it, plus what was spent
                content, status = self.error_content(exc)
                content["error"].update(_judge_spend_passed_on(exc))
            finally:
                _rollout_usage.reset(token)
            if tally[0]["calls"]:
                content["error"][SPENT_KEY] = tally[0]
            return JSONResponse(content, status)


def _judge_spend_passed_on(exc: Exception) -> JSONObject:
    """The `judge_usage`/`judge_cost_by_model` of a downstream error (a /verify whose judge failed), passed on as
    they came: the collector checks them."""
    if not isinstance(exc, ServerCallError):
        return {}
    return {key: exc.detail[key] for key in JUDGE_KEYS if exc.detail.get(key) is not None}


class CallerLeft(Exception):
    """The client of a `/run` disconnected before its answer: the rollout was cancelled."""


async def _unless_caller_leaves(request: Request, work: Awaitable[Any]) -> Any:
    """`work`'s result; cancelled (raising CallerLeft) as soon as the caller disconnects, so a rollout its
    collector gave up on makes no further paid calls."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        watcher.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if task.cancelled():
        raise CallerLeft
    return task.result()


async def _disconnected(request: Request) -> None:
    """Returns once the client has gone (the body was read, so the next ASGI message can only be the disconnect)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
