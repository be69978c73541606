"""Incidents, not runs: consecutive anomalous runs of one relation's metric are one incident.

An hourly refresh that finds the same lost load as the hour before must not page again. Each
anomaly (module anomalies' verdicts, table `monitoring.anomalies`) belongs to the incident of
its series, keyed by (target, relation's unique id, metric). What a run does to it follows the
verdict's `status` (module anomalies): only a new anomaly (`anomaly`) alerts; a level shift's
follow-up values (`persisting`) keep `is_anomaly` true but are the incident going on:

- **opened**: a new anomaly and no open incident; alerted once (page or ticket);
- **worsened**: a new anomaly (another level than the one before) with a score at least WORSEN
  times the one last alerted (same direction); alerted again, as an update;
- **ongoing**: a new anomaly not worse, or the shift before still going on; nothing is sent;
- **resolved**: the series is judged back in its band (`normal`); a "resolved" message goes to
  the channel the incident was sent to;
- **superseded**: a new anomaly the other way (a lost day after a doubled one) is another
  incident: it is opened and alerted, the one before closed without a message of its own;
- **accepted**: the level shift lasted long enough to be the new normal (`accepted`; never for
  a series someone marked an incident, `history.mark_incident`): the incident is closed with
  a message saying so, in the same channel.

A run that does not judge a series (the model was not rebuilt, a skipped refresh) leaves its
incident as it is. Incidents and what each run did to them (table `monitoring.incident_events`)
are kept in the history, beside the runs; `mediapulse alert` advances them once per run (a run
alerted again finds its events and sends the same messages, changing nothing), and the
morning report lists the open ones and those resolved in the last day.

`advance` is pure; `load` and `save` are the I/O around it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from mediapulse.engines.base import Engine
from mediapulse.monitoring import ledger

OPENED, WORSENED, ONGOING, RESOLVED = "opened", "worsened", "ongoing", "resolved"
ACCEPTED = "accepted"  # closed: the level shift is the new normal
SUPERSEDED = "superseded"  # closed: a new anomaly the other way opened another incident
CLOSING = (RESOLVED, ACCEPTED)
# module anomalies' verdict statuses (monitoring.anomalies.status)
NEW, PERSISTING, NORMAL, NEW_NORMAL = "anomaly", "persisting", "normal", "accepted"
OPEN, CLOSED = "open", "resolved"
WORSEN = 1.5  # a score this many times the last alerted one (same sign) is worth an update
RECENT = timedelta(days=1)  # resolved incidents the morning report lists

INCIDENTS = "incidents"
EVENTS = "incident_events"
TABLES: dict[str, ledger.Columns] = {
    INCIDENTS: (
        ("incident_id", "varchar"),
        ("target", "varchar"),
        ("unique_id", "varchar"),
        ("metric", "varchar"),
        ("job", "varchar"),
        ("status", "varchar"),
        ("tier", "varchar"),
        ("expected", "boolean"),
        ("cause", "varchar"),
        ("release_id", "varchar"),
        ("opened_run_id", "varchar"),
        ("opened_at", "timestamp"),
        ("last_run_id", "varchar"),
        ("last_at", "timestamp"),
        ("peak_score", "double precision"),
        ("peak_value", "double precision"),
        ("alerted_score", "double precision"),
        ("resolved_run_id", "varchar"),
        ("resolved_at", "timestamp"),
        ("resolution", "varchar"),  # RESOLVED, ACCEPTED or SUPERSEDED, once closed
    ),
    EVENTS: (
        ("run_id", "varchar"),
        ("incident_id", "varchar"),
        ("event", "varchar"),
        ("value", "double precision"),
        ("score", "double precision"),
        ("recorded_at", "timestamp"),
    ),
}


@dataclass(frozen=True)
class Judged:
    """One series' verdict in a run (a row of `monitoring.anomalies`)."""

    unique_id: str
    metric: str
    value: float
    median: float | None
    score: float | None  # None: not judged (too short a baseline)
    is_anomaly: bool
    status: str | None = None  # module anomalies' status; None: a history from before it

    @property
    def verdict(self) -> str:
        """The status, or what `is_anomaly` alone said before there was one."""
        return self.status or (NEW if self.is_anomaly else NORMAL)

    @property
    def deviation(self) -> float | None:
        return None if self.median is None else self.value - self.median


