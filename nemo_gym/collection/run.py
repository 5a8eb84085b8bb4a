"""One collection run as `ng_collect_rollouts` makes it: find the agents through the head server, resume the output,
collect with a progress bar, stop cleanly on signals, write the metrics. A Python user calls `collect` directly.

Each row runs on the agent its `agent_ref` names (NeMo Gym's field), else on `+agent_name`; so one input file can
mix environments, and the metrics are given per agent as well as overall.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shlex
import signal
import sys
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar

import httpx
from pydantic import ValidationError
from tqdm import tqdm

from nemo_gym.collection.collector import CollectionSettings, Collector, LineWriter
from nemo_gym.collection.environment_metrics import environment_metrics, summary_part, write_group_level
from nemo_gym.collection.inputs import Dataset, InputError, assign_agents, read_dataset, row_agent, unknown_agents
from nemo_gym.collection.output_lock import OutputLock, OutputLocked, refuse_input_as_output
from nemo_gym.collection.ray_sharding import ShardedCollector
from nemo_gym.collection.resume import (
    SettingsChanged,
    check_agent_settings,
    check_default_agent,
    file_metrics_by_agent,
    fingerprint,
    repair_torn_tail,
    result_settings,
    scan_output,
    set_aside_failures,
    unwritable,
)
from nemo_gym.collection.spend import read_ledger, settled_ledger
from nemo_gym.config.errors import COMMAND_LINE, ConfigError
from nemo_gym.config.loading import load_global_config
from nemo_gym.config.paths import resolve_input_path
from nemo_gym.config.secrets import Redactor, collect_secrets, command_redactor
from nemo_gym.config.settings import check_setting_names, settings_problems
from nemo_gym.config.types import GlobalConfig
from nemo_gym.console import fail, print_flushed, run_async
from nemo_gym.http.lean_client import PeerPool
from nemo_gym.http.pool import make_http_client
from nemo_gym.http.server_client import ServerClient, registry_from_head
from nemo_gym.protocol.types import CollectionSummary, JSONObject, RunFigures

SETTING_KEYS = set(CollectionSettings.model_fields)
AGENT_SETTING = "+agent_name"
BY_AGENT_COLUMNS = ("rollouts", "failed", "mean_reward", "pass_rate", "cost_usd")
JUDGE_COLUMN = "judge_cost_usd"
"""Added to the by_agent table when some agent's records had a judge cost (`cost_usd` includes it)."""


T = TypeVar("T")


def run_resumable_command(args: list[str], start: Callable[[GlobalConfig], Awaitable[T]], *, kept: str) -> T:
    """A resumable command's whole life: load the config from `args`, run `start(config)`, and turn each way it can
    end early into its message and exit status (2: bad settings or input, 3: stopped for a cause to fix, 130:
    interrupted). `kept` names what a re-run keeps, e.g. "finished rollouts"."""
    # SIGTERM while the run starts or ends (the run itself drains on it) unwinds like Ctrl-C instead of killing the
    # process on the spot, so the output's lock file is removed on the way out.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        config = load_global_config(args)
        return run_async(_awaited(start(config)))
    except (ConfigError, InputError, SettingsChanged, OutputLocked) as exc:
        fail(command_redactor(args).text(str(exc)))
    except Interrupted as exc:
        fail(str(exc), code=130)
    except RunStopped as exc:
        fail(str(exc), code=3)
    except KeyboardInterrupt:
        fail(f"interrupted; {kept} are in the output. Re-run the same command to resume.", code=130)


async def _awaited(work: Awaitable[T]) -> T:
    return await work


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


class RunStopped(Exception):
    """The collection stopped before its end for a reason the user must fix; finished rows are kept."""


class Interrupted(RunStopped):
    """Ctrl-C or SIGTERM: finished rows are kept; the same command resumes."""


def settings_from(config: GlobalConfig) -> CollectionSettings:
    check_setting_names(
        [k for k in config.data if config.origins.get(k) == COMMAND_LINE],
        SETTING_KEYS,
        "ng_collect_rollouts",
        close_only=True,
        cutoff=0.75,
    )
    values = {k: v for k, v in config.data.items() if k in SETTING_KEYS}
    try:
        settings = CollectionSettings.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(
            f"ng_collect_rollouts settings are invalid: {settings_problems(exc)}. Required: "
            "+input_jsonl_fpath=..., +output_jsonl_fpath=..., and +agent_name=... unless every row names its agent "
            "in `agent_ref`"
        ) from None
    settings.input_jsonl_fpath = resolve_input_path(settings.input_jsonl_fpath)
    return settings


