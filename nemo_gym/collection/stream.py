"""The trainer's side of the environment: rollouts of a batch of rows as an async iterator of records.

An RL loop (GRPO and the like) asks for rollouts every step with its current policy. `RolloutClient` connects once to
running servers (those `ng_run` started, found through its head server, or those `launch_servers` started) and
runs each step's batch on the same `Collector` as `ng_collect_rollouts`: the same records (redacted, with usage,
cost, the verifier's fields), the same replica restarts, outage waits, budget and failure rules. Only the sink
differs: records go to the caller as they finish instead of into a file, so nothing is resumed or written.

    async with RolloutClient(head_url="http://127.0.0.1:11000", num_repeats=4) as env:
        for step in range(steps):
            records = [record async for record in env.rollouts(batch_of_rows)]
            groups = group_records(records)          # nemo_gym.collection.advantages
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from nemo_gym.collection.collector import Collector, RolloutSettings
from nemo_gym.collection.inputs import InputError, assign_agents, row_problem, unknown_agents
from nemo_gym.collection.metrics import Metrics
from nemo_gym.collection.resume import fingerprint
from nemo_gym.collection.run import RunStopped, agent_fingerprints, discover_at, running_agents
from nemo_gym.config.errors import ConfigError
from nemo_gym.config.loading import load_global_config
from nemo_gym.config.secrets import Redactor, collect_secrets
from nemo_gym.config.types import GlobalConfig
from nemo_gym.http.lean_client import PeerPool
from nemo_gym.http.server_client import ServerClient
from nemo_gym.protocol.types import JSONObject, MetricsSummary, RolloutRecord
from nemo_gym.servers.base import StartupError
from nemo_gym.servers.head import build_head_app
from nemo_gym.servers.launch import DEFAULT_STARTUP_TIMEOUT_S, Runner
from nemo_gym.servers.loading import prepare
from nemo_gym.servers.processes import free_port
from nemo_gym.servers.serving import serve_in_thread

AGENT_SETTING = "agent_name"
HOW_TO_POINT = "with RolloutClient(head_url=...) (ng_run prints it in its ready line: 'head at http://...')"


class BudgetReached(RunStopped):
    """The client's `max_cost_usd` leaves no room for one more rollout; the batch's finished records were yielded."""


class _RecordQueue:
    """The iterator's sink. Each record is parsed back from the line a rollouts file would hold: the same redacted
    record ng_collect_rollouts writes, sharing nothing with the caller's rows."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[RolloutRecord] = asyncio.Queue()

    def put(self, record: RolloutRecord, line: str) -> None:
        self.queue.put_nowait(orjson.loads(line))


