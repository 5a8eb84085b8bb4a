"""Group-relative advantages (GRPO and the like): each rollout's reward against the other rollouts of its row.

A row's rollouts form a group; a rollout's advantage is its reward minus the group's mean, divided by the group's
standard deviation (population, over the group) plus `eps` when `normalize_std`. A group whose rewards are all equal
(all solved, all failed, or a group of one) gives every rollout advantage 0: it carries no learning signal. One pure
function, shared by the trainer API and the `rl` export so both give the same numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field

from nemo_gym.protocol.types import RolloutRecord


def group_advantages(rewards: list[float], *, normalize_std: bool = True, eps: float = 1e-6) -> list[float]:
    """(reward - mean) / (std + eps) for each reward of one group, in order; (reward - mean) without
    `normalize_std`. ValueError for a reward that is not a finite number (a failed rollout has none: leave it out)."""
    if not rewards:
        return []
    for reward in rewards:
        if isinstance(reward, bool) or not isinstance(reward, int | float) or not math.isfinite(reward):
            raise ValueError(
                f"group_advantages needs finite numeric rewards, got {reward!r}; leave failed rollouts (reward None) "
                "out of the group"
            )
    mean = math.fsum(rewards) / len(rewards)
    centred = [reward - mean for reward in rewards]
    if not normalize_std:
        return centred
    std = math.sqrt(math.fsum(c * c for c in centred) / len(rewards))
    return [c / (std + eps) for c in centred]


@dataclass(frozen=True)
class RowGroup:
    """One row's rollouts of a step: the scored ones in repeat order with their advantages, and the failed ones."""

    row_index: int
    row_hash: str
    records: list[RolloutRecord]
    """Scored rollouts (no error), by `repeat_index`."""
    rewards: list[float]
    advantages: list[float]
    failed: list[RolloutRecord] = field(default_factory=list)
    """Rollouts that failed (`error` set, no reward): no part of the group's statistics."""

    @property
    def mean_reward(self) -> float | None:
        return math.fsum(self.rewards) / len(self.rewards) if self.rewards else None


def group_records(records: Iterable[RolloutRecord], *, normalize_std: bool = True, eps: float = 1e-6) -> list[RowGroup]:
    """A step's records grouped by row (`row_index` and `row_hash`), in row order, each group with its advantages
    (`group_advantages`). Records may arrive in any order, as rollouts finish."""
    scored: dict[tuple[int, str], list[RolloutRecord]] = {}
    failed: dict[tuple[int, str], list[RolloutRecord]] = {}
    for record in records:
        key = (int(record["row_index"]), str(record["row_hash"]))
        if record.get("error") is None and record.get("reward") is not None:
            scored.setdefault(key, []).append(record)
        else:
            failed.setdefault(key, []).append(record)
    groups = []
    for key in sorted(scored.keys() | failed.keys()):
        members = sorted(scored.get(key, []), key=lambda r: r["repeat_index"])
        rewards = [float(r["reward"] or 0.0) for r in members]
        groups.append(
            RowGroup(
                row_index=key[0],
                row_hash=key[1],
                records=members,
                rewards=rewards,
                advantages=group_advantages(rewards, normalize_std=normalize_std, eps=eps),
                failed=sorted(failed.get(key, []), key=lambda r: r["repeat_index"]),
            )
        )
    return groups