def metrics_path(output: Path) -> Path:
    return output.with_name(output.stem + ".metrics.json")


def aggregate_metrics_path(output: Path) -> Path:
    """The environments' per-task metrics (`/aggregate_metrics`' group_level_metrics), beside the metrics file."""
    return output.with_name(output.stem + ".aggregate_metrics.json")


async def discover(config: GlobalConfig, pool: PeerPool) -> tuple[ServerClient, JSONObject, JSONObject]:
    """The running instances, the (redacted) resolved config and the head's own listing, from ng_run's head
    server."""
    return await discover_at(config.head_url, pool)


async def discover_at(
    head_url: str,
    pool: PeerPool,
    *,
    how_to_point: str = "with +head_server.host=... +head_server.port=...",
) -> tuple[ServerClient, JSONObject, JSONObject]:
    """`discover` for a head server's URL; `how_to_point` says how the caller's user names another one."""
    try:
        async with make_http_client(max_connections=2) as http:
            response = await http.get(head_url + "/instances", timeout=5.0)
            response.raise_for_status()
            served_config = await http.get(head_url + "/config", timeout=5.0)
            served_config.raise_for_status()
    except httpx.HTTPError as exc:
        raise ConfigError(
            f"Cannot reach the ng_run head server at {head_url} ({type(exc).__name__}). "
            f"Start the servers first with ng_run in another terminal, or point at its head server {how_to_point}"
        ) from None
    listing = response.json()
    return ServerClient(registry_from_head(listing), pool, head_url=head_url), served_config.json(), listing


def running_agents(servers: ServerClient) -> list[str]:
    return sorted(n for n, a in servers.registry.items() if a.server_type == "responses_api_agents")


def agent_fingerprints(
    agents: Iterable[str], served_config: Mapping[str, Any], responses_create_params: Mapping[str, Any]
) -> dict[str, JSONObject]:
    """agent -> the settings that decide what its rollouts look like (what its records' fingerprint is of)."""
    return {agent: result_settings(agent, served_config, responses_create_params) for agent in sorted(set(agents))}


def combined_fingerprint(fingerprints: Mapping[str, str]) -> str | None:
    """The one agent's fingerprint, or one over all of them: what the metrics file's `fingerprint` says."""
    if len(fingerprints) <= 1:
        return next(iter(fingerprints.values()), None)
    return fingerprint(fingerprints)


def resume_command(settings: CollectionSettings, config: GlobalConfig) -> str:
    """The command that resumes this run: its settings without +overwrite, plus a non-default head server."""
    args = [
        f"+{key}={value}"
        for key, value in settings.model_dump(mode="json", exclude_defaults=True).items()
        if key not in ("overwrite", "responses_create_params")
    ]
    args += [f"+responses_create_params.{k}={json.dumps(v)}" for k, v in settings.responses_create_params.items()]
    if "head_server" in config.data:
        args += [f"+head_server.{k}={v}" for k, v in config.data["head_server"].items()]
    return shlex.join(["ng_collect_rollouts", *args])


def command_line(config: GlobalConfig) -> str:
    """This process's command line with its secrets redacted: what a lock file says its owner runs."""
    args = sys.argv[1:]
    return command_redactor(args, config.data).text(shlex.join([Path(sys.argv[0]).name, *args]))


async def collect(
    config: GlobalConfig, settings: CollectionSettings, *, output_lock: OutputLock | None = None
) -> CollectionSummary:
    """Run a whole collection against the running ng_run (found through `config`'s head server) and write its
    metrics next to the output. Raises RunStopped (Interrupted on a signal) when it ends early for a reason the user
    must act on; every finished rollout is in the output by then. The output's lock is held throughout, taken here
    (OutputLocked when another process holds it, before anything is written) unless the caller holds it already
    and passes it as `output_lock` (ng_compare_models locks every model's file before it starts a server)."""
    dataset = read_dataset(settings.input_jsonl_fpath, settings.limit)
    assign_agents(dataset.rows, settings.agent_name, where=dataset.where, setting=AGENT_SETTING)
    output = settings.output_jsonl_fpath
    refuse_input_as_output(settings.input_jsonl_fpath, output)
    if output.is_dir():
        raise InputError(
            f"+output_jsonl_fpath={output} is a directory; give a file path such as {output / 'rollouts.jsonl'}."
        )
    try:
        output.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(
            f"Cannot write +output_jsonl_fpath={output}: {exc.strerror or exc}. Choose a path in a writable directory."
        ) from None
    if output_lock is not None and not output_lock.covers(output):
        raise ValueError(f"output_lock is the lock of {output_lock.output}, not of {output}")
    held: contextlib.AbstractContextManager[OutputLock] = (
        contextlib.nullcontext(output_lock)
        if output_lock is not None
        else OutputLock.acquire(output, command=command_line(config))
    )
    with held as lock:
        if output_lock is None and (note := lock.note()):
            print_flushed(note, err=lock.unprotected)
        return await _collect_locked(config, settings, dataset)


