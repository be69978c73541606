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
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

WINDOW = 14  # earlier values a baseline holds at most
MIN_BASELINE = 5  # fewer earlier values: not judged (a new series has no normal yet)
THRESHOLD = 3.5  # robust z-score beyond which a value is anomalous
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
    relative_floor=0.10,
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


@dataclass(frozen=True)
class Verdict:
    value: float
    baseline_n: int
    median: float | None
    mad: float | None
    score: float | None  # robust z-score; None when not judged
    is_anomaly: bool

    @property
    def direction(self) -> str | None:
        if self.score is None or not self.is_anomaly:
            return None
        return "up" if self.score > 0 else "down"


def judge(value: float, baseline: Sequence[float], metric: Metric) -> Verdict:
    """``value`` against ``baseline`` (the earlier, non-anomalous values, newest last)."""
    window = list(baseline)[-WINDOW:]
    if len(window) < MIN_BASELINE:
        return Verdict(value, len(window), None, None, None, False)
    median = statistics.median(window)
    mad = statistics.median(abs(v - median) for v in window)
    spread = max(
        MAD_TO_SIGMA * mad,
        metric.relative_floor * abs(median),
        metric.absolute_floor,
        math.sqrt(abs(median)) if metric.counting else 0.0,
    )
    score = (value - median) / spread
    trouble = ("up" in metric.directions and score > THRESHOLD) or (
        "down" in metric.directions and score < -THRESHOLD
    )
    return Verdict(value, len(window), median, mad, round(score, 3), trouble)


@dataclass(frozen=True)
class Point:
    """One value of a series, as the history holds it."""

    run_id: str
    value: float
    is_anomaly: bool = False


def judge_latest(history: Iterable[Point], value: float, metric: Metric) -> Verdict:
    """``value`` (the newest run's) against the series' earlier points, in run order, leaving
    out the points flagged before."""
    baseline = [p.value for p in history if not p.is_anomaly]
    return judge(value, baseline, metric)


def judge_series(values: Sequence[tuple[str, float]], metric: Metric) -> list[Verdict]:
    """Every value of a series in run order, each against the non-anomalous values before it
    (what recording run by run gives)."""
    verdicts: list[Verdict] = []
    baseline: list[float] = []
    for _run_id, value in values:
        verdict = judge(value, baseline, metric)
        verdicts.append(verdict)
        if not verdict.is_anomaly:
            baseline.append(value)
    return verdicts
