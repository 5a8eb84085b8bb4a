"""What an output file already holds, so a re-run resumes instead of repeating, duplicating or mixing.

Records are keyed by (row_hash, repeat_index): the content of the row, not its position, so reordering the input
is harmless. Each record also carries the fingerprint of the settings that produced it (agent, model server, sampling
parameters); a re-run with different settings is refused with the difference spelled out instead of silently
appending results of another experiment. A collection whose rows name several agents (`agent_ref`) has one
fingerprint per agent, and each of them is checked.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, TypeVar, cast

import orjson

from nemo_gym.collection.inputs import AGENT_REF, InputError
from nemo_gym.collection.metrics import Metrics
from nemo_gym.console import print_flushed
from nemo_gym.protocol.types import JSONObject, RolloutRecord

# Instance keys that change how a server runs, not what it answers.
OPERATIONAL_KEYS = frozenset(
    {
        "entrypoint",
        "host",
        "port",
        "api_key",
        "headers",
        "timeout_s",
        "connect_timeout_s",
        "retry",
        "max_concurrent_requests",
        "adaptive_concurrency",
        "preflight",
        "startup_timeout_s",
        "n_threads",
        "session_ttl_s",
        "max_sessions",
        "disable_extra_buffers",
    }
)
Key = tuple[str, int]
EXAMPLE_LINES = 5
Warn = Callable[[str], None]


class SettingsChanged(Exception):
    """The output holds rollouts made with other settings; the message lists what changed and the ways out."""


@dataclass
class DuplicateKeys:
    """Records repeating the rollout key (row_hash, repeat_index) of an earlier record made with the same settings
    fingerprint: two writers at once, or a file joined with itself. The same key under another fingerprint is a
    rollout of another experiment (a file joining runs of several models), not a duplicate."""

    first_lines: dict[tuple[str | None, Key], int] = field(default_factory=dict)
    repeated: set[tuple[str | None, Key]] = field(default_factory=set)
    extra_records: int = 0
    example: tuple[tuple[str | None, Key], list[int]] | None = None
    """The first repeated key and the lines it is on (the first few)."""
    example_count: int = 0

    def see(self, fingerprint: str | None, key: Key, line: int) -> int | None:
        """Note the record at `line`; the line of the earlier record with its key, when it repeats one."""
        scoped = (fingerprint, key)
        first = self.first_lines.setdefault(scoped, line)
        if first == line:
            return None
        self.extra_records += 1
        self.repeated.add(scoped)
        if self.example is None:
            self.example, self.example_count = (scoped, [first]), 1
        if self.example[0] == scoped:
            self.example_count += 1
            if len(self.example[1]) < EXAMPLE_LINES:
                self.example[1].append(line)
        return first

    def summary(self) -> str:
        """How many, and one example with its line numbers."""
        (_, (row, repeat)), lines = self.example or ((None, ("?", 0)), [0])
        more = self.example_count - len(lines)
        shown = ", ".join(map(str, lines[:-1])) + f" and {lines[-1]}" + (f" (and {more} more)" if more else "")
        return (
            f"{self.extra_records} record(s) repeat the rollout key of an earlier record with the same settings "
            f"({len(self.repeated)} rollout(s) recorded more than once), e.g. row_hash {row} repeat_index {repeat} "
            f"on lines {shown}; were two collectors writing this file at once?"
        )

    def __bool__(self) -> bool:
        return self.extra_records > 0


def warn_on_stderr(message: str) -> None:
    print_flushed(f"warning: {message}", err=True)


@dataclass
class OutputState:
    """The finished rollouts in an output file."""

    succeeded: set[Key] = field(default_factory=set)
    failed: set[Key] = field(default_factory=set)
    fingerprints: set[str] = field(default_factory=set)
    agents: set[str] = field(default_factory=set)
    """The agents that ran the records (their `agent_name`)."""
    default_agents: set[str] = field(default_factory=set)
    """The agents that ran records of rows naming no agent (`agent_ref`): the collection's `agent_name` then."""
    unreadable_lines: int = 0
    duplicates: DuplicateKeys = field(default_factory=DuplicateKeys)

    @property
    def done(self) -> set[Key]:
        return self.succeeded | self.failed


def unwritable(path: Path, exc: OSError, consequence: str, then: str = "re-run the same command") -> str:
    """A file next to the output that cannot be written: which, why, what that means for the run, and the fix."""
    if path.is_dir():
        fix = f"remove or rename the directory {path}"
    elif exc.errno == errno.ENOSPC:
        fix = f"free disk space on the file system of {path.parent}"
    else:
        fix = f"make {path.parent} writable for this user (and {path.name}, if it exists)"
    return (
        f"Cannot write {path}: {exc.strerror or exc}. {consequence} Fix: {fix} (or choose another "
        f"+output_jsonl_fpath=...), then {then}."
    )


