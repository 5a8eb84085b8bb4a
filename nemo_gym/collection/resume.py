"""What an output file already holds, so a re-run resumes instead of repeating, duplicating or mixing.

Records are keyed by (row_hash, repeat_index): the content of the row, not its position, so reordering the input
is harmless. Each record also carries the fingerprint of the settings that produced it (agent, model server, sampling
parameters); a re-run with different settings is refused with the difference spelled out instead of silently
appending results of another experiment.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import orjson

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


class SettingsChanged(Exception):
    """The output holds rollouts made with other settings; the message lists what changed and the ways out."""


@dataclass
class OutputState:
    """The finished rollouts in an output file."""

    succeeded: set[Key] = field(default_factory=set)
    failed: set[Key] = field(default_factory=set)
    fingerprints: set[str] = field(default_factory=set)
    unreadable_lines: int = 0

    @property
    def done(self) -> set[Key]:
        return self.succeeded | self.failed


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
        with path.with_name(path.name + ".torn").open("ab") as torn:
            torn.write(data[cut:] + b"\n")
        handle.truncate(cut)
        return len(data) - cut


def _keyed_records(path: Path) -> Iterator[tuple[Key, RolloutRecord] | None]:
    """Each line's rollout key and record, or None for a line that is not a record (no `row_hash`). A record
    written by an older version may lack some of RolloutRecord's keys: readers use `.get`."""
    if not path.exists():
        return
    with path.open("rb") as handle:
        for line in handle:
            try:
                record = orjson.loads(line)
            except orjson.JSONDecodeError:
                yield None
                continue
            if not isinstance(record, dict) or "row_hash" not in record:
                yield None
                continue
            yield (str(record["row_hash"]), int(record.get("repeat_index", 0))), cast(RolloutRecord, record)


def scan_output(path: Path) -> OutputState:
    state = OutputState()
    for item in _keyed_records(path):
        if item is None:
            state.unreadable_lines += 1
            continue
        key, record = item
        if record.get("error") is None:
            state.succeeded.add(key)
            state.failed.discard(key)
        elif key not in state.succeeded:
            state.failed.add(key)
        if record.get("fingerprint"):
            state.fingerprints.add(str(record["fingerprint"]))
    return state


def read_records(path: Path) -> dict[Key, RolloutRecord]:
    """One record per rollout key, a success winning over a failure of the same rollout; unreadable lines skipped."""
    records: dict[Key, RolloutRecord] = {}
    for item in _keyed_records(path):
        if item is not None and (item[0] not in records or records[item[0]].get("error") is not None):
            records[item[0]] = item[1]
    return records


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
    with path.with_name(path.name + ".retried_failures.jsonl").open("ab") as side:
        side.writelines(moved)
        side.flush()
        os.fsync(side.fileno())
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("wb") as handle:
        handle.writelines(kept)
        handle.flush()
        os.fsync(handle.fileno())
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
    current = fingerprint(settings)
    known = _load_known(output)
    others = state.fingerprints - {current}
    if others:
        changes = [_describe_changes(known.get(other), settings) for other in sorted(others)]
        raise SettingsChanged(
            f"{output} already holds {len(state.done)} rollouts made with different settings "
            f"({'; '.join(changes)}). Mixing them would make one dataset of two experiments. Use another "
            "+output_jsonl_fpath=..., or +overwrite=true to start this one over, or put the old settings back "
            "to resume it."
        )
    known[current] = dict(settings)
    settings_path(output).write_text(json.dumps(known, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    return current


def _load_known(output: Path) -> JSONObject:
    path = settings_path(output)
    if not path.exists():
        return {}
    try:
        known = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return known if isinstance(known, dict) else {}


def _describe_changes(old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> str:
    if old is None:
        return "the earlier settings are not on record"
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
