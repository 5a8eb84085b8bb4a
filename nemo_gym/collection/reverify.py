"""Re-score stored rollouts with the current verifier of a running resources server, calling no agent and no model.

For when a verifier's bug is fixed after an expensive run: each record's trajectory is verified again and written to
a new file with the new `reward`, the `previous_reward` and a `reverified` marker. Like a collection, the output is
appended one flushed line per record and a re-run of the same command resumes it (key: row hash, repeat index and
agent name); failed rollouts are copied through unchanged, since they have nothing to score.

Sessions. A verifier may read its session: the row seeded into it, and the tool calls that ran in it (simple_weather
credits only the lookups that really ran). So each record gets a fresh `/seed_session` of its row, then the tool
calls its trajectory shows were run (those with an output, of the row's tools, with JSON-object arguments: the
calls the agent sent to the resources server) are replayed in order against that session, then `/verify`. Tools
are environment calls, not model calls, so this costs nothing upstream, and for deterministic tools it rebuilds the
very state the rollout left: an unchanged verifier gives the same rewards. A replayed call that answers otherwise
than it did in the rollout (a tool that is not deterministic, or was changed) is counted per record; the verifier
then sees the replayed state. A tool with side effects that must not run twice (it sends mail, it pays) can be left
out with `+replay_tools=false`: each record is then verified against a freshly seeded session with no tool calls.
The row sent is the record's `input` (a collection's `+responses_create_params` overrides are not in it).

A re-scored record keeps everything but the old verifier's fields (they explained the old reward), and adds
`previous_reward` and `reverified`: `at` (UTC), `resources_server`, `changed` (reward != previous_reward),
`replayed_tool_calls`, `differing_tool_outputs` and `error`. A /verify that fails now leaves `reward` null and
`error` `ReverifyFailed: ...` (never a 0); `+retry_failed=true` verifies those again. A resources server that cannot
be reached stops the run (exit 3) without recording anything for the records it broke.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO, TypedDict

import orjson
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from nemo_gym.collection.inputs import InputError
from nemo_gym.collection.output_lock import OutputLock, refuse_input_as_output
from nemo_gym.collection.resume import repair_torn_tail, set_aside_failures
from nemo_gym.collection.run import Interrupted, RunStopped, command_line, discover
from nemo_gym.collection.spend import MODEL_SERVER_TYPE
from nemo_gym.config.errors import COMMAND_LINE, ConfigError
from nemo_gym.config.paths import resolve_input_path
from nemo_gym.config.secrets import Redactor, collect_secrets
from nemo_gym.config.settings import check_setting_names, settings_problems
from nemo_gym.config.types import GlobalConfig
from nemo_gym.console import print_flushed
from nemo_gym.http.lean_client import PeerPool
from nemo_gym.http.pool import TransportError
from nemo_gym.http.server_client import SESSION_HEADER, ServerCallError, ServerClient
from nemo_gym.protocol.types import RECORD_KEYS, JSONObject

RESOURCES_SERVER_TYPE = "resources_servers"
OWN_KEYS = ("previous_reward", "reverified")
"""The keys this module adds to a record; neither is a verifier field."""
REVERIFY_ERROR = "ReverifyFailed"
"""The kind (text before the colon) of a record's `error` when its /verify failed now."""
SAME_REWARD = 1e-9
EXAMPLE_LINES = 3

Key = tuple[str, int, str]
"""(row_hash, repeat_index, agent_name): what identifies a rollout across environments."""


class ReverifySettings(BaseModel):
    """The `+key=value` settings of ng_reverify."""

    model_config = ConfigDict(extra="forbid")
    input_jsonl_fpath: Path
    output_jsonl_fpath: Path
    resources_server: str | None = Field(
        default=None, description="Verify every record with this resources server instead of its agent's"
    )
    num_samples_in_parallel: int = Field(default=16, ge=1, description="Records being verified at once")
    limit: int | None = Field(default=None, ge=1, description="Use only the first N records of the input")
    overwrite: bool = Field(default=False, description="Start the output over instead of resuming it")
    retry_failed: bool = Field(default=False, description="Verify again the records whose /verify failed")
    replay_tools: bool = Field(
        default=True, description="Replay the trajectory's tool calls in the fresh session before /verify"
    )
    drain_timeout_s: float = Field(
        default=30.0, ge=0, description="On Ctrl-C, how long records being verified may finish before they are dropped"
    )


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