def repair_torn_tail(path: Path) -> int:
    """Cut an unfinished last line (a crash mid-write) off the output so appends start on a fresh line; the
    fragment is kept in `<output>.torn`. Returns the number of bytes moved."""
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with path.open("rb+") as handle:
        data = handle.read()
        if data.endswith(b"\n"):
            return 0
        cut = data.rfind(b"\n") + 1
        torn_path = path.with_name(path.name + ".torn")
        try:
            with torn_path.open("ab") as torn:
                torn.write(data[cut:] + b"\n")
                torn.flush()
                os.fsync(torn.fileno())
        except OSError as exc:  # before the truncation: the fragment is still in the output
            raise InputError(
                unwritable(
                    torn_path,
                    exc,
                    f"{path} ends with an unfinished line ({len(data) - cut} bytes, left by an interrupted run) that "
                    "must be moved there before this run appends; nothing was changed and no rollout has run.",
                )
            ) from None
        handle.truncate(cut)
        return len(data) - cut


class Unread(StrEnum):
    """Why a line of a rollouts file holds no record."""

    BLANK = "blank"
    TORN = "torn"
    """Not JSON and not ended by a newline: the last line, which a writer had not finished."""
    NOT_JSON = "not JSON"
    NOT_A_RECORD = "not a record"
    """JSON, but not an object with a `row_hash`."""


K = TypeVar("K")


def keyed_lines(
    path: Path,
    key: Callable[[RolloutRecord], K],
    convert: Callable[[JSONObject], RolloutRecord | None] | None = None,
) -> Iterator[tuple[int, tuple[K, RolloutRecord] | Unread]]:
    """Each line of `path` in one streaming pass: its number, and its record under `key`, or why it holds none.
    A record written by an older version may lack some of RolloutRecord's keys: readers use `.get`. `convert` makes
    a record of a JSON object without a `row_hash` where it can (e.g. NeMo Gym's records), None where it cannot."""
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                if not line.strip():
                    yield number, Unread.BLANK
                else:
                    yield number, Unread.NOT_JSON if line.endswith(b"\n") else Unread.TORN
                continue
            if not isinstance(record, dict) or "row_hash" not in record:
                converted = convert(record) if convert is not None and isinstance(record, dict) else None
                if converted is None:
                    yield number, Unread.NOT_A_RECORD
                    continue
                record = converted
            yield number, (key(cast(RolloutRecord, record)), cast(RolloutRecord, record))


def _rollout_key(record: RolloutRecord) -> Key:
    return str(record["row_hash"]), int(record.get("repeat_index", 0))


def _keyed_records(path: Path) -> Iterator[tuple[int, tuple[Key, RolloutRecord] | None]]:
    """Each line's number and its rollout key and record, or None for a line that is not a record."""
    if not path.exists():
        return
    for number, item in keyed_lines(path, _rollout_key):
        yield number, None if isinstance(item, Unread) else item


def _fingerprint_of(record: RolloutRecord) -> str | None:
    value = record.get("fingerprint")
    return None if value is None else str(value)


def scan_output(path: Path, warn: Warn | None = warn_on_stderr) -> OutputState:
    """What `path` holds; `warn` is told about rollouts recorded more than once."""
    state = OutputState()
    for number, item in _keyed_records(path):
        if item is None:
            state.unreadable_lines += 1
            continue
        key, record = item
        state.duplicates.see(_fingerprint_of(record), key, number)
        if record.get("error") is None:
            state.succeeded.add(key)
            state.failed.discard(key)
        elif key not in state.succeeded:
            state.failed.add(key)
        if record.get("fingerprint"):
            state.fingerprints.add(str(record["fingerprint"]))
        if record.get("agent_name"):
            state.agents.add(str(record["agent_name"]))
            if _names_no_agent(record.get("input")):
                state.default_agents.add(str(record["agent_name"]))
    if state.duplicates and warn is not None:
        warn(f"{path}: {state.duplicates.summary()} Each rollout counts once (a success over a failure).")
    return state


