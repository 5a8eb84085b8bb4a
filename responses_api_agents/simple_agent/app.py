"""simple_agent: the tool-calling loop over a model server's `/v1/responses` and a resources server's tools.

`POST /v1/responses` runs the loop for a Responses `create` body; `POST /run` is one scored rollout: open a
session in the resources server, run the loop with that session, verify, and return the verify response together
with the final response (whose `output` is the whole trajectory) and usage summed over every model call.
A tool call with unparseable arguments or an unknown tool name is answered with an error message the model can
read and correct; it never crashes the rollout.
"""

from __future__ import annotations

import contextlib
import json
import time
from typing import Any

from pydantic import Field

from nemo_gym.http.server_client import SESSION_HEADER, ServerCallError
from nemo_gym.protocol import token_ids
from nemo_gym.protocol.token_ids import TokenInfo
from nemo_gym.protocol.types import AgentTurn, JSONObject, ModelCallMetadata, RolloutMetadata, StopReason
from nemo_gym.protocol.usage import add_usage, empty_usage
from nemo_gym.servers.agent import BaseAgentConfig, BaseAgentServer


class SimpleAgentConfig(BaseAgentConfig):
    max_steps: int = Field(default=8, ge=1, description="Model calls per rollout before the loop stops")


class SimpleAgentServer(BaseAgentServer):
    config_class = SimpleAgentConfig
    config: SimpleAgentConfig

    async def respond(self, params: JSONObject, *, session_id: str | None = None) -> JSONObject:
        """Run the loop; the returned response's `output` holds every item after the input (the trajectory)."""
        items = _as_items(params.get("input", []))
        tool_names = {t.get("name") for t in params.get("tools") or [] if t.get("type") == "function"}
        headers = {SESSION_HEADER: session_id} if session_id else {}
        trajectory: list[JSONObject] = []
        usage = empty_usage()
        models: list[str] = []
        turns: list[AgentTurn] = []
        steps, started = 0, time.perf_counter()
        response: JSONObject = {}
        stop_reason: StopReason = "max_steps"
        meta: ModelCallMetadata = {}
        call_tokens: list[TokenInfo] | None = None
        """Per model call, the token information its output carries; only once the model server records it."""
        for steps in range(1, self.config.max_steps + 1):  # noqa: B007 - `steps` is reported after the loop
            history = items + trajectory
            if call_tokens is not None:  # earlier turns' ids are for the record, not for the model server to parse
                history = token_ids.strip_items(history)
            response = await self.call_model("/v1/responses", {**params, "input": history})
            usage = add_usage(usage, response.get("usage") or {"calls": 1})  # a call without usage still counts
            meta = response.get("nemo_gym") or {}
            served = meta.get("served_model") or response.get("model")
            if served and served not in models:
                models.append(served)
            turns.append(
                {
                    "model": served,
                    "provider": meta.get("provider"),
                    "attempts": meta.get("attempts", 1),
                    "retries": meta.get("retries", 0),
                    "errors": meta.get("errors", []),
                    "failovers": meta.get("failovers", []),
                    "cost": (response.get("usage") or {}).get("cost"),
                    "cost_estimated": bool((response.get("usage") or {}).get("cost_estimated")),
                }
            )
            output = [dict(item) for item in response.get("output") or []]
            trajectory.extend(output)
            if "token_info" in meta:
                call_tokens = call_tokens if call_tokens is not None else [{} for _ in range(steps - 1)]
                call_tokens.append(token_ids.call_info(output))
            elif call_tokens is not None:
                call_tokens.append({})
            calls = [item for item in output if item.get("type") == "function_call"]
            status = response.get("status", "completed")
            if status == "failed":  # the provider broke off mid-answer: its partial tool calls are not to be run
                stop_reason = "failed"
                break
            if not calls:
                stop_reason = "answered" if status == "completed" else "incomplete"
                break
            for call in calls:
                trajectory.append(
                    {
                        "type": "function_call_output",
                        "call_id": call.get("call_id"),
                        "output": await self._call_tool(call, tool_names, headers),
                    }
                )
        tokens: RolloutMetadata = {"token_ids": token_ids.summarize(call_tokens)} if call_tokens is not None else {}
        metadata: RolloutMetadata = {
            **meta,
            **tokens,
            "steps": steps,
            "stop_reason": stop_reason,
            "models": models,
            "turns": turns,
            "retries": sum(int(t["retries"] or 0) for t in turns),  # another model server may send null
            "agent_latency_s": round(time.perf_counter() - started, 4),
        }
        return {**response, "output": trajectory, "usage": usage, "nemo_gym": metadata}

    async def _call_tool(self, call: JSONObject, tool_names: set[Any], headers: dict[str, str]) -> str:
        """The tool's output as the string the model will read; problems become readable error messages."""
        name = call.get("name")
        if name not in tool_names:
            available = ", ".join(sorted(str(n) for n in tool_names)) or "none"
            return f"Error: unknown tool '{name}'. Available tools: {available}."
        try:
            arguments = json.loads(call.get("arguments") or "{}")
        except ValueError as exc:
            return (
                f"Error: the arguments of {name} are not valid JSON ({exc}). Call {name} again with a JSON "
                "object of arguments."
            )
        if not isinstance(arguments, dict):
            return f"Error: the arguments of {name} must be a JSON object, got {type(arguments).__name__}."
        try:
            result = await self.servers.post(self.config.resources_server.name, f"/{name}", arguments, headers=headers)
        except ServerCallError as exc:
            if exc.status_code is not None and 400 <= exc.status_code < 500:
                detail = (exc.body or {}).get("error", {}) if isinstance(exc.body, dict) else {}
                return f"Error: {detail.get('message') or exc}"
            raise
        return result if isinstance(result, str) else json.dumps(result, ensure_ascii=False)

    async def run(self, row: JSONObject) -> JSONObject:
        """One scored rollout of an input row: seed session → loop → verify."""
        params = row.get("responses_create_params")
        if not isinstance(params, dict) or "input" not in params:
            raise ValueError(
                "The row has no `responses_create_params` object with an `input`: every dataset row "
                'needs {"responses_create_params": {"input": [...], "tools": [...]}, ...}.'
            )
        resources = self.config.resources_server.name
        seeded = await self.servers.post(resources, "/seed_session", {"row": row})
        if not isinstance(seeded, dict):
            raise _bad_answer(resources, "/seed_session", "a JSON object with `session_id`", seeded)
        session_id = seeded.get("session_id")
        try:
            response = await self.respond(params, session_id=session_id)
        except Exception:
            if session_id:  # free the session now rather than at its TTL; the rollout's own error is what matters
                with contextlib.suppress(ServerCallError):
                    await self.servers.post(resources, "/close_session", {}, headers={SESSION_HEADER: session_id})
            raise
        verdict = await self.servers.post(
            resources,
            "/verify",
            {"row": row, "response": _without_token_ids(response)},
            headers={SESSION_HEADER: session_id} if session_id else None,
        )
        reward = verdict.get("reward") if isinstance(verdict, dict) else None
        if not isinstance(reward, int | float) or isinstance(reward, bool):
            raise _bad_answer(resources, "/verify", "a JSON object with a numeric `reward`", verdict)
        return {**verdict, "response": response}


def _bad_answer(server: str, path: str, expected: str, got: Any) -> ServerCallError:
    """A resources server answered, but not what the protocol says: the rollout cannot be scored."""
    shown = json.dumps(got, ensure_ascii=False, default=str)
    shown = shown if len(shown) <= 200 else shown[:200] + "..."
    return ServerCallError(
        f"resources server '{server}' answered {path} with {shown}, not {expected}. Fix that "
        f"server's {path.lstrip('/')}() (see nemo_gym/servers/resources.py for what it must return) "
        "and check its log.",
        status_code=502,
    )


def _without_token_ids(response: JSONObject) -> JSONObject:
    """The response a verifier scores: the trajectory without its token ids and logprobs, which are for the record
    (and a trainer), not for grading; the record keeps them."""
    if "token_ids" not in (response.get("nemo_gym") or {}):
        return response
    return {**response, "output": token_ids.strip_items(response.get("output") or [])}


def _as_items(value: Any) -> list[JSONObject]:
    if isinstance(value, str):
        return [{"role": "user", "content": value}]
    return [dict(item) for item in value]


if __name__ == "__main__":
    from nemo_gym.cli.serve import main

    main()
