"""An outage: the system (a server, or the upstream behind the model server) is down, as opposed to one rollout
failing. Rollouts that fail because of it are not samples: they are run again once the system is back, and the run
stops, resumably, if it does not come back within a bounded wait.

While the system is down, one rollout at a time probes it after a growing pause; the first rollout that gets an
answer (recorded, success or its own failure) ends the outage and the others start again.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Coroutine
from typing import Any, Literal

from nemo_gym.http.pool import TransportError
from nemo_gym.http.server_client import ServerCallError

FIRST_PROBE_S = 0.5
LONGEST_PROBE_PAUSE_S = 8.0

Turn = Literal["up", "probe", "stop"]


def is_outage(exc: BaseException) -> bool:
    """The system failed, not the rollout: the agent unreachable, or it answered that a server behind it (model,
    resources) or the upstream was unreachable, restarting, or failing every attempt (5xx, 429, timeouts)."""
    return isinstance(exc, TransportError) or (isinstance(exc, ServerCallError) and exc.outage)


class OutageWatch:
    """Whether the system is up, as the rollouts of one collection see it, and the turns of the probes while not."""

    def __init__(self, timeout_s: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.timeout_s = timeout_s
        self.clock = clock
        self.reason: str | None = None
        """What the latest rollout that failed for the outage said (redacted)."""
        self.since: float | None = None
        self.count = 0
        self.waited_s = 0.0
        """Time spent in outages that ended (the current one not included)."""
        self._up = asyncio.Event()
        self._up.set()
        self._probing = False
        self._pause_s = FIRST_PROBE_S

    @property
    def down(self) -> bool:
        return not self._up.is_set()

    def down_for_s(self) -> float:
        return 0.0 if self.since is None else self.clock() - self.since

    @property
    def expired(self) -> bool:
        """Down for longer than the wait allows: time to stop the run."""
        return self.down and self.down_for_s() >= self.timeout_s

    def went_down(self, reason: str) -> bool:
        """A rollout failed for an outage; True when this starts one (the system was up until now)."""
        self.reason = reason
        if self.down:
            return False
        self.since = self.clock()
        self.count += 1
        self._pause_s = FIRST_PROBE_S
        self._up.clear()
        return True

    def came_up(self) -> float | None:
        """A rollout got an answer; the length of the outage this ends, or None if there was none."""
        if not self.down:
            return None
        lasted = self.down_for_s()
        self.waited_s += lasted
        self.since = None
        self._up.set()
        return lasted

    async def turn(self, stopping: asyncio.Event) -> Turn:
        """What a worker about to start a rollout may do: go ahead ("up"), be the one probe ("probe", after a
        pause; call `probe_done` after it), or give up ("stop"). Waits while another worker probes."""
        while True:
            if stopping.is_set():
                return "stop"
            if not self.down:
                return "up"
            if not self._probing:
                self._probing = True
                pause, self._pause_s = self._pause_s, min(self._pause_s * 2, LONGEST_PROBE_PAUSE_S)
                if await _first(self._up.wait(), stopping.wait(), timeout=pause):
                    self._probing = False
                    continue  # up again, or stopping, while pausing
                return "probe"
            await _first(self._up.wait(), stopping.wait(), timeout=1.0)

    def probe_done(self) -> None:
        self._probing = False


async def _first(*waits: Coroutine[Any, Any, Any], timeout: float) -> bool:
    """True if one of the coroutines finished within `timeout` seconds; all of them are cancelled either way."""
    tasks = [asyncio.ensure_future(w) for w in waits]
    try:
        done, _ = await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(*tasks, return_exceptions=True)
    return bool(done)