class ReverifySummary(Totals):
    """`<output stem>.reverify.json`: the whole output's figures, what the input held, and this run's own."""

    input_jsonl_fpath: str
    output_jsonl_fpath: str
    records_read: int
    to_write: int
    """Records of the input the output should hold: the ones to re-score plus failed rollouts copied through."""
    complete: bool
    skipped: dict[str, int]
    """Input lines not re-scored nor copied, by reason."""
    cost_usd: float
    model_calls: int | None
    """Calls the model servers served while this run ran, by their own ledgers (None: none keeps one); reverify
    makes none, so anything here came from another client, or from a verifier that asks a model (a judge)."""
    model_servers_cost_usd: float | None
    this_run: JSONObject
    stopped_early: str | None
    interrupted: bool


def settings_from(config: GlobalConfig) -> ReverifySettings:
    check_setting_names(
        [k for k in config.data if config.origins.get(k) == COMMAND_LINE],
        ReverifySettings.model_fields,
        "ng_reverify",
        close_only=True,
        cutoff=0.75,
    )
    values = {k: v for k, v in config.data.items() if k in ReverifySettings.model_fields}
    try:
        settings = ReverifySettings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(
            f"ng_reverify settings are invalid: {settings_problems(exc)}. Required: +input_jsonl_fpath=<rollouts "
            "file> +output_jsonl_fpath=<new file>"
        ) from None
    settings.input_jsonl_fpath = resolve_input_path(settings.input_jsonl_fpath)
    return settings


def summary_path(output: Path) -> Path:
    return output.with_name(output.stem + ".reverify.json")


def resume_command(settings: ReverifySettings, config: GlobalConfig) -> str:
    args = [
        f"+{key}={value}"
        for key, value in settings.model_dump(mode="json", exclude_defaults=True).items()
        if key not in ("overwrite", "retry_failed")
    ]
    if "head_server" in config.data:
        args += [f"+head_server.{k}={v}" for k, v in config.data["head_server"].items()]
    return shlex.join(["ng_reverify", *args])


# ---------------------------------------------------------------------------------------------- reading the files


def _key(record: Mapping[str, Any]) -> Key:
    return str(record["row_hash"]), int(record.get("repeat_index") or 0), str(record.get("agent_name") or "")


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    with path.open("rb") as handle:
        yield from enumerate(handle, start=1)


def _parse(line: bytes) -> Any:
    try:
        return orjson.loads(line)
    except orjson.JSONDecodeError:
        return None


def _reverify_failure(record: Mapping[str, Any]) -> bool:
    marker = record.get("reverified")
    return isinstance(marker, dict) and marker.get("error") is not None


def _scorable(record: Mapping[str, Any]) -> bool:
    """A rollout that has a trajectory to verify: it succeeded, or only an earlier re-verification of it failed."""
    return record.get("error") is None or _reverify_failure(record)


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


def scan_output(path: Path) -> tuple[set[Key], Tally]:
    """The rollouts the output already holds, and its figures (lines that are not records are left alone)."""
    done: set[Key] = set()
    tally = Tally()
    if not path.exists():
        return done, tally
    for _, line in _lines(path):
        record = _parse(line)
        if isinstance(record, dict) and "row_hash" in record:
            done.add(_key(record))
            tally.add(record)
    return done, tally


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
    already_done: int
    skips: Skips


def plan(path: Path, limit: int | None, done: set[Key], verifiers: Verifiers) -> Plan:
    """One pass over the input: classify every line, and pick one record per rollout (a success over a failure,
    else the first), skipping those the output holds already."""
    skips = Skips()
    chosen: dict[Key, tuple[int, bool, str | None]] = {}
    records = 0
    last = 0
    try:
        for number, line in _lines(path):
            last = number
            if not line.strip():
                continue
            record = _parse(line)
            if record is None:
                torn = not line.endswith(b"\n")
                skips.add("torn last line (a run was writing the file)" if torn else "lines that are not JSON", number)
                continue
            if not isinstance(record, dict) or "row_hash" not in record:
                skips.add("lines that are not rollout records, having no row_hash", number)
                continue
            if limit is not None and records >= limit:
                break
            records += 1
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
            key = _key(record)
            earlier = chosen.get(key)
            if earlier is None:
                chosen[key] = (number, scorable, server)
            elif scorable and not earlier[1]:
                chosen[key] = (number, scorable, server)
                skips.add("records repeating a rollout another record of the input holds", earlier[0])
            else:
                skips.add("records repeating a rollout another record of the input holds", number)
    except OSError as exc:
        raise InputError(f"Cannot read {path} (at line {last + 1}): {exc.strerror or exc}.") from None
    if not records:
        found = f" It holds:\n{skips.report()}\n" if skips.counts else " It is empty."
        raise InputError(
            f"{path} holds no rollout records (JSON lines with a row_hash, as ng_collect_rollouts writes them).{found}"
            " Give +input_jsonl_fpath the rollouts file of a collection, not its dataset."
        )
    jobs = {number: server for key, (number, _, server) in chosen.items() if key not in done}
    return Plan(dict(sorted(jobs.items())), records, len(chosen), len(chosen) - len(jobs), skips)


