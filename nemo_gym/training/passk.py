"""pass@k and majority@k of one row: exact expectations over every way of drawing k of its n rollouts.

Both are computed in whole numbers (counts of k-subsets) and rounded to a float once, at the end, so they are exact
to the last bit for any n: no `1 - small` cancellation, no overflow, no sampling noise.

pass@k = P(at least one of k rollouts drawn without replacement from the n is correct) = 1 - C(n-c, k) / C(n, k).

majority@k = the expected correctness of a majority vote among k rollouts drawn from the n: the answer given most
often among the k wins; a tie between answers is settled by a fair draw among them (so one right and one wrong
answer at k=2 counts 1/2); rollouts without an answer do not vote, and k rollouts none of which answered count as
wrong. An answer's correctness is the share of its rollouts that were correct (0 or 1 unless the verifier scored
the same answer differently).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Hashable, Iterable
from dataclasses import dataclass
from fractions import Fraction
from math import comb, lcm


def ks_up_to(n: int) -> list[int]:
    """The k of a row with n rollouts: 1, 2, 4, ... up to n."""
    ks: list[int] = []
    k = 1
    while k <= n:
        ks.append(k)
        k *= 2
    return ks


def pass_at_k(n: int, correct: int, k: int) -> float:
    """The unbiased estimator of pass@k from n rollouts of which `correct` were correct."""
    _check(n, k)
    if not 0 <= correct <= n:
        raise ValueError(f"correct must be between 0 and n={n}, got {correct}")
    total = comb(n, k)
    return (total - comb(n - correct, k)) / total


@dataclass(frozen=True)
class AnswerTally:
    """One row's rollouts as a vote: per distinct answer, how many rollouts gave it and how many of those were
    correct; and how many rollouts gave no answer."""

    answers: tuple[tuple[int, int], ...]
    """(rollouts, correct rollouts) per distinct answer."""
    abstained: int = 0

    @classmethod
    def of(cls, votes: Iterable[tuple[Hashable | None, bool]]) -> AnswerTally:
        """From (answer or None, correct) per rollout; answers are compared with ==."""
        given: Counter[Hashable] = Counter()
        right: Counter[Hashable] = Counter()
        abstained = 0
        for answer, correct in votes:
            if answer is None:
                abstained += 1
                continue
            given[answer] += 1
            right[answer] += int(correct)
        return cls(tuple((given[a], right[a]) for a in given), abstained)

    @property
    def rollouts(self) -> int:
        return sum(size for size, _ in self.answers) + self.abstained


def majority_at_k(tally: AnswerTally, k: int) -> float:
    """The expected correctness of the majority vote among k rollouts drawn without replacement (ties: a fair draw)."""
    n = tally.rollouts
    _check(n, k)
    sizes = Counter(size for size, _ in tally.answers)
    right_by_size: Counter[int] = Counter()
    for size, right in tally.answers:
        right_by_size[size] += right
    # An answer's chance to win depends only on how many rollouts gave it and on the sizes of the other answers, so
    # it is counted once per size that some correct answer has. Counts stay whole numbers: a tie among t + 1
    # answers is weighted by ties // (t + 1), `ties` being divisible by every possible t + 1 (at most k answers are
    # drawn, so at most k tie).
    ties = lcm(*range(1, min(len(tally.answers), k) + 1))
    expected = Fraction(0)
    for size, right in right_by_size.items():
        if not right:
            continue
        others = sizes.copy()
        others[size] -= 1
        wins = sum(
            comb(size, j) * _tie_weighted_ways(others, tally.abstained, j, k - j, ties)
            for j in range(1, min(size, k) + 1)
        )
        expected += Fraction(right * wins, size)  # each answer of this size is right for `its right / size`
    return float(expected / (ties * comb(n, k)))


def _tie_weighted_ways(others: Counter[int], abstained: int, j: int, rest: int, ties: int) -> int:
    """The ways to draw `rest` rollouts from the other answers (and the abstentions) so that no other answer gets
    more than j of them, each way weighted by `ties` / (1 + the number of other answers that also got exactly j):
    `ties` times the chance that an answer drawn j times wins the fair draw among the tied."""
    # Answers with fewer than j rollouts can never reach j: like abstentions, they only fill the draw.
    free = abstained + sum(size * count for size, count in others.items() if size < j)
    contenders = [size for size, count in sorted(others.items()) if size >= j for _ in range(count)]
    # ways[(drawn, tied)]: draws from the contenders so far with `drawn` rollouts in all and `tied` answers drawn
    # exactly j times. Kept sparse: most pairs cannot happen (each tie takes j rollouts).
    ways: dict[tuple[int, int], int] = {(0, 0): 1}
    for size in contenders:
        ways = _with_contender(ways, size, j, rest)
    return sum(count * comb(free, rest - drawn) * (ties // (tied + 1)) for (drawn, tied), count in ways.items())


def _with_contender(ways: dict[tuple[int, int], int], size: int, j: int, rest: int) -> dict[tuple[int, int], int]:
    """`ways` after one more answer with `size` rollouts, drawn fewer than j times or exactly j times (a tie)."""
    below = [comb(size, i) for i in range(j)]
    at_j = comb(size, j)
    grown: dict[tuple[int, int], int] = {}
    for (drawn, tied), count in ways.items():
        for i, choose in enumerate(below[: rest - drawn + 1]):
            key = (drawn + i, tied)
            grown[key] = grown.get(key, 0) + count * choose
        if drawn + j <= rest:
            key = (drawn + j, tied + 1)
            grown[key] = grown.get(key, 0) + count * at_j
    return grown


def _check(n: int, k: int) -> None:
    if not 1 <= k <= n:
        raise ValueError(f"k must be between 1 and the number of rollouts n={n}, got {k}")