def read_records(path: Path, warn: Warn | None = warn_on_stderr) -> dict[Key, RolloutRecord]:
    """One record per rollout key, a success winning over a failure of the same rollout; unreadable lines skipped;
    `warn` is told about rollouts recorded more than once."""
    records: dict[Key, RolloutRecord] = {}
    duplicates = DuplicateKeys()
    for number, item in _keyed_records(path):
        if item is None:
            continue
        key, record = item
        duplicates.see(_fingerprint_of(record), key, number)
        if key not in records or records[key].get("error") is not None:
            records[key] = record
    if duplicates and warn is not None:
        warn(f"{path}: {duplicates.summary()} Each rollout counts once (a success over a failure).")
    return records


def file_metrics(path: Path) -> Metrics:
    """The metrics of every rollout `path` holds, each counted once as readers count it (a success over a failure,
    the first copy otherwise), in one streaming pass: only failed records wait, until the end, in case a success of
    the same rollout follows."""
    return file_metrics_by_agent(path)[0]


def file_metrics_by_agent(path: Path) -> tuple[Metrics, dict[str, Metrics]]:
    """`file_metrics`, and the same per agent (each record's `agent_name`), in the same one pass."""
    metrics = Metrics()
    by_agent: dict[str, Metrics] = {}

    def add(record: RolloutRecord) -> None:
        metrics.add(record)
        agent = str(record.get("agent_name"))
        by_agent.setdefault(agent, Metrics()).add(record)

    succeeded: set[Key] = set()
    failed: dict[Key, RolloutRecord] = {}
    for _, item in _keyed_records(path):
        if item is None:
            continue
        key, record = item
        if key in succeeded:
            continue
        if record.get("error") is None:
            succeeded.add(key)
            failed.pop(key, None)
            add(record)
        elif key not in failed:  # kept without its trajectory and input, which its figures do not need
            failed[key] = cast(RolloutRecord, {k: v for k, v in record.items() if k not in ("response", "input")})
    for record in failed.values():
        add(record)
    return metrics, by_agent


def succeeded_records(path: Path) -> Iterator[RolloutRecord]:
    """Each rollout's successful record, once (a later copy of the same rollout is skipped), in file order."""
    seen: set[Key] = set()
    for _, item in _keyed_records(path):
        if item is not None and item[1].get("error") is None and item[0] not in seen:
            seen.add(item[0])
            yield item[1]


def set_aside_failures(path: Path) -> int:
    """Move failed records out of the output into `<output>.retried_failures.jsonl` (nothing is lost) so their
    rows can run again without leaving two records for one rollout. Atomic: a crash leaves either file whole."""
    kept: list[bytes] = []
    moved: list[bytes] = []
    with path.open("rb") as handle:
        for line in handle:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                kept.append(line)
                continue
            (moved if isinstance(record, dict) and record.get("error") is not None else kept).append(line)
    if not moved:
        return 0
    side_path = path.with_name(path.name + ".retried_failures.jsonl")
    temporary = path.with_name(path.name + ".tmp")
    writing = temporary
    try:  # both files written before the output is replaced: a failure leaves the output as it was
        with temporary.open("wb") as handle:
            handle.writelines(kept)
            handle.flush()
            os.fsync(handle.fileno())
        writing = side_path
        with side_path.open("ab") as side:
            side.writelines(moved)
            side.flush()
            os.fsync(side.fileno())
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise InputError(
            unwritable(
                writing,
                exc,
                f"+retry_failed moves the {len(moved)} failed records of {path} through it; nothing was moved and no "
                "rollout has run.",
            )
        ) from None
    os.replace(temporary, path)
    return len(moved)


def result_settings(
    agent_name: str, config: Mapping[str, Any], responses_create_params: Mapping[str, Any]
) -> JSONObject:
    """The settings that decide what a rollout looks like: the agent's and its model server's blocks (minus how
    they run) and the sampling parameters given on the command line."""
    agent = _instance_block(config, agent_name)
    model_ref = agent.get("model_server")
    if not isinstance(model_ref, Mapping):
        model_ref = {}
    model = _instance_block(config, str(model_ref.get("name", "")))
    return {
        "agent_name": agent_name,
        "agent": _without_operational(agent),
        "model_server": _without_operational(model),
        "responses_create_params": dict(responses_create_params),
    }