def _job_records(path: Path, jobs: Mapping[int, str | None]) -> Iterator[tuple[JSONObject, str | None]]:
    """The planned records, read again in order (one line in memory at a time), with their resources server."""
    last = max(jobs, default=0)
    for number, line in _lines(path):
        if number > last:
            return
        if number in jobs and isinstance(record := _parse(line), dict):
            yield record, jobs[number]


# ---------------------------------------------------------------------------------------------- servers


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


async def model_servers_ledger(servers: ServerClient) -> tuple[int, float] | None:
    """Calls and USD the model servers' `/health` ledgers count so far (None: none keeps one)."""
    urls = [u for a in servers.registry.values() if a.server_type == MODEL_SERVER_TYPE for u in a.urls]

    async def spend(url: str) -> Any:
        try:
            response = await servers.http.get(url + "/health", timeout=5.0)
            body = orjson.loads(response.content) if response.status_code == 200 else None
        except (TransportError, orjson.JSONDecodeError):
            return None
        return body.get("spend") if isinstance(body, dict) else None

    known = [s for s in await asyncio.gather(*(spend(u) for u in urls)) if isinstance(s, dict)]
    if not known:
        return None
    return sum(int(s.get("calls") or 0) for s in known), sum(float(s.get("cost_usd") or 0.0) for s in known)


# ---------------------------------------------------------------------------------------------- one record


class _Outage(Exception):
    """The resources server could not be reached: the record is not written; a re-run does it."""


@dataclass
class Replay:
    """A record's replayed tool calls, and how many answered otherwise than in the rollout."""

    calls: int = 0
    differing: int = 0


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
    previous = record.get("previous_reward") if _reverify_failure(record) else record.get("reward")
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
    for name, value in (verdict or {}).items():
        if name not in RECORD_KEYS and name not in OWN_KEYS:
            out[name] = value
    out["response"] = record.get("response")
    out["input"] = record.get("input")
    return out


async def rescore(servers: ServerClient, record: Mapping[str, Any], server: str, *, replay_tools: bool) -> JSONObject:
    """Seed a session for the record's row, replay its tool calls, verify: the re-scored record. A failure the
    resources server answered becomes the record's error; one that reached no server raises _Outage."""
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
            raise _Outage(f"resources server '{server}' is unreachable: {exc}") from None
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


# ---------------------------------------------------------------------------------------------- the run


