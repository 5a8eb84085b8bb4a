"""NeMo Gym's `nemo_gym.reward_profile` as environments use it: the `/aggregate_metrics` computation (per-task and
overall stats of every numeric verify-response field), and the pass@k / majority@k helpers that environments call
from their `compute_metrics` override. Key names, percentages and edge cases follow NeMo Gym's, so an environment's
metrics read the same here; the stats are computed in plain Python (NeMo Gym uses pandas, whose conventions are kept:
sample std, missing values skipped, std 0 rather than missing when no field of a group has two values).
"""

from __future__ import annotations

import json
import math
import re
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from typing import Any

from pydantic import BaseModel, Field

from nemo_gym.compat.global_keys import (
    AGENT_REF_KEY_NAME,
    AVG_SAMPLE_STD_DEV_SUFFIX,
    MAX_STAT_NAME,
    MEAN_PREFIX,
    MEAN_STAT_NAME,
    MEDIAN_STAT_NAME,
    MIN_STAT_NAME,
    RESPONSE_KEY_NAME,
    ROLLOUT_INDEX_KEY_NAME,
    STAT_SEPARATOR,
    STD_DEV_ACROSS_RUNS_SUFFIX,
    STD_ERR_ACROSS_RUNS_SUFFIX,
    STD_STAT_NAME,
    TASK_INDEX_KEY_NAME,
)
from nemo_gym.training.passk import pass_at_k

Rollout = dict[str, Any]
"""One verify response (heavy fields stripped) as `/aggregate_metrics` receives it."""
Tasks = list[list[Rollout]]
"""`tasks[i]`: the rollouts of task i, in task-index order."""
ScoreDicts = list[list[dict[str, float]]]
"""`scores[i][j]`: the named scores of rollout j of task i."""
ScoreFn = Callable[[Rollout], Mapping[str, Any]]
ComputeMetricsFn = Callable[[Tasks], Mapping[str, Any]]
GetKeyMetricsFn = Callable[[dict[str, Any]], dict[str, Any]]

PER_SAMPLE_AGGREGATE_KEY_NAME = "per_sample_aggregate"
PER_TASK_METRICS_KEY_NAME = "per_task_metrics"
NO_ANSWER_SCORE_NAME = "no_answer"
SAMPLE_KEY_NAME = "sample"
_AGENT_NAME = "agent"
"""`/aggregate_metrics` profiles one server's rollouts, so they all count as one agent."""


class AggregateMetricsRequest(BaseModel):
    """The body of `POST /aggregate_metrics`: every verify response of a run, `response` reduced to its usage."""

    verify_responses: list[dict[str, Any]]


class AggregateMetrics(BaseModel):
    """The answer of `/aggregate_metrics`: stats per task, overall (`agent_metrics`), and the headline subset."""

    group_level_metrics: list[dict[str, Any]] = Field(default_factory=list)
    agent_metrics: dict[str, Any] = Field(default_factory=dict)
    key_metrics: dict[str, Any] = Field(default_factory=dict)


# --------------------------------------------------------------------------- pass@k, majority@k


