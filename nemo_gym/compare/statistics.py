"""Figures that compare models on one dataset, computed from their rollout records alone.

Everything here is arithmetic over the JSONL records `ng_collect_rollouts` writes, so a report can be rebuilt (or
checked) from the files at any time. The mean reward is over scored rollouts; failed rollouts are counted apart,
and a model that fails too often is never the recommendation. Costs are whole rollouts' (a record's `cost_usd`): with
an LLM judge scoring them, the judge's dollars are part of every cost figure, and `judge_cost_usd` says how much.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from datetime import datetime

import numpy
from pydantic import BaseModel, Field
from scipy import stats

from nemo_gym.collection.metrics import percentile
from nemo_gym.protocol.types import RolloutRecord

CONFIDENCE = 0.95
MAX_FAILURE_RATE_TO_RECOMMEND = 0.10


class ModelSummary(BaseModel):
    """One model's row of the comparison."""

    label: str = Field(description="How the report names it: the model id, or the model-server instance")
    model: str = Field(description="The model id asked for")
    rollouts: int
    succeeded: int
    failed: int
    mean_reward: float | None
    ci_low: float | None = Field(description="95% t-interval of the mean reward; None with fewer than 2 rewards")
    ci_high: float | None
    pass_rate: float | None = Field(description="Share of scored rollouts with reward >= 1")
    total_cost_usd: float | None = Field(description="None when no record has a cost; the judge's cost included")
    judge_cost_usd: float | None = Field(
        default=None, description="The LLM judge's part of total_cost_usd; None when no record had a judge cost"
    )
    cost_per_rollout_usd: float | None
    cost_per_reward_point_usd: float | None
    cost_estimated: bool = Field(description="Some costs were computed from catalog prices, not reported")
    input_tokens: int = Field(description="The policy's (the judge's are not counted here)")
    output_tokens: int
    input_tokens_per_rollout: float | None
    output_tokens_per_rollout: float | None
    p50_latency_s: float | None
    p95_latency_s: float | None
    rollouts_path: str = ""

    @property
    def failure_rate(self) -> float:
        return self.failed / self.rollouts if self.rollouts else 0.0


class Recommendation(BaseModel):
    best: str = Field(description="Label of the model with the highest mean reward")
    cheapest_within_interval: str = Field(
        description="Label of the cheapest model whose mean reward lies within the best model's 95% interval"
    )
    text: str


class Comparison(BaseModel):
    """What a report shows: the dataset, when, every model's summary and the recommendation (if any)."""

    title: str
    dataset: str
    rows: int
    num_repeats: int
    created_at: datetime
    models: list[ModelSummary]
    recommendation: Recommendation | None


def mean_interval(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float] | None:
    """Student-t interval of the mean; a zero-spread sample gives the point itself."""
    if len(values) < 2:
        return None
    mean = statistics.fmean(values)
    spread = statistics.stdev(values) / math.sqrt(len(values))
    if spread == 0:
        return mean, mean
    half = float(stats.t.ppf((1 + confidence) / 2, len(values) - 1)) * spread
    return mean - half, mean + half


