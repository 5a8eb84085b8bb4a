"""Retry budgets, back-off, Retry-After, the adaptive concurrency limit, routing targets and OpenRouter checks."""

from __future__ import annotations

import asyncio
import random
import time
from typing import Any

import httpx
import pytest

from nemo_gym.upstream.endpoint import UpstreamEndpoint, UpstreamError, is_openrouter, retry_after_seconds
from nemo_gym.upstream.openrouter import close_matches, openrouter_config_problems
from nemo_gym.upstream.ratelimit import AdaptiveLimiter
from nemo_gym.upstream.retry import RetryPolicy, RetryStats, call_with_retries
from nemo_gym.upstream.routing import targets_for


def failing(statuses: list[int | None], *, retry_after_s: float | None = None) -> Any:
    """An attempt that raises an UpstreamError per listed status (None = connection error), then succeeds."""
    remaining = list(statuses)

    async def attempt() -> str:
        if remaining:
            status = remaining.pop(0)
            raise UpstreamError(
                f"HTTP {status}",
                status_code=status or 502,
                upstream_status=status,
                retryable=None if status else True,
                retry_after_s=retry_after_s,
            )
        return "ok"

    return attempt


FAST = RetryPolicy(max_attempts=5, initial_backoff_s=0.001, max_backoff_s=0.002)


@pytest.mark.parametrize("status", [429, 500, 502, 503, 408, 524, 529, None])
def test_transient_failures_are_retried_until_success(status: int | None) -> None:
    stats = RetryStats()
    assert asyncio.run(call_with_retries(failing([status, status]), FAST, stats=stats)) == "ok"
    assert stats.attempts == 3 and stats.retries == 2


@pytest.mark.parametrize("status", [400, 401, 402, 403, 404, 413, 422])
def test_request_and_account_errors_are_not_retried(status: int) -> None:
    stats = RetryStats()
    with pytest.raises(UpstreamError):
        asyncio.run(call_with_retries(failing([status]), FAST, stats=stats))
    assert stats.attempts == 1 and stats.retries == 0


def test_attempts_are_bounded() -> None:
    stats = RetryStats()
    with pytest.raises(UpstreamError):
        asyncio.run(call_with_retries(failing([503] * 100), FAST, stats=stats))
    assert stats.attempts == FAST.max_attempts


def test_time_is_bounded_even_with_attempts_left() -> None:
    policy = RetryPolicy(max_attempts=1000, max_elapsed_s=0.3, initial_backoff_s=0.05, max_backoff_s=0.05)
    stats = RetryStats()
    with pytest.raises(UpstreamError):
        asyncio.run(call_with_retries(failing([503] * 10_000), policy, stats=stats, rng=random.Random(0)))
    # No pause is started that would end past the time budget, so the sleeps stay within it, and it is time, not
    # the attempt budget, that ends the call.
    assert stats.waited_s <= policy.max_elapsed_s
    assert 2 <= stats.attempts < policy.max_attempts
    assert stats.retries == stats.attempts - 1 and stats.errors == ["503"] * stats.attempts


def test_retry_after_is_honoured_up_to_its_cap() -> None:
    rng = random.Random(0)
    policy = RetryPolicy(retry_after_cap_s=5)
    assert policy.backoff_s(1, 2.5, rng) == 2.5
    assert policy.backoff_s(1, 3600, rng) == 5


def test_backoff_is_exponential_with_full_jitter() -> None:
    policy = RetryPolicy(initial_backoff_s=1, max_backoff_s=60)
    rng = random.Random(1)
    for retry in range(1, 10):
        samples = [policy.backoff_s(retry, None, rng) for _ in range(300)]
        ceiling = min(60, 2 ** (retry - 1))
        assert all(0 <= s <= ceiling for s in samples)
        assert max(samples) > 0.8 * ceiling and min(samples) < 0.2 * ceiling  # spread over the whole range


def test_a_retry_after_longer_than_the_time_left_gives_up_at_once() -> None:
    policy = RetryPolicy(max_elapsed_s=1.0, retry_after_cap_s=120)
    stats = RetryStats()
    with pytest.raises(UpstreamError, match="HTTP 429"):
        asyncio.run(call_with_retries(failing([429], retry_after_s=30), policy, stats=stats))
    assert (stats.attempts, stats.retries, stats.waited_s, stats.errors) == (1, 0, 0.0, ["429"])


