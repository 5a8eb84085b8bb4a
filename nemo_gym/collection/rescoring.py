"""One stored rollout scored again by a running resources server: a fresh session, its tool calls replayed, /verify.

Sessions. A verifier may read its session: the row seeded into it, and the tool calls that ran in it (simple_weather
credits only the lookups that really ran). So each record gets a fresh `/seed_session` of its row, then the tool
calls its trajectory shows were run (those with an output, of the row's tools, with JSON-object arguments: the
calls the agent sent to the resources server) are replayed in order against that session, then `/verify`. Tools
are environment calls, not model calls, so this costs nothing upstream, and for deterministic tools it rebuilds the
very state the rollout left: an unchanged verifier gives the same rewards. A replayed call that answers otherwise
than it did in the rollout (a tool that is not deterministic, or was changed) is counted per record; the verifier
then sees the replayed state. Without the replay (`replay_tools=False`, for tools with side effects that must not
run twice) the record is verified against a freshly seeded session with no tool calls. The row sent is the record's
`input` (a collection's `+responses_create_params` overrides are not in it).

A re-scored record keeps everything but the old verifier's fields (they explained the old reward), and adds
`previous_reward` and `reverified`: `at` (UTC), `resources_server`, `changed` (reward != previous_reward),
`replayed_tool_calls`, `differing_tool_outputs`, `error`, and with an LLM judge what scoring again cost
(`judge_usage`, `judge_cost_usd`: the record's own cost fields stay the rollout's). A /verify that fails now leaves
`reward` null and `error` `ReverifyFailed: ...` (never a 0). A resources server that cannot be reached raises
VerifierUnreachable: nothing is recorded for that record.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from nemo_gym.http.pool import TransportError
from nemo_gym.http.server_client import SESSION_HEADER, ServerCallError, ServerClient
from nemo_gym.protocol.types import RECORD_KEYS, JSONObject
from nemo_gym.protocol.usage import JUDGE_KEYS, NO_JUDGE, judge_spend_of

OWN_KEYS = ("previous_reward", "reverified")
"""The keys re-scoring adds to a record; neither is a verifier field."""
REVERIFY_ERROR = "ReverifyFailed"
"""The kind (text before the colon) of a record's `error` when its /verify failed now."""
SAME_REWARD = 1e-9


class VerifierUnreachable(Exception):
    """The resources server could not be reached: the record is not written; a re-run does it."""


@dataclass
class Replay:
    """A record's replayed tool calls, and how many answered otherwise than in the rollout."""

    calls: int = 0
    differing: int = 0


def reverify_failed(record: Mapping[str, Any]) -> bool:
    """Whether the record is a re-scoring whose /verify failed (not a rollout that failed)."""
    marker = record.get("reverified")
    return isinstance(marker, dict) and marker.get("error") is not None


def executed_tool_calls(response: Mapping[str, Any], row: Mapping[str, Any]) -> list[tuple[str, JSONObject, Any]]:
    """(name, arguments, recorded output) of each tool call the rollout sent to its resources server, in the order
    they ran: a function call answered by a `function_call_output` in the trajectory, naming one of the row's
    tools, with arguments that are a JSON object (the agent answers the others itself, without a server call)."""
    params = row.get("responses_create_params")
    tools = params.get("tools") if isinstance(params, Mapping) else None
    names = {t.get("name") for t in tools or [] if isinstance(t, Mapping) and t.get("type") == "function"}
    pending: dict[Any, list[Mapping[str, Any]]] = {}
    executed: list[tuple[str, JSONObject, Any]] = []
    for item in response.get("output") or []:
        if not isinstance(item, Mapping):
            continue
        if item.get("type") == "function_call":
            pending.setdefault(item.get("call_id"), []).append(item)
        elif item.get("type") == "function_call_output" and pending.get(item.get("call_id")):
            call = pending[item.get("call_id")].pop(0)
            if call.get("name") not in names:
                continue
            try:
                arguments = json.loads(call.get("arguments") or "{}")
            except (TypeError, ValueError):
                continue
            if isinstance(arguments, dict):
                executed.append((str(call["name"]), arguments, item.get("output")))
    return executed