async def _collect_locked(config: GlobalConfig, settings: CollectionSettings, dataset: Dataset) -> CollectionSummary:
    """The collection itself, once this process holds the output's lock."""
    output = settings.output_jsonl_fpath
    rows = dataset.rows
    try:
        output.open("a", encoding="utf-8").close()
    except OSError as exc:
        raise InputError(
            f"Cannot write +output_jsonl_fpath={output}: {exc.strerror or exc}. Choose a path in a writable directory."
        ) from None
    redactor = Redactor(collect_secrets(config.data))
    async with PeerPool(max_connections=max(64, settings.num_samples_in_parallel * 2)) as pool:
        servers, served_config, listing = await discover(config, pool)
        running = running_agents(servers)
        row_agents = assign_agents(rows, settings.agent_name, where=dataset.where, setting=AGENT_SETTING)
        problem = unknown_agents(row_agents, running, rows=rows, where=dataset.where, setting=AGENT_SETTING)
        if problem is not None:
            raise ConfigError(problem)
        if settings.overwrite and output.exists():
            Path(os.path.realpath(output)).unlink()  # through a symlink: the file it names, whose lock is held
        if settings.overwrite:  # its figures were the old file's
            with contextlib.suppress(OSError):
                metrics_path(output).unlink(missing_ok=True)
        if repair_torn_tail(output):
            print_flushed(
                f"{output} ended with an unfinished line (an interrupted run); moved it to "
                f"{output.name}.torn, its rollout runs again."
            )
        state = scan_output(output)
        uses_default = any(row_agent(row) is None for row in rows)
        check_default_agent(output, state, settings.agent_name if uses_default else None)
        involved = set(row_agents) | (state.agents & set(running))  # the output's other agents are checked too
        fingerprints = check_agent_settings(
            output, state, agent_fingerprints(involved, served_config, settings.responses_create_params)
        )
        if settings.retry_failed and state.failed:
            moved = set_aside_failures(output)
            print_flushed(
                f"+retry_failed: {moved} failed records moved to {output.name}.retried_failures.jsonl; "
                "their rollouts run again."
            )
            state = scan_output(output, warn=None)  # what it had to say, it said above
        collector = (
            sharded_collector(config, settings, servers, redactor, fingerprints, listing)
            if settings.ray_address or settings.num_collectors > 1
            else Collector(settings, servers, redactor, fingerprints=fingerprints)
        )
        jobs = collector.plan(rows, state.done)
        if collector.metrics.skipped:
            failed_note = (
                f" ({len(state.failed)} of them failed; +retry_failed=true runs those again)" if state.failed else ""
            )
            print_flushed(
                f"Resuming {output}: {collector.metrics.skipped} rollouts already done{failed_note}, "
                f"{len(jobs)} to run (+overwrite=true starts over)."
            )
        ledger_before = await read_ledger(servers)
        with (
            stop_on_signals(
                collector, settings.drain_timeout_s, items="rollouts", busy="in flight", drop=("cancel", "cancelling")
            ),
            output.open("a", encoding="utf-8") as out,
            tqdm(total=len(jobs), desc=_progress_label(row_agents), unit="rollout", dynamic_ncols=True) as bar,
        ):
            metrics = await collector.run(rows, jobs, LineWriter(out), bar)
        ledger_after = await settled_ledger(servers) if ledger_before.reporting else None
        finished = not collector.interrupted and collector.stop_reason is None
        environment = (
            await environment_metrics(servers, served_config, output, set(row_agents) | state.agents)
            if finished
            else {}
        )
    this_run = metrics.run_figures()
    if ledger_after is not None and ledger_after.reporting:
        this_run["model_servers_cost_usd"] = round(max(0.0, ledger_after.cost_usd - ledger_before.cost_usd), 10)
    summary = whole_file_summary(settings, len(rows), fingerprints, this_run, agents=sorted(set(row_agents)))
    summary["stopped_early"] = collector.stop_reason or collector.budget_reached
    summary["interrupted"] = collector.interrupted
    if environment:
        summary["environment_metrics"] = summary_part(environment)
        write_group_level(aggregate_metrics_path(output), environment)
    done_now = this_run["rollouts"]
    unwritten = _write_metrics(metrics_path(output), summary)
    if (beyond := _beyond_records(this_run)) is not None:
        print_flushed(
            f"The model servers billed ${beyond:.6f} more than this run's records account for: calls of rollouts "
            "cancelled while in flight (or other clients of the same servers). In the metrics as "
            "this_run.model_servers_cost_usd.",
            err=True,
        )
    if collector.stop_reason is not None:
        raise RunStopped(
            f"The run stopped early: {collector.stop_reason}\n{done_now} rollouts finished in this run and are "
            f"kept in {output}. {collector.stop_hint}: {resume_command(settings, config)}{unwritten}"
        )
    if collector.budget_reached is not None and not collector.interrupted:
        print_flushed(
            f"Budget reached: {collector.budget_reached}. {done_now} rollouts finished in this run and are "
            f"kept in {output}; raise +max_cost_usd and re-run the same command to continue."
        )
    if collector.interrupted:
        raise Interrupted(
            f"Interrupted: {done_now} rollouts finished in this run and are kept in {output}; "
            f"rollouts still in flight were cancelled and will run again. Resume with: "
            f"{resume_command(settings, config)}{unwritten}"
        )
    if unwritten:
        raise RunStopped(f"{done_now} rollouts finished in this run and are kept in {output}.{unwritten}")
    return summary


