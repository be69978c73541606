"""Anomaly detection on a run's values (pure): median and MAD over the same series' earlier
runs, the value under test never in its own baseline, earlier anomalies never in later ones."""

from __future__ import annotations

from dataclasses import replace
from datetime import datetime, timedelta

from mediapulse.monitoring.anomalies import (
    EXECUTION_TIME,
    MIN_BASELINE,
    ROWS_ADDED,
    WINDOW,
    Point,
    Settings,
    judge,
    judge_point,
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
    # issue 30: a 1-s model at 3 s is a shared runner's noise by default (min_seconds 30);
    # a model tuned to care about seconds is still flagged
    assert not judge(3.0, steady, EXECUTION_TIME).is_anomaly
    assert judge(3.0, steady, EXECUTION_TIME, Settings(min_seconds=1)).is_anomaly
    # faster is never trouble; a model under a quarter of a second is clock noise
    assert not judge(0.1, steady, EXECUTION_TIME).is_anomaly
    assert not judge(0.3, [0.1] * 8, EXECUTION_TIME).is_anomaly


def test_a_small_count_is_judged_with_its_counting_noise() -> None:
    # 26 sessions a day, give or take 3: 14 is a quiet day of a small table (sqrt(26) ~ 5),
    # not an incident; zero is
    days = [27.0, 32.0, 21.0, 26.0, 23.0, 26.0]
    assert not judge(14.0, days, ROWS_ADDED).is_anomaly
    assert judge(0.0, days, ROWS_ADDED).is_anomaly


# -- issue 30: the calendar, the minimum effect, level shifts ----------------------------------

MONDAY = datetime(2026, 3, 2, 2, 0)


def _days(values: list[float], start: datetime = MONDAY) -> list[Point]:
    return [Point(f"r{i}", v, False, start + timedelta(days=i), "normal") for i, v in
            enumerate(values)]  # fmt: skip


def test_a_weekend_is_judged_against_weekends() -> None:
    # three weeks of weekdays at 1000 and weekends at 2000: a Saturday of 2000 is normal,
    # a Saturday of 1000 (a weekday's volume) is not
    week = [1000.0] * 5 + [2000.0] * 2
    history = _days(week * 3)
    saturday = MONDAY + timedelta(days=21 + 5)
    assert not judge_point(2000.0, saturday, history, ROWS_ADDED).is_anomaly
    assert judge_point(1000.0, saturday, history, ROWS_ADDED).is_anomaly
    # with no calendar, the weekend is a spike (what the detector said before)
    assert judge(2000.0, [p.value for p in history], ROWS_ADDED).is_anomaly


def test_a_monthly_model_is_not_judged_on_a_month_start_until_it_has_two() -> None:
    monthly = Settings(seasonality="monthly")
    days = _days([1.0] * 40, datetime(2026, 1, 5, 2, 0))  # Jan 5 to Feb 13, Feb 1 adds 1500
    days = [replace(p, value=1500.0) if p.at.day == 1 else p for p in days]
    verdict = judge_point(1544.0, datetime(2026, 3, 1, 2, 0), days, ROWS_ADDED, monthly)
    assert verdict.status == "too_short" and not verdict.is_anomaly
    assert "day 1 of a month: 1 earlier of 2" in verdict.reason
    # the same month start on a daily model is a spike
    assert judge_point(1544.0, datetime(2026, 3, 1, 2, 0), days, ROWS_ADDED).is_anomaly


def test_a_level_shift_alerts_once_then_becomes_the_new_normal() -> None:
    series = [(f"r{i}", 1000.0 + (i % 3) * 10) for i in range(10)] + [
        (f"s{i}", 1500.0 + (i % 3) * 10) for i in range(6)
    ]
    verdicts = judge_series(series, ROWS_ADDED, Settings())
    assert [v.status for v in verdicts[10:]] == [
        "anomaly", "persisting", "accepted", "normal", "normal", "normal",
    ]  # fmt: skip
    # marked an incident, or never accepted: it stays an anomaly
    never = judge_series(series, ROWS_ADDED, Settings(accept_shift_after=0))
    assert [v.status for v in never[10:]] == ["anomaly"] + ["persisting"] * 5


def test_a_repeated_tenfold_day_or_a_dead_source_is_never_the_new_normal() -> None:
    tenfold = [(f"r{i}", 1000.0) for i in range(10)] + [(f"t{i}", 10_000.0) for i in range(5)]
    assert all(v.is_anomaly for v in judge_series(tenfold, ROWS_ADDED, Settings())[10:])
    dead = [(f"r{i}", 1000.0) for i in range(10)] + [(f"t{i}", 0.0) for i in range(5)]
    assert all(v.is_anomaly for v in judge_series(dead, ROWS_ADDED, Settings())[10:])


def test_a_shift_day_just_under_the_threshold_does_not_end_it_nor_make_a_second_alert() -> None:
    # the labelled history's +30 % launch: its third day scored 3.4 (a quiet weekday), which
    # ended the run, and the fourth was a second alert
    normal = [(f"r{i}", 1000.0 + (i % 3) * 10) for i in range(10)]
    shift = [("s0", 1300.0), ("s1", 1290.0), ("s2", 1185.0), ("s3", 1300.0), ("s4", 1295.0)]
    verdicts = judge_series(normal + shift, ROWS_ADDED, Settings())
    assert verdicts[12].score is not None and verdicts[12].score < 3.5  # under, on its own
    assert [v.status for v in verdicts[10:]] == [
        "anomaly", "persisting", "accepted", "normal", "normal",
    ]  # fmt: skip
    # a day back at the old level ends it: normal, and no shift is accepted
    back = judge_series([*normal, ("s0", 1300.0), ("b", 1010.0), ("s2", 1300.0)], ROWS_ADDED,
                        Settings())  # fmt: skip
    assert [v.status for v in back[10:]] == ["anomaly", "normal", "anomaly"]


def test_a_shift_day_well_below_the_shifts_level_but_above_half_the_threshold_continues_it() -> (
    None
):
    # the labelled history's launch on another calendar: lifts of 1.43 and 1.36, then a day at
    # 1.19 that scored 2.75; it ended the run (normal) and the next day was a second alert
    normal = [1000.0, 930.0, 1070.0, 960.0, 1040.0, 1000.0, 950.0, 1050.0, 990.0, 1010.0]
    shift = [1430.0, 1360.0, 1190.0, 1300.0, 1350.0]
    verdicts = judge_series([(f"r{i}", v) for i, v in enumerate(normal + shift)], ROWS_ADDED,
                            Settings())  # fmt: skip
    assert 1.75 < (verdicts[12].score or 0) < 3.5
    assert [v.status for v in verdicts[10:]] == [
        "anomaly", "persisting", "accepted", "normal", "normal",
    ]  # fmt: skip
    # a quiet day (1.10 against the run's 1.43) between two at its level: the same incident
    dip = [1430.0, 1360.0, 1100.0, 1300.0, 1350.0, 1400.0]
    verdicts = judge_series([(f"r{i}", v) for i, v in enumerate(normal + dip)], ROWS_ADDED,
                            Settings())  # fmt: skip
    assert [v.status for v in verdicts[10:]] == [
        "anomaly", "persisting", "normal", "accepted", "normal", "normal",
    ]  # fmt: skip
    # but a day back at the old level, or two quiet days, end it: the next is a new alert
    for quiet in ([1020.0], [1100.0, 1100.0]):
        verdicts = judge_series([(f"r{i}", v) for i, v in enumerate([*normal, 1430.0, 1360.0,
                                 *quiet, 1300.0])], ROWS_ADDED, Settings())  # fmt: skip
        assert verdicts[-1].status == "anomaly", quiet


# a week of a streaming service: viewers by weekday, Monday first (the labelled history's)
WEEKDAY_SHARE = (0.74, 0.72, 0.74, 0.78, 0.88, 1.0, 0.96)


def _record(values: list[float], start: datetime) -> list[Point]:
    """Each value judged against the points before it, with its run's time, as the run
    history records them night by night."""
    points: list[Point] = []
    for i, value in enumerate(values):
        at = start + timedelta(days=i)
        v = judge_point(value, at, points, ROWS_ADDED, Settings())
        points.append(Point(f"r{i}", value, v.is_anomaly, at, v.status, v.score, v.median))
    return points


def test_a_level_shift_on_a_weekly_calendar_is_accepted_whatever_weekday_it_starts() -> None:
    # a +30 % launch that starts on a Friday: its Monday, at 0.74 x 1.3 of a Saturday's level,
    # is a quarter below the shift's first days, so it read as the end of the shift (normal),
    # and Tuesday as a second alert; the level is the value against its weekday's normal
    for first in range(7):
        start = MONDAY - timedelta(days=35 + first)
        share = [WEEKDAY_SHARE[(start + timedelta(days=i)).weekday()] for i in range(35 + 14)]
        days = [30_000 * s * (1 + 0.01 * (i % 3 - 1)) for i, s in enumerate(share)]
        days[35:] = [v * 1.3 for v in days[35:]]
        statuses = [p.status for p in _record(days, start)[35:]]
        assert statuses[:3] == ["anomaly", "persisting", "accepted"], (first, statuses)
        assert set(statuses[3:]) == {"normal"}, (first, statuses)
