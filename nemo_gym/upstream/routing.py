"""Which endpoint and model answer a call: the primary, its fallback models, then fallback endpoints.

On OpenRouter, fallback models travel in the request's native `models` list (at most 3, so OpenRouter switches
models before the first byte and bills the one that served); a longer chain continues client-side in groups.
Other endpoints get one model per attempt chain, tried in order. Every target gets the retry budget that remains
of the call's time budget; an account-level refusal (401/402/403) skips the endpoint's other models.
"""

from __future__ import annotations

import functools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from urllib.parse import urlparse

from nemo_gym.http.pool import HttpCaller
from nemo_gym.protocol.types import JSONObject
from nemo_gym.upstream.endpoint import UpstreamCall, UpstreamEndpoint, UpstreamError, is_openrouter
from nemo_gym.upstream.ratelimit import AdaptiveLimiter
from nemo_gym.upstream.retry import RetryPolicy, RetryStats, call_with_retries

logger = logging.getLogger(__name__)
OPENROUTER_MAX_FALLBACK_MODELS = 3
ACCOUNT_LEVEL_STATUSES = frozenset({401, 402, 403})


@dataclass(frozen=True)
class Target:
    endpoint: UpstreamEndpoint
    model: str
    native_fallbacks: tuple[str, ...] = ()
    """Sent as OpenRouter's `models`: tried by OpenRouter itself after `model`."""

    @property
    def label(self) -> str:
        return f"{self.model} at {urlparse(self.endpoint.base_url).netloc or self.endpoint.base_url}"


def targets_for(
    endpoint: UpstreamEndpoint, fallback_models: Sequence[str], *, openrouter: bool | None = None
) -> list[Target]:
    chain = [endpoint.model, *fallback_models]
    native = is_openrouter(endpoint.base_url) if openrouter is None else openrouter
    if not native:
        return [Target(endpoint, model) for model in chain]
    group = OPENROUTER_MAX_FALLBACK_MODELS + 1
    return [Target(endpoint, chain[i], tuple(chain[i + 1 : i + group])) for i in range(0, len(chain), group)]


@dataclass
class RoutedCall:
    """A successful call and how it got there."""

    call: UpstreamCall
    target: Target
    stats: RetryStats
    failovers: list[str] = field(default_factory=list)


class Router:
    def __init__(
        self,
        targets: Sequence[Target],
        policy: RetryPolicy,
        limiter: AdaptiveLimiter,
        *,
        timeout_s: float,
        label: str,
        rng: random.Random | None = None,
    ) -> None:
        if not targets:
            raise ValueError("A router needs at least one target.")
        self.targets = list(targets)
        self.policy = policy
        self.limiter = limiter
        self.timeout_s = timeout_s
        self.label = label
        self.rng = rng or random.Random()

    async def call(self, http: HttpCaller, path: str, make_body: Callable[[Target], JSONObject]) -> RoutedCall:
        """Try each target with retries until one answers; raise the last error, summarised, otherwise."""
        started = time.monotonic()
        deadline = started + self.policy.max_elapsed_s
        stats = RetryStats()
        failovers: list[str] = []
        refused: set[str] = set()
        last: UpstreamError | None = None
        for target in self.targets:
            if target.endpoint.base_url in refused:
                continue
            if time.monotonic() >= deadline:
                break
            try:
                call = await call_with_retries(
                    functools.partial(self._attempt, http, path, target, make_body),
                    self.policy,
                    stats=stats,
                    deadline=deadline,
                    rng=self.rng,
                    label=f"{self.label} ({target.label})",
                )
            except UpstreamError as exc:
                last = exc
                if exc.upstream_status in ACCOUNT_LEVEL_STATUSES:
                    refused.add(target.endpoint.base_url)
                failovers.append(f"{target.label}: {exc.upstream_status or 'no answer'}")
                if target is not self.targets[-1]:
                    logger.warning(
                        "%s: %s failed (%s); falling back", self.label, target.label, exc.upstream_status or "no answer"
                    )
                continue
            call.attempts = stats.attempts
            return RoutedCall(call, target, stats, failovers)
        assert last is not None
        raise self._exhausted(last, stats, failovers, time.monotonic() - started)

    async def _attempt(
        self, http: HttpCaller, path: str, target: Target, make_body: Callable[[Target], JSONObject]
    ) -> UpstreamCall:
        async with self.limiter.slot():
            try:
                call = await target.endpoint.post(http, path, make_body(target), timeout_s=self.timeout_s)
            except UpstreamError as exc:
                if exc.upstream_status == 429:
                    await self.limiter.on_rate_limited()
                raise
        await self.limiter.on_success()
        return call

    def _exhausted(
        self, last: UpstreamError, stats: RetryStats, failovers: list[str], elapsed_s: float
    ) -> UpstreamError:
        if stats.attempts <= 1:
            return last
        tried = f"; targets tried: {'; '.join(failovers)}" if len(failovers) > 1 else ""
        summary = (
            f" [gave up after {stats.attempts} attempts in {elapsed_s:.1f}s "
            f"(retry budget: max_attempts={self.policy.max_attempts}, "
            f"max_elapsed_s={self.policy.max_elapsed_s:g}){tried}]"
        )
        return UpstreamError(
            str(last) + summary,
            status_code=last.status_code,
            upstream_status=last.upstream_status,
            body=last.body,
            retryable=False,
            kind=last.kind,
        )