class Reverifier:
    """Re-scores the planned records with bounded concurrency and writes each as it is done."""

    def __init__(
        self, settings: ReverifySettings, servers: ServerClient, redactor: Redactor, out: TextIO, tally: Tally
    ) -> None:
        self.settings = settings
        self.servers = servers
        self.redactor = redactor
        self.out = out
        self.tally = tally
        self.this_run = Tally()
        self.stop_reason: str | None = None
        self.interrupted = False
        self._stop = asyncio.Event()
        self._abort = asyncio.Event()
        self.progress: Any = None

    def stop(self, reason: str | None = None) -> None:
        if reason is None:
            self.interrupted = True
        elif self.stop_reason is None:
            self.stop_reason = reason
        self._stop.set()

    def abort(self) -> None:
        self.interrupted = True
        self._stop.set()
        self._abort.set()

    def write(self, record: Mapping[str, Any]) -> None:
        self.out.write(self.redactor.json_line(record) + "\n")  # one whole line, flushed: a crash tears at most it
        self.out.flush()
        self.tally.add(record)
        self.this_run.add(record)
        if self.progress is not None:
            self.progress.update(1)
            self.progress.set_postfix(
                changed=self.this_run.up + self.this_run.down, failed=self.this_run.failed_now, refresh=False
            )

    async def run(self, jobs: Iterator[tuple[JSONObject, str | None]]) -> None:
        async def worker() -> None:
            while not self._stop.is_set():
                job = next(jobs, None)
                if job is None:
                    return
                record, server = job
                if server is None:
                    self.write(record)  # a failed rollout: nothing to score, copied as it is
                    continue
                try:
                    rescored = await rescore(self.servers, record, server, replay_tools=self.settings.replay_tools)
                except _Outage as exc:
                    self.stop(self.redactor.text(str(exc)))
                    return
                self.write(rescored)

        workers = [asyncio.create_task(worker()) for _ in range(self.settings.num_samples_in_parallel)]
        everything = asyncio.gather(*workers)
        stopping = asyncio.create_task(self._stop.wait())
        first: set[asyncio.Future[Any]] = {everything, stopping}
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if not everything.done():
            aborting = asyncio.create_task(self._abort.wait())
            drained: set[asyncio.Future[Any]] = {everything, aborting}
            await asyncio.wait(drained, timeout=self.settings.drain_timeout_s, return_when=asyncio.FIRST_COMPLETED)
            aborting.cancel()
            for task in workers:
                task.cancel()
        stopping.cancel()
        for outcome in await asyncio.gather(*workers, return_exceptions=True):
            if isinstance(outcome, Exception):  # a bug, not a record's failure: never swallowed
                raise outcome