@dataclass(frozen=True)
class Incident:
    incident_id: str
    target: str
    unique_id: str
    metric: str
    job: str
    status: str
    opened_run_id: str
    opened_at: datetime
    last_run_id: str
    last_at: datetime
    peak_score: float
    peak_value: float
    alerted_score: float
    tier: str | None = None  # set by the alert that opened it (module alerts)
    expected: bool = False
    cause: str = ""
    release_id: str | None = None
    resolved_run_id: str | None = None
    resolved_at: datetime | None = None
    resolution: str | None = None  # RESOLVED, ACCEPTED or SUPERSEDED

    @property
    def key(self) -> tuple[str, str]:
        return (self.unique_id, self.metric)


@dataclass(frozen=True)
class Event:
    kind: str  # OPENED, WORSENED, ONGOING, RESOLVED, ACCEPTED
    incident: Incident  # as the event leaves it
    judged: Judged


Cause = Callable[[Judged], tuple[bool, str, str | None]]  # -> (expected, text, release id)


def incident_id(target: str, key: tuple[str, str], run_id: str) -> str:
    digest = hashlib.sha1(f"{target}|{key[0]}|{key[1]}|{run_id}".encode()).hexdigest()
    return f"inc-{digest[:10]}"


def _opened(verdict: Judged, run: Mapping[str, Any], cause: Cause) -> Incident:
    """The incident ``verdict`` opens in ``run``, with the change behind it."""
    expected, text, release = cause(verdict)
    run_id, at, target = str(run["run_id"]), run["started_at"], str(run["target"])
    key = (verdict.unique_id, verdict.metric)
    return Incident(
        incident_id(target, key, run_id), target, key[0], key[1], str(run["job"]), OPEN, run_id,
        at, run_id, at, verdict.score or 0.0, verdict.value, verdict.score or 0.0, None,
        expected, text, release,
    )  # fmt: skip


def advance(
    open_incidents: Mapping[tuple[str, str], Incident], judged: list[Judged],
    run: Mapping[str, Any], cause: Cause,
) -> list[Event]:  # fmt: skip
    """What run ``run`` (run_id, job, target, started_at) does to the open incidents, given
    its verdicts; ``cause`` names the change behind a new incident."""
    events = []
    run_id, at = str(run["run_id"]), run["started_at"]
    for verdict in sorted(judged, key=lambda j: (j.unique_id, j.metric)):
        key = (verdict.unique_id, verdict.metric)
        known = open_incidents.get(key)
        status = verdict.verdict
        if verdict.score is None:
            continue  # not judged: the incident stays as it is
        if known is None:
            if status == NEW:  # a shift's follow-up without an open incident opens nothing
                events.append(Event(OPENED, _opened(verdict, run, cause), verdict))
            continue
        if status in (NORMAL, NEW_NORMAL):
            kind = ACCEPTED if status == NEW_NORMAL else RESOLVED
            closed = replace(known, status=CLOSED, resolved_run_id=run_id, resolved_at=at,
                             last_run_id=run_id, last_at=at, resolution=kind)  # fmt: skip
            events.append(Event(kind, closed, verdict))
            continue
        if status == NEW and verdict.score * known.alerted_score < 0:
            ended = replace(known, status=CLOSED, resolved_run_id=run_id, resolved_at=at,
                            last_run_id=run_id, last_at=at, resolution=SUPERSEDED)  # fmt: skip
            events.append(Event(SUPERSEDED, ended, verdict))
            events.append(Event(OPENED, _opened(verdict, run, cause), verdict))
            continue
        worse = abs(verdict.score) > abs(known.peak_score)
        later = replace(
            known, last_run_id=run_id, last_at=at,
            peak_score=verdict.score if worse else known.peak_score,
            peak_value=verdict.value if worse else known.peak_value,
        )  # fmt: skip
        if (
            status == NEW
            and verdict.score * known.alerted_score > 0
            and abs(verdict.score) >= WORSEN * abs(known.alerted_score)
        ):
            events.append(Event(WORSENED, replace(later, alerted_score=verdict.score), verdict))
        else:
            events.append(Event(ONGOING, later, verdict))
    return events


