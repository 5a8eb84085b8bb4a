"""Re-score stored rollouts with the current verifier of a running resources server, calling no agent and no model.

For when a verifier's bug is fixed after an expensive run: each record's trajectory is verified again
(`rescoring`: a fresh session, its tool calls replayed, /verify) and written to a new file with the new `reward`,
the `previous_reward` and a `reverified` marker. Like a collection, the output is appended one flushed line per
record and a re-run of the same command resumes it (`reverify_plan`: what the input holds, what the output has
already); failed rollouts are copied through unchanged, since they have nothing to score. A tool with side effects
that must not run twice (it sends mail, it pays) can be left out of the replay with `+replay_tools=false`.

A /verify that fails now leaves `reward` null and `error` `ReverifyFailed: ...` (never a 0); `+retry_failed=true`
verifies those again. A resources server that cannot be reached stops the run (exit 3) without recording anything
for the records it broke.

A NeMo Gym rollouts file works as the input too (`reverify_plan`): its records are verified by the resources server
of their `agent_ref.name` in the running ng_run's config (or `+resources_server=...`), and written in our shape.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TextIO

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from tqdm import tqdm

from nemo_gym.collection.inputs import InputError
from nemo_gym.collection.output_lock import OutputLock, refuse_input_as_output
from nemo_gym.collection.rescoring import VerifierUnreachable, rescore
from nemo_gym.collection.resume import repair_torn_tail, set_aside_failures
from nemo_gym.collection.reverify_plan import Key, Plan, Tally, Totals, job_records, plan, scan_rescored, verifiers_of
from nemo_gym.collection.run import Interrupted, RunStopped, command_line, discover, stop_on_signals
from nemo_gym.collection.spend import Ledger, read_ledger
from nemo_gym.config.errors import COMMAND_LINE, ConfigError
from nemo_gym.config.paths import resolve_input_path
from nemo_gym.config.secrets import Redactor, collect_secrets
from nemo_gym.config.settings import check_setting_names, settings_problems
from nemo_gym.config.types import GlobalConfig
from nemo_gym.console import print_flushed
from nemo_gym.http.lean_client import PeerPool
from nemo_gym.http.server_client import ServerClient
from nemo_gym.protocol.types import JSONObject


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


class ReverifySummary(Totals):
    """`<output stem>.reverify.json`: the whole output's figures, what the input held, and this run's own."""

    input_jsonl_fpath: str
    output_jsonl_fpath: str
    records_read: int
    nemo_gym_records: int
    """Records of the input read from NeMo Gym's shape."""
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

    async def run(self, jobs: Iterator[tuple[Mapping[str, Any], str | None]]) -> None:
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
                except VerifierUnreachable as exc:
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
        if work.nemo_gym_records:
            print_flushed(
                f"Read {work.nemo_gym_records} NeMo Gym rollout records of {source} as ours (the dispatched row as "
                "`input`, the resources server of their agent_ref); the output holds them in our record shape."
            )
        if work.already_done:
            print_flushed(
                f"Resuming {output}: {work.already_done} records already done, {len(work.jobs)} to go "
                "(+overwrite=true starts over)."
            )
        ledger_before = await read_ledger(servers)
        started = time.perf_counter()
        with output.open("a", encoding="utf-8") as out:
            reverifier = Reverifier(settings, servers, redactor, out, tally)
            with (
                stop_on_signals(
                    reverifier,
                    settings.drain_timeout_s,
                    items="records",
                    busy="being verified",
                    drop=("drop", "dropping"),
                ),
                tqdm(total=len(work.jobs), desc="reverify", unit="record", dynamic_ncols=True) as bar,
            ):
                reverifier.progress = bar
                await reverifier.run(job_records(source, work.jobs))
        wall = time.perf_counter() - started
        ledger_after = await read_ledger(servers) if ledger_before.reporting else None
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
    return scan_rescored(output)


def _ledger_delta(before: Ledger, after: Ledger | None) -> tuple[int, float] | None:
    """Calls and USD the model servers served in between (None: none keeps a ledger)."""
    if after is None or not after.reporting:
        return None
    return after.calls - before.calls, after.cost_since(before)


def _summary(
    settings: ReverifySettings, work: Plan, reverifier: Reverifier, wall_s: float, ledger: tuple[int, float] | None
) -> ReverifySummary:
    """The whole output's figures (what it held before this run plus what this run wrote), the input's skips, and
    this run's own figures."""
    this_run = reverifier.this_run
    written = this_run.written
    return {
        "input_jsonl_fpath": str(settings.input_jsonl_fpath),
        "output_jsonl_fpath": str(settings.output_jsonl_fpath),
        "records_read": work.records_read,
        "nemo_gym_records": work.nemo_gym_records,
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