def fingerprint(settings: Mapping[str, Any]) -> str:
    return hashlib.sha256(orjson.dumps(settings, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def settings_path(output: Path) -> Path:
    return output.with_name(output.stem + ".settings.json")


def check_settings(output: Path, state: OutputState, settings: Mapping[str, Any]) -> str:
    """The fingerprint of `settings`, after making sure the output holds no rollouts made with other settings."""
    return _check(output, state, {"": settings})[""]


def check_agent_settings(
    output: Path, state: OutputState, settings_by_agent: Mapping[str, Mapping[str, Any]]
) -> dict[str, str]:
    """agent -> the fingerprint of its settings (`result_settings`), for a collection whose rows several agents run,
    after making sure every record in the output was made with the current settings of one of them. Pass every
    running agent that this run's rows or the output's records (`OutputState.agents`) name."""
    return _check(output, state, settings_by_agent)


def _check(output: Path, state: OutputState, candidates: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """The fingerprint of each candidate's settings; SettingsChanged when the output holds a record whose
    fingerprint is none of them, with the difference from the current settings of that record's agent."""
    current = {label: fingerprint(settings) for label, settings in candidates.items()}
    known = _load_known(output)
    others = state.fingerprints - set(current.values())
    if others:
        changes = [_describe_changes(known.get(other), candidates) for other in sorted(others)]
        raise SettingsChanged(
            f"{output} already holds {len(state.done)} rollouts made with different settings "
            f"({'; '.join(changes)}). Mixing them would make one dataset of two experiments. Use another "
            "+output_jsonl_fpath=..., or +overwrite=true to start this one over, or put the old settings back "
            "to resume it."
        )
    for label, settings in candidates.items():
        known[current[label]] = dict(settings)
    path = settings_path(output)
    try:
        path.write_text(json.dumps(known, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    except OSError as exc:
        raise InputError(
            unwritable(
                path,
                exc,
                "It keeps the settings behind each record's fingerprint, so that resuming with other settings is "
                "refused with the difference spelled out; no rollout has run.",
            )
        ) from None
    return current


def check_default_agent(output: Path, state: OutputState, agent_name: str | None) -> None:
    """Rows naming no agent run on `agent_name`, and are keyed by their content alone: SettingsChanged when the
    output holds such rows run by another agent (they would count as done, though this run would run them
    elsewhere). `agent_name` None: this run has no such rows."""
    others = sorted(state.default_agents - {agent_name}) if agent_name is not None else []
    if others:
        raise SettingsChanged(
            f"{output} holds rollouts of rows without an `{AGENT_REF}` run by agent {', '.join(map(repr, others))}, "
            f"but this run would run such rows on '{agent_name}' (+agent_name). Mixing them would make one dataset "
            f"of two experiments. Use another +output_jsonl_fpath=..., or +overwrite=true to start this one over, "
            f"or +agent_name={others[0]} to resume it."
        )


def _names_no_agent(row: Any) -> bool:
    return isinstance(row, Mapping) and row.get(AGENT_REF) is None


def _load_known(output: Path) -> JSONObject:
    path = settings_path(output)
    if not path.exists():
        return {}
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _describe_changes(old: Mapping[str, Any] | None, candidates: Mapping[str, Mapping[str, Any]]) -> str:
    """How `old` differs from the current settings of the same agent (of the only agent, when there is one)."""
    if old is None:
        return "the earlier settings are not on record"
    by_agent = {str(s.get("agent_name")): s for s in candidates.values()}
    agent = str(old.get("agent_name"))
    if agent in by_agent:
        new = by_agent[agent]
    elif len(candidates) == 1:
        (new,) = candidates.values()
    else:
        return f"records of agent '{agent}', which is not among this run's agents ({', '.join(sorted(by_agent))})"
    changes = [f"{path}: {before!r} -> {after!r}" for path, before, after in _diff(old, new)]
    return ", ".join(changes[:6]) + (" ..." if len(changes) > 6 else "") if changes else "unknown change"


def _diff(old: Any, new: Any, path: str = "") -> list[tuple[str, Any, Any]]:
    if isinstance(old, Mapping) and isinstance(new, Mapping):
        found = []
        for key in sorted(set(old) | set(new), key=str):
            found += _diff(old.get(key), new.get(key), f"{path}.{key}" if path else str(key))
        return found
    return [] if old == new else [(path, old, new)]


def _instance_block(config: Mapping[str, Any], name: str) -> JSONObject:
    instance = config.get(name)
    if not isinstance(instance, Mapping) or len(instance) != 1:
        return {}
    (impls,) = instance.values()
    if not isinstance(impls, Mapping) or len(impls) != 1:
        return {}
    ((impl, block),) = impls.items()
    return {"impl": impl, **block} if isinstance(block, Mapping) else {}


def _without_operational(block: Mapping[str, Any]) -> JSONObject:
    return {k: v for k, v in block.items() if k not in OPERATIONAL_KEYS}
