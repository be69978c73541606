"""`mediapulse generate`: write the raw source schemas, or append the next day to them.

A new data set is written to a temporary file and moved into place only when complete; an
appended day is one transaction. Either way a failure leaves the previous raw data untouched.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import duckdb

from mediapulse.core.errors import MediaPulseError
from mediapulse.data import synthetic
from mediapulse.data.faults import FAULTS, FaultContext
from mediapulse.engines.duckdb import open_duckdb

GENERATOR_VERSION = 1
SCHEMAS = ("streaming", "catalog", "accounts", "billing", "ads", "_mediapulse")
EVENT_TABLES = {
    "streaming.watch_events": synthetic.events_sql,
    "ads.ad_impressions": synthetic.impressions_sql,
}


@dataclass(frozen=True)
class Params:
    """A data set: who, how much, from when, for how many days."""

    seed: int = 42
    users: int = 2_000
    days: int = 30
    events_per_user_day: float = 12.0
    start_date: date = field(default_factory=lambda: default_start_date(30))

    @property
    def as_of(self) -> datetime:
        """The load cut-off: midnight after the last day. Nothing loaded later is present."""
        return datetime.combine(self.start_date + timedelta(days=self.days), datetime.min.time())

    @property
    def population(self) -> synthetic.Population:
        return synthetic.Population(
            seed=self.seed,
            users=self.users,
            events_per_user_day=self.events_per_user_day,
            start_date=self.start_date,
        )


@dataclass(frozen=True)
class Summary:
    path: Path
    params: Params
    rows: dict[str, int]
    added: dict[str, int]
    faults: tuple[str, ...]
    elapsed_s: float
    appended: bool

    def __str__(self) -> str:
        p = self.params
        verb = "appended day" if self.appended else "generated"
        head = (
            f"{verb} {p.start_date + timedelta(days=p.days - 1) if self.appended else ''}".strip()
            + f" -> {self.path} in {self.elapsed_s:.1f} s "
            f"(seed {p.seed}, {p.users} users, {p.days} days from {p.start_date}, "
            f"as of {p.as_of:%Y-%m-%d %H:%M} UTC"
            + (f", faults: {', '.join(self.faults)}" if self.faults else "")
            + ")"
        )
        lines = [head]
        for table, count in self.rows.items():
            extra = f" (+{self.added[table]:,})" if self.appended and table in self.added else ""
            lines.append(f"  {table:<26} {count:>12,} rows{extra}")
        return "\n".join(lines)


def default_start_date(days: int, today: date | None = None) -> date:
    """So that the last generated day is yesterday (UTC): fresh data for freshness checks."""
    today = today or datetime.now(UTC).date()
    return today - timedelta(days=days)


def _write_window(
    con: duckdb.DuckDBPyConnection,
    params: Params,
    window: synthetic.LoadWindow,
    faults: tuple[str, ...],
    create: bool,
) -> dict[str, int]:
    pop = params.population
    for statement in synthetic.setup_sql(pop) + synthetic.population_sql(pop):
        con.execute(statement)
    con.execute(synthetic.viewings_sql(pop, window.simulated_days(params.start_date)))
    added: dict[str, int] = {}
    for schema in SCHEMAS:
        con.execute(f"create schema if not exists {schema}")
    for table, sql in EVENT_TABLES.items():
        before = 0 if create else con.execute(f"select count(*) from {table}").fetchone()[0]
        if create:
            con.execute(f"create or replace table {table} as {sql(window)}")
        else:
            con.execute(f"insert into {table} {sql(window)}")
        added[table] = con.execute(f"select count(*) from {table}").fetchone()[0] - before
    as_of = params.as_of
    for table, sql in synthetic.current_state_sql(as_of).items():
        # current-state tables are re-synced in full at the end of each day (as of which
        # every row is stamped), which is what makes their freshness measurable
        con.execute(
            f"create or replace table {table} as select *, "
            f"timestamp '{as_of:%Y-%m-%d %H:%M:%S}' as loaded_at from ({sql}) "
            "order by all"
        )
    for name in faults:
        FAULTS[name].apply(FaultContext(con, params.seed, window.after, window.until))
    return added


def _write_metadata(
    con: duckdb.DuckDBPyConnection, params: Params, faults: tuple[str, ...]
) -> None:
    con.execute(
        """
        create or replace table _mediapulse.generation as
        select
            ?::bigint as seed, ?::bigint as users, ?::double as events_per_user_day,
            ?::date as start_date, ?::integer as days, ?::timestamp as as_of,
            ?::varchar as faults, ?::integer as generator_version
        """,
        [
            params.seed,
            params.users,
            params.events_per_user_day,
            params.start_date,
            params.days,
            params.as_of,
            ",".join(faults),
            GENERATOR_VERSION,
        ],
    )


def _row_counts(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    tables = [*EVENT_TABLES, *synthetic.current_state_sql(datetime.now()).keys()]
    return {t: con.execute(f"select count(*) from {t}").fetchone()[0] for t in sorted(tables)}


def _check_faults(faults: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    unknown = [f for f in faults if f not in FAULTS]
    if unknown:
        raise MediaPulseError(
            f"unknown fault {', '.join(unknown)}: known faults are {', '.join(sorted(FAULTS))}"
        )
    return tuple(dict.fromkeys(faults))


def generate(
    path: Path, params: Params, faults: list[str] | tuple[str, ...] = (), overwrite: bool = False
) -> Summary:
    """Write a complete data set to ``path``, atomically."""
    chosen = _check_faults(faults)
    if path.exists() and not overwrite:
        raise MediaPulseError(
            f"{path} already holds a data set: pass --force to replace it, or --append-day "
            "to add the next day to it"
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    try:
        con = duckdb.connect(str(partial))
        try:
            con.execute("set preserve_insertion_order = true")
            window = synthetic.LoadWindow(after=None, until=params.as_of)
            added = _write_window(con, params, window, chosen, create=True)
            _write_metadata(con, params, chosen)
            rows = _row_counts(con)
            con.execute("checkpoint")
        finally:
            con.close()
        os.replace(partial, path)
    finally:
        for leftover in (partial, partial.with_name(partial.name + ".wal")):
            leftover.unlink(missing_ok=True)
    return Summary(path, params, rows, added, chosen, time.perf_counter() - started, False)


def read_params(con: duckdb.DuckDBPyConnection, path: Path) -> tuple[Params, tuple[str, ...]]:
    try:
        row = con.execute(
            "select seed, users, events_per_user_day, start_date, days, faults, "
            "generator_version from _mediapulse.generation"
        ).fetchone()
    except duckdb.CatalogException:
        row = None
    if row is None:
        raise MediaPulseError(
            f"{path} was not written by `mediapulse generate` (no _mediapulse.generation): "
            "generate a new data set with --force"
        )
    seed, users, epu, start, days, faults, version = row
    if version != GENERATOR_VERSION:
        raise MediaPulseError(
            f"{path} was written by generator version {version}, this is {GENERATOR_VERSION}: "
            "regenerate it with `mediapulse generate --force`"
        )
    params = Params(seed=seed, users=users, days=days, events_per_user_day=epu, start_date=start)
    return params, tuple(f for f in faults.split(",") if f)


WATCH_EVENTS = "streaming.watch_events"


def _deliver(con: duckdb.DuckDBPyConnection, window: synthetic.LoadWindow, copies: int) -> int:
    """Each watch event the window loaded arrives ``copies`` times (0: the load was lost; 10:
    a loader replaying its batch), the copies a minute apart within the window, as an
    at-least-once loader re-sends them. Returns the rows the window then holds."""
    loaded = (
        f"loaded_at > timestamp '{window.after:%Y-%m-%d %H:%M:%S}' and "
        f"loaded_at <= timestamp '{window.until:%Y-%m-%d %H:%M:%S}'"
    )
    if copies == 0:
        con.execute(f"delete from {WATCH_EVENTS} where {loaded}")
    elif copies > 1:
        until = f"timestamp '{window.until:%Y-%m-%d %H:%M:%S}'"
        con.execute(
            f"insert into {WATCH_EVENTS} select loaded.* replace ("
            f"least(loaded.loaded_at + to_minutes(copies.copy), {until}) as loaded_at) "
            f"from {WATCH_EVENTS} as loaded, range(1, {int(copies)}) as copies(copy) "
            f"where {loaded}"
        )
    return con.execute(f"select count(*) from {WATCH_EVENTS} where {loaded}").fetchone()[0]


def append_day(
    path: Path, faults: list[str] | tuple[str, ...] = (), event_copies: int = 1
) -> Summary:
    """Add one day to the data set at ``path``: what the EL tool loaded during that day.
    ``event_copies``: how many times each of the day's watch events is delivered (1, the
    default; 0 for a day whose events are lost; 10 for a loader replaying its batch), the
    volume anomalies the run history flags."""
    if event_copies < 0:
        raise MediaPulseError(f"--event-copies {event_copies}: give 0 (a lost day) or more")
    chosen = _check_faults(faults)
    started = time.perf_counter()
    con = open_duckdb(path, purpose="append a day to the raw data")
    try:
        old, old_faults = read_params(con, path)
        new = replace(old, days=old.days + 1)
        con.execute("begin transaction")
        try:
            window = synthetic.LoadWindow(after=old.as_of, until=new.as_of)
            added = _write_window(con, new, window, chosen, create=False)
            if event_copies != 1:
                added[WATCH_EVENTS] = _deliver(con, window, event_copies)
            all_faults = tuple(dict.fromkeys(old_faults + chosen))
            _write_metadata(con, new, all_faults)
            con.execute("commit")
        except BaseException:
            con.execute("rollback")
            raise
        rows = _row_counts(con)
    finally:
        con.close()
    return Summary(path, new, rows, added, chosen, time.perf_counter() - started, True)