class RolloutClient:
    """Rollouts of batches of rows on running servers, for a training loop. Use as `async with`; one client serves
    every step (its connections, the agents' fingerprints and the spend carry over).

    Where the servers are: `head_url` (ng_run's head server), else `config`'s head server (e.g. the config
    `launch_servers` yields), else the head server of the config in the working directory's env.yaml (as
    ng_collect_rollouts finds it; default http://127.0.0.1:11000). Secrets configured in `config` (or env.yaml) are
    redacted from every record by value. `settings` and keyword arguments are RolloutSettings: `agent_name` (the
    agent of rows without an `agent_ref`), `num_repeats`, `num_samples_in_parallel`, `responses_create_params`,
    `max_cost_usd` (over the client's whole life), `max_rollout_attempts`, `outage_timeout_s`, `drain_timeout_s`."""

    def __init__(
        self,
        *,
        head_url: str | None = None,
        config: GlobalConfig | None = None,
        settings: RolloutSettings | None = None,
        **overrides: Any,
    ) -> None:
        base = settings.model_dump() if settings is not None else {}
        self.settings = _validated({**base, **overrides})
        self._head_url = head_url.rstrip("/") if head_url else None
        self._config = config
        self._pool: PeerPool | None = None
        self._servers: ServerClient | None = None
        self._served_config: JSONObject = {}
        self._redactor = Redactor()
        self._spent_usd = 0.0
        self._dearest_usd = 0.0
        self._active: set[Collector] = set()
        self.last_metrics: MetricsSummary | None = None
        """The figures of the last batch's records (rollouts, rewards, tokens, cost, latency)."""

    async def __aenter__(self) -> RolloutClient:
        await self.open()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Find the servers through the head server (ConfigError, saying how to start or point at it, when it cannot
        be reached)."""
        if self._servers is not None:
            return
        config = self._config
        if config is None and self._head_url is None:
            config = load_global_config([])
        if config is not None:
            self._redactor = Redactor(collect_secrets(config.data))
        head_url = self._head_url or (config.head_url if config is not None else "")
        pool = PeerPool(max_connections=max(64, self.settings.num_samples_in_parallel * 2))
        await pool.__aenter__()
        try:
            self._servers, self._served_config, _listing = await discover_at(head_url, pool, how_to_point=HOW_TO_POINT)
        except BaseException:
            await pool.__aexit__(None, None, None)
            raise
        self._pool = pool

    async def aclose(self) -> None:
        """Cancel any batch still running (nothing of it is yielded later) and close the connections."""
        for collector in list(self._active):
            collector.abort()
        if self._servers is not None:
            await self._servers.aclose()
            self._servers = None
        if self._pool is not None:
            await self._pool.__aexit__(None, None, None)
            self._pool = None

    @property
    def agents(self) -> list[str]:
        """The agent instances running now."""
        return running_agents(self._connected())

    @property
    def spent_usd(self) -> float:
        """USD every rollout of this client spent so far (recorded or not: failed, broken by an outage): what
        `max_cost_usd` counts."""
        return self._spent_usd + sum(c.metrics.spent_usd for c in self._active)

    def rollouts(
        self,
        rows: Sequence[JSONObject],
        *,
        num_repeats: int | None = None,
        agent_name: str | None = None,
        responses_create_params: JSONObject | None = None,
    ) -> AsyncGenerator[RolloutRecord, None]:
        """Each rollout's record as it finishes (in any order): `num_repeats` per row, `row_index` its position in
        `rows`. The arguments override the client's settings for this batch (`responses_create_params` is merged
        over them). A row's own failure is a record with `error` set and no reward; a rollout an outage broke is
        run again, never yielded. Raises InputError / ConfigError before any rollout for a bad row or an agent that
        is not running; after the last record, RunStopped when the run had to stop (a spent key, an outage past
        `outage_timeout_s`) and BudgetReached when `max_cost_usd` left no room: the records missing from the batch
        did not run. Leaving the loop early: close the iterator (`contextlib.aclosing`) to cancel the rest."""
        updates: JSONObject = {}
        if num_repeats is not None:
            updates["num_repeats"] = num_repeats
        if agent_name is not None:
            updates["agent_name"] = agent_name
        if responses_create_params is not None:
            updates["responses_create_params"] = {**self.settings.responses_create_params, **responses_create_params}
        settings = _validated({**self.settings.model_dump(), **updates}) if updates else self.settings
        return self._stream(list(rows), settings)

    async def _stream(self, rows: list[JSONObject], settings: RolloutSettings) -> AsyncGenerator[RolloutRecord, None]:
        collector = self._collector_for(rows, settings)
        sink = _RecordQueue()
        jobs = collector.plan(rows, set())
        self._active.add(collector)
        running = asyncio.ensure_future(collector.run(rows, jobs, sink))
        yielded = 0
        try:
            while True:
                if not sink.queue.empty():
                    record = sink.queue.get_nowait()
                elif running.done():
                    break
                else:
                    getter = asyncio.ensure_future(sink.queue.get())
                    await asyncio.wait({getter, running}, return_when=asyncio.FIRST_COMPLETED)
                    if not getter.done():
                        getter.cancel()
                        continue
                    record = getter.result()
                yielded += 1
                yield record
            await running  # its exception, if any, is the iterator's
        finally:
            if not running.done():  # the caller left early, or was cancelled: stop paying for the rest
                collector.abort()
                await asyncio.gather(running, return_exceptions=True)
            self._active.discard(collector)
            self._spent_usd += collector.metrics.spent_usd
            self._dearest_usd = max(self._dearest_usd, collector.max_rollout_cost_usd)
            self.last_metrics = collector.metrics.summary()
        self._raise_if_stopped(collector, yielded, settings.max_cost_usd)

    def _collector_for(self, rows: list[JSONObject], settings: RolloutSettings) -> Collector:
        """A collector for this batch, after checking every row and its agent: nothing runs when one is bad."""
        servers = self._connected()
        for index, row in enumerate(rows):
            if (problem := row_problem(row)) is not None:
                raise InputError(f"rows[{index}]: {problem}")
        where = _position
        agents = assign_agents(rows, settings.agent_name, where=where, setting=AGENT_SETTING)
        problem = unknown_agents(agents, running_agents(servers), rows=rows, where=where, setting=AGENT_SETTING)
        if problem is not None:
            raise ConfigError(problem)
        fingerprints = {
            agent: fingerprint(agent_settings)
            for agent, agent_settings in agent_fingerprints(
                agents, self._served_config, settings.responses_create_params
            ).items()
        }
        if settings.max_cost_usd is not None:
            remaining = settings.max_cost_usd - self.spent_usd
            if remaining <= 0:
                raise BudgetReached(self._budget_message(settings.max_cost_usd, 0))
            settings = settings.model_copy(update={"max_cost_usd": remaining})
        return Collector(
            settings,
            servers,
            self._redactor,
            fingerprints=fingerprints,
            known_rollout_cost_usd=self._dearest_usd,
        )

    def _raise_if_stopped(self, collector: Collector, yielded: int, budget: float | None) -> None:
        if collector.stop_reason is not None:
            raise RunStopped(
                f"The rollouts stopped early: {collector.stop_reason}\n{yielded} records of this batch were yielded; "
                f"its other rollouts did not run. {collector.stop_fix}, then ask for the rollouts again."
            )
        if collector.budget_reached is not None and budget is not None:
            raise BudgetReached(self._budget_message(budget, yielded))

    def _budget_message(self, budget: float, yielded: int) -> str:
        return (
            f"Budget reached: spent ${self.spent_usd:.6f} of max_cost_usd=${budget:g} over this client's rollouts "
            f"(the dearest rollout cost ${self._dearest_usd:.6f}, so one more could pass it). {yielded} records of "
            "this batch were yielded; its other rollouts did not run. Raise max_cost_usd to continue."
        )

    def _connected(self) -> ServerClient:
        if self._servers is None:
            raise RuntimeError("RolloutClient is not open: use `async with RolloutClient(...) as client:`")
        return self._servers


def metrics_of(records: Iterable[RolloutRecord]) -> MetricsSummary:
    """The figures a metrics file gives (rollouts, failures, rewards, tokens, cost, latency), over any records, e.g.
    one step's."""
    metrics = Metrics()
    for record in records:
        metrics.add(record)
    return metrics.summary()