def compute_pass_majority_metrics(
    tasks: Tasks, score_fn: ScoreFn | None = None, answer_key: str | None = None
) -> tuple[dict[str, Any], ScoreDicts, list[str], int]:
    """pass@k, pass@1[avg-of-k] and (with `answer_key`) majority@k for every k up to the most rollouts of a task, per
    score name, as percentages averaged over tasks; plus `per_sample_aggregate` and the spread across runs.

    `score_fn(rollout)` names the scores (default `{"accuracy": reward}`; bools count 0/1, None means not scored).
    With `answer_key`, a rollout whose `rollout[answer_key]` is None scores `no_answer` = 1, and majority@k votes
    among the answers given. Returns `(metrics, all_score_dicts, score_names, max_k)`, the last three for
    `add_avg_sample_std_dev`.
    """
    if not tasks:
        return {}, [], [], 0
    scores = _score_tasks(tasks, score_fn or _reward_as_accuracy, answer_key)
    answers = (
        [[rollout.get(answer_key) for rollout in rollouts] for rollouts in tasks] if answer_key is not None else None
    )
    score_names = sorted({name for task_scores in scores for rollout in task_scores for name in rollout})
    max_k = max(len(rollouts) for rollouts in tasks)

    all_values = {name: _values_per_task(scores, name) for name in score_names}
    metrics: dict[str, Any] = {}
    for k in range(1, max_k + 1):
        for name in score_names:
            pass_values = [_pass_at(values, k) for values in all_values[name] if len(values) >= k]
            if pass_values:
                metrics[f"pass@{k}/{name}"] = _percent_mean(pass_values)
            first_k = [values for values in _values_per_task(scores, name, limit=k) if values]
            if first_k:
                metrics[f"pass@1[avg-of-{k}]/{name}"] = _percent_mean([_mean(values) for values in first_k])
            if answers is not None:
                votes = [
                    _majority(task_answers[:k], task_scores[:k], name)
                    for task_answers, task_scores in zip(answers, scores, strict=True)
                ]
                metrics[f"majority@{k}/{name}"] = _percent_mean(votes)

    per_sample = _per_sample_aggregate(scores, score_names, max_k)
    metrics[PER_SAMPLE_AGGREGATE_KEY_NAME] = per_sample
    for k in range(2, max_k + 1):
        for name in score_names:
            run_means = per_sample.get(name, [])[:k]
            if len(run_means) >= 2:
                std_dev = statistics.stdev(run_means)
                metrics[f"pass@1[avg-of-{k}]/{name}{STD_DEV_ACROSS_RUNS_SUFFIX}"] = std_dev
                metrics[f"pass@1[avg-of-{k}]/{name}{STD_ERR_ACROSS_RUNS_SUFFIX}"] = std_dev / math.sqrt(len(run_means))
    return metrics, scores, score_names, max_k


def add_avg_sample_std_dev(
    metrics: dict[str, Any], all_score_dicts: ScoreDicts, score_names: Sequence[str], max_k: int
) -> None:
    """Adds `pass@1[avg-of-{k}]/<name>/avg_sample_std_dev` for k >= 2, in place: the sample std of each task's first
    k scores, averaged over tasks (the spread within a task, where `std_dev_across_runs` is the spread between runs).
    In the scores' own unit, not a percentage."""
    for k in range(2, max_k + 1):
        for name in score_names:
            spreads = [
                statistics.stdev(values)
                for values in _values_per_task(all_score_dicts, name, limit=k)
                if len(values) >= 2
            ]
            if spreads:
                metrics[f"pass@1[avg-of-{k}]/{name}{AVG_SAMPLE_STD_DEV_SUFFIX}"] = _mean(spreads)


def compute_subset_metrics(
    tasks: Tasks, subset_key: str, score_fn: ScoreFn | None = None, answer_key: str | None = None
) -> dict[str, Any]:
    """`compute_pass_majority_metrics` per subset of tasks, the subset being the first rollout's `subset_key` (tasks
    where it is missing or empty are left out), keys prefixed `<subset>/` (e.g. `easy/pass@1/accuracy`), without
    `per_sample_aggregate`."""
    subsets: dict[Hashable, Tasks] = {}
    for index, rollouts in enumerate(tasks):
        value = rollouts[0].get(subset_key) if rollouts else None
        if not value:
            continue
        if not isinstance(value, Hashable):
            raise ValueError(
                f"Task {index}: the subset field {subset_key!r} is a {type(value).__name__} ({value!r}); it must be a "
                "string or number naming the subset."
            )
        subsets.setdefault(value, []).append(rollouts)
    metrics: dict[str, Any] = {}
    for subset, subset_tasks in subsets.items():
        subset_metrics = compute_pass_majority_metrics(subset_tasks, score_fn=score_fn, answer_key=answer_key)[0]
        metrics.update(
            {f"{subset}/{key}": value for key, value in subset_metrics.items() if key != PER_SAMPLE_AGGREGATE_KEY_NAME}
        )
    return metrics


