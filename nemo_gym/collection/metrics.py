"""The metrics of a collection: counts, reward statistics, tokens, cost and latency, summed as records arrive.

Tokens and model calls are the policy's; a resources server's LLM judge is summed apart (`judge_*`), and its dollars
are part of every cost figure (`cost_usd`, `failed_cost_usd`, what `+max_cost_usd` counts), since they were spent on
the rollouts all the same."""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from nemo_gym.protocol.types import MetricsSummary, RunFigures, Usage
from nemo_gym.protocol.usage import JudgeSpend, add_usage, empty_usage


@dataclass
class Metrics:
    """Aggregates over the records of one run."""

    rewards: list[float] = field(default_factory=list)
    reward_sum: float = 0.0
    latencies: list[float] = field(default_factory=list)
    failures: int = 0
    retries: int = 0
    skipped: int = 0
    restarted: int = 0
    """Rollouts started again because a server replica they ran on went away."""
    outages: int = 0
    outage_wait_s: float = 0.0
    requeued: int = 0
    """Rollouts an outage broke, put back to run again (not recorded)."""
    cost_estimated: bool = False
    usage: Usage = field(default_factory=empty_usage)
    """The policy's usage, over the records."""
    judge_usage: Usage = field(default_factory=empty_usage)
    """The judges' usage, over the records that had one."""
    judge_cost: float | None = None
    """USD the records' judges cost (None until one had a known cost)."""
    failed_cost: float = 0.0
    """USD that recorded failures had spent (their judges' too)."""
    unrecorded: Usage = field(default_factory=empty_usage)
    """What rollouts that left no record (an outage broke them, or the run stopped on them) had spent."""
    errors: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.perf_counter)

    def add(self, record: Mapping[str, Any]) -> None:
        if record.get("error") is not None:
            self.failures += 1
            kind = str(record["error"]).split(":", 1)[0][:80]
            self.errors[kind] = self.errors.get(kind, 0) + 1
            self.failed_cost += float(record.get("cost_usd") or 0.0)
        else:
            self.rewards.append(float(record.get("reward") or 0.0))
            self.reward_sum += self.rewards[-1]
            self.latencies.append(float(record.get("latency_s") or 0.0))
        self.usage = add_usage(self.usage, record.get("usage"))
        if isinstance(judge := record.get("judge_usage"), Mapping):
            self.judge_usage = add_usage(self.judge_usage, judge)
        if (judge_cost := record.get("judge_cost_usd")) is not None:
            self.judge_cost = round(float(self.judge_cost or 0.0) + float(judge_cost), 10)
        self.retries += int(record.get("retries") or 0)
        self.cost_estimated = self.cost_estimated or bool(record.get("cost_estimated"))

    def add_unrecorded(self, spent: Mapping[str, Any] | None) -> None:
        if spent:
            self.unrecorded = add_usage(self.unrecorded, spent)

    def add_unrecorded_judge(self, judge: JudgeSpend) -> None:
        """What the judge of a rollout that left no record had spent: unrecorded dollars like its policy's."""
        if judge.usage is not None:
            self.unrecorded = add_usage(self.unrecorded, judge.usage)
        elif (cost := judge.cost_usd) is not None:
            self.unrecorded = add_usage(self.unrecorded, {"cost": cost})

    @property
    def cost_usd(self) -> float | None:
        """USD the records spent, the policy's and the judges'; None while neither is known."""
        policy = self.usage["cost"]
        if self.judge_cost is None:
            return policy
        return self.judge_cost if policy is None else round(policy + self.judge_cost, 10)

    @property
    def spent_usd(self) -> float:
        """Everything this run is known to have spent upstream: its records' cost (judges included) and what
        rollouts without one spent. What `+max_cost_usd` counts."""
        return float(self.cost_usd or 0.0) + float(self.unrecorded["cost"] or 0.0)

    @property
    def mean_reward(self) -> float | None:
        """A running mean: the progress bar asks for it after every record."""
        return self.reward_sum / len(self.rewards) if self.rewards else None

    def summary(self) -> MetricsSummary:
        """The figures of the records added."""
        done = len(self.rewards) + self.failures
        rewards = self.rewards
        cost = self.cost_usd
        return {
            "rollouts": done,
            "succeeded": len(rewards),
            "failed": self.failures,
            "mean_reward": _round(self.mean_reward),
            "std_reward": _round(statistics.pstdev(rewards)) if rewards else None,
            "min_reward": _round(min(rewards)) if rewards else None,
            "max_reward": _round(max(rewards)) if rewards else None,
            "pass_rate": _round(sum(r >= 1.0 for r in rewards) / len(rewards)) if rewards else None,
            "input_tokens": self.usage["input_tokens"],
            "output_tokens": self.usage["output_tokens"],
            "cached_tokens": self.usage["input_tokens_details"]["cached_tokens"],
            "reasoning_tokens": self.usage["output_tokens_details"]["reasoning_tokens"],
            "model_calls": self.usage["calls"],
            "upstream_retries": self.retries,
            "cost_usd": cost,
            "cost_estimated": self.cost_estimated,
            "failed_cost_usd": round(self.failed_cost, 10) if cost is not None else None,
            "cost_per_rollout_usd": _round_cost(cost, done),
            "cost_per_reward_point_usd": _round_cost(cost, sum(rewards)),
            "judge_cost_usd": self.judge_cost,
            "judge_calls": self.judge_usage["calls"],
            "judge_input_tokens": self.judge_usage["input_tokens"],
            "judge_output_tokens": self.judge_usage["output_tokens"],
            "mean_latency_s": _round(statistics.fmean(self.latencies)) if self.latencies else None,
            "p50_latency_s": _round(percentile(self.latencies, 50)),
            "p95_latency_s": _round(percentile(self.latencies, 95)),
            "errors": self.errors,
        }

    def run_figures(self) -> RunFigures:
        """What the run these metrics were summed over did, and how fast."""
        elapsed = time.perf_counter() - self.started
        done = len(self.rewards) + self.failures
        return {
            "rollouts": done,
            "succeeded": len(self.rewards),
            "failed": self.failures,
            "mean_reward": _round(self.mean_reward),
            "skipped_already_done": self.skipped,
            "rollouts_restarted": self.restarted,
            "rollouts_rerun_after_outage": self.requeued,
            "outages": self.outages,
            "outage_wait_s": round(self.outage_wait_s, 1),
            "cost_usd": self.cost_usd,
            "judge_cost_usd": self.judge_cost,
            "unrecorded_cost_usd": self.unrecorded["cost"],
            "model_servers_cost_usd": None,
            "wall_time_s": round(elapsed, 3),
            "rollouts_per_s": round(done / elapsed, 3) if elapsed > 0 else None,
        }


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _round_cost(cost: float | None, per: float) -> float | None:
    return None if cost is None or per <= 0 else round(cost / per, 10)


def percentile(values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile: an observed value, so p95 of a few latencies is one that really happened."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(pct / 100 * len(ordered)) - 1)]