def test_retry_after_header_forms() -> None:
    assert retry_after_seconds(httpx.Headers({"Retry-After": "7"})) == 7
    assert retry_after_seconds(httpx.Headers({})) is None
    assert retry_after_seconds(httpx.Headers({"Retry-After": "soon"})) is None
    in_ten = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 10))
    assert 7 <= (retry_after_seconds(httpx.Headers({"Retry-After": in_ten})) or 0) <= 11


def test_adaptive_limit_halves_on_429_and_grows_back() -> None:
    async def scenario() -> list[int]:
        limiter = AdaptiveLimiter(16, cooldown_s=0.0, label="m")
        seen = [limiter.limit]
        await limiter.on_rate_limited()
        seen.append(limiter.limit)
        await limiter.on_rate_limited()
        seen.append(limiter.limit)
        for _ in range(200):
            await limiter.on_success()
        seen.append(limiter.limit)
        return seen

    assert asyncio.run(scenario()) == [16, 8, 4, 16]


def test_a_burst_of_429s_counts_once_per_cooldown() -> None:
    async def scenario() -> int:
        limiter = AdaptiveLimiter(16, cooldown_s=10.0)
        for _ in range(20):
            await limiter.on_rate_limited()
        return limiter.limit

    assert asyncio.run(scenario()) == 8


def test_the_limit_bounds_calls_in_flight() -> None:
    async def scenario() -> int:
        limiter = AdaptiveLimiter(3, adaptive=False)
        peak = 0

        async def work() -> None:
            nonlocal peak
            async with limiter.slot():
                peak = max(peak, limiter.in_flight)
                await asyncio.sleep(0.01)

        await asyncio.gather(*(work() for _ in range(30)))
        return peak

    assert asyncio.run(scenario()) == 3


def test_the_limit_changes_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level("WARNING")
    asyncio.run(AdaptiveLimiter(8, cooldown_s=0, label="policy_model").on_rate_limited())
    assert "policy_model: concurrency limit 8 -> 4" in caplog.text


def test_openrouter_fallbacks_go_native_in_groups_of_three() -> None:
    endpoint = UpstreamEndpoint(base_url="https://openrouter.ai/api/v1", model="a/1", api_key="sk-or-x")
    targets = targets_for(endpoint, ["b/2", "c/3", "d/4", "e/5"])
    assert [(t.model, t.native_fallbacks) for t in targets] == [("a/1", ("b/2", "c/3", "d/4")), ("e/5", ())]


def test_other_endpoints_get_one_model_per_target() -> None:
    endpoint = UpstreamEndpoint(base_url="http://127.0.0.1:8000/v1", model="m1")
    assert [(t.model, t.native_fallbacks) for t in targets_for(endpoint, ["m2"])] == [("m1", ()), ("m2", ())]


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://openrouter.ai/api/v1", True),
        ("http://127.0.0.1:9999/api/v1", True),
        ("http://127.0.0.1:8000/v1", False),
        ("https://api.openai.com/v1", False),
    ],
)
def test_openrouter_is_detected_by_host_or_api_v1_path(url: str, expected: bool) -> None:
    assert is_openrouter(url) is expected


@pytest.mark.parametrize(
    ("key", "models", "fragment"),
    [
        ("sk-proj-abc", ["openai/gpt-4-turbo"], "should start with `sk-or-`"),
        (None, ["openai/gpt-4-turbo"], "api_key is missing"),
        ("sk-or-v1-abc", ["gpt-4-turbo"], "provider/model-name"),
        ("sk-or-v1-abc", ["openai/gpt 4"], "provider/model-name"),
    ],
)
def test_openrouter_config_problems_give_the_seeds_advice(key: str | None, models: list[str], fragment: str) -> None:
    problems = " ".join(openrouter_config_problems(key, models))
    assert fragment in problems


@pytest.mark.parametrize(
    "model",
    [
        "openai/gpt-4-turbo",
        "meta-llama/llama-3.1-8b-instruct:free",
        "anthropic/claude-3.5-sonnet",
        "mistralai/mixtral-8x7b-instruct",
    ],
)
def test_valid_ids_pass(model: str) -> None:
    assert openrouter_config_problems("sk-or-v1-abc", [model]) == []


def test_close_matches_suggest_what_a_typo_meant() -> None:
    catalog = ["openai/gpt-4-turbo", "openai/gpt-4o-mini", "anthropic/claude-3.5-sonnet"]
    assert close_matches("openai/gpt-4-trubo", catalog)[0] == "openai/gpt-4-turbo"
    assert "anthropic/claude-3.5-sonnet" in close_matches("claude-3.5-sonnet", catalog)