def _same_output(replayed: Any, recorded: Any) -> bool:
    """Tool outputs compared as JSON when both are (key order and spacing differ between serializers)."""
    if replayed == recorded:
        return True
    if isinstance(recorded, str):
        with contextlib.suppress(ValueError):
            recorded = json.loads(recorded)
    if isinstance(replayed, str):
        with contextlib.suppress(ValueError):
            replayed = json.loads(replayed)
    return bool(replayed == recorded)


def rescored_record(
    record: Mapping[str, Any], server: str, verdict: Mapping[str, Any] | None, error: str | None, replay: Replay
) -> JSONObject:
    """The record with the new reward and verifier fields (the old verifier's fields dropped: they explained the old
    reward), `previous_reward` and the `reverified` marker; `error` when /verify failed now (reward null)."""
    previous = record.get("previous_reward") if reverify_failed(record) else record.get("reward")
    reward = None if verdict is None else verdict.get("reward")
    out: JSONObject = {k: v for k, v in record.items() if k in RECORD_KEYS and k not in ("response", "input")}
    out["reward"] = reward
    out["error"] = None if error is None else f"{REVERIFY_ERROR}: {error}"
    out["previous_reward"] = previous
    changed = not (
        isinstance(reward, int | float) and isinstance(previous, int | float) and abs(reward - previous) <= SAME_REWARD
    )
    out["reverified"] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "resources_server": server,
        "changed": changed,
        "replayed_tool_calls": replay.calls,
        "differing_tool_outputs": replay.differing,
        "error": error,
    }
    # A judge that scored again was paid again: that is this re-verification's cost, apart from the rollout's own.
    spend = judge_spend_of(verdict, where=f"resources server '{server}' /verify") if verdict else NO_JUDGE
    if not spend.empty:
        out["reverified"]["judge_usage"] = spend.usage
        out["reverified"]["judge_cost_usd"] = spend.cost_usd
    for name, value in (verdict or {}).items():
        if name not in RECORD_KEYS and name not in OWN_KEYS and name not in JUDGE_KEYS:
            out[name] = value
    out["response"] = record.get("response")
    out["input"] = record.get("input")
    return out


async def rescore(servers: ServerClient, record: Mapping[str, Any], server: str, *, replay_tools: bool) -> JSONObject:
    """Seed a session for the record's row, replay its tool calls, verify: the re-scored record. A failure the
    resources server answered becomes the record's error; one that reached no server raises VerifierUnreachable."""
    row: JSONObject = record["input"]
    response: JSONObject = record["response"]
    replay = Replay()
    session_id: str | None = None
    try:
        seeded = await servers.post(server, "/seed_session", {"row": row})
        session_id = seeded.get("session_id") if isinstance(seeded, dict) else None
        headers = {SESSION_HEADER: session_id} if isinstance(session_id, str) else None
        for name, arguments, recorded in executed_tool_calls(response, row) if replay_tools else []:
            try:
                answer = await servers.post(server, f"/{name}", arguments, headers=headers)
            except ServerCallError as exc:
                if exc.outage or exc.status_code is None or exc.status_code >= 500:
                    raise
                answer = f"Error: {exc.detail.get('message') or exc}"  # what the agent showed the model
            replay.calls += 1
            replay.differing += not _same_output(answer, recorded)
        verdict = await servers.post(server, "/verify", {"row": row, "response": response}, headers=headers)
        session_id = None  # /verify frees the session, whatever it answers
    except (ServerCallError, TransportError) as exc:
        if isinstance(exc, TransportError) or exc.outage:
            raise VerifierUnreachable(f"resources server '{server}' is unreachable: {exc}") from None
        return rescored_record(record, server, None, f"{type(exc).__name__}: {exc}", replay)
    finally:
        if session_id:
            with contextlib.suppress(ServerCallError, TransportError):
                await servers.post(server, "/close_session", {}, headers={SESSION_HEADER: session_id})
    reward = verdict.get("reward") if isinstance(verdict, dict) else None
    if not isinstance(reward, int | float) or isinstance(reward, bool):
        shown = json.dumps(verdict, default=str)[:200]
        problem = f"resources server '{server}' answered /verify with {shown}, not a JSON object with a numeric reward"
        return rescored_record(record, server, None, problem, replay)
    return rescored_record(record, server, verdict, None, replay)
