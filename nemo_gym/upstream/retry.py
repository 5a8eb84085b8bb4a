"""Retrying upstream calls: one budget of attempts and time shared by every retryable failure.

Back-off is exponential with full jitter (sleep uniformly in [0, min(cap, base·2^n)]), so thousands of rollouts that
hit the same 429 do not come back in lockstep. A `Retry-After` from the server wins, up to a cap. Nothing here
retries forever: a peer system's unbounded fixed-interval retries once made six million calls in a day.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

from pydantic import BaseModel, ConfigDict, Field

from nemo_gym.upstream.endpoint import UpstreamError

logger = logging.getLogger(__name__)
T = TypeVar("T")


class RetryPolicy(BaseModel):
    """Defaults fit a long unattended run: ride out a provider outage of a few minutes, never hang."""

    model_config = ConfigDict(extra="forbid")
    max_attempts: int = Field(default=8, ge=1, description="Attempts per model call, first one included")
    max_elapsed_s: float = Field(default=600.0, gt=0, description="Give up once this much time has passed")
    initial_backoff_s: float = Field(default=1.0, ge=0, description="Back-off cap of the first retry")
    max_backoff_s: float = Field(default=60.0, ge=0, description="Largest back-off between attempts")
    retry_after_cap_s: float = Field(default=120.0, ge=0, description="Longest Retry-After honoured")

    def backoff_s(self, retry_number: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Sleep before retry `retry_number` (1-based)."""
        if retry_after_s is not None:
            return min(retry_after_s, self.retry_after_cap_s)
        ceiling = min(self.max_backoff_s, self.initial_backoff_s * 2 ** (retry_number - 1))
        return rng.uniform(0.0, ceiling)


@dataclass
class RetryStats:
    """What one call's retries cost, for the rollout record and the run's metrics."""

    attempts: int = 0
    retries: int = 0
    waited_s: float = 0.0
    errors: list[str] = field(default_factory=list)


async def call_with_retries(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    stats: RetryStats,
    deadline: float | None = None,
    rng: random.Random | None = None,
    label: str = "upstream",
) -> T:
    """Run `attempt` until it succeeds, fails for good, or the attempt or time budget is spent.

    `deadline` (time.monotonic) lets a caller share one time budget across several targets."""
    rng = rng or random.Random()
    started = time.monotonic()
    deadline = min(deadline or float("inf"), started + policy.max_elapsed_s)
    local_attempts = 0
    while True:
        local_attempts += 1
        stats.attempts += 1
        try:
            return await attempt()
        except UpstreamError as exc:
            stats.errors.append(str(exc.upstream_status or exc.kind))
            if not exc.retryable or local_attempts >= policy.max_attempts:
                raise
            pause = policy.backoff_s(local_attempts, exc.retry_after_s, rng)
            if time.monotonic() + pause >= deadline:
                raise
            logger.info(
                "%s: attempt %d failed (%s); retrying in %.2fs",
                label,
                local_attempts,
                exc.upstream_status or type(exc).__name__,
                pause,
            )
            stats.retries += 1
            stats.waited_s += pause
            await asyncio.sleep(pause)