def highest_k_metrics(
    agent_metrics: Mapping[str, Any],
    pattern: str,
    score_names: Sequence[str] | None = None,
    exclude_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The entries `<pattern with {k}>/<score>` at the largest k present, e.g. `pattern="pass@{k}"` gives
    `{"pass@8/accuracy": ...}`; the across-run and within-task spread entries are never included. `score_names`
    keeps only those scores, then `exclude_names` drops some (e.g. `["no_answer"]`)."""
    spread_suffixes = tuple(
        suffix.removeprefix(STAT_SEPARATOR)
        for suffix in (STD_DEV_ACROSS_RUNS_SUFFIX, STD_ERR_ACROSS_RUNS_SUFFIX, AVG_SAMPLE_STD_DEV_SUFFIX)
    )
    matcher = re.compile("^" + re.escape(pattern).replace(re.escape("{k}"), r"(\d+)") + "/(.+)$")
    found: list[tuple[int, str]] = []
    for key in agent_metrics:
        match = matcher.match(key)
        if match is None:
            continue
        score = match.group(2)
        if score.endswith(spread_suffixes):
            continue
        if score_names is not None and score not in score_names:
            continue
        if exclude_names is not None and score in exclude_names:
            continue
        found.append((int(match.group(1)), key))
    if not found:
        return {}
    largest = max(k for k, _ in found)
    return {key: agent_metrics[key] for k, key in found if k == largest}


def _reward_as_accuracy(rollout: Rollout) -> dict[str, Any]:
    if "reward" not in rollout:
        raise KeyError(
            f"A rollout has no 'reward' (fields: {sorted(rollout)}); pass score_fn to name the scores to count."
        )
    return {"accuracy": rollout["reward"]}


def _score_tasks(tasks: Tasks, score_fn: ScoreFn, answer_key: str | None) -> ScoreDicts:
    scored: ScoreDicts = []
    for task_index, rollouts in enumerate(tasks):
        task_scores: list[dict[str, float]] = []
        for rollout in rollouts:
            scores: dict[str, float] = {}
            for name, value in score_fn(rollout).items():
                if value is None:
                    continue
                if isinstance(value, bool):
                    value = int(value)
                if not isinstance(value, (int, float)):
                    raise TypeError(
                        f"Task {task_index}: score {name!r} is {value!r} ({type(value).__name__}); a score must be a "
                        "number or bool (None leaves the rollout unscored)."
                    )
                scores[name] = value
            if answer_key is not None:
                scores[NO_ANSWER_SCORE_NAME] = 1 if rollout.get(answer_key) is None else 0
            task_scores.append(scores)
        scored.append(task_scores)
    return scored


def _values_per_task(scores: ScoreDicts, name: str, limit: int | None = None) -> list[list[float]]:
    """Per task, the values of score `name` among its first `limit` rollouts (all when None)."""
    return [[rollout[name] for rollout in task_scores[:limit] if name in rollout] for task_scores in scores]


def _pass_at(values: list[float], k: int) -> float:
    """Binary scores: the unbiased estimate of "one of k drawn rollouts is right"; other scores: the best of the
    first k."""
    if all(value in (0, 1) for value in values):
        return pass_at_k(len(values), sum(1 for value in values if value), k)
    return max(values[:k])


def _majority(answers: list[Any], scores: list[dict[str, float]], name: str) -> float:
    """The score of the most common (answer, score) among the rollouts that answered; tied pairs are averaged, and a
    task where nobody answered scores 0."""
    votes: Counter[tuple[Hashable, float]] = Counter(
        (_vote_key(answer), rollout[name])
        for answer, rollout in zip(answers, scores, strict=True)
        if answer is not None and name in rollout
    )
    if not votes:
        return 0.0
    most = max(votes.values())
    tied = [score for (_, score), count in votes.items() if count == most]
    return _mean(tied)


def _vote_key(answer: Any) -> Hashable:
    """Answers are compared by value; unhashable ones (lists, dicts) by their canonical JSON."""
    if isinstance(answer, Hashable):
        return answer
    return json.dumps(answer, sort_keys=True, default=str)


def _per_sample_aggregate(scores: ScoreDicts, score_names: list[str], max_k: int) -> dict[str, list[float]]:
    """Per score name, pass@1 (percent) of each run i: rollout i of every task that has one."""
    per_sample: dict[str, list[float]] = {}
    for run in range(max_k):
        for name in score_names:
            values = [
                task_scores[run][name] for task_scores in scores if run < len(task_scores) and name in task_scores[run]
            ]
            if values:
                per_sample.setdefault(name, []).append(_percent_mean(values))
    return {name: per_sample[name] for name in score_names if name in per_sample}


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _percent_mean(values: Sequence[float]) -> float:
    return 100.0 * sum(values) / len(values)


# --------------------------------------------------------------------------- /aggregate_metrics


class AggregateMetricsMixin:
    """The `/aggregate_metrics` hooks of NeMo Gym's resources servers and agents: override `compute_metrics` for
    metrics over the whole run (pass@k, ...) and `get_key_metrics` to pick the headline numbers."""

    def compute_metrics(self, tasks: Tasks) -> dict[str, Any]:
        """Metrics over all rollouts, grouped by task; merged into `agent_metrics`. A `per_task_metrics` list (dicts
        with `_ng_task_index`) goes into the matching `group_level_metrics` entries instead. Default: none."""
        return {}

    def get_key_metrics(self, agent_metrics: dict[str, Any]) -> dict[str, Any]:
        """The headline metrics. Default: every `mean/<field>`."""
        return _mean_entries(agent_metrics)

    async def aggregate_metrics(self, body: AggregateMetricsRequest) -> AggregateMetrics:
        return compute_aggregate_metrics(
            body.verify_responses, compute_metrics_fn=self.compute_metrics, get_key_metrics_fn=self.get_key_metrics
        )


def compute_aggregate_metrics(
    verify_responses: list[Rollout],
    compute_metrics_fn: ComputeMetricsFn | None = None,
    get_key_metrics_fn: GetKeyMetricsFn | None = None,
) -> AggregateMetrics:
    """Stats (mean, max, min, median, std) of every numeric field of the verify responses (`response.usage` merged in,
    bools as 0/1), per task (`group_level_metrics`, sorted by `_ng_task_index`) and over all (`agent_metrics`),
    extended by `compute_metrics_fn(tasks)`; `key_metrics` is `get_key_metrics_fn(agent_metrics)`, by default the
    `mean/` entries."""
    if not verify_responses:
        return AggregateMetrics()
    numeric_rows: dict[Any, list[dict[str, float]]] = defaultdict(list)
    all_rows: list[dict[str, float]] = []
    for position, verify_response in enumerate(verify_responses):
        if not isinstance(verify_response, Mapping):
            raise TypeError(
                f"verify_responses[{position}] is a {type(verify_response).__name__}; each must be a verify "
                "response object (a JSON object with at least 'reward')."
            )
        row = _numeric_fields(verify_response)
        numeric_rows[verify_response.get(TASK_INDEX_KEY_NAME, 0)].append(row)
        all_rows.append(row)
    fields = list(dict.fromkeys(field for row in all_rows for field in row))

    group_level: list[dict[str, Any]] = []
    for task_index in _sorted_task_indices(numeric_rows):
        entry: dict[str, Any] = {TASK_INDEX_KEY_NAME: task_index}
        entry.update(_describe(numeric_rows[task_index], fields))
        entry[SAMPLE_KEY_NAME] = {AGENT_REF_KEY_NAME: {"name": _AGENT_NAME}}
        group_level.append(entry)
    agent_metrics = _describe(all_rows, fields)

    if compute_metrics_fn is not None:
        tasks = _group_by_task(verify_responses)
        custom = compute_metrics_fn(tasks)
        if not isinstance(custom, Mapping):
            raise TypeError(f"compute_metrics must return a dict of metrics, got {type(custom).__name__}")
        custom = dict(custom)
        _merge_per_task_metrics(group_level, custom.pop(PER_TASK_METRICS_KEY_NAME, None))
        agent_metrics.update(custom)

    key_metrics = get_key_metrics_fn(agent_metrics) if get_key_metrics_fn else _mean_entries(agent_metrics)
    return AggregateMetrics(group_level_metrics=group_level, agent_metrics=agent_metrics, key_metrics=key_metrics)


def _group_by_task(verify_responses: list[Rollout]) -> Tasks:
    """The verify responses grouped by `_ng_task_index` (0 when missing), in task-index order."""
    groups: dict[Any, list[Rollout]] = defaultdict(list)
    for verify_response in verify_responses:
        groups[verify_response.get(TASK_INDEX_KEY_NAME, 0)].append(verify_response)
    return [groups[task_index] for task_index in _sorted_task_indices(groups)]


def _sorted_task_indices(groups: Mapping[Any, Any]) -> list[Any]:
    try:
        return sorted(groups)
    except TypeError:
        raise TypeError(
            f"{TASK_INDEX_KEY_NAME} values must be all integers to order the tasks, got {sorted(map(repr, groups))}"
        ) from None


def _numeric_fields(verify_response: Mapping[str, Any]) -> dict[str, float]:
    """The profiled fields of one verify response: its numbers and bools (as 0/1) with `response.usage` merged over
    them; the task and rollout indices, strings, None, NaN and nested values are left out."""
    response = verify_response.get(RESPONSE_KEY_NAME)
    usage = response.get("usage") if isinstance(response, Mapping) else None
    merged = {**verify_response, **(usage if isinstance(usage, Mapping) else {})}
    numeric: dict[str, float] = {}
    for field, value in merged.items():
        if field in (TASK_INDEX_KEY_NAME, ROLLOUT_INDEX_KEY_NAME):
            continue
        if isinstance(value, bool):
            numeric[str(field)] = int(value)
        elif isinstance(value, (int, float)) and not math.isnan(value):
            numeric[str(field)] = value
    return numeric


def _describe(rows: list[dict[str, float]], fields: list[str]) -> dict[str, float]:
    """`<stat>/<field>` for the stats of each field over `rows`, rows lacking the field skipped (pandas' `describe` of
    a group, as NeMo Gym computes it). The std of a single value is undefined; when that leaves every field of the
    group without a std (e.g. one rollout), the fields every row has get std 0."""
    values = {field: [row[field] for row in rows if field in row] for field in fields}
    values = {field: column for field, column in values.items() if column}
    stds = {field: statistics.stdev(column) for field, column in values.items() if len(column) >= 2}
    if not stds:
        stds = {field: 0.0 for field, column in values.items() if len(column) == len(rows)}
    described: dict[str, float] = {}
    for stat, compute in (
        (MEAN_STAT_NAME, lambda column: float(_mean(column))),
        (MAX_STAT_NAME, max),
        (MIN_STAT_NAME, min),
        (MEDIAN_STAT_NAME, lambda column: float(statistics.median(column))),
    ):
        for field, column in values.items():
            described[f"{stat}{STAT_SEPARATOR}{field}"] = compute(column)
    for field, std in stds.items():
        described[f"{STD_STAT_NAME}{STAT_SEPARATOR}{field}"] = std
    return described


def _merge_per_task_metrics(group_level: list[dict[str, Any]], per_task_metrics: Any) -> None:
    """Puts each `per_task_metrics` entry's metrics into the group entry of its `_ng_task_index`."""
    if not per_task_metrics:
        return
    by_task: dict[Any, Mapping[str, Any]] = {}
    for position, task_metrics in enumerate(per_task_metrics):
        if not isinstance(task_metrics, Mapping) or TASK_INDEX_KEY_NAME not in task_metrics:
            raise ValueError(
                f"compute_metrics returned per_task_metrics[{position}] = {task_metrics!r}; each entry must be a dict "
                f"with {TASK_INDEX_KEY_NAME!r} naming its task."
            )
        by_task[task_metrics[TASK_INDEX_KEY_NAME]] = task_metrics
    for entry in group_level:
        task_metrics = by_task.get(entry[TASK_INDEX_KEY_NAME])
        if task_metrics is not None:
            entry.update({key: value for key, value in task_metrics.items() if key != TASK_INDEX_KEY_NAME})


def _mean_entries(agent_metrics: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in agent_metrics.items() if key.startswith(MEAN_PREFIX)}