@contextlib.contextmanager
def _stop_on_signals(reverifier: Reverifier, drain_timeout_s: float) -> Iterator[None]:
    """Ctrl-C / SIGTERM: take no new records, let those being verified finish (bounded); a second one drops them."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def on_signal() -> None:
        if reverifier.interrupted:
            print_flushed("\nStopping now: dropping the records being verified.", err=True)
            reverifier.abort()
            return
        print_flushed(
            f"\nStopping: no new records; waiting up to {drain_timeout_s:g}s for those being verified "
            "(Ctrl-C again to drop them).",
            err=True,
        )
        reverifier.stop()

    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)
            if previous[sig] is not None:
                signal.signal(sig, previous[sig])


async def reverify(config: GlobalConfig, settings: ReverifySettings) -> ReverifySummary:
    """Re-score `settings.input_jsonl_fpath` into `settings.output_jsonl_fpath` against the running ng_run (found
    through `config`'s head server) and write the summary next to the output. Raises RunStopped (Interrupted on a
    signal) when it ends early; every record written by then is kept and the same command resumes."""
    source, output = settings.input_jsonl_fpath, settings.output_jsonl_fpath
    if not source.is_file():
        problem = "is a directory" if source.is_dir() else "does not exist"
        raise InputError(
            f"+input_jsonl_fpath={source} {problem}: give the rollouts file that ng_collect_rollouts wrote (a "
            "relative path is tried against the working directory, then the repository)."
        )
    refuse_input_as_output(source, output)
    if output.is_dir():
        raise InputError(f"+output_jsonl_fpath={output} is a directory; give a file path such as {output / 'x.jsonl'}.")
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"Cannot write +output_jsonl_fpath={output}: {exc.strerror or exc}.") from None
    with OutputLock.acquire(output, command=command_line(config)) as lock:
        if note := lock.note():
            print_flushed(note, err=lock.unprotected)
        return await _reverify_locked(config, settings)


async def _reverify_locked(config: GlobalConfig, settings: ReverifySettings) -> ReverifySummary:
    source, output = settings.input_jsonl_fpath, settings.output_jsonl_fpath
    redactor = Redactor(collect_secrets(config.data))
    async with PeerPool(max_connections=max(16, settings.num_samples_in_parallel * 2)) as pool:
        servers, served_config, _listing = await discover(config, pool)
        verifiers = verifiers_of(served_config, servers.registry, settings.resources_server)
        done, tally = _prepare_output(settings)
        work = plan(source, settings.limit, done, verifiers)
        if work.skips.counts:
            print_flushed(f"Skipped in {source}:\n{work.skips.report()}", err=True)
        if work.already_done:
            print_flushed(
                f"Resuming {output}: {work.already_done} records already done, {len(work.jobs)} to go "
                "(+overwrite=true starts over)."
            )
        ledger_before = await model_servers_ledger(servers)
        started = time.perf_counter()
        with output.open("a", encoding="utf-8") as out:
            reverifier = Reverifier(settings, servers, redactor, out, tally)
            with (
                _stop_on_signals(reverifier, settings.drain_timeout_s),
                tqdm(total=len(work.jobs), desc="reverify", unit="record", dynamic_ncols=True) as bar,
            ):
                reverifier.progress = bar
                await reverifier.run(_job_records(source, work.jobs))
        wall = time.perf_counter() - started
        ledger_after = await model_servers_ledger(servers) if ledger_before is not None else None
        await servers.aclose()
    summary = _summary(settings, work, reverifier, wall, _ledger_delta(ledger_before, ledger_after))
    written_count = summary["this_run"]["records_written"]
    unwritten = _write_summary(summary_path(output), summary)
    if summary["model_calls"]:
        print_flushed(
            f"The model servers served {summary['model_calls']} calls while this ran: reverify makes none, so another "
            "client used them, or the verifier asks a model (a judge).",
            err=True,
        )
    if reverifier.stop_reason is not None:
        raise RunStopped(
            f"Stopped early: {reverifier.stop_reason}. {written_count} records done in this run are kept in "
            f"{output}. Bring the server back (is ng_run still running?), then resume with: "
            f"{resume_command(settings, config)}{unwritten}"
        )
    if reverifier.interrupted:
        raise Interrupted(
            f"Interrupted: {written_count} records done in this run are kept in {output}; resume with: "
            f"{resume_command(settings, config)}{unwritten}"
        )
    if unwritten:
        raise RunStopped(f"All records are done in {output}.{unwritten}")
    return summary


def _prepare_output(settings: ReverifySettings) -> tuple[set[Key], Tally]:
    """Start the output over, or repair its torn tail (and set its failed records aside, on request); what it holds."""
    output = settings.output_jsonl_fpath
    if settings.overwrite:
        Path(os.path.realpath(output)).unlink(missing_ok=True)  # through a symlink: the file whose lock is held
        summary_path(output).unlink(missing_ok=True)
    if repair_torn_tail(output):
        print_flushed(f"{output} ended with an unfinished line; moved it to {output.name}.torn, its record is redone.")
    if settings.retry_failed and (moved := set_aside_failures(output)):
        print_flushed(
            f"+retry_failed: {moved} failed records moved to {output.name}.retried_failures.jsonl; they are verified "
            "(or, if the rollout itself failed, copied) again."
        )
    return scan_output(output)


def _ledger_delta(before: tuple[int, float] | None, after: tuple[int, float] | None) -> tuple[int, float] | None:
    if before is None or after is None:
        return None
    return after[0] - before[0], round(max(0.0, after[1] - before[1]), 10)


def _summary(
    settings: ReverifySettings, work: Plan, reverifier: Reverifier, wall_s: float, ledger: tuple[int, float] | None
) -> ReverifySummary:
    """The whole output's figures (what it held before this run plus what this run wrote), the input's skips, and
    this run's own figures."""
    this_run = reverifier.this_run
    written = this_run.rescored + this_run.failed_now + this_run.copied_failed
    return {
        "input_jsonl_fpath": str(settings.input_jsonl_fpath),
        "output_jsonl_fpath": str(settings.output_jsonl_fpath),
        "records_read": work.records_read,
        "to_write": work.to_write,
        "complete": written >= len(work.jobs),
        **reverifier.tally.totals(),
        "skipped": dict(work.skips.counts),
        "cost_usd": 0.0,
        "model_calls": None if ledger is None else ledger[0],
        "model_servers_cost_usd": None if ledger is None else ledger[1],
        "this_run": {
            **this_run.totals(),
            "records_written": written,
            "skipped_already_done": work.already_done,
            "wall_time_s": round(wall_s, 3),
            "records_per_s": round(written / wall_s, 2) if wall_s > 0 and written else None,
        },
        "stopped_early": reverifier.stop_reason,
        "interrupted": reverifier.interrupted,
    }


def _write_summary(path: Path, summary: ReverifySummary) -> str:
    text = json.dumps(summary, indent=2) + "\n"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        return f"\nCannot write {path} ({exc.strerror or exc}); the summary follows instead:\n{text.rstrip()}"
    return ""
