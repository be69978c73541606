"""Anomalies in a run's row counts and execution times, against the runs before it (pure).

Each new value is judged against a trailing window of earlier values of the same series
(the same relation's rows added by the same job; the same model's execution time in the same
job), with robust statistics: the median, and the median absolute deviation (MAD) scaled to a
standard deviation. Two rules the well-known implementations get wrong (Elementary's issues
#1560 and #980):

- the value under test is never part of its own baseline (a spike would widen the band that
  should catch it);
- a value once flagged stays out of every later baseline (a day of duplicates would otherwise
  make the next duplicated day look normal, and a lost day would drag the median down).

Values are judged in the order the runs happened, so the verdicts are the same whether the
history is recorded run by run or loaded at once.

On top of that (``judge_point``, what the run history uses), the calendar and the size of an
effect, each settable per model or source (``Settings``, from its YAML `meta`, module tuning):

- **seasonality**: a count is compared with the same weekday's earlier values (weekly, the
  default), and a model whose grain is a month (``monthly``) has its first week of a month
  compared only with the same days of earlier months (not judged before two of them);
- **minimum effect**: a value must also differ from the normal by ``min_rows`` rows or
  ``min_seconds`` seconds (a 1-s model taking 3 s on a shared runner is not an incident);
- **level shifts**: a value off the normal in the same direction and at the same level as the
  anomaly before it is the same incident (``persisting``, not a new alert); the
  ``accept_shift_after``-th such run is the new normal (``accepted``): the earlier values are
  re-scaled to the new level. A level is a lift (value over the normal it was judged against),
  so a weekly calendar's busy and quiet days of one shift are at one level; one quiet run inside
  a shift does not end it (``GAP``). A drop to zero, or a change beyond half or double, is
  never accepted; ``accept_shift_after: 0`` never accepts one.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

WINDOW = 14  # earlier values a baseline holds at most (no seasonality)
SEASONAL_WINDOW = 35  # weekly: five weeks, so each weekday has up to five values
MONTHLY_LOOKBACK_DAYS = 200  # monthly: the month starts of about six months
# monthly: days 1-7 of a month are judged against the same days before. A week, not three
# days: revenue_by_content's rows (a month and a title) keep coming while people first watch
# titles in the new month (96, 22, 3, 3, 1 on days 2-6 of the labelled history's November; 9
# and 5 against 0 on days 4 and 5 were false alarms at 3 days)
MONTH_START_DAYS = 7
MIN_MONTH_STARTS = 2  # monthly: earlier month starts needed to judge one
MIN_WEEK = 7  # weekly: a full week of earlier values before judging
# an open anomaly goes on with a value on its side within a quarter of its level (a lift of
# 1.19 against 1.39) that still scores half the threshold: a shift's quiet day is not its end
SAME_LEVEL = 1.25
HOLD = 0.5
GAP = 1  # quiet runs (a spread or more on its side) an open anomaly survives inside it
SHIFT_LIMIT = 2.0  # a level shift is accepted only within half to double the old level
MIN_BASELINE = 5  # fewer earlier values: not judged (a new series has no normal yet)
THRESHOLD = 3.5  # robust z-score beyond which a value is anomalous (``sensitivity``)
MAD_TO_SIGMA = 1.4826  # MAD of a normal distribution times this is its standard deviation


@dataclass(frozen=True)
class Metric:
    """What is measured, and the smallest spread its noise is assumed to have: a series that
    never moved (MAD 0) would otherwise flag any change, however small."""

    name: str
    relative_floor: float  # share of the median
    absolute_floor: float  # in the metric's unit
    directions: tuple[str, ...]  # which way is trouble: "up", "down"
    # a count of events: its noise is at least a Poisson process's, sqrt(median) (a few
    # baseline days of a small table say little about how much a count varies)
    counting: bool = False


ROWS_ADDED = Metric(
    "rows_added",
    relative_floor=0.05,
    absolute_floor=1.0,
    directions=("up", "down"),
    counting=True,
)
# a model slower than usual is trouble, a faster one is not; below a quarter of a second the
# clock of a shared CI runner is noise
EXECUTION_TIME = Metric(
    "execution_time_s", relative_floor=0.10, absolute_floor=0.25, directions=("up",)
)
METRICS = {m.name: m for m in (ROWS_ADDED, EXECUTION_TIME)}


SEASONALITIES = ("weekly", "monthly", "none")
STATUSES = ("normal", "anomaly", "persisting", "accepted", "too_short")


@dataclass(frozen=True)
class Settings:
    """How one model's or source's series are judged (its YAML `meta`, module tuning)."""

    sensitivity: float = THRESHOLD  # robust z-score beyond which a value is anomalous
    min_rows: float = 0.0  # rows added: the smallest difference worth an alert
    min_seconds: float = 30.0  # execution time: the smallest slow-down worth an alert
    seasonality: str = "weekly"  # rows added: weekly, monthly or none
    accept_shift_after: int = 3  # runs of a level shift before it is the new normal; 0: never

    def min_effect(self, metric: Metric) -> float:
        return self.min_rows if metric.counting else self.min_seconds


DEFAULT = Settings()


@dataclass(frozen=True)
class Verdict:
    value: float
    baseline_n: int
    median: float | None
    mad: float | None
    score: float | None  # robust z-score; None when not judged
    is_anomaly: bool
    status: str = "normal"  # one of STATUSES
    reason: str | None = None  # why a value was not judged, or was judged as it was

    @property
    def direction(self) -> str | None:
        if self.score is None or not self.is_anomaly:
            return None
        return "up" if self.score > 0 else "down"


def _spread(median: float, mad: float, metric: Metric, n: int = 0) -> float:
    """The spread a value is judged in: the baseline's (its MAD), or at least the floors. The
    floors are one value's noise; a value is compared with the median of ``n`` others, which
    has noise of its own (sqrt(pi / 2n) of one value's): with three Thursdays in the baseline
    the 5 % floor let a +17 % Thursday of ad impressions through as 3.52 at the bench's scale."""
    baseline_noise = math.sqrt(1 + math.pi / (2 * n)) if n > 0 else 1.0
    return max(
        MAD_TO_SIGMA * mad,
        baseline_noise * metric.relative_floor * abs(median),
        metric.absolute_floor,
        baseline_noise * math.sqrt(abs(median)) if metric.counting else 0.0,
    )


def _verdict(
    value: float, n: int, median: float, mad: float, metric: Metric, settings: Settings
) -> Verdict:
    score = (value - median) / _spread(median, mad, metric, n)
    big_enough = abs(value - median) >= settings.min_effect(metric)
    trouble = big_enough and (
        ("up" in metric.directions and score > settings.sensitivity)
        or ("down" in metric.directions and score < -settings.sensitivity)
    )
    reason = None
    if not big_enough and abs(score) > settings.sensitivity:
        reason = f"below the minimum effect ({settings.min_effect(metric):g})"
    return Verdict(value, n, median, mad, round(score, 3), trouble,
                   "anomaly" if trouble else "normal", reason)  # fmt: skip


def judge(
    value: float, baseline: Sequence[float], metric: Metric, settings: Settings = DEFAULT
) -> Verdict:
    """``value`` against ``baseline`` (the earlier, non-anomalous values, newest last), with
    no calendar."""
    window = list(baseline)[-WINDOW:]
    if len(window) < MIN_BASELINE:
        return _too_short(value, len(window), f"{len(window)} earlier values of {MIN_BASELINE}")
    median = statistics.median(window)
    mad = statistics.median(abs(v - median) for v in window)
    return _verdict(value, len(window), median, mad, metric, settings)


def _too_short(value: float, n: int, why: str) -> Verdict:
    return Verdict(value, n, None, None, None, False, "too_short", f"history too short: {why}")


@dataclass(frozen=True)
class Point:
    """One value of a series, as the history holds it."""

    run_id: str
    value: float
    is_anomaly: bool = False
    at: datetime | None = None  # when its run started
    status: str | None = None
    score: float | None = None
    median: float | None = None  # the normal it was judged against (its weekday's, if weekly)


def judge_latest(history: Iterable[Point], value: float, metric: Metric) -> Verdict:
    """``value`` (the newest run's) against the series' earlier points, in run order, leaving
    out the points flagged before (no calendar)."""
    baseline = [p.value for p in history if not p.is_anomaly]
    return judge(value, baseline, metric)


def judge_series(
    values: Sequence[tuple[str, float]], metric: Metric, settings: Settings | None = None
) -> list[Verdict]:
    """Every value of a series in run order, each against the points before it (what
    recording run by run gives). Without times: no calendar; ``settings`` None: the
    original rules (no level shifts either)."""
    verdicts: list[Verdict] = []
    points: list[Point] = []
    for run_id, value in values:
        if settings is None:
            verdict = judge(value, [p.value for p in points if not p.is_anomaly], metric)
        else:
            verdict = judge_point(
                value, None, points, metric, replace(settings, seasonality="none")
            )
        verdicts.append(verdict)
        points.append(Point(run_id, value, verdict.is_anomaly, None, verdict.status,
                            verdict.score, verdict.median))  # fmt: skip
    return verdicts


# -- the calendar and level shifts ------------------------------------------------------------


def _rescaled(history: Sequence[Point]) -> tuple[list[Point], list[Point]]:
    """(the normal points, in order, with every level shift accepted so far applied: the points
    before it scaled to the new level, the shift's own run of points taken as normal; the
    anomalies of the incident the series ends with, in one direction). An incident survives
    ``GAP`` quiet runs on its side between two of its anomalies at its level (a +30 % launch
    whose third day read 1.10 against its first two days' 1.33, on a noisy weekday's normal)."""
    normal: list[Point] = []
    pending: list[Point] = []  # the run of anomalies in one direction before this point
    bridged: list[str] = []  # the quiet runs inside it: at its level already, not re-scaled
    quiet = 0  # quiet runs since its last anomaly
    for point in history:
        if point.status == "accepted":
            block = [*pending, point]
            ratio = _lift(block)
            if ratio is None:
                before = [p.value for p in normal[-WINDOW:]]
                old = statistics.median(before) if before else 0.0
                ratio = statistics.median(p.value for p in block) / old if old else 1.0
            normal = [p if p.run_id in bridged else replace(p, value=p.value * ratio)
                      for p in normal]  # fmt: skip
            normal += [replace(p, is_anomaly=False) for p in block]
            pending, bridged, quiet = [], [], 0
        elif point.is_anomaly:
            same_way = pending and (pending[-1].score or 0) * (point.score or 0) > 0
            ratio = _against_run(point.value, point.median, pending) if quiet else 1.0
            if same_way and ratio is not None and abs(math.log(ratio)) <= math.log(SAME_LEVEL):
                pending = [*pending, point]
            else:
                pending, bridged = [point], []
            quiet = 0
        else:
            normal.append(point)
            # a spread or more off the normal on its side: not a day back at the old level
            on_its_side = pending and (pending[-1].score or 0) * (point.score or 0) > 0
            if on_its_side and abs(point.score or 0) >= 1.0 and quiet < GAP:
                bridged.append(point.run_id)
                quiet += 1
            else:
                pending, bridged, quiet = [], [], 0
    return normal, pending


def _lift(points: Sequence[Point]) -> float | None:
    """The points' level as a share of their normal (the median of value / the median each
    was judged against), or None where one was not judged: under a weekly calendar a shift's
    Saturday and Monday differ by a quarter in rows, not in lift."""
    if not points or any(not p.median or p.median <= 0 for p in points):
        return None
    return statistics.median(p.value / (p.median or 1.0) for p in points)


def _against_run(value: float, median: float | None, run: list[Point]) -> float | None:
    """``value`` (judged against ``median``) over the open run's level: both as lifts over
    their own normal where the run has them, else both in rows; None for a zero."""
    lift = _lift(run)
    if lift is not None and median:
        value, level = value / median, lift
    else:
        level = statistics.median(p.value for p in run) if run else 0.0
    return value / level if value > 0 and level > 0 else None


def _monthly_day(at: datetime | None, settings: Settings) -> int | None:
    if settings.seasonality != "monthly" or at is None or at.day > MONTH_START_DAYS:
        return None
    return at.day


def _seasonal_baseline(
    at: datetime | None, normal: list[Point], metric: Metric, settings: Settings
) -> tuple[list[float], list[float], str | None]:
    """(values to take the median of, residuals to take the spread of, or a reason it is too
    short) for a value at ``at``."""
    seasonality = settings.seasonality if metric.counting and at is not None else "none"
    day = _monthly_day(at, settings)
    if day is not None:
        same = [p.value for p in normal if p.at and p.at.day == day
                and (at - p.at).days <= MONTHLY_LOOKBACK_DAYS]  # fmt: skip
        if len(same) < MIN_MONTH_STARTS:
            return [], [], f"day {day} of a month: {len(same)} earlier of {MIN_MONTH_STARTS}"
        median = statistics.median(same)
        return same, [v - median for v in same], None
    if seasonality == "monthly":
        normal = [p for p in normal if p.at is None or p.at.day > MONTH_START_DAYS]
    if seasonality == "none":
        window = [p.value for p in normal[-WINDOW:]]
        if len(window) < MIN_BASELINE:
            return [], [], f"{len(window)} earlier values of {MIN_BASELINE}"
        median = statistics.median(window)
        return window, [v - median for v in window], None
    window_points = normal[-SEASONAL_WINDOW:]
    if len(window_points) < MIN_WEEK:
        return [], [], f"{len(window_points)} earlier runs of a week ({MIN_WEEK})"
    by_day: dict[int, list[float]] = {}
    for p in window_points:
        by_day.setdefault(p.at.weekday() if p.at else -1, []).append(p.value)
    same = by_day.get(at.weekday(), []) if at else []
    values = same or [p.value for p in window_points]
    # each value against the median of its weekday's *other* values: how far a new value
    # falls from such a median (a value's own group median is pulled towards it, and the
    # spread taken from it was about a quarter too narrow: false alarms at 3.7 on the
    # labelled history's ad impressions)
    residuals = [
        v - statistics.median(vs[:i] + vs[i + 1 :])
        for vs in by_day.values() if len(vs) > 1 for i, v in enumerate(vs)
    ]  # fmt: skip
    if len(residuals) < MIN_BASELINE:
        median = statistics.median(p.value for p in window_points)
        residuals = [p.value - median for p in window_points]
    return values, residuals, None


def judge_point(
    value: float,
    at: datetime | None,
    history: Sequence[Point],
    metric: Metric,
    settings: Settings = DEFAULT,
    marked: bool = False,
) -> Verdict:
    """``value``, measured by a run that started ``at``, against the series' earlier points
    (in run order, with their verdicts): the calendar, the minimum effect, level shifts.
    ``marked``: someone marked the series' current anomaly an incident (never accepted)."""
    normal, run = _rescaled(history)
    values, residuals, short = _seasonal_baseline(at, normal, metric, settings)
    if short is not None:
        return _too_short(value, len(values), short)
    median = statistics.median(values)
    mad = statistics.median(abs(r) for r in residuals)
    verdict = _verdict(value, len(values), median, mad, metric, settings)
    if not verdict.is_anomaly and not _at_level(verdict, run, settings):
        return verdict
    return _continued(verdict, run, settings, marked)


def _at_level(verdict: Verdict, run: list[Point], settings: Settings) -> bool:
    """A value under the threshold that still belongs to an open anomaly, on its side of the
    normal: at the run's level, or within a quarter of it and still scoring ``HOLD`` of the
    threshold (a +30 % shift on a quiet weekday scored 3.4, and on another calendar a day of it
    2.75 at a lift of 1.19 against the run's 1.39: each ended the run, and the next day was a
    second alert)."""
    if not run or verdict.median is None:
        return False
    ratio = _against_run(verdict.value, verdict.median, run)
    same_side = (verdict.value - verdict.median) * (run[-1].score or 0) > 0
    if ratio is None or not same_side:
        return False
    holds = abs(verdict.score or 0) >= HOLD * settings.sensitivity
    return abs(math.log(ratio)) <= math.log(1.1 if not holds else SAME_LEVEL)


def _continued(verdict: Verdict, run: list[Point], settings: Settings, marked: bool) -> Verdict:
    """An anomaly after others in the same direction and at the same level: the same incident
    (``persisting``), or the new normal once it has lasted ``accept_shift_after`` runs."""
    if not run or (run[-1].score or 0) * (verdict.score or 0) <= 0:
        return verdict
    ratio = _against_run(verdict.value, verdict.median, run)
    if ratio is None or abs(math.log(ratio)) > math.log(SAME_LEVEL):
        return verdict  # another level: another incident (or, under the threshold, normal)
    old = verdict.median or 0.0
    acceptable = (
        settings.accept_shift_after > 0 and not marked and old > 0 and verdict.value > 0
        and abs(math.log(verdict.value / old)) <= math.log(SHIFT_LIMIT)
    )  # fmt: skip
    if acceptable and len(run) + 1 >= settings.accept_shift_after:
        return replace(verdict, is_anomaly=False, status="accepted",
                       reason=f"level shift of {len(run) + 1} runs: the new normal")  # fmt: skip
    return replace(verdict, is_anomaly=True, status="persisting",
                   reason="the anomaly before, still going on")  # fmt: skip
