"""What ng_reverify has to do: which records of the input to re-score, with which resources server, which to copy
through, which lines to skip (and why), and what the output holds already, in streaming passes over both files.

Rollouts are keyed by (row_hash, repeat_index, agent_name): one input may hold several environments' rollouts of the
same row. Failed rollouts are copied through unchanged, since they have nothing to score; a record whose earlier
re-scoring failed is scored again from its trajectory.

The input may also be a NeMo Gym rollouts file (or its `_failures.jsonl`): each of its records is read as ours
(`protocol/nemo_gym_records.py`: the dispatched row as `input`, `agent_ref.name` as the agent whose resources server
verifies it), so the output is in our record shape, failed ones included.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypedDict

from nemo_gym.collection.inputs import InputError
from nemo_gym.collection.rescoring import SAME_REWARD, reverify_failed
from nemo_gym.collection.resume import Unread, keyed_lines
from nemo_gym.config.errors import ConfigError
from nemo_gym.protocol.nemo_gym_records import converted_or_none
from nemo_gym.protocol.types import JSONObject, RolloutRecord

RESOURCES_SERVER_TYPE = "resources_servers"
EXAMPLE_LINES = 3
UNREAD_REASONS = {
    Unread.TORN: "torn last line (a run was writing the file)",
    Unread.NOT_JSON: "lines that are not JSON",
    Unread.NOT_A_RECORD: "lines that are not rollout records, having no row_hash",
}
REPEATED = "records repeating a rollout another record of the input holds"

Key = tuple[str, int, str]
"""(row_hash, repeat_index, agent_name): what identifies a rollout across environments."""


def _key(record: RolloutRecord) -> Key:
    return str(record["row_hash"]), int(record.get("repeat_index") or 0), str(record.get("agent_name") or "")


def _scorable(record: Mapping[str, Any]) -> bool:
    """A rollout that has a trajectory to verify: it succeeded, or only an earlier re-verification of it failed."""
    return record.get("error") is None or reverify_failed(record)


# ---------------------------------------------------------------------------------------------- the output


class Totals(TypedDict):
    """What an output file holds, by what happened to each record."""

    rescored: int
    unchanged: int
    changed: int
    up: int
    down: int
    failed_now: int
    copied_failed: int
    mean_reward_before: float | None
    mean_reward_after: float | None
    replayed_tool_calls: int
    differing_tool_outputs: int
    resources_servers: dict[str, int]


@dataclass
class Tally:
    """Counts over output records, by what reverify did to each."""

    rescored: int = 0
    unchanged: int = 0
    up: int = 0
    down: int = 0
    failed_now: int = 0
    copied_failed: int = 0
    before: float = 0.0
    after: float = 0.0
    replayed: int = 0
    differing: int = 0
    servers: dict[str, int] = field(default_factory=dict)

    @property
    def written(self) -> int:
        return self.rescored + self.failed_now + self.copied_failed

    def add(self, record: Mapping[str, Any]) -> None:
        marker = record.get("reverified")
        if not isinstance(marker, dict):
            self.copied_failed += record.get("error") is not None
            return
        server = str(marker.get("resources_server"))
        self.servers[server] = self.servers.get(server, 0) + 1
        self.replayed += int(marker.get("replayed_tool_calls") or 0)
        self.differing += int(marker.get("differing_tool_outputs") or 0)
        reward, previous = record.get("reward"), record.get("previous_reward")
        if marker.get("error") is not None or not isinstance(reward, int | float):
            self.failed_now += 1
            return
        self.rescored += 1
        previous = float(previous) if isinstance(previous, int | float) else 0.0
        self.before += previous
        self.after += float(reward)
        if reward > previous + SAME_REWARD:
            self.up += 1
        elif reward < previous - SAME_REWARD:
            self.down += 1
        else:
            self.unchanged += 1

    def totals(self) -> Totals:
        mean = (lambda total: round(total / self.rescored, 6)) if self.rescored else (lambda _: None)
        return {
            "rescored": self.rescored,
            "unchanged": self.unchanged,
            "changed": self.up + self.down,
            "up": self.up,
            "down": self.down,
            "failed_now": self.failed_now,
            "copied_failed": self.copied_failed,
            "mean_reward_before": mean(self.before),
            "mean_reward_after": mean(self.after),
            "replayed_tool_calls": self.replayed,
            "differing_tool_outputs": self.differing,
            "resources_servers": dict(sorted(self.servers.items())),
        }


def scan_rescored(path: Path) -> tuple[set[Key], Tally]:
    """The rollouts the output already holds, and its figures (lines that are not records are left alone)."""
    done: set[Key] = set()
    tally = Tally()
    if not path.exists():
        return done, tally
    for _, item in keyed_lines(path, _key):
        if not isinstance(item, Unread):
            done.add(item[0])
            tally.add(item[1])
    return done, tally


# ---------------------------------------------------------------------------------------------- the servers


@dataclass(frozen=True)
class Verifiers:
    """Which running resources server verifies the records of each agent."""

    of_agent: Mapping[str, str]
    problems: Mapping[str, str]
    """agent -> why its records cannot be verified (its config names no resources server, or one not running)."""
    running: tuple[str, ...]
    override: str | None = None

    def server_for(self, agent: str) -> tuple[str | None, str]:
        """(the server, "") or (None, the reason to skip, with the way out)."""
        if self.override is not None:
            return self.override, ""
        if agent in self.of_agent:
            return self.of_agent[agent], ""
        if agent in self.problems:
            return None, self.problems[agent]
        way_out = f"pass +resources_server=<one of: {', '.join(self.running) or 'none'}>"
        if not agent:
            return None, f"records without an agent_name ({way_out})"
        return None, (
            f"records of agent '{agent}', which the running ng_run does not configure (start ng_run with its "
            f"config, or {way_out})"
        )


def verifiers_of(served_config: Mapping[str, Any], registry: Mapping[str, Any], override: str | None) -> Verifiers:
    """Each configured agent's resources server (the `resources_server` of its block), or `override` for all."""
    running = tuple(sorted(n for n, a in registry.items() if a.server_type == RESOURCES_SERVER_TYPE))
    if override is not None and override not in running:
        raise ConfigError(
            f"+resources_server={override} is not a running resources server. Running: {', '.join(running) or 'none'}."
        )
    of_agent: dict[str, str] = {}
    problems: dict[str, str] = {}
    for name, instance in served_config.items():
        block = _instance_block(instance, "responses_api_agents")
        if block is None:
            continue
        ref = block.get("resources_server")
        server = ref.get("name") if isinstance(ref, Mapping) else None
        if not isinstance(server, str):
            problems[name] = (
                f"records of agent '{name}', whose config names no resources_server (pass +resources_server=...)"
            )
        elif server not in running:
            problems[name] = f"records of agent '{name}', whose resources server '{server}' is not running"
        else:
            of_agent[name] = server
    return Verifiers(of_agent, problems, running, override)


