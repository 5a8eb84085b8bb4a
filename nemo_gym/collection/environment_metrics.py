"""An environment's own metrics over a collection: each agent's verify answers, sent to its resources server's
`/aggregate_metrics` as NeMo Gym's collector sends them (`{"verify_responses": [...]}` with `_ng_task_index` and
`_ng_rollout_index`), answered with `agent_metrics`, `key_metrics` and `group_level_metrics` (e.g. pass@k computed
by the environment). Servers without the endpoint (ours) are skipped; the file is read only for those that have it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import orjson

from nemo_gym.collection.resume import succeeded_records
from nemo_gym.http.server_client import ServerCallError, ServerClient
from nemo_gym.protocol.types import RECORD_KEYS, JSONObject

ENDPOINT = "/aggregate_metrics"
AGENT_TYPE = "responses_api_agents"
NOT_OFFERED = (404, 405)


def resources_server_of(served_config: Mapping[str, Any], agent: str) -> str | None:
    """The resources server instance `agent`'s block refers to in the running configuration."""
    block = (served_config.get(agent) or {}).get(AGENT_TYPE) or {}
    for impl in block.values():
        reference = impl.get("resources_server") if isinstance(impl, Mapping) else None
        if isinstance(reference, Mapping) and isinstance(reference.get("name"), str):
            return str(reference["name"])
    return None


def verify_response_of(record: Mapping[str, Any]) -> JSONObject:
    """A record as the verify answer NeMo Gym's aggregation expects: the reward and the verifier's fields, the
    rollout's position, and the response's usage only (the trajectory is not needed)."""
    answer: JSONObject = {k: v for k, v in record.items() if k not in RECORD_KEYS}
    answer.update(
        {
            "_ng_task_index": record.get("row_index", 0),
            "_ng_rollout_index": record.get("repeat_index", 0),
            "agent_ref": {"type": AGENT_TYPE, "name": record.get("agent_name")},
            "reward": record.get("reward"),
            "response": {"usage": record.get("usage") or {}},
        }
    )
    return answer


async def environment_metrics(
    servers: ServerClient, served_config: Mapping[str, Any], output: Path, agents: Iterable[str]
) -> dict[str, JSONObject]:
    """Per agent whose resources server offers `/aggregate_metrics`: its answer over the output's successful records
    of that agent (with the instance's name), or `{"error": ...}` when the server failed to answer."""
    offering: dict[str, str] = {}
    found: dict[str, JSONObject] = {}
    for agent in sorted(set(agents)):
        resources = resources_server_of(served_config, agent)
        if resources is None:
            continue
        try:
            await servers.post(resources, ENDPOINT, {"verify_responses": []})
        except ServerCallError as exc:
            if exc.status_code not in NOT_OFFERED:
                found[agent] = {"resources_server": resources, "error": str(exc)}
            continue
        offering[agent] = resources
    if not offering:
        return found
    by_agent: dict[str, list[JSONObject]] = {agent: [] for agent in offering}
    for record in succeeded_records(output):
        agent = str(record.get("agent_name"))
        if agent in by_agent:
            by_agent[agent].append(verify_response_of(record))
    for agent, resources in offering.items():
        try:
            answer = await servers.post(resources, ENDPOINT, {"verify_responses": by_agent[agent]})
        except ServerCallError as exc:
            found[agent] = {"resources_server": resources, "error": str(exc)}
            continue
        found[agent] = {"resources_server": resources, **(answer if isinstance(answer, dict) else {"answer": answer})}
    return found


def summary_part(found: Mapping[str, JSONObject]) -> dict[str, JSONObject]:
    """What goes into the metrics file: each agent's key and agent metrics (the per-task entries go beside it)."""
    return {agent: {k: v for k, v in answer.items() if k != "group_level_metrics"} for agent, answer in found.items()}


def write_group_level(path: Path, found: Mapping[str, JSONObject]) -> None:
    """Every agent's per-task metrics, as NeMo Gym's `_aggregate_metrics.json` holds them."""
    entries = [
        {"agent_ref": {"name": agent}, **answer} for agent, answer in found.items() if "group_level_metrics" in answer
    ]
    if entries:
        path.write_bytes(orjson.dumps(entries, option=orjson.OPT_INDENT_2))