def _progress_label(agents: Iterable[str]) -> str:
    names = sorted(set(agents))
    return names[0] if len(names) == 1 else f"{len(names)} agents"


def whole_file_summary(
    settings: CollectionSettings,
    rows: int,
    fingerprints: Mapping[str, str],
    this_run: RunFigures,
    *,
    agents: list[str],
) -> CollectionSummary:
    """The metrics file's content: the figures of every record the output holds now (one streaming pass), per agent
    too when several agents made them, the spend of rollouts that left no record over all runs (carried over from
    the previous metrics file), and this run's own figures under `this_run`."""
    output = settings.output_jsonl_fpath
    overall, by_agent = file_metrics_by_agent(output)
    figures = overall.summary()
    run_fingerprint = combined_fingerprint(fingerprints)
    unrecorded = _round_usd(
        _earlier_unrecorded_usd(metrics_path(output), run_fingerprint), this_run["unrecorded_cost_usd"]
    )
    expected = rows * settings.num_repeats
    summary: CollectionSummary = {
        "agent_name": settings.agent_name,
        "agents": agents,
        "input_jsonl_fpath": str(settings.input_jsonl_fpath),
        "output_jsonl_fpath": str(output),
        "rows": rows,
        "num_repeats": settings.num_repeats,
        "fingerprint": run_fingerprint,
        "fingerprints": dict(sorted(fingerprints.items())),
        "expected_rollouts": expected,
        "complete": figures["rollouts"] >= expected,
        # mypy wants a ** item to show that the optional `by_agent` is absent; MetricsSummary has no such key.
        **figures,  # type: ignore[typeddict-item]
        "unrecorded_cost_usd": unrecorded,
        "wasted_cost_usd": _round_usd(figures["failed_cost_usd"], unrecorded),
        "this_run": this_run,
        "stopped_early": None,
        "interrupted": False,
    }
    if len(by_agent) > 1:
        summary["by_agent"] = {agent: by_agent[agent].summary() for agent in sorted(by_agent)}
    return summary


def _beyond_records(this_run: RunFigures) -> float | None:
    """USD the model servers' ledgers show beyond what this run's records and unrecorded rollouts account for. A
    resources server's judge calls go through model servers too, so their ledgers hold them: the records' `cost_usd`
    and the unrecorded figure include the judges' dollars for that reason."""
    billed = this_run["model_servers_cost_usd"]
    if billed is None:
        return None
    beyond = billed - float(this_run["cost_usd"] or 0.0) - float(this_run["unrecorded_cost_usd"] or 0.0)
    return round(beyond, 10) if beyond > 1e-9 else None


def _earlier_unrecorded_usd(path: Path, fingerprint: str | None) -> float | None:
    """What earlier runs of the same output recorded as spent without a record (0 when unknown)."""
    try:
        earlier = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(earlier, dict) or earlier.get("fingerprint") != fingerprint:
        return None
    value = earlier.get("unrecorded_cost_usd")
    return float(value) if isinstance(value, int | float) else None


def _round_usd(*amounts: float | None) -> float | None:
    known = [a for a in amounts if a is not None]
    return round(sum(known), 10) if known else None