def _instance_block(instance: Any, server_type: str) -> Mapping[str, Any] | None:
    if not isinstance(instance, Mapping) or set(instance) != {server_type}:
        return None
    impls = instance[server_type]
    if not isinstance(impls, Mapping) or len(impls) != 1:
        return None
    (block,) = impls.values()
    return block if isinstance(block, Mapping) else None


# ---------------------------------------------------------------------------------------------- the input


@dataclass
class Skips:
    """Input lines that are neither re-scored nor copied: a count and the first line numbers per reason."""

    lines: dict[str, list[int]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def add(self, reason: str, line: int) -> None:
        self.counts[reason] = self.counts.get(reason, 0) + 1
        examples = self.lines.setdefault(reason, [])
        if len(examples) < EXAMPLE_LINES:
            examples.append(line)

    def report(self) -> str:
        """One line per reason: how many, and where (`[lines 2, 6 ...]`)."""
        return "\n".join(
            f"  {count} {reason} [line{'s' if len(self.lines[reason]) > 1 else ''} "
            f"{', '.join(map(str, self.lines[reason]))}{' ...' if count > len(self.lines[reason]) else ''}]"
            for reason, count in self.counts.items()
        )


@dataclass
class Plan:
    """What to do with the input: line -> resources server to verify with (None: copy through), and the skips."""

    jobs: dict[int, str | None]
    records_read: int
    to_write: int
    """Records of the input the output should hold: the ones to re-score plus failed rollouts copied through."""
    already_done: int
    skips: Skips
    nemo_gym_records: int = 0
    """Records of the input read from NeMo Gym's shape (see the module docstring)."""


@dataclass
class Converter:
    """NeMo Gym records read as ours; `last` is the latest one made, so a reader can tell its converted records."""

    last: RolloutRecord | None = None

    def __call__(self, obj: JSONObject) -> RolloutRecord | None:
        self.last = converted_or_none(obj)
        return self.last


def plan(path: Path, limit: int | None, done: set[Key], verifiers: Verifiers) -> Plan:
    """One pass over the input: classify every line, and pick one record per rollout (a success over a failure,
    else the first), skipping those the output holds already."""
    skips = Skips()
    chosen: dict[Key, tuple[int, bool, str | None]] = {}
    records = 0
    converted = 0
    converter = Converter()
    last = 0
    try:
        for number, item in keyed_lines(path, _key, converter):
            last = number
            if isinstance(item, Unread):
                if item is not Unread.BLANK:
                    skips.add(UNREAD_REASONS[item], number)
                continue
            if limit is not None and records >= limit:
                break
            records += 1
            key, record = item
            converted += record is converter.last
            scorable = _scorable(record)
            if scorable and not (isinstance(record.get("input"), dict) and isinstance(record.get("response"), dict)):
                skips.add("records without the `input` row or the `response` to verify", number)
                continue
            server: str | None = None
            if scorable:
                server, reason = verifiers.server_for(str(record.get("agent_name") or ""))
                if server is None:
                    skips.add(reason, number)
                    continue
            earlier = chosen.get(key)
            if earlier is None:
                chosen[key] = (number, scorable, server)
            elif scorable and not earlier[1]:
                chosen[key] = (number, scorable, server)
                skips.add(REPEATED, earlier[0])
            else:
                skips.add(REPEATED, number)
    except OSError as exc:
        raise InputError(f"Cannot read {path} (at line {last + 1}): {exc.strerror or exc}.") from None
    if not records:
        found = f" It holds:\n{skips.report()}\n" if skips.counts else " It is empty."
        raise InputError(
            f"{path} holds no rollout records (JSON lines with a row_hash, as ng_collect_rollouts writes them, or "
            f"NeMo Gym's, with `_ng_task_index`, a `response` and a `reward`).{found}"
            " Give +input_jsonl_fpath the rollouts file of a collection, not its dataset."
        )
    jobs = {number: server for key, (number, _, server) in chosen.items() if key not in done}
    return Plan(dict(sorted(jobs.items())), records, len(chosen), len(chosen) - len(jobs), skips, converted)


def job_records(path: Path, jobs: Mapping[int, str | None]) -> Iterator[tuple[RolloutRecord, str | None]]:
    """The planned records, read again in order (one line in memory at a time), with their resources server."""
    last = max(jobs, default=0)
    for number, item in keyed_lines(path, _key, converted_or_none):
        if number > last:
            return
        if number in jobs and not isinstance(item, Unread):
            yield item[1], jobs[number]
