"""`mediapulse bench`'s detector step: the labelled history's size at each scale."""

from __future__ import annotations

import pytest

from mediapulse.bench import detector

pytestmark = pytest.mark.reads()


# the watch events `--scale 1M`, `10M` and `50M` load (bench/results*.json)
@pytest.mark.parametrize("events", [910_466, 9_938_462, 50_707_812])
def test_every_benchmark_scale_judges_at_least_make_tests_accounts(events: int) -> None:
    # 1M loads 910,466 events: under a million, it was taken for the benchmark's own smoke
    # test and judged 337 accounts, where a day's events vary too much to tell a partial day
    assert detector.plan_for(events, 90).users >= detector.MIN_USERS


def test_the_benchmarks_own_tests_run_a_small_history() -> None:
    assert detector.plan_for(20_000, 10).users == detector.SMOKE_USERS


def test_the_largest_history_is_bounded() -> None:
    assert detector.plan_for(500_000_000, 90).users == detector.MAX_USERS