# -- the history ------------------------------------------------------------------------------


def _incident(row: Mapping[str, Any]) -> Incident:
    fields = Incident.__dataclass_fields__
    return Incident(**{k: v for k, v in row.items() if k in fields})


def judged_in(reader: Any, run_id: str) -> list[Judged]:
    """The run's verdicts (module anomalies), from the history."""
    found = ledger.rows(
        reader,
        "select unique_id, metric, value, baseline_median, score, is_anomaly, status "
        f"from {{history}}.anomalies where run_id = {reader.marker}",
        [run_id],
    )
    return [
        Judged(r["unique_id"], r["metric"], float(r["value"]), r["baseline_median"], r["score"],
               bool(r["is_anomaly"]), r["status"])
        for r in found
    ]  # fmt: skip


def open_incidents(reader: Any, target: str) -> dict[tuple[str, str], Incident]:
    if not ledger.exists(reader, INCIDENTS):
        return {}
    found = ledger.rows(
        reader,
        f"select * from {{history}}.{INCIDENTS} where target = {reader.marker} and status = 'open'",
        [target],
    )
    return {(r["unique_id"], r["metric"]): _incident(r) for r in found}


def recorded_events(reader: Any, run_id: str) -> list[Event] | None:
    """The events a run was given when it was alerted before; None: never advanced."""
    if not ledger.exists(reader, EVENTS):
        return None
    m = reader.marker
    found = ledger.rows(
        reader,
        f"select events.event, events.value, events.score, incidents.* "
        f"from {{history}}.{EVENTS} as events inner join {{history}}.{INCIDENTS} as incidents "
        f"on incidents.incident_id = events.incident_id where events.run_id = {m}",
        [run_id],
    )
    marks = ledger.rows(
        reader, f"select count(*) as n from {{history}}.{EVENTS} where run_id = {m}", [run_id]
    )
    if not found and not marks[0]["n"]:
        return None
    return [
        Event(r["event"], _incident(r),
              Judged(r["unique_id"], r["metric"], float(r["value"]), None, r["score"],
                     r["event"] not in CLOSING))
        for r in found if r["event"] is not None
    ]  # fmt: skip


def save(engine: Engine, run_id: str, events: list[Event], now: datetime) -> None:
    """The incidents as ``events`` leave them, and the run's events (a run with none gets a
    mark: it was advanced, and is not again)."""
    with ledger.writing(engine, "record the incidents") as (con, m):
        ledger.create(con, m, TABLES)
        ledger.execute(con, m, f"delete from {{history}}.{EVENTS} where run_id = {m}", [run_id])
        for event in events:
            ledger.execute(con, m, f"delete from {{history}}.{INCIDENTS} where incident_id = {m}",
                           [event.incident.incident_id])  # fmt: skip
        ledger.insert(con, m, INCIDENTS, TABLES[INCIDENTS], [asdict(e.incident) for e in events])
        rows = [
            {"run_id": run_id, "incident_id": e.incident.incident_id, "event": e.kind,
             "value": e.judged.value, "score": e.judged.score, "recorded_at": now}
            for e in events
        ] or [{"run_id": run_id, "recorded_at": now}]  # fmt: skip
        ledger.insert(con, m, EVENTS, TABLES[EVENTS], rows)


def recent(reader: Any, target: str, now: datetime) -> list[Incident]:
    """Open incidents and those resolved within RECENT of ``now``, newest first."""
    if not ledger.exists(reader, INCIDENTS):
        return []
    m = reader.marker
    found = ledger.rows(
        reader,
        f"select * from {{history}}.{INCIDENTS} where target = {m} and "
        f"(status = 'open' or resolved_at >= {m}) order by status, opened_at desc",
        [target, now - RECENT],
    )
    return [_incident(r) for r in found]
