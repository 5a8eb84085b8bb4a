"""The declared shapes of what crosses between our servers and into files.

TypedDicts, not models: records and metadata are built and written as plain dicts on the hot path (one per model
call, one per rollout), so their types cost nothing at run time while mypy checks every place that makes or reads
them. `JSONObject` is kept for what really is arbitrary JSON: dataset rows, Responses bodies, a verifier's own
fields.
"""

from __future__ import annotations

from typing import Any, Literal, NotRequired, TypeAlias, TypedDict

JSONObject: TypeAlias = dict[str, Any]
"""Arbitrary JSON: a dataset row, a Responses or Chat Completions body, a verifier's extra fields."""


class InputTokensDetails(TypedDict):
    cached_tokens: int


class OutputTokensDetails(TypedDict):
    reasoning_tokens: int


class Usage(TypedDict):
    """Token usage and USD cost summed over model calls, in the Responses API's shape plus `cost` and `calls`."""

    input_tokens: int
    output_tokens: int
    total_tokens: int
    input_tokens_details: InputTokensDetails
    output_tokens_details: OutputTokensDetails
    cost: float | None
    """USD as reported (OpenRouter's `usage.cost`) or estimated from prices; None while unknown, never 0 for it."""
    calls: int
    cost_estimated: NotRequired[bool]
    """Present and true once some call's cost was computed from prices rather than reported."""


class TokenInfoStatus(TypedDict):
    """What a model call recorded for training, when the model server's `return_token_id_information` is on: the
    three fields sit on the call's last output item; this says which of them the upstream gave."""

    source: str
    """Where they came from: `vllm` (exact ids), `llama_cpp` (exact ids, the bundled model), `chat_logprobs`
    (Chat Completions logprobs and token strings, e.g. OpenRouter: no ids) or `responses_logprobs`."""
    token_ids: Literal["present", "missing"]
    """`prompt_token_ids` and `generation_token_ids`."""
    logprobs: Literal["present", "missing"]
    """`generation_log_probs`."""
    detail: NotRequired[str]
    """Why something is missing, e.g. the provider returned no logprobs although asked."""


class ModelCallMetadata(TypedDict, total=False):
    """`response["nemo_gym"]` as a model server answers one call: who served it and what it took."""

    requested_model: str
    served_model: str
    provider: str | None
    endpoint: str
    upstream_api: str
    latency_s: float
    attempts: int
    retries: int
    retry_wait_s: float
    errors: list[str]
    """The upstream status (or kind of failure) of each failed attempt."""
    failovers: list[str]
    """Each target given up on, with why: `<endpoint/model>: <status>`."""
    cost_estimated: bool
    token_info: TokenInfoStatus
    """Only with `return_token_id_information` on."""


class AgentTurn(TypedDict):
    """One model call of a rollout, as the agent records it."""

    model: str | None
    provider: str | None
    attempts: int
    retries: int
    errors: list[str]
    failovers: list[str]
    cost: float | None
    cost_estimated: bool


StopReason: TypeAlias = Literal["answered", "incomplete", "failed", "max_steps"]


class RolloutMetadata(ModelCallMetadata, total=False):
    """`response["nemo_gym"]` of an agent's final response: the last call's metadata plus the whole loop's."""

    steps: int
    stop_reason: StopReason
    models: list[str]
    """The models that served, in the order they first did."""
    turns: list[AgentTurn]
    agent_latency_s: float
    token_ids: TokenIdsSummary
    """Only when some model call recorded token information: are the calls' token ids one contiguous stream?"""


class TokenTurnSummary(TypedDict):
    """One model call of a rollout, as far as its token information goes (lengths, not the ids themselves)."""

    turn: int
    """The model call's index in the rollout (0-based)."""
    prompt_tokens: int | None
    """len(prompt_token_ids); None when the upstream gave no ids."""
    generation_tokens: int | None
    generation_log_probs: int | None


class TokenMismatch(TypedDict):
    """Where a call's prompt stops continuing the previous calls' prompt + generation ids."""

    turn: int
    position: int
    """Index into that call's `prompt_token_ids`."""
    expected: int | None
    """The id the earlier calls imply there."""
    found: int | None
    """The id the prompt has there; None when the prompt is shorter than what came before."""


class TokenIdsSummary(TypedDict):
    """`response["nemo_gym"]["token_ids"]`: each call's prompt ids must start with the previous call's prompt +
    generation ids (what a trainer that concatenates them assumes); when the upstream re-tokenised the history
    differently, `contiguous` is false and `first_mismatch` says where."""

    turns: list[TokenTurnSummary]
    contiguous: bool | None
    """None when no call has ids (OpenRouter gives logprobs only): there is nothing to check."""
    first_mismatch: TokenMismatch | None


