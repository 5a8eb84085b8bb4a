"""The collection engine: drive the agents' `/run` concurrently, hand one record per rollout to a sink (a file for
ng_collect_rollouts, a queue for a trainer's iterator), sum metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TextIO, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.collection.inputs import AGENT_REF, InputError, row_agent, row_hash
from nemo_gym.collection.metrics import Metrics
from nemo_gym.collection.outage import OutageWatch, is_outage
from nemo_gym.collection.records import build_record
from nemo_gym.config.secrets import Redactor
from nemo_gym.console import print_flushed
from nemo_gym.http.pool import TransportError
from nemo_gym.http.server_client import (
    MODEL_NOT_SERVED,
    SPENT_KEY,
    UNAVAILABLE_ERROR,
    ServerCallError,
    ServerClient,
)
from nemo_gym.protocol.types import JSONObject, RolloutRecord, Usage
from nemo_gym.protocol.usage import NO_JUDGE, JudgeSpend, judge_spend_of

RUN_STOPPING_STATUSES = frozenset({401, 402})
"""A rejected key or spent credits: every further rollout would fail the same way, and cost a call each."""

ACCOUNT_FIX = (
    "Fix the cause (for 402: add credits, or raise the model server's max_cost_usd if it names one; for 401: "
    "check policy_api_key)"
)
OUTAGE_FIX = (
    "Nothing was recorded for the rollouts the outage broke. Bring the system back (is ng_run still running? its "
    "log says why a server stopped; is the model server's base_url reachable?)"
)
MODEL_NOT_SERVED_FIX = (
    "Drop +responses_create_params.model (the agent's model server answers with its configured model), "
    "or start a model server for that model and an agent that uses it"
)
RESUME_TAIL = ", then re-run the same command to resume"

Job = tuple[int, int]
"""(row index, repeat index)"""


@dataclass(frozen=True)
class OutageFailure:
    """A rollout that failed because the system was down: not recorded; its job runs again."""

    message: str
    spent: Usage | None
    judge: JudgeSpend = NO_JUDGE
    """What the rollout's judge had cost (a /verify whose judge failed for the outage)."""


class Progress(Protocol):
    """What the collector needs of a progress bar (tqdm's): a step per record, and the figures beside it."""

    def update(self, n: float | None = 1) -> bool | None: ...

    def set_postfix(
        self, ordered_dict: Mapping[str, object] | None = None, refresh: bool | None = True, **kwargs: Any
    ) -> None: ...


@runtime_checkable
class RecordSink(Protocol):
    """Where finished records go: `line` is the record as the redacted JSON line a rollouts file holds."""

    def put(self, record: RolloutRecord, line: str) -> None: ...


class LineWriter:
    """ng_collect_rollouts' sink: each record as one whole line of the output, flushed, so a crash can tear at
    most the line being written."""

    def __init__(self, out: TextIO) -> None:
        self.out = out

    def put(self, record: RolloutRecord, line: str) -> None:
        self.out.write(line + "\n")
        self.out.flush()


class RolloutSettings(BaseModel):
    """What runs a batch of rollouts, wherever its records go: ng_collect_rollouts' settings without its files,
    and a trainer's `RolloutClient` settings."""

    model_config = ConfigDict(extra="forbid")
    agent_name: str | None = Field(
        default=None, description=f"The agent of rows without an `{AGENT_REF}` (optional when every row has one)"
    )
    num_repeats: int = Field(default=1, ge=1, description="Rollouts per row")
    num_samples_in_parallel: int = Field(default=16, ge=1, description="Rollouts in flight at once")
    responses_create_params: JSONObject = Field(
        default_factory=dict, description="Merged over every row's responses_create_params, e.g. temperature"
    )
    max_cost_usd: float | None = Field(
        default=None,
        gt=0,
        description="Start a rollout only while spent cost plus "
        "those in flight, each at the dearest rollout so far, stays within this (USD)",
    )
    max_rollout_attempts: int = Field(
        default=5,
        ge=1,
        description="Times a rollout is started when a server "
        "replica it ran on went away (died, restarting); other failures are recorded",
    )
    drain_timeout_s: float = Field(
        default=30.0, ge=0, description="On Ctrl-C, how long rollouts in flight may finish before they are cancelled"
    )
    outage_timeout_s: float = Field(
        default=120.0,
        ge=0,
        description="How long to wait for a server or the upstream that "
        "stopped answering to come back before the run stops (resumably); rollouts the outage broke run again and "
        "are never recorded as failures",
    )


