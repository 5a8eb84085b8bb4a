"""Concurrency limits for a model server: a hard cap, and an adaptive limit that backs off on 429s.

The adaptive limit is additive-increase / multiplicative-decrease, like TCP congestion control: a 429 halves it
(at most once per cool-down, so a burst of 429s from calls already in flight counts once), and every `limit`
successes raise it by one, back up to the cap. Cuts are logged as warnings, the recovery at info/debug.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

logger = logging.getLogger(__name__)


class AdaptiveLimiter:
    def __init__(
        self,
        max_limit: int,
        *,
        adaptive: bool = True,
        min_limit: int = 1,
        cooldown_s: float = 1.0,
        label: str = "model server",
    ) -> None:
        self.max_limit = max_limit
        self.min_limit = min(min_limit, max_limit)
        self.adaptive = adaptive
        self.cooldown_s = cooldown_s
        self.label = label
        self.limit = max_limit
        self.in_flight = 0
        self._successes = 0
        self._last_decrease = float("-inf")
        self._changed = asyncio.Condition()

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Hold one of `limit` slots for the duration of an upstream call."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.in_flight < self.limit)
            self.in_flight += 1
        try:
            yield
        finally:
            async with self._changed:
                self.in_flight -= 1
                self._changed.notify_all()

    async def on_success(self) -> None:
        if not self.adaptive or self.limit >= self.max_limit:
            return
        self._successes += 1
        if self._successes >= self.limit:
            self._successes = 0
            await self._set(self.limit + 1, "calls succeed")

    async def on_rate_limited(self) -> None:
        if not self.adaptive:
            return
        now = time.monotonic()
        if now - self._last_decrease < self.cooldown_s:
            return
        self._last_decrease = now
        self._successes = 0
        await self._set(max(self.min_limit, self.limit // 2), "the upstream answered 429")

    async def _set(self, limit: int, reason: str) -> None:
        if limit == self.limit:
            return
        # Cuts are news; the climb back is logged step by step only at debug level, and once when it is complete.
        level = logging.WARNING if limit < self.limit else logging.INFO if limit == self.max_limit else logging.DEBUG
        logger.log(level, "%s: concurrency limit %d -> %d (%s)", self.label, self.limit, limit, reason)
        async with self._changed:
            self.limit = limit
            self._changed.notify_all()