def summarize(label: str, model: str, records: Iterable[RolloutRecord], *, rollouts_path: str = "") -> ModelSummary:
    records = list(records)
    scored = [r for r in records if r.get("error") is None]
    rewards = [float(r.get("reward") or 0.0) for r in scored]
    latencies = [float(r.get("latency_s") or 0.0) for r in scored]
    costs = [float(cost) for r in records if (cost := r.get("cost_usd")) is not None]
    total_cost = math.fsum(costs) if costs else None
    judge_costs = [float(cost) for r in records if (cost := r.get("judge_cost_usd")) is not None]
    usages = [usage for r in records if (usage := r.get("usage"))]
    inputs = sum(int(usage.get("input_tokens") or 0) for usage in usages)
    outputs = sum(int(usage.get("output_tokens") or 0) for usage in usages)
    interval = mean_interval(rewards)
    count = len(records)
    return ModelSummary(
        label=label,
        model=model,
        rollouts=count,
        succeeded=len(scored),
        failed=count - len(scored),
        mean_reward=statistics.fmean(rewards) if rewards else None,
        ci_low=interval[0] if interval else None,
        ci_high=interval[1] if interval else None,
        pass_rate=sum(r >= 1.0 for r in rewards) / len(rewards) if rewards else None,
        total_cost_usd=total_cost,
        judge_cost_usd=math.fsum(judge_costs) if judge_costs else None,
        cost_per_rollout_usd=total_cost / count if total_cost is not None and count else None,
        cost_per_reward_point_usd=total_cost / sum(rewards) if total_cost is not None and sum(rewards) > 0 else None,
        cost_estimated=any(r.get("cost_estimated") for r in records),
        input_tokens=inputs,
        output_tokens=outputs,
        input_tokens_per_rollout=inputs / count if count else None,
        output_tokens_per_rollout=outputs / count if count else None,
        p50_latency_s=percentile(latencies, 50),
        p95_latency_s=percentile(latencies, 95),
        rollouts_path=rollouts_path,
    )


def recommend(models: Sequence[ModelSummary]) -> Recommendation | None:
    """The best mean reward, and the cheapest (per rollout) model whose mean lies within the best's interval.

    Only models with a known cost and at most 10% failed rollouts qualify: a model that is cheap because its
    rollouts fail is no bargain."""
    scored = [m for m in models if m.mean_reward is not None]
    if not scored:
        return None
    best = max(scored, key=lambda m: (m.mean_reward or 0.0, -(m.cost_per_rollout_usd or 0.0)))
    low = best.ci_low if best.ci_low is not None else (best.mean_reward or 0.0)
    candidates = [
        m
        for m in scored
        if m.mean_reward is not None
        and m.mean_reward >= low
        and m.cost_per_rollout_usd is not None
        and m.failure_rate <= MAX_FAILURE_RATE_TO_RECOMMEND
    ]
    if not candidates:
        return Recommendation(
            best=best.label,
            cheapest_within_interval=best.label,
            text=f"{best.label} has the highest mean reward ({best.mean_reward:.3f}); no model "
            "within its interval has a known cost and few enough failures to compare.",
        )
    cheapest = min(candidates, key=lambda m: (m.cost_per_rollout_usd, -(m.mean_reward or 0.0)))
    interval = (
        f"[{best.ci_low:.3f}, {best.ci_high:.3f}]"
        if best.ci_low is not None and best.ci_high is not None
        else "(no interval: fewer than 2 rollouts)"
    )
    if cheapest.label == best.label:
        text = (
            f"{best.label} has the highest mean reward ({best.mean_reward:.3f}, 95% interval {interval}) and "
            "no model within that interval costs less per rollout."
        )
    else:
        ratio = _ratio(best.cost_per_rollout_usd, cheapest.cost_per_rollout_usd)
        text = (
            f"{cheapest.label} (mean reward {cheapest.mean_reward:.3f}) is within the 95% interval {interval} "
            f"of the best, {best.label} ({best.mean_reward:.3f}), at "
            f"${_dollars(cheapest.cost_per_rollout_usd)} instead of ${_dollars(best.cost_per_rollout_usd)} per "
            f"rollout{ratio}."
        )
    return Recommendation(best=best.label, cheapest_within_interval=cheapest.label, text=text)


def _ratio(expensive: float | None, cheap: float | None) -> str:
    if not expensive or not cheap:
        return ""
    return f" ({expensive / cheap:.1f}x cheaper)"


def _dollars(value: float | None) -> str:
    """Three significant digits without scientific notation: 0.0000781, 0.00171, 12.3."""
    if value is None:
        return "?"
    return numpy.format_float_positional(value, precision=3, unique=False, fractional=False, trim="-")