class RolloutRecord(TypedDict):
    """One line of a rollouts file. The verifier's own fields (e.g. `reasons`) sit beside these keys."""

    row_index: int
    repeat_index: int
    row_hash: str
    """sha256 of the input row; with `repeat_index`, the key that resume uses."""
    agent_name: str
    fingerprint: str | None
    """Of the settings that produced the record (agent and model-server blocks, parameter overrides)."""
    reward: float | None
    """None when the rollout failed."""
    error: str | None
    usage: Usage | None
    """The policy's: what the agent's model calls took (a failed rollout's: what they had taken when it failed)."""
    cost_usd: float | None
    """USD the whole rollout cost: the policy's plus the judge's; None only when neither has a known cost."""
    judge_usage: Usage | None
    """What the resources server's LLM judge took to score the rollout (its `judge_usage`), or None: no judge."""
    judge_cost_usd: float | None
    """The judge's part of `cost_usd`."""
    cost_estimated: bool
    models: list[str]
    """The models that played the policy (the judge's are in `cost_by_model`)."""
    cost_by_model: dict[str, float] | None
    """USD per serving model, the policy's and the judge's together."""
    retries: int
    latency_s: float
    response: JSONObject | None
    """The final Responses-API response; its `output` is the whole trajectory, its `nemo_gym` a RolloutMetadata."""
    input: JSONObject


class MetricsSummary(TypedDict):
    """Aggregates over a set of records (an output file's, or one run's)."""

    rollouts: int
    succeeded: int
    failed: int
    mean_reward: float | None
    std_reward: float | None
    min_reward: float | None
    max_reward: float | None
    pass_rate: float | None
    input_tokens: int
    output_tokens: int
    cached_tokens: int
    reasoning_tokens: int
    model_calls: int
    upstream_retries: int
    cost_usd: float | None
    """USD the records spent, failed ones included: the policy's calls and the judge's."""
    cost_estimated: bool
    failed_cost_usd: float | None
    """USD that rollouts recorded as failed had spent (their judge's too)."""
    cost_per_rollout_usd: float | None
    cost_per_reward_point_usd: float | None
    judge_cost_usd: float | None
    """The judge's part of `cost_usd`; None when no record had a judge cost."""
    judge_calls: int
    judge_input_tokens: int
    judge_output_tokens: int
    mean_latency_s: float | None
    p50_latency_s: float | None
    p95_latency_s: float | None
    errors: dict[str, int]
    """Failed rollouts by the kind of error (the text before the first colon)."""


class RunFigures(TypedDict):
    """What one run (one invocation of a collection, a segment of its output) did."""

    rollouts: int
    """Records this run wrote."""
    succeeded: int
    failed: int
    mean_reward: float | None
    skipped_already_done: int
    rollouts_restarted: int
    """Rollouts started again at once because a server replica they ran on went away."""
    rollouts_rerun_after_outage: int
    """Rollouts an outage broke, not recorded, run again (or left for the resume)."""
    outages: int
    outage_wait_s: float
    cost_usd: float | None
    """USD this run's records spent (the policy's and the judge's)."""
    judge_cost_usd: float | None
    """The judge's part of `cost_usd`."""
    unrecorded_cost_usd: float | None
    """USD spent by rollouts that left no record (an outage broke them, or the run stopped on them)."""
    model_servers_cost_usd: float | None
    """What the model servers billed upstream while this run ran, by their own ledgers: beyond `cost_usd` plus
    `unrecorded_cost_usd` are the calls of rollouts cancelled mid-flight (or other clients of the same servers)."""
    wall_time_s: float
    rollouts_per_s: float | None


class CollectionSummary(MetricsSummary):
    """`<output stem>.metrics.json`: the figures of every record in the output (all runs, resumes and retried
    failures), what was run, how this run ended and, under `this_run`, what this run alone did."""

    agent_name: str | None
    """`+agent_name`: the agent of rows without an `agent_ref` (None when every row names its agent)."""
    agents: list[str]
    """Every agent this run's rows are run by (their `agent_ref`, else `agent_name`)."""
    input_jsonl_fpath: str
    output_jsonl_fpath: str
    rows: int
    num_repeats: int
    fingerprint: str | None
    """Of the settings behind the records: the one agent's, or with several agents one over all of `fingerprints`."""
    fingerprints: dict[str, str]
    """agent -> the fingerprint its records carry."""
    expected_rollouts: int
    """rows x num_repeats: `complete` when the output holds a record for each."""
    complete: bool
    unrecorded_cost_usd: float | None
    """USD spent by rollouts that left no record, over every run of this output that wrote its metrics."""
    wasted_cost_usd: float | None
    """USD that produced no usable sample: failed records' cost plus `unrecorded_cost_usd`."""
    this_run: RunFigures
    stopped_early: str | None
    """Why the run ended before its last rollout (spent credits, a rejected key, an outage, the budget), or None."""
    interrupted: bool
    by_agent: NotRequired[dict[str, MetricsSummary]]
    """The same figures per agent (the records' `agent_name`), when the output holds records of more than one."""
    environment_metrics: NotRequired[dict[str, JSONObject]]
    """Per agent whose resources server has `/aggregate_metrics` (a NeMo Gym environment's): its `agent_metrics`
    and `key_metrics` over the output's records (e.g. pass@k); the per-task ones are in `.aggregate_metrics.json`."""


RECORD_KEYS: tuple[str, ...] = tuple(RolloutRecord.__annotations__)
"""The record's own keys, in the order they are written; a verifier field of the same name never overrides one."""
