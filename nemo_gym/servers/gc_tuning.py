"""Garbage-collector settings for the processes that carry rollouts (servers, replicas, collectors).

CPython collects its youngest generation after every 700 net allocations of container objects. A rollout in flight
keeps its request, its trajectory and its pending calls alive for as long as the upstream takes, so with hundreds
in flight nearly everything a young collection examines survives it: the collector runs very often, frees almost
nothing, and promotes it all to the older generations. With 1,000 rollouts in flight against a 500 ms upstream
that bookkeeping was close to a third of the agent's and the model server's CPU per rollout (bench/README.md has
the figures). A larger first threshold lets short-lived objects die between collections;
cycles are still collected, just in larger batches.
"""

from __future__ import annotations

import gc

YOUNG_GENERATION_THRESHOLD = 10_000
"""Net container allocations between young collections (CPython's default is 700)."""


def tune_for_many_in_flight() -> None:
    """Raise the young generation's threshold (the older generations keep theirs); safe to call more than once."""
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
