"""Choosing a replica for each inter-server call: least calls in flight, and one replica per rollout session.

An instance may run as several replicas (`num_replicas`, on one machine or as Ray actors), each on its own address.
Calls spread over them by the fewest calls this client has in flight (ties go round-robin, so an idle cluster still
spreads). A resources server keeps each rollout's session in the replica that opened it, so once `/seed_session`
answers with a `session_id`, every later call carrying that session goes to the same replica until `/verify` or
`/close_session` ends it.
"""

from __future__ import annotations

import itertools
import time
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass, field

DOWN_FOR_S = 2.0
"""How long a replica that refused or dropped a connection is passed over (unless every replica is down)."""
MAX_SESSIONS = 200_000
"""Session routes remembered; the oldest are forgotten first (a rollout that never verified leaves one behind)."""


@dataclass
class Replica:
    url: str
    in_flight: int = 0
    down_until: float = 0.0

    def is_down(self, now: float) -> bool:
        return self.down_until > now


@dataclass
class ReplicaSet:
    """The replicas of one instance as this client knows them, with its own count of calls in flight to each."""

    replicas: list[Replica] = field(default_factory=list)
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    @classmethod
    def of(cls, urls: Iterable[str]) -> ReplicaSet:
        return cls([Replica(url) for url in urls])

    @property
    def urls(self) -> tuple[str, ...]:
        return tuple(r.url for r in self.replicas)

    def update(self, urls: Iterable[str]) -> None:
        """Take a new list of addresses (a replica restarted elsewhere, one added); counts of known ones stay."""
        known = {r.url: r for r in self.replicas}
        self.replicas = [known.get(url) or Replica(url) for url in dict.fromkeys(urls)]

    def pick(self, *, avoid: Iterable[str] = ()) -> Replica | None:
        """The live replica with the fewest calls in flight (round-robin among equals); a down one only if every
        one is down; None when there is none outside `avoid`."""
        if len(self.replicas) == 1 and not avoid:  # the usual case: nothing to choose
            return self.replicas[0]
        skip = set(avoid)
        candidates = [r for r in self.replicas if r.url not in skip]
        if not candidates:
            return None
        now = time.monotonic()
        live = [r for r in candidates if not r.is_down(now)] or candidates
        least = min(r.in_flight for r in live)
        tied = [r for r in live if r.in_flight == least]
        turn: int = next(self._turn)
        return tied[turn % len(tied)]

    def get(self, url: str) -> Replica | None:
        return next((r for r in self.replicas if r.url == url), None)

    def mark_down(self, url: str) -> None:
        replica = self.get(url)
        if replica is not None:
            replica.down_until = time.monotonic() + DOWN_FOR_S


class SessionRoutes:
    """session id -> the replica URL that opened it, bounded (oldest forgotten first)."""

    def __init__(self, max_entries: int = MAX_SESSIONS) -> None:
        self.max_entries = max_entries
        self._routes: OrderedDict[str, str] = OrderedDict()

    def __len__(self) -> int:
        return len(self._routes)

    def get(self, session_id: str) -> str | None:
        return self._routes.get(session_id)

    def remember(self, session_id: str, url: str) -> None:
        self._routes[session_id] = url
        while len(self._routes) > self.max_entries:
            self._routes.popitem(last=False)

    def forget(self, session_id: str) -> None:
        self._routes.pop(session_id, None)