class CollectionSettings(RolloutSettings):
    """The `+key=value` settings of ng_collect_rollouts."""

    input_jsonl_fpath: Path
    output_jsonl_fpath: Path
    limit: int | None = Field(default=None, ge=1, description="Use only the first N rows")
    overwrite: bool = Field(default=False, description="Start the output over instead of resuming it")
    retry_failed: bool = Field(default=False, description="Run again the rollouts recorded as failed")
    ray_address: str | None = Field(
        default=None,
        description="Run the rollouts on this Ray cluster's actors "
        "(`local`: the cluster ng_run +ray_address=local started)",
    )
    num_collectors: int = Field(
        default=1,
        ge=1,
        description="Collector actors the rollouts are dealt out to "
        "(with ray_address); this command stays the one writer of the output",
    )
    collector_num_cpus: float = Field(default=1.0, ge=0, description="CPUs each collector actor reserves on Ray")


REPLICA_RETRY_BASE_S = 0.25


def _replica_lost(exc: ServerCallError) -> bool:
    """The agent could not be reached, or it answered that a replica behind it went away mid-rollout."""
    return exc.unavailable or (exc.status_code == 503 and exc.detail.get("type") == UNAVAILABLE_ERROR)


class Collector:
    """Runs the rollouts of one collection with bounded concurrency and hands records to a sink as they finish.
    Each row runs on its `agent_ref`'s agent, else on `settings.agent_name`."""

    def __init__(
        self,
        settings: RolloutSettings,
        servers: ServerClient,
        redactor: Redactor,
        *,
        fingerprints: Mapping[str, str] | None = None,
        known_rollout_cost_usd: float = 0.0,
    ) -> None:
        """`fingerprints`: agent -> the fingerprint of its settings, carried by its records. `known_rollout_cost_usd`:
        the dearest rollout seen before (earlier batches of a trainer), which the budget goes by from the start."""
        self.settings = settings
        self.servers = servers
        self.redactor = redactor
        self.fingerprints = dict(fingerprints or {})
        self.metrics = Metrics()
        self.stop_reason: str | None = None
        """Set when a failure means every further rollout would fail too (credits spent, key rejected, an outage
        that outlasted `outage_timeout_s`)."""
        self.stop_fix = ACCOUNT_FIX
        """What the user should do about `stop_reason` before running the rollouts again."""
        self.outage = OutageWatch(settings.outage_timeout_s)
        self._again: deque[Job] = deque()
        """Jobs an outage broke, to run before the rest."""
        self._strikes: dict[Job, tuple[int, int, int]] = {}
        """job -> (outage failures, records written when it first and when it last failed so)."""
        self._written = 0
        self.interrupted = False
        self.budget_reached: str | None = None
        self.in_flight = 0
        self.row_hashes: dict[int, str] = {}
        """row index -> row hash, computed once when planning (a row's repeats share it)."""
        self._max_rollout_cost = known_rollout_cost_usd
        self._budget_hit = False
        self._finished = asyncio.Event()
        """Set (and replaced) each time a rollout finishes: what a worker waiting for budget room waits on."""
        self._stop = asyncio.Event()
        self._abort = asyncio.Event()

    @property
    def stop_hint(self) -> str:
        """`stop_fix` as ng_collect_rollouts says it: then re-run the same command."""
        return self.stop_fix + RESUME_TAIL

    @property
    def max_rollout_cost_usd(self) -> float:
        """The dearest rollout so far: what the budget counts each rollout in flight at."""
        return self._max_rollout_cost

    def stop(self, reason: str | None = None, *, fix: str | None = None) -> None:
        """Start no new rollouts; those in flight may finish (see `run`)."""
        if reason is not None:
            if self.stop_reason is None:
                self.stop_reason = reason
                self.stop_fix = fix or self.stop_fix
        else:
            self.interrupted = True
        self._stop.set()
        self._finished.set()

    def abort(self) -> None:
        """Cancel the rollouts in flight now (a second Ctrl-C); nothing half-done is recorded."""
        self.interrupted = True
        self._stop.set()
        self._abort.set()

    def plan(self, rows: Sequence[JSONObject], done: set[tuple[str, int]]) -> list[tuple[int, int]]:
        """Every (row, repeat) not `done` (keyed by row hash and repeat index); counts the others as skipped."""
        jobs = []
        for row_index, row in enumerate(rows):
            digest = self.row_hashes[row_index] = row_hash(row)
            for repeat_index in range(self.settings.num_repeats):
                if (digest, repeat_index) in done:
                    self.metrics.skipped += 1
                else:
                    jobs.append((row_index, repeat_index))
        return jobs

    def agent_of(self, row: JSONObject) -> str:
        """The agent that runs `row`: its `agent_ref`, else `settings.agent_name` (callers check every row first)."""
        agent = row_agent(row) or self.settings.agent_name
        if agent is None:
            raise InputError(f"A row names no agent (no `{AGENT_REF}`) and no agent_name was given: {str(row)[:200]}")
        return agent

    def prepared_row(self, row: JSONObject) -> JSONObject:
        if not self.settings.responses_create_params:
            return row
        return {
            **row,
            "responses_create_params": {**row["responses_create_params"], **self.settings.responses_create_params},
        }

    async def run_one(self, row: JSONObject, row_index: int, repeat_index: int) -> RolloutRecord | OutageFailure | None:
        """The rollout's record; an OutageFailure when the system was down (its job runs again); None when the run
        must stop (nothing is recorded, so a re-run redoes it)."""
        started = time.perf_counter()
        result, error, spent, judge = None, None, None, NO_JUDGE
        agent = self.agent_of(row)
        try:
            result = await self._run_on_some_replica(agent, self.prepared_row(row))
            if not isinstance(result, dict) or "reward" not in result:
                error = (
                    f"BadAgentResponse: agent '{agent}' answered /run without a numeric "
                    f"`reward`: {str(result)[:300]}. An agent's /run must return the verifier's answer "
                    '({"reward": <float>, ...}) plus `response`; check that agent\'s log.'
                )
                result = None
        except (ServerCallError, TransportError) as exc:
            spent = _spent(exc)
            judge, unreadable = _judge_spent(exc, agent)
            if isinstance(exc, ServerCallError) and (fix := self._stops_the_run(exc)):
                self.metrics.add_unrecorded(spent)
                self.metrics.add_unrecorded_judge(judge)
                self.stop(self.redactor.text(str(exc)), fix=fix)
                return None
            error = f"{type(exc).__name__}: {exc}{unreadable}"  # redacted once, where it is kept
            if is_outage(exc):
                return OutageFailure(self.redactor.text(error), spent, judge)
        if result is not None:
            try:
                judge_spend_of(result, where=_verify_of(agent))
            except ValueError as exc:  # the judge's spend cannot be counted: a failed rollout, its policy usage kept
                error, result = f"BadVerifyResponse: {exc}", {"response": result.get("response")}
        return self._record(row, row_index, repeat_index, result, error, spent, started, judge)

    def _stops_the_run(self, exc: ServerCallError) -> str | None:
        """What to do, when this failure means every further rollout would fail the same way: a rejected key, spent
        credits, or a `+responses_create_params.model` that no model server serves."""
        if exc.status_code in RUN_STOPPING_STATUSES:
            return ACCOUNT_FIX
        if exc.detail.get("code") == MODEL_NOT_SERVED and "model" in self.settings.responses_create_params:
            return MODEL_NOT_SERVED_FIX
        return None

    def _record(
        self,
        row: JSONObject,
        row_index: int,
        repeat_index: int,
        result: Any,
        error: str | None,
        spent: Usage | None,
        started: float,
        judge: JudgeSpend = NO_JUDGE,
    ) -> RolloutRecord:
        agent = self.agent_of(row)
        return build_record(
            row=row,
            row_index=row_index,
            repeat_index=repeat_index,
            agent_name=agent,
            result=result,
            error=self.redactor.text(error) if error else None,
            latency_s=time.perf_counter() - started,
            fingerprint=self.fingerprints.get(agent),
            digest=self.row_hashes.get(row_index),
            spent=spent,
            judge=judge,
        )

    async def _run_on_some_replica(self, agent: str, row: JSONObject) -> Any:
        """The agent's `/run`, started again (after a short wait) when a replica it needed went away: the restarted
        or remaining replicas can do the rollout; nothing of the lost attempt is recorded."""
        attempt = 1
        while True:
            try:
                return await self.servers.post(agent, "/run", row)
            except ServerCallError as exc:
                if (
                    not _replica_lost(exc)
                    or attempt >= self.settings.max_rollout_attempts
                    or self._stop.is_set()  # stopping: it would not be recorded anyway, and runs again on resume
                    or self.outage.down  # the system is down: the probes find out when it is back
                ):
                    raise
            self.metrics.restarted += 1
            await asyncio.sleep(min(REPLICA_RETRY_BASE_S * 2 ** (attempt - 1), 4.0))
            attempt += 1

    async def run(
        self,
        rows: Sequence[JSONObject] | Mapping[int, JSONObject],
        jobs: Iterable[tuple[int, int]],
        out: RecordSink | TextIO,
        progress: Progress | None = None,
    ) -> Metrics:
        """`num_samples_in_parallel` workers take jobs until none are left or `stop()` is called; after a stop,
        rollouts in flight get `drain_timeout_s` to finish and are then cancelled (and not recorded). Records go to
        `out`: a RecordSink, or a text file that gets one JSON line per record."""
        sink = out if isinstance(out, RecordSink) else LineWriter(out)
        pending = deque(jobs)

        async def worker() -> None:
            while (turn := await self.outage.turn(self._stop)) != "stop":
                try:
                    job = self._next_job(pending, probe=turn == "probe")
                    if job is None or not await self._budget_allows_one_more():
                        return
                    row_index, repeat_index = job
                    self.in_flight += 1
                    try:
                        outcome = await self.run_one(rows[row_index], row_index, repeat_index)
                    finally:
                        self.in_flight -= 1
                    if isinstance(outcome, OutageFailure):
                        alone = not pending and not self._again and self.in_flight == 0
                        outcome = self._after_outage_failure(job, outcome, rows[row_index], alone=alone)
                    if outcome is not None:
                        self._write(outcome, sink, progress)
                        self._written += 1
                        if (lasted := self.outage.came_up()) is not None:
                            print_flushed(
                                f"\nThe system answers again after {lasted:.0f}s; "
                                f"{len(self._again)} rollouts the outage broke run again.",
                                err=True,
                            )
                finally:
                    if turn == "probe":
                        self.outage.probe_done()
                finished, self._finished = self._finished, asyncio.Event()
                finished.set()

        watchdog = asyncio.create_task(self._watch_outage(progress))
        workers = [asyncio.create_task(worker()) for _ in range(self.settings.num_samples_in_parallel)]
        everything = asyncio.gather(*workers)
        stop_requested = asyncio.create_task(self._stop.wait())
        first: set[asyncio.Future[Any]] = {everything, stop_requested}
        await asyncio.wait(first, return_when=asyncio.FIRST_COMPLETED)
        if not everything.done():
            abort_requested = asyncio.create_task(self._abort.wait())
            drained: set[asyncio.Future[Any]] = {everything, abort_requested}
            await asyncio.wait(
                drained,
                timeout=self.settings.drain_timeout_s,
                return_when=asyncio.FIRST_COMPLETED,
            )
            abort_requested.cancel()
            for task in workers:
                task.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        stop_requested.cancel()
        everything.cancel()
        watchdog.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await everything
        with contextlib.suppress(asyncio.CancelledError):
            await watchdog
        self.metrics.outages = self.outage.count
        self.metrics.outage_wait_s = self.outage.waited_s + self.outage.down_for_s()
        return self.metrics

    def _next_job(self, pending: deque[Job], *, probe: bool) -> Job | None:
        """Jobs an outage broke go first, except for a probe: a fresh job tells whether the system is back without
        betting on a row that may fail by itself."""
        first, then = (pending, self._again) if probe else (self._again, pending)
        if first:
            return first.popleft()
        return then.popleft() if then else None

    def _after_outage_failure(
        self, job: Job, failure: OutageFailure, row: JSONObject, *, alone: bool
    ) -> RolloutRecord | None:
        """Run the job again later, unless it keeps failing so while other rollouts get through (since its previous
        failure, or since its first when it is the last job left): then the fault is this rollout's (a provider
        that always fails on this prompt), and it is recorded as its failure."""
        strikes, first_at, last_at = self._strikes.get(job, (0, self._written, self._written))
        strikes += 1
        others_got_through = self._written > last_at or (alone and self._written > first_at)
        if strikes >= self.settings.max_rollout_attempts and others_got_through:
            self._strikes.pop(job, None)
            error = (
                f"{failure.message} [failed this way {strikes} times while other rollouts got answers, so it is "
                "recorded as this rollout's failure]"
            )
            return self._record(row, job[0], job[1], None, error, failure.spent, time.perf_counter(), failure.judge)
        self._strikes[job] = (strikes, first_at, self._written)
        self.metrics.add_unrecorded(failure.spent)
        self.metrics.add_unrecorded_judge(failure.judge)
        self.metrics.requeued += 1
        self._again.append(job)
        if self.outage.went_down(failure.message):
            print_flushed(
                f"\nOutage: {failure.message}\nNo new rollouts; probing with one at a time for up to "
                f"{self.settings.outage_timeout_s:g}s (+outage_timeout_s). Rollouts it broke are not recorded; "
                "they run again.",
                err=True,
            )
        return None

    async def _watch_outage(self, progress: Progress | None) -> None:
        """While the system is down: say so on the progress line each second, and stop the run once the outage
        outlasts `outage_timeout_s` (rollouts in flight then get `drain_timeout_s`, as on Ctrl-C)."""
        while True:
            await asyncio.sleep(1.0)
            if not self.outage.down:
                continue
            waited = self.outage.down_for_s()
            if progress is not None:
                progress.set_postfix(
                    outage=f"waiting {waited:.0f}/{self.settings.outage_timeout_s:g}s", queued=len(self._again)
                )
            if self.outage.expired and self.stop_reason is None:
                self.stop(
                    f"the system did not answer for {waited:.0f}s (+outage_timeout_s="
                    f"{self.settings.outage_timeout_s:g}); last error: {self.outage.reason}",
                    fix=OUTAGE_FIX,
                )

    async def _budget_allows_one_more(self) -> bool:
        """Wait until one more rollout fits the budget, counting each one in flight at the dearest rollout so far
        (so the cap is not passed unless a rollout costs more than any before it); False once nothing fits even
        with nothing in flight, or when the run is stopping."""
        budget = self.settings.max_cost_usd
        while not self._stop.is_set():
            if budget is None:
                return True
            spent = self.metrics.spent_usd
            finished = len(self.metrics.rewards) + self.metrics.failures
            estimated = finished > 0 or self._max_rollout_cost > 0  # by this run's rollouts, or by earlier ones
            if not estimated and self.in_flight == 0:
                return True  # the first rollout gives the estimate to go by
            if estimated and spent + (self.in_flight + 1) * self._max_rollout_cost <= budget:
                return True
            if self.in_flight == 0:
                self._budget_hit = True
                self._stop.set()
                self.budget_reached = self._budget_message(spent, budget, finished)
                return False
            await self._finished.wait()
        return False

    def _budget_message(self, spent: float, budget: float, finished: int) -> str:
        each = f"about ${spent / finished:.6f} each, " if finished else ""
        return (
            f"spent ${spent:.6f} of the ${budget:g} budget over {finished} rollouts ({each}the dearest "
            f"${self._max_rollout_cost:.6f}); one more could pass it"
        )

    def _write(
        self, record: RolloutRecord, sink: RecordSink, progress: Progress | None, *, line: str | None = None
    ) -> None:
        """Hand the record to the sink (`line`: its redacted JSON, when a collector actor made it already) and count
        it."""
        sink.put(record, line if line is not None else self.redactor.json_line(record))
        self.metrics.add(record)
        self._max_rollout_cost = max(self._max_rollout_cost, float(record.get("cost_usd") or 0.0))
        if progress is not None:
            progress.update(1)
            mean = self.metrics.mean_reward
            cost = self.metrics.cost_usd
            elapsed_h = max(time.perf_counter() - self.metrics.started, 1e-9) / 3600
            progress.set_postfix(
                reward=f"{mean:.3f}" if mean is not None else "-",
                failed=self.metrics.failures,
                cost=f"${cost:.4f} (${cost / elapsed_h:.2f}/h)" if cost is not None else "-",
                refresh=False,
            )


def _spent(exc: ServerCallError | TransportError) -> Usage | None:
    """What a failed `/run` reported its model calls had spent."""
    if not isinstance(exc, ServerCallError):
        return None
    spent = exc.detail.get(SPENT_KEY)
    return spent if isinstance(spent, dict) and spent.get("calls") else None  # type: ignore[return-value]


def _judge_spent(exc: ServerCallError | TransportError, agent: str) -> tuple[JudgeSpend, str]:
    """What a failed `/run` reported its judge had spent (the agent passes on a /verify's `judge_usage`), and, when
    that was not readable, a note for the rollout's error saying so."""
    if not isinstance(exc, ServerCallError):
        return NO_JUDGE, ""
    try:
        return judge_spend_of(exc.detail, where=_verify_of(agent)), ""
    except ValueError as problem:
        return NO_JUDGE, f" [its judge's spend could not be counted: {problem}]"


def _verify_of(agent: str) -> str:
    return f"the /verify answer that agent '{agent}' passed on"
