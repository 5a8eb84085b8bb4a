"""A collection sharded over Ray actors (`ng_collect_rollouts +ray_address=... +num_collectors=N`).

For runs whose in-flight count one process cannot drive: the command plans the run as usual (rows, resume, what is
left to do), deals the rollouts out round-robin to N collector actors, and stays the only writer of the output.
Each actor drives its share against the agents' replicas (found through the head server) and streams every finished
record back; the command writes it, flushed, as it arrives. So the output has no duplicates by construction, a
crash loses only rollouts in flight, and the same command resumes, exactly as without Ray.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any, TextIO

import orjson

from nemo_gym.collection.collector import CollectionSettings, Collector, LineWriter, Progress, RecordSink
from nemo_gym.collection.metrics import Metrics
from nemo_gym.config.secrets import Redactor
from nemo_gym.http.lean_client import PeerPool
from nemo_gym.http.server_client import ServerClient
from nemo_gym.protocol.types import JSONObject, RolloutRecord
from nemo_gym.servers.gc_tuning import tune_for_many_in_flight


class _Lines:
    """The sink of a collector inside an actor: each record's line goes to the stream instead of a file."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[str] = asyncio.Queue()

    def put(self, record: RolloutRecord, line: str) -> None:
        self.queue.put_nowait(line)


class CollectorShard:
    """One Ray actor's share of a collection: runs its rollouts, yields each record's (redacted) JSON line."""

    def __init__(self, settings: JSONObject, head_url: str, secrets: list[str], fingerprints: dict[str, str]) -> None:
        self.settings = CollectionSettings.model_validate(settings)
        self.head_url = head_url
        self.redactor = Redactor(secrets)
        self.fingerprints = fingerprints
        self.collector: Collector | None = None
        tune_for_many_in_flight()

    async def run(self, rows: dict[int, JSONObject], jobs: list[tuple[int, int]]) -> AsyncIterator[str]:
        lines = _Lines()
        async with PeerPool(max_connections=max(64, self.settings.num_samples_in_parallel * 2)) as pool:
            servers = ServerClient({}, pool, head_url=self.head_url)
            self.collector = Collector(self.settings, servers, self.redactor, fingerprints=self.fingerprints)
            running = asyncio.ensure_future(self.collector.run(rows, jobs, lines))
            try:
                while not (running.done() and lines.queue.empty()):
                    getter = asyncio.ensure_future(lines.queue.get())
                    await asyncio.wait({getter, running}, return_when=asyncio.FIRST_COMPLETED)
                    if getter.done():
                        yield getter.result()
                    else:
                        getter.cancel()
                await running  # its exception, if any, is the stream's
            finally:
                running.cancel()
                await servers.aclose()

    async def stop(self) -> None:
        if self.collector is not None:
            self.collector.stop()

    async def abort(self) -> None:
        if self.collector is not None:
            self.collector.abort()

    async def outcome(self) -> JSONObject:
        collector = self.collector
        if collector is None:
            return {}
        return {
            "stop_reason": collector.stop_reason,
            "budget_reached": collector.budget_reached,
            "stop_fix": collector.stop_fix,
            "restarted": collector.metrics.restarted,
            "requeued": collector.metrics.requeued,
            "outages": collector.metrics.outages,
            "outage_wait_s": collector.metrics.outage_wait_s,
            "unrecorded": collector.metrics.unrecorded,
        }


class ShardedCollector(Collector):
    """The command's side: plans and writes like a Collector, while `num_collectors` actors run the rollouts."""

    def __init__(
        self,
        settings: CollectionSettings,
        servers: ServerClient,
        redactor: Redactor,
        *,
        head_url: str,
        secrets: Sequence[str],
        fingerprints: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(settings, servers, redactor, fingerprints=fingerprints)
        self.collection = settings
        self.head_url = head_url
        self.secrets = list(secrets)
        self.shards: list[Any] = []

    def stop(self, reason: str | None = None, *, fix: str | None = None) -> None:
        super().stop(reason, fix=fix)
        for shard in self.shards:
            shard.stop.remote()

    def abort(self) -> None:
        super().abort()
        for shard in self.shards:
            shard.abort.remote()

    async def run(
        self,
        rows: Sequence[JSONObject] | Mapping[int, JSONObject],
        jobs: Any,
        out: RecordSink | TextIO,
        progress: Progress | None = None,
    ) -> Metrics:
        import ray

        sink = out if isinstance(out, RecordSink) else LineWriter(out)
        jobs = list(jobs)
        count = max(1, min(self.collection.num_collectors, len(jobs)))
        per_shard = self.collection.model_dump(mode="json")
        per_shard["num_samples_in_parallel"] = math.ceil(self.collection.num_samples_in_parallel / count)
        if self.collection.max_cost_usd is not None:  # each shard keeps to its part of the budget
            per_shard["max_cost_usd"] = self.collection.max_cost_usd / count
        actor_class = ray.remote(CollectorShard).options(num_cpus=self.collection.collector_num_cpus)
        self.shards = [
            actor_class.remote(per_shard, self.head_url, self.secrets, self.fingerprints) for _ in range(count)
        ]
        shares = [jobs[k::count] for k in range(count)]
        streams = [
            shard.run.options(num_returns="streaming").remote({i: rows[i] for i, _ in share}, share)
            for shard, share in zip(self.shards, shares, strict=True)
        ]
        try:
            await asyncio.gather(*(self._drain(stream, sink, progress) for stream in streams))
            for outcome in await asyncio.gather(*(shard.outcome.remote() for shard in self.shards)):
                if outcome.get("stop_reason"):
                    self.stop(outcome["stop_reason"], fix=outcome.get("stop_fix"))
                self.budget_reached = self.budget_reached or outcome.get("budget_reached")
                self.metrics.restarted += int(outcome.get("restarted") or 0)
                self.metrics.requeued += int(outcome.get("requeued") or 0)
                self.metrics.outages = max(self.metrics.outages, int(outcome.get("outages") or 0))
                self.metrics.outage_wait_s = max(self.metrics.outage_wait_s, float(outcome.get("outage_wait_s") or 0))
                self.metrics.add_unrecorded(outcome.get("unrecorded"))
        finally:
            for shard in self.shards:
                with contextlib.suppress(Exception):
                    ray.kill(shard)
            self.shards = []
            ray.shutdown()
        return self.metrics

    async def _drain(self, stream: Any, sink: RecordSink, progress: Progress | None) -> None:
        async for ref in stream:
            if self._abort.is_set():
                return
            line = await ref  # the redacted JSON line the shard's collector made
            self._write(orjson.loads(line), sink, progress, line=line)