def _write_metrics(path: Path, summary: CollectionSummary) -> str:
    """Write the metrics file; when it cannot be written, a paragraph for the run's final message that carries the
    metrics themselves: a re-run's metrics cover only the rollouts it runs, so these would be lost."""
    text = json.dumps(summary, indent=2) + "\n"
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        kept = "A re-run cannot recount this run's metrics: they follow this message instead."
        return "\n" + unwritable(path, exc, kept, then="later runs write theirs there") + "\n" + text.rstrip()
    return ""


def sharded_collector(
    config: GlobalConfig,
    settings: CollectionSettings,
    servers: ServerClient,
    redactor: Redactor,
    fingerprints: Mapping[str, str],
    listing: JSONObject,
) -> Collector:
    """A collector whose rollouts run on `num_collectors` Ray actors (imported only for such a run)."""
    from nemo_gym.servers import ray_placement as ray_cluster

    address: str | None = settings.ray_address or ray_cluster.LOCAL
    if address == ray_cluster.LOCAL:
        address = (listing.get("ray") or {}).get("address")
        if not address:
            raise ConfigError(
                "+num_collectors/+ray_address=local shard the collection over the Ray cluster that "
                "ng_run runs on, but this ng_run is not on Ray. Start it with +ray_address=local (or "
                "a cluster's address), or give this command +ray_address=<address of a cluster>."
            )
    ray_cluster.connect(str(address), log_to_driver=True)
    return ShardedCollector(
        settings,
        servers,
        redactor,
        head_url=config.head_url,
        secrets=sorted(collect_secrets(config.data)),
        fingerprints=fingerprints,
    )


class Stoppable(Protocol):
    """A run that drains: `stop()` starts nothing new, `abort()` drops what is in flight; `interrupted` once stopped
    by a signal."""

    @property
    def interrupted(self) -> bool: ...

    def stop(self) -> None: ...

    def abort(self) -> None: ...


@contextlib.contextmanager
def stop_on_signals(
    runner: Stoppable, drain_timeout_s: float, *, items: str, busy: str, drop: tuple[str, str]
) -> Iterator[None]:
    """Ctrl-C / SIGTERM: start no new `items` and let those `busy` finish (bounded); a second one drops them. `drop`
    is the verb for that, and its -ing form (("cancel", "cancelling"))."""
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)

    def on_signal() -> None:
        if runner.interrupted:
            print_flushed(f"\nStopping now: {drop[1]} the {items} {busy}.", err=True)
            runner.abort()
            return
        print_flushed(
            f"\nStopping: no new {items}; waiting up to {drain_timeout_s:g}s for those {busy} "
            f"(Ctrl-C again to {drop[0]} them).",
            err=True,
        )
        runner.stop()

    previous = {sig: signal.getsignal(sig) for sig in signals}
    for sig in signals:
        loop.add_signal_handler(sig, on_signal)
    try:
        yield
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)  # which leaves the default, not what was there before
            if previous[sig] is not None:
                signal.signal(sig, previous[sig])


def format_summary(summary: Mapping[str, Any], indent: str = "  ") -> str:
    """Aligned `key  value` lines; a nested mapping (`this_run`) as an indented block of its own; `by_agent` as a
    table, one line per agent; of `environment_metrics`, each agent's key metrics (the rest is in the file)."""
    shown = {k: v for k, v in summary.items() if k != "by_agent"}
    if isinstance(environment := shown.get("environment_metrics"), Mapping):
        shown["environment_metrics"] = {
            agent: answer.get("key_metrics") or answer.get("error") for agent, answer in environment.items()
        }
    width = max(len(k) for k in shown)
    lines = []
    for key, value in shown.items():
        if isinstance(value, Mapping) and value and key not in ("errors", "fingerprints"):
            lines += [f"{indent}{key}:", format_summary(value, indent + "  ")]
        else:
            lines.append(f"{indent}{key.ljust(width)}  {value}")
    if by_agent := summary.get("by_agent"):
        lines += [f"{indent}by_agent:", format_by_agent(by_agent, indent + "  ")]
    return "\n".join(lines)


def format_by_agent(by_agent: Mapping[str, Mapping[str, object]], indent: str = "  ") -> str:
    """The main figures of each agent's records as aligned columns (the judge's cost too when some agent had one)."""
    judged = any(figures.get(JUDGE_COLUMN) is not None for figures in by_agent.values())
    columns = (*BY_AGENT_COLUMNS, JUDGE_COLUMN) if judged else BY_AGENT_COLUMNS
    table: list[tuple[str, ...]] = [("agent", *columns)]
    table += [(agent, *(str(figures.get(c)) for c in columns)) for agent, figures in by_agent.items()]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    return "\n".join(indent + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in table)
