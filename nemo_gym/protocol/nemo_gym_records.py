"""NeMo Gym's rollout records read as ours, so ng_reward_profile, ng_export and ng_reverify take NeMo Gym's files.

NeMo Gym's collector (`ng_collect_rollouts`, `gym eval run`) writes one line per rollout: the resources server's
verify response (`responses_create_params`, `response`, `reward`, the dataset row's fields echoed, the verifier's own
fields such as `extracted_answer` or `judge_evaluations`) plus `_ng_task_index`, `_ng_rollout_index` and the row's
`agent_ref`. Failed attempts go to `<stem>_failures.jsonl` with `_ng_failure_class` (e.g. `judge_failed`, with
`_ng_failure_judge_error`) and, from `judge_failsafe`, `mask_sample: true`, `failure_kind`, `failure_reason`.

The mapping onto `RolloutRecord`:

- `row_index` = `_ng_task_index` (None when the line has none); `repeat_index` = `_ng_rollout_index` (0 when none);
  `agent_name` = `agent_ref.name` ("" when none); `fingerprint` None (NeMo Gym records no settings fingerprint). So
  two NeMo Gym runs of one dataset (another model, say) given to one reader together cannot be told apart: the same
  task and rollout index of the second count as duplicates. Read such runs one at a time.
- `row_hash`: a stable identity of the task, so all its repeats (and its failures, from the sidecar) group together:
  sha256 of the row's `responses_create_params` and `_ng_task_index`. Not of the whole row, since a verifier's fields
  differ from repeat to repeat and which top-level fields are the verifier's cannot be told in general.
- `reward`: the verify response's; None for a failure. Failures, for training purposes, are the rows with
  `_ng_failure_class` and the rows with `mask_sample: true` (NeMo Gym's flag for "do not train on this sample",
  wherever the row was written). Their `error` is `<failure class>: <judge error or failure_reason>`, e.g.
  `judge_failed: APIConnectionError: ...`, or `mask_sample: <failure_kind> (<failure_reason>)`.
- `usage`: `response.usage` in our shape (input, output and total tokens, their details, `cost` only when the usage
  carries one, `calls` 1); `cost_usd` its cost or None; `models` [`response.model`]; `retries` 0; `latency_s` None
  (NeMo Gym records none); `cost_by_model` None; any other key of our record (one added later) None.
- `input`: the row as NeMo Gym's collector dispatched it to the agent's `/run`: `responses_create_params`,
  `agent_ref` and every other top-level field, except `response`, `reward`, the `_ng_*` bookkeeping, the failure
  fields above and the known result fields of NeMo Gym's verifiers (`VERIFIER_FIELDS`). The seed the collector
  puts into `responses_create_params.metadata.extra_body` (`+num_repeats_add_seed`, equal to `_ng_rollout_index`) is
  taken out again, so every repeat of a task carries the same row. A verifier field this list does not know stays
  in the input (harmless: a verifier overwrites its own fields).
- The verifier's fields (beside the record's own keys, as our collector writes them): every top-level field that is
  neither reserved as above nor one of our record's keys, so dataset fields such as `question` sit there too (which
  of the fields a verifier added cannot be told).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, cast

import orjson

from nemo_gym.protocol.types import RECORD_KEYS, JSONObject, RolloutRecord
from nemo_gym.protocol.usage import add_usage, empty_usage

TASK_INDEX = "_ng_task_index"
ROLLOUT_INDEX = "_ng_rollout_index"
FAILURE_CLASS = "_ng_failure_class"
JUDGE_ERROR = "_ng_failure_judge_error"
AGENT_REF = "agent_ref"
PARAMS = "responses_create_params"
NG_PREFIX = "_ng_"
FAILURE_FIELDS = ("mask_sample", "failure_kind", "failure_reason")
"""What `judge_failsafe` (and verifiers that mask a sample) add to a verify response."""
VERIFIER_FIELDS = frozenset(
    {
        "extracted_answer",
        "library_reward",
        "judge_evaluations",
        "parsed_option",
        "parsed_synonym_values",
        "accuracy",
        "set_overlap",
        "original_term_minefield_hit",
        "order_instruction_following_failure",
        "follow_all_instructions",
        "follow_instruction_list",
        "schema_str",
        "error_type",
        "extracted_model_output",
        "extracted_model_code",
        "reward_components",
    }
)
"""Result fields of NeMo Gym's own verifiers (never dataset fields): kept out of the converted record's `input`, so a
re-verification or a dataset written back from it does not carry an old verdict."""
RESERVED = frozenset({"response", "reward", *FAILURE_FIELDS})


def is_nemo_gym_record(obj: Any) -> bool:
    """Whether `obj` is one of NeMo Gym's rollout records (or failure rows), not ours (which have a `row_hash`) and not
    a dataset row (NeMo Gym's materialized inputs have a `_ng_task_index` but neither a response nor a reward)."""
    if not isinstance(obj, dict) or "row_hash" in obj:
        return False
    outcome = "reward" in obj or FAILURE_CLASS in obj
    if TASK_INDEX in obj:
        return outcome or "response" in obj
    return outcome and isinstance(obj.get(PARAMS), dict) and "response" in obj


def converted_or_none(obj: Any) -> RolloutRecord | None:
    """`obj` as our record when it is a NeMo Gym record, else None: for readers that take either kind of line."""
    return from_nemo_gym_record(obj) if is_nemo_gym_record(obj) else None


def from_nemo_gym_record(obj: Mapping[str, Any]) -> RolloutRecord:
    """One NeMo Gym rollout record (or failure row) as our `RolloutRecord` (the mapping is in the module docstring)."""
    task_index = obj.get(TASK_INDEX)
    rollout_index = obj.get(ROLLOUT_INDEX)
    repeat = rollout_index if _is_int(rollout_index) else 0
    row = nemo_gym_input(obj)
    response = obj.get("response") if isinstance(obj.get("response"), dict) else None
    error = failure_of(obj)
    usage = (
        add_usage(empty_usage(), response["usage"]) if response and isinstance(response.get("usage"), dict) else None
    )
    model = response.get("model") if response else None
    reward = obj.get("reward")
    core: JSONObject = {
        "row_index": task_index if _is_int(task_index) else None,
        "repeat_index": repeat,
        "row_hash": task_hash(row.get(PARAMS), task_index),
        "agent_name": agent_name_of(obj),
        "fingerprint": None,
        "reward": None if error is not None else reward,
        "error": error,
        "usage": usage,
        "cost_usd": usage["cost"] if usage else None,
        "cost_estimated": bool(usage and usage.get("cost_estimated")),
        "models": [model] if isinstance(model, str) and model else [],
        "cost_by_model": None,
        "retries": 0,
        "latency_s": None,
    }
    own = {key: core.get(key) for key in RECORD_KEYS if key not in ("response", "input")}  # ones not set here: None
    extras = {
        k: v
        for k, v in obj.items()
        if k not in RESERVED and k not in RECORD_KEYS and k not in (PARAMS, AGENT_REF) and not k.startswith(NG_PREFIX)
    }
    return cast(RolloutRecord, {**own, **extras, "response": response, "input": row})


def nemo_gym_input(obj: Mapping[str, Any]) -> JSONObject:
    """The row as NeMo Gym's collector dispatched it (without the collector's seed): see the module docstring."""
    row = {
        k: v for k, v in obj.items() if k not in RESERVED and k not in VERIFIER_FIELDS and not k.startswith(NG_PREFIX)
    }
    params = row.get(PARAMS)
    if isinstance(params, dict):
        row[PARAMS] = _without_seed(params, obj.get(ROLLOUT_INDEX))
    config = row.get("instance_config")
    if isinstance(config, dict) and "mask_sample" in config:  # judge_failsafe's addition, for older NeMo RL
        config = {k: v for k, v in config.items() if k != "mask_sample"}
        if config:
            row["instance_config"] = config
        else:
            del row["instance_config"]
    return row


def task_hash(params: Any, task_index: Any) -> str:
    """The identity of a NeMo Gym task: its `responses_create_params` (seed taken out) and its `_ng_task_index`."""
    identity = {PARAMS: params, TASK_INDEX: task_index}
    return hashlib.sha256(orjson.dumps(identity, option=orjson.OPT_SORT_KEYS)).hexdigest()[:16]


def agent_name_of(obj: Mapping[str, Any]) -> str:
    ref = obj.get(AGENT_REF)
    if isinstance(ref, str):
        return ref
    name = ref.get("name") if isinstance(ref, Mapping) else None
    return name if isinstance(name, str) else ""


def failure_of(obj: Mapping[str, Any]) -> str | None:
    """The record's `error`: why NeMo Gym marked it failed (or masked), None for a usable rollout."""
    failure_class = obj.get(FAILURE_CLASS)
    if failure_class is not None:
        reason = obj.get(JUDGE_ERROR) or obj.get("failure_reason") or obj.get("infrastructure_error")
        return f"{failure_class}: {reason or 'no reason recorded'}"
    if obj.get("mask_sample") is True:
        kind = obj.get("failure_kind") or "masked by the verifier"
        reason = obj.get("failure_reason")
        return f"mask_sample: {kind}" + (f" ({reason})" if reason else "")
    return None


def _without_seed(params: JSONObject, rollout_index: Any) -> JSONObject:
    """`params` without the `seed` NeMo Gym's collector adds to `metadata.extra_body` (a JSON string), which equals
    the rollout index; any other seed is the dataset's and stays."""
    metadata = params.get("metadata")
    extra_text = metadata.get("extra_body") if isinstance(metadata, dict) else None
    if not isinstance(extra_text, str) or not _is_int(rollout_index):
        return params
    try:
        extra = json.loads(extra_text)
    except ValueError:
        return params
    if not isinstance(extra, dict) or extra.get("seed") != rollout_index or isinstance(extra.get("seed"), bool):
        return params
    del extra["seed"]
    metadata = {k: v for k, v in cast(JSONObject, metadata).items() if k != "extra_body"}
    if extra:
        metadata["extra_body"] = json.dumps(extra)
    out = {k: v for k, v in params.items() if k != "metadata"}
    if metadata:
        out["metadata"] = metadata
    return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
