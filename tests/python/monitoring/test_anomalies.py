"""Anomaly detection on a run's values (pure): median and MAD over the same series' earlier
runs, the value under test never in its own baseline, earlier anomalies never in later ones."""

from __future__ import annotations

from mediapulse.monitoring.anomalies import (
    EXECUTION_TIME,
    MIN_BASELINE,
    ROWS_ADDED,
    WINDOW,
    judge,
    judge_series,
)

NORMAL_DAYS = [2398.0, 2350.0, 3087.0, 3285.0, 2782.0, 2774.0]


def test_a_normal_day_is_not_flagged_and_a_tenfold_or_empty_day_is() -> None:
    assert not judge(2169.0, NORMAL_DAYS, ROWS_ADDED).is_anomaly
    spike = judge(10 * 2500.0, NORMAL_DAYS, ROWS_ADDED)
    assert spike.is_anomaly and spike.direction == "up"
    empty = judge(0.0, NORMAL_DAYS, ROWS_ADDED)
    assert empty.is_anomaly and empty.direction == "down"


def test_the_value_under_test_is_not_part_of_its_own_baseline() -> None:
    verdict = judge(25_000.0, NORMAL_DAYS, ROWS_ADDED)
    assert verdict.baseline_n == len(NORMAL_DAYS)
    assert verdict.median == sorted(NORMAL_DAYS)[2] / 2 + sorted(NORMAL_DAYS)[3] / 2


def test_earlier_anomalies_stay_out_of_later_baselines() -> None:
    # two duplicated days in a row, then a lost day: with the first spike in the baseline the
    # second would widen it; both stay out, and the lost day is judged against normal days
    series = [(f"r{i}", v) for i, v in enumerate([*NORMAL_DAYS, 25_000.0, 26_000.0, 0.0, 2600.0])]
    verdicts = judge_series(series, ROWS_ADDED)
    assert [v.is_anomaly for v in verdicts[len(NORMAL_DAYS) :]] == [True, True, True, False]
    assert all(v.baseline_n == len(NORMAL_DAYS) for v in verdicts[len(NORMAL_DAYS) :])
    assert verdicts[-1].median == verdicts[len(NORMAL_DAYS)].median


def test_a_series_too_short_is_not_judged() -> None:
    verdict = judge(1e9, [1.0] * (MIN_BASELINE - 1), ROWS_ADDED)
    assert not verdict.is_anomaly and verdict.score is None


def test_the_baseline_is_the_trailing_window() -> None:
    old, recent = [10_000.0] * 20, [100.0] * WINDOW
    assert judge(100.0, old + recent, ROWS_ADDED).median == 100.0


def test_a_steady_series_tolerates_noise_but_not_a_tripled_time() -> None:
    steady = [1.0] * 8  # MAD 0: the floors give the spread
    assert not judge(1.08, steady, EXECUTION_TIME).is_anomaly
    assert judge(3.0, steady, EXECUTION_TIME).is_anomaly
    # faster is never trouble; a model under a quarter of a second is clock noise
    assert not judge(0.1, steady, EXECUTION_TIME).is_anomaly
    assert not judge(0.3, [0.1] * 8, EXECUTION_TIME).is_anomaly


def test_a_small_count_is_judged_with_its_counting_noise() -> None:
    # 26 sessions a day, give or take 3: 14 is a quiet day of a small table (sqrt(26) ~ 5),
    # not an incident; zero is
    days = [27.0, 32.0, 21.0, 26.0, 23.0, 26.0]
    assert not judge(14.0, days, ROWS_ADDED).is_anomaly
    assert judge(0.0, days, ROWS_ADDED).is_anomaly
