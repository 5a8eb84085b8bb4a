"""Processes that carry rollouts collect their young generation less often; the older generations keep theirs."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from nemo_gym.servers.gc_tuning import YOUNG_GENERATION_THRESHOLD, tune_for_many_in_flight


@pytest.fixture
def restored_thresholds() -> Iterator[tuple[int, int, int]]:
    before = gc.get_threshold()
    yield before
    gc.set_threshold(*before)


def test_the_young_threshold_is_raised_and_the_older_ones_are_kept(restored_thresholds: tuple[int, int, int]) -> None:
    gc.set_threshold(700, 7, 9)
    tune_for_many_in_flight()
    tune_for_many_in_flight()
    assert gc.get_threshold() == (YOUNG_GENERATION_THRESHOLD, 7, 9)
    assert YOUNG_GENERATION_THRESHOLD > 700 and gc.isenabled()