async def rollouts(
    rows: Sequence[JSONObject],
    *,
    head_url: str | None = None,
    config: GlobalConfig | None = None,
    **settings: Any,
) -> AsyncGenerator[RolloutRecord, None]:
    """One batch on a client of its own: `async for record in rollouts(rows, num_repeats=4, head_url=...)`. A loop
    of many steps keeps one `RolloutClient` instead (its connections and budget carry over)."""
    async with RolloutClient(head_url=head_url, config=config, **settings) as client:
        stream = client.rollouts(rows)
        async with contextlib.aclosing(stream):
            async for record in stream:
                yield record


@contextlib.contextmanager
def launch_servers(
    config_paths: Sequence[str | Path],
    *overrides: str,
    startup_timeout_s: float = DEFAULT_STARTUP_TIMEOUT_S,
    log: Callable[[str], None] | None = None,
) -> Iterator[GlobalConfig]:
    """Start the head server and every instance of `config_paths` as ng_run does (one process each, on free loopback
    ports, env.yaml and `+key=value` overrides applied), for a script that runs no ng_run of its own; yields the
    config to give RolloutClient(config=...) and stops every server on exit. Blocking: call it outside the event
    loop. `log` gets the servers' (redacted) log lines; by default they are dropped, except the last lines of a
    server that dies, which are printed. StartupError when a server does not become healthy."""
    args = [f"+config_paths=[{', '.join(str(p) for p in config_paths)}]", *overrides]
    if not any(arg.lstrip("+").startswith("head_server") for arg in overrides):
        args.append(f"+head_server.port={free_port()}")
    config = prepare(load_global_config(args))
    if config.data.get("ray_address"):
        raise ConfigError(
            "launch_servers starts the servers as processes on this machine; for Ray, start them with "
            "ng_run +ray_address=... and give RolloutClient its head_url."
        )
    runner = Runner(config, startup_timeout_s=startup_timeout_s, log=log or _drop)
    head_app = build_head_app(config, runner.pids, runner.replicas)
    with serve_in_thread(head_app, host=config.head_host, port=config.head_port):
        try:
            runner.start_children()
            if not runner.wait_until_healthy():
                raise StartupError(
                    "The servers did not all become healthy (what failed is printed above); nothing was started."
                )
            yield config
        finally:
            runner.stop_all()


def _validated(values: Mapping[str, Any]) -> RolloutSettings:
    try:
        return RolloutSettings.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"RolloutClient settings are invalid: {problems}.") from None


def _position(index: int) -> str:
    return f"rows[{index}]"


def _drop(_line: str) -> None:
    """Server log lines nobody asked for."""
