"""The collection engine: drive an agent's `/run` concurrently, write one record per rollout, sum metrics."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol, TextIO

from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.collection.inputs import row_hash
from nemo_gym.collection.metrics import Metrics
from nemo_gym.collection.records import build_record
from nemo_gym.config.secrets import Redactor
from nemo_gym.http.pool import TransportError
from nemo_gym.http.server_client import UNAVAILABLE_ERROR, ServerCallError, ServerClient
from nemo_gym.protocol.types import JSONObject, RolloutRecord

RUN_STOPPING_STATUSES = frozenset({401, 402})
"""A rejected key or spent credits: every further rollout would fail the same way, and cost a call each."""


class Progress(Protocol):
    """What the collector needs of a progress bar (tqdm's): a step per record, and the figures beside it."""

    def update(self, n: float | None = 1) -> bool | None: ...

    def set_postfix(
        self, ordered_dict: Mapping[str, object] | None = None, refresh: bool | None = True, **kwargs: Any
    ) -> None: ...


class CollectionSettings(BaseModel):
    """The `+key=value` settings of ng_collect_rollouts."""

    model_config = ConfigDict(extra="forbid")
    agent_name: str
    input_jsonl_fpath: Path
    output_jsonl_fpath: Path
    limit: int | None = Field(default=None, ge=1, description="Use only the first N rows")
    num_repeats: int = Field(default=1, ge=1, description="Rollouts per row")
    num_samples_in_parallel: int = Field(default=16, ge=1, description="Rollouts in flight at once")
    responses_create_params: JSONObject = Field(
        default_factory=dict, description="Merged over every row's responses_create_params, e.g. temperature"
    )
    overwrite: bool = Field(default=False, description="Start the output over instead of resuming it")
    retry_failed: bool = Field(default=False, description="Run again the rollouts recorded as failed")
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
    drain_timeout_s: float = Field(
        default=30.0, ge=0, description="On Ctrl-C, how long rollouts in flight may finish before they are cancelled"
    )


REPLICA_RETRY_BASE_S = 0.25


def _replica_lost(exc: ServerCallError) -> bool:
    """The agent could not be reached, or it answered that a replica behind it went away mid-rollout."""
    if exc.unavailable:
        return True
    error = exc.body.get("error") if isinstance(exc.body, dict) else None
    return exc.status_code == 503 and isinstance(error, dict) and error.get("type") == UNAVAILABLE_ERROR


class Collector:
    """Runs the rollouts of one collection with bounded concurrency and writes records as they finish."""

    def __init__(
        self, settings: CollectionSettings, servers: ServerClient, redactor: Redactor, *, fingerprint: str | None = None
    ) -> None:
        self.settings = settings
        self.servers = servers
        self.redactor = redactor
        self.fingerprint = fingerprint
        self.metrics = Metrics()
        self.stop_reason: str | None = None
        """Set when a failure means every further rollout would fail too (credits spent, key rejected)."""
        self.interrupted = False
        self.budget_reached: str | None = None
        self.in_flight = 0
        self.row_hashes: dict[int, str] = {}
        """row index -> row hash, computed once when planning (a row's repeats share it)."""
        self._max_rollout_cost = 0.0
        self._budget_hit = False
        self._finished = asyncio.Event()
        """Set (and replaced) each time a rollout finishes: what a worker waiting for budget room waits on."""
        self._stop = asyncio.Event()
        self._abort = asyncio.Event()

    def stop(self, reason: str | None = None) -> None:
        """Start no new rollouts; those in flight may finish (see `run`)."""
        if reason is not None:
            self.stop_reason = self.stop_reason or reason
        else:
            self.interrupted = True
        self._stop.set()
        self._finished.set()

    def abort(self) -> None:
        """Cancel the rollouts in flight now (a second Ctrl-C); nothing half-done is recorded."""
        self.interrupted = True
        self._stop.set()
        self._abort.set()

    def plan(self, rows: list[JSONObject], done: set[tuple[str, int]]) -> list[tuple[int, int]]:
        jobs = []
        for row_index, row in enumerate(rows):
            digest = self.row_hashes[row_index] = row_hash(row)
            for repeat_index in range(self.settings.num_repeats):
                if (digest, repeat_index) in done:
                    self.metrics.skipped += 1
                else:
                    jobs.append((row_index, repeat_index))
        return jobs

    def prepared_row(self, row: JSONObject) -> JSONObject:
        if not self.settings.responses_create_params:
            return row
        return {
            **row,
            "responses_create_params": {**row["responses_create_params"], **self.settings.responses_create_params},
        }

    async def run_one(self, row: JSONObject, row_index: int, repeat_index: int) -> RolloutRecord | None:
        """The rollout's record; None when the run must stop (nothing is recorded, so a re-run redoes it)."""
        started = time.perf_counter()
        result, error = None, None
        try:
            result = await self._run_on_some_replica(self.prepared_row(row))
            if not isinstance(result, dict) or "reward" not in result:
                error = (
                    f"BadAgentResponse: agent '{self.settings.agent_name}' answered /run without a numeric "
                    f"`reward`: {str(result)[:300]}. An agent's /run must return the verifier's answer "
                    '({"reward": <float>, ...}) plus `response`; check that agent\'s log.'
                )
                result = None
        except ServerCallError as exc:
            if exc.status_code in RUN_STOPPING_STATUSES:
                self.stop(self.redactor.text(str(exc)))
                return None
            error = f"ServerCallError: {exc}"
        except TransportError as exc:
            error = f"{type(exc).__name__}: {exc}"
        record = build_record(
            row=row,
            row_index=row_index,
            repeat_index=repeat_index,
            agent_name=self.settings.agent_name,
            result=result,
            error=self.redactor.text(error) if error else None,
            latency_s=time.perf_counter() - started,
            fingerprint=self.fingerprint,
            digest=self.row_hashes.get(row_index),
        )
        return record

    async def _run_on_some_replica(self, row: JSONObject) -> Any:
        """The agent's `/run`, started again (after a short wait) when a replica it needed went away: the restarted
        or remaining replicas can do the rollout; nothing of the lost attempt is recorded."""
        attempt = 1
        while True:
            try:
                return await self.servers.post(self.settings.agent_name, "/run", row)
            except ServerCallError as exc:
                if not _replica_lost(exc) or attempt >= self.settings.max_rollout_attempts or self._abort.is_set():
                    raise
            self.metrics.restarted += 1
            await asyncio.sleep(min(REPLICA_RETRY_BASE_S * 2 ** (attempt - 1), 4.0))
            attempt += 1

    async def run(
        self, rows: list[JSONObject], jobs: Iterable[tuple[int, int]], out: TextIO, progress: Progress | None = None
    ) -> Metrics:
        """`num_samples_in_parallel` workers take jobs until none are left or `stop()` is called; after a stop,
        rollouts in flight get `drain_timeout_s` to finish and are then cancelled (and not recorded)."""
        pending = iter(jobs)

        async def worker() -> None:
            for row_index, repeat_index in pending:
                if not await self._budget_allows_one_more():
                    return
                self.in_flight += 1
                try:
                    record = await self.run_one(rows[row_index], row_index, repeat_index)
                finally:
                    self.in_flight -= 1
                if record is not None:
                    self._write(record, out, progress)
                finished, self._finished = self._finished, asyncio.Event()
                finished.set()

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
        with contextlib.suppress(asyncio.CancelledError):
            await everything
        return self.metrics

    async def _budget_allows_one_more(self) -> bool:
        """Wait until one more rollout fits the budget, counting each one in flight at the dearest rollout so far
        (so the cap is not passed unless a rollout costs more than any before it); False once nothing fits even
        with nothing in flight, or when the run is stopping."""
        budget = self.settings.max_cost_usd
        while not self._stop.is_set():
            if budget is None:
                return True
            spent = float(self.metrics.usage["cost"] or 0.0)
            finished = len(self.metrics.rewards) + self.metrics.failures
            if finished == 0 and self.in_flight == 0:
                return True  # the first rollout gives the estimate to go by
            if finished and spent + (self.in_flight + 1) * self._max_rollout_cost <= budget:
                return True
            if self.in_flight == 0:
                self._budget_hit = True
                self._stop.set()
                self.budget_reached = self._budget_message(spent, budget, finished)
                return False
            await self._finished.wait()
        return False

    def _budget_message(self, spent: float, budget: float, finished: int) -> str:
        return (
            f"spent ${spent:.6f} of the ${budget:g} budget over {finished} rollouts (about "
            f"${spent / finished:.6f} each, the dearest ${self._max_rollout_cost:.6f}); one more could pass it"
        )

    def _write(self, record: RolloutRecord, out: TextIO, progress: Progress | None, *, line: str | None = None) -> None:
        """Append the record (`line`: its redacted JSON, when a collector actor made it already) and count it."""
        # One write of one whole line, flushed: a crash can tear at most the line being written.
        out.write((line if line is not None else self.redactor.json_line(record)) + "\n")
        out.flush()
        self.metrics.add(record)
        self._max_rollout_cost = max(self._max_rollout_cost, float(record.get("cost_usd") or 0.0))
        if progress is not None:
            progress.update(1)
            mean = self.metrics.mean_reward
            cost = self.metrics.usage["cost"]
            elapsed_h = max(time.perf_counter() - self.metrics.started, 1e-9) / 3600
            progress.set_postfix(
                reward=f"{mean:.3f}" if mean is not None else "-",
                failed=self.metrics.failures,
                cost=f"${cost:.4f} (${cost / elapsed_h:.2f}/h)" if cost is not None else "-",
                refresh=False,
            )
