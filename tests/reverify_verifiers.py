"""Stand-ins for a verifier that changed after a collection: each wraps the real `verify` of a resources server served
in the test's own process, to be swapped onto that server object (`monkeypatch.setattr(server, "verify", ...)`)
between collecting and re-verifying. The HTTP path stays real; only what /verify computes changes."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import BaseModel

from nemo_gym.http.server_client import ServerCallError
from nemo_gym.servers.resources import BaseResourcesServer, Session, ToolError, VerifyRequest, VerifyResponse

Verify = Callable[[Session, VerifyRequest], Awaitable[VerifyResponse]]
PASS_MARK = 0.5


def passing_mark(reward: float) -> float:
    """The "fixed" reward: all or nothing, at PASS_MARK."""
    return 1.0 if reward >= PASS_MARK else 0.0


def all_or_nothing(server: BaseResourcesServer) -> Verify:
    """The server's verifier with its partial credit replaced by `passing_mark`, and a field saying so."""
    original = server.verify

    async def verify(session: Session, request: VerifyRequest) -> VerifyResponse:
        verdict = (await original(session, request)).model_dump()
        return VerifyResponse(**{**verdict, "reward": passing_mark(verdict["reward"]), "rule": "all_or_nothing"})

    return verify


def refusing(server: BaseResourcesServer, row_ids: set[str]) -> Verify:
    """The server's verifier, except that it refuses the rows whose `id` is in `row_ids` (a 422 invalid_row)."""
    original = server.verify

    async def verify(session: Session, request: VerifyRequest) -> VerifyResponse:
        row = session.row or request.row
        if row.get("id") in row_ids:
            raise ToolError(f"the fixed verifier cannot score row {row.get('id')}")
        return await original(session, request)

    return verify


def slowed(server: BaseResourcesServer, delay_s: float) -> Verify:
    """The server's verifier taking `delay_s` per record: time to interrupt a run half-way."""
    original = server.verify

    async def verify(session: Session, request: VerifyRequest) -> VerifyResponse:
        await asyncio.sleep(delay_s)
        return await original(session, request)

    return verify


def going_down_after(server: BaseResourcesServer, verified: int) -> Verify:
    """The server's verifier, which after `verified` records answers that a replica behind it went away (a 503 the
    caller reads as an outage, as when ng_run or the server is restarting)."""
    original = server.verify
    count = 0

    async def verify(session: Session, request: VerifyRequest) -> VerifyResponse:
        nonlocal count
        count += 1
        if count > verified:
            raise ServerCallError("the replica holding this session went away", unavailable=True)
        return await original(session, request)

    return verify


def other_weather(server: BaseResourcesServer) -> Callable[[Session, str, BaseModel], Awaitable[Any]]:
    """simple_weather's tool (on `server`) answering otherwise than it did: a tool that is not deterministic, or
    was changed since the rollout."""
    original = server.call_tool

    async def call_tool(session: Session, name: str, arguments: BaseModel) -> Any:
        answer = await original(session, name, arguments)
        return {**answer, "weather": "It changed since."}

    return call_tool


def judged(server: BaseResourcesServer, model_server: str) -> Verify:
    """The server's verifier asking the model server `model_server` once per record first, as a judge does (its
    answer unused): calls the model servers' ledgers count while a re-verification runs."""
    original = server.verify

    async def verify(session: Session, request: VerifyRequest) -> VerifyResponse:
        await server.servers.post(model_server, "/v1/responses", {"input": "Is the weather report right? Paris"})
        return await original(session, request)

    return verify
