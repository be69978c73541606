"""A labelled production history for the anomaly detector: many days of one refresh a day,
with known incidents, judged by the real detection path (``history.store``, the schema check,
the sources' freshness SLO) and scored per incident kind.

Cheap enough for `make test`, faithful where it matters:

- **volumes** are the project's own models run on the generator's data: the data set is
  generated once for the whole period, then for each day the models' compiled SQL (from a
  real dbt build of the project, `compiled_code` in its manifest) is run in DAG order over the
  raw data *as loaded by that day* (event tables up to the day's midnight, current-state
  tables as their systems show them then), as `mediapulse bench`'s floor runs it. Incremental
  models equal a full refresh (the project proves it), so each table's size per day, and the
  rows added, are what a nightly plus daily refreshes would record. Month boundaries and the
  accounts' steady growth are the generator's; weekday seasonality is laid on its events
  (``WEEKDAY_SHARE``: a share of each user's days without viewing, higher at the weekend);
- **execution times** cannot be produced for sixty days, so they are simulated from each
  model's time in the reference build (scaled to a production size) with a shared runner's
  noise (``runner_seconds``);
- **incidents** are the generator's faults and loader replays, applied to that day's load.
"""

from __future__ import annotations

import json
import random
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import yaml

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.data import generate, synthetic
from mediapulse.data.faults import FAULTS, FaultContext
from mediapulse.dbt import artifacts
from mediapulse.engines.duckdb import PRODUCTION  # the labelled history is a DuckDB production
from mediapulse.engines.targets import resolve
from mediapulse.monitoring import history, schema_changes, tuning

KINDS = (
    "tenfold_day", "lost_day", "partial_day", "slow_model", "stale_source", "renamed_column",
    "level_shift",
)  # fmt: skip
WATCH_EVENTS = "source.mediapulse.streaming.watch_events"
STALE_SOURCE = ("billing", "subscriptions")
SLOW_MODEL = "model.mediapulse.int_watch_events_sessionized"
# share of the users who watch on a day, Monday first: evenings and weekends are when people
# stream (the generator draws every day alike)
WEEKDAY_SHARE = (0.74, 0.72, 0.74, 0.78, 0.88, 1.0, 0.96)
PARTIAL_SHARE = 0.40  # a partial day loses this share of its events
LAUNCH_GROWTH = 0.30  # the level shift: this many more viewers from the launch on
SLOWER = 3.0  # the slow model's factor
RUN_HOUR = 2  # the daily refresh starts at 02:00, after the midnight loads
# the reference build's seconds times this: production's size (the slowest model ~40 s)
PRODUCTION_FACTOR = 8.0


@dataclass(frozen=True)
class Plan:
    """The simulated period: ``days`` daily refreshes after ``warmup`` days already loaded,
    and the incidents, by the refresh (1-based) they land in."""

    days: int = 62
    warmup: int = 8
    users: int = 500
    events_per_user_day: float = 40.0
    seed: int = 30
    # the watch events' models from one build over the period (``EventPath``), not rebuilt
    # over every event each day (exact, and what makes sixty days cheap)
    shortcut: bool = True
    checked: tuple[int, ...] = ()  # refreshes whose shortcut is compared with a direct build
    incidents: tuple[tuple[int, str], ...] = (
        (20, "tenfold_day"), (27, "lost_day"), (33, "partial_day"), (37, "slow_model"),
        (43, "stale_source"), (48, "renamed_column"), (54, "level_shift"),
    )  # fmt: skip

    @property
    def start(self) -> date:
        """The first generated day: so that the last refresh loads yesterday."""
        return generate.default_start_date(self.warmup + self.days)

    def cut(self, day: int) -> datetime:
        """Midnight after the load of refresh ``day`` (day 0: the warm-up's end)."""
        return datetime.combine(self.start + timedelta(days=self.warmup + day), datetime.min.time())

    def kind_on(self, day: int) -> str | None:
        return next((k for d, k in self.incidents if d == day), None)

    def day_of(self, kind: str) -> int | None:
        return next((d for d, k in self.incidents if k == kind), None)


@dataclass
class Simulation:
    """What a simulation left: the run ids by day, and where the history is."""

    plan: Plan
    project: Project
    runs: dict[int, str] = field(default_factory=dict)
    seconds: float = 0.0
    # refresh -> model -> rows that differ between the shortcut and a direct build
    differ: dict[int, dict[str, int]] = field(default_factory=dict)


# -- the raw data -----------------------------------------------------------------------------


def _window(plan: Plan, day: int) -> synthetic.LoadWindow:
    return synthetic.LoadWindow(after=plan.cut(day - 1), until=plan.cut(day))


def _loaded_in(plan: Plan, day: int) -> str:
    window = _window(plan, day)
    return (f"loaded_at > timestamp '{window.after:%Y-%m-%d %H:%M:%S}' and "
            f"loaded_at <= timestamp '{window.until:%Y-%m-%d %H:%M:%S}'")  # fmt: skip


def _weekday_seasonality(con: duckdb.DuckDBPyConnection, seed: int) -> None:
    """Each user watches on a day with the day's share (``WEEKDAY_SHARE``)."""
    shares = "[" + ", ".join(str(s) for s in WEEKDAY_SHARE) + "]"
    for table, at in (("streaming.watch_events", "event_ts"), ("ads.ad_impressions", "served_ts")):
        con.execute(
            f"delete from {table} where hash(user_id, cast({at} as date), {seed}) "
            f"/ 18446744073709551616.0 >= {shares}[isodow({at})]"
        )


def _launch(con: duckdb.DuckDBPyConnection, plan: Plan, first: int) -> None:
    """From refresh ``first`` on, 30 % more viewers: a launch brings new accounts whose events
    look like the existing ones' (copies of a share of users, new user and event ids)."""
    share = int(LAUNCH_GROWTH * 1000)
    for day in range(first, plan.days + 1):
        con.execute(
            "insert into streaming.watch_events select * replace ("
            "event_id || '-launch' as event_id, user_id + 100000000 as user_id) "
            f"from streaming.watch_events where {_loaded_in(plan, day)} "
            f"and hash(user_id, 'launch', {plan.seed}) % 1000 < {share} "
            "and not ends_with(event_id, '-launch')"
        )


def _incidents_in_raw(con: duckdb.DuckDBPyConnection, plan: Plan) -> None:
    """The volume incidents, on their day's load, as the generator's loader replays them."""
    for day, kind in plan.incidents:
        if kind == "tenfold_day":
            generate._deliver(con, _window(plan, day), 10)
        elif kind == "lost_day":
            generate._deliver(con, _window(plan, day), 0)
        elif kind == "partial_day":
            con.execute(
                f"delete from streaming.watch_events where {_loaded_in(plan, day)} "
                f"and hash(event_id, 'partial') % 100 < {int(PARTIAL_SHARE * 100)}"
            )
        elif kind == "level_shift":
            _launch(con, plan, day)


def generate_raw(project: Project, plan: Plan) -> None:
    """The whole period's raw data, with its seasonality and volume incidents."""
    params = generate.Params(
        seed=plan.seed, users=plan.users, days=plan.warmup + plan.days,
        events_per_user_day=plan.events_per_user_day, start_date=plan.start,
    )  # fmt: skip
    generate.generate(project.raw_path, params, overwrite=True)
    with duckdb.connect(str(project.raw_path)) as con:
        _weekday_seasonality(con, plan.seed)
        _incidents_in_raw(con, plan)
        con.execute("checkpoint")


# -- one day's build ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    unique_id: str
    relation: str
    kind: str  # view or table
    sql: str
    reference_s: float  # its execution time in the reference build


def models_in_order(project: Project) -> list[Model]:
    """The project's built models (not the monitoring views), parents first, with their
    compiled SQL from the reference build's manifest."""
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    results = artifacts.load_json(project.target_dir / "run_results.json", "run results")
    seconds = {r["unique_id"]: float(r.get("execution_time") or 0) for r in results["results"]}
    nodes = {
        uid: n for uid, n in manifest["nodes"].items()
        if n["resource_type"] == "model" and n["package_name"] == "mediapulse"
        and n["config"]["materialized"] != "ephemeral" and n.get("compiled_code")
    }  # fmt: skip
    order: list[str] = []

    def visit(uid: str) -> None:
        if uid in order:
            return
        for parent in nodes[uid]["depends_on"]["nodes"]:
            if parent in nodes:
                visit(parent)
        order.append(uid)

    for uid in sorted(nodes):
        visit(uid)
    return [
        Model(uid, artifacts.unquoted_relation(nodes[uid]),
              "view" if nodes[uid]["config"]["materialized"] == "view" else "table",
              nodes[uid]["compiled_code"], seconds.get(uid, 0.0))
        for uid in order
    ]  # fmt: skip


class Warehouse:
    """A scratch copy of the reference build's database (its seeds), the raw data attached
    read-only, and a catalog `raw` that holds the raw data as loaded by a given day."""

    def __init__(self, project: Project, database: Path, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy2(database, folder / database.name)
        self.con = duckdb.connect(str(folder / database.name))
        self.con.execute(f"attach '{project.raw_path}' as loaded (read_only)")
        self.con.execute("attach ':memory:' as raw")
        for schema in ("streaming", "ads", "accounts", "billing", "catalog"):
            self.con.execute(f"create schema raw.{schema}")
        seed, users, epu, start = self.con.execute(
            "select seed, users, events_per_user_day, start_date from loaded._mediapulse.generation"
        ).fetchone()
        population = synthetic.Population(seed, users, epu, start)
        for statement in synthetic.setup_sql(population) + synthetic.population_sql(population):
            self.con.execute(statement)

    def load(self, until: datetime, synced: dict[str, datetime]) -> None:
        """The raw data as loaded by ``until``; ``synced``: a current-state table whose last
        sync was earlier (a stale source)."""
        for table in generate.EVENT_TABLES:
            self.con.execute(f"create or replace view raw.{table} as select * from "
                             f"loaded.{table} where loaded_at <= timestamp '{until}'")  # fmt: skip
        for table, sql in synthetic.current_state_sql(until).items():
            as_of = synced.get(table, until)
            sql = sql if as_of == until else synthetic.current_state_sql(as_of)[table]
            self.con.execute(f"create or replace table raw.{table} as select *, "
                             f"timestamp '{as_of}' as loaded_at from ({sql})")  # fmt: skip

    def build(self, models: list[Model], path: EventPath | None = None) -> dict[str, int]:
        """Every model from scratch, parents first; the sizes a run records. ``path``: the
        watch events' models from their full build instead (``EventPath``)."""
        shortcut = path.models if path else {}
        for model in reversed(models):
            kind = "view" if model.unique_id in shortcut else model.kind
            self.con.execute(f"drop {kind} if exists {model.relation} cascade")
        if path:
            path.build(self)
        sizes = {}
        for model in models:
            if model.unique_id not in shortcut:
                self.con.execute(f"create {model.kind} {model.relation} as {model.sql}")
            if model.kind == "table":
                sizes[model.unique_id] = self.count(model.relation)
        return sizes

    def count(self, relation: str) -> int:
        return int(self.con.execute(f"select count(*) from {relation}").fetchone()[0])

    def close(self) -> None:
        self.con.close()


VIEWING_KEY = ("user_id", "content_id", "device_type")
STAGED_EVENTS = "model.mediapulse.stg_streaming__watch_events"
SESSIONIZED = "model.mediapulse.int_watch_events_sessionized"
SESSIONS = "model.mediapulse.int_watch_sessions_aggregated"
# the models that read every event loaded so far, and the column saying when a row's newest
# event was loaded: rebuilt each day, they would make the history quadratic in its days
EVENT_MODELS = {
    STAGED_EVENTS: "loaded_at",
    "model.mediapulse.stg_ads__ad_impressions": "loaded_at",
    SESSIONIZED: "loaded_at",
    SESSIONS: "last_loaded_at",
}
FULL = "__labelled_full"  # their build over the whole period: the relation's name, this added


class EventPath:
    """The event models as a full refresh on day d gives them, from one build over the whole
    period (the project's SQL, once) and, each day, the same SQL over only the viewing keys
    the next loads still change.

    Exact, because: the staging models keep an event's first loaded copy (ordered by
    `loaded_at` first), so staging as of d is the full staging's rows loaded by d; sessions and
    their sums are computed per viewing key (user, title, device); and an event loaded after d
    can change a key's rows as of d only if it falls within the session gap of them, i.e. if
    its `event_at` is before d's cut-off plus the gap (events are loaded after they happen,
    which ``prepare`` checks). Those keys are recomputed with the project's SQL over their
    events loaded by d; every other key's rows are the full build's, loaded by d. ``check``
    compares the result with a direct build."""

    def __init__(self, models: list[Model], gap_minutes: int) -> None:
        self.models = {m.unique_id: m for m in models if m.unique_id in EVENT_MODELS}
        self.gap = timedelta(minutes=gap_minutes + 1)
        self.cut: datetime | None = None

    def _full(self, uid: str) -> str:
        return self.models[uid].relation + FULL

    def prepare(self, warehouse: Warehouse, until: datetime) -> None:
        """The full build: the raw data as loaded by ``until``, the project's SQL."""
        con = warehouse.con
        warehouse.load(until, {})
        for model in self.models.values():
            con.execute(f"drop {model.kind} if exists {model.relation} cascade")
            con.execute(f"create table {model.relation} as {model.sql}")
        for model in self.models.values():
            name = model.relation.rsplit(".", 1)[1]
            con.execute(f"alter table {model.relation} rename to {name}{FULL}")
        early = con.execute(f"select count(*) from {self._full(STAGED_EVENTS)} "
                            "where event_at > loaded_at").fetchone()[0]  # fmt: skip
        if early:
            raise MediaPulseError(
                f"{self._full(STAGED_EVENTS)}: {early} events loaded before they happened; the "
                "labelled history's shortcut assumes none: simulate with Plan(shortcut=False)"
            )

    def _loaded(self, uid: str, keys: str = "") -> str:
        column = EVENT_MODELS[uid]
        return f"select * from {self._full(uid)} where {column} <= '{self.cut}' {keys}"

    def build(self, warehouse: Warehouse) -> None:
        """The event models' relations as of ``cut``, as views."""
        con, cut = warehouse.con, self.cut
        assert cut is not None
        key = ", ".join(VIEWING_KEY)
        con.execute(
            f"create or replace temp table labelled_recent as select distinct {key} from "
            f"{self._full(STAGED_EVENTS)} where loaded_at > '{cut}' "
            f"and event_at <= '{cut + self.gap}'"
        )
        recent = f"and ({key}) in (select ({key}) from labelled_recent)"
        staged, sessionized, sessions = (self.models[u] for u in (STAGED_EVENTS, SESSIONIZED,
                                                                  SESSIONS))  # fmt: skip
        # the recent keys through the project's SQL, each model reading the one before
        con.execute(f"create view {staged.relation} as {self._loaded(STAGED_EVENTS, recent)}")
        con.execute(f"create or replace temp table labelled_sessionized as {sessionized.sql}")
        con.execute(f"create view {sessionized.relation} as select * from labelled_sessionized")
        con.execute(f"create or replace temp table labelled_sessions as {sessions.sql}")
        con.execute(f"drop view {sessionized.relation}")
        con.execute(f"drop view {staged.relation}")
        # then every key
        for uid, model in self.models.items():
            if uid == SESSIONIZED:
                sql = (f"{self._loaded(uid, 'and not ' + recent[4:])} "
                       "union all select * from labelled_sessionized")  # fmt: skip
            elif uid == SESSIONS:
                sql = (f"{self._loaded(uid, 'and not ' + recent[4:])} "
                       "union all select * from labelled_sessions")  # fmt: skip
            else:
                sql = self._loaded(uid)
            con.execute(f"create view {model.relation} as {sql}")

    def check(self, warehouse: Warehouse) -> dict[str, int]:
        """Rows that differ between the shortcut's relations and the project's SQL run over
        the same raw data (the warehouse's current day), per model: all zero when exact."""
        con = warehouse.con
        differ = {}
        for model in self.models.values():
            con.execute(f"create or replace temp table labelled_shortcut as "
                        f"select * from {model.relation}")  # fmt: skip
            con.execute(f"drop view {model.relation} cascade")
            con.execute(f"create table {model.relation} as {model.sql}")
            differ[model.unique_id] = int(con.execute(
                f"select count(*) from ((select * from labelled_shortcut except all select * "
                f"from {model.relation}) union all (select * from {model.relation} except all "
                "select * from labelled_shortcut))").fetchone()[0])  # fmt: skip
        for model in reversed(self.models.values()):
            con.execute(f"drop table {model.relation} cascade")
        self.build(warehouse)
        return differ


def session_gap_minutes(project: Project) -> int:
    """The project's `session_inactivity_minutes` (dbt_project.yml's vars)."""
    document = yaml.safe_load((project.root / "dbt_project.yml").read_text()) or {}
    return int((document.get("vars") or {})["session_inactivity_minutes"])


def source_sizes(warehouse: Warehouse) -> dict[str, int]:
    tables = [*generate.EVENT_TABLES, *synthetic.current_state_sql(datetime.now())]
    return {f"source.mediapulse.{t}": warehouse.count(f"raw.{t}") for t in tables}


# -- the run records ----------------------------------------------------------------------------


def freshness_status(age_s: float, criteria: dict[str, Any] | None) -> str:
    """dbt's rule for a source's `freshness`: past `error_after` an error, past `warn_after`
    a warning."""
    seconds = {"minute": 60, "hour": 3600, "day": 86400}
    for status in ("error", "warn"):
        limit = (criteria or {}).get(f"{status}_after") or {}
        if limit.get("count") and age_s > limit["count"] * seconds[limit["period"]]:
            return status
    return "pass"


def freshness_rows(
    warehouse: Warehouse, manifest: dict[str, Any], run_id: str, at: datetime
) -> list[dict[str, Any]]:
    """The sources' freshness at ``at`` against the SLO their YAML declares."""
    rows = []
    for uid, source in sorted(manifest["sources"].items()):
        if source.get("package_name") != "mediapulse" or not source.get("freshness"):
            continue
        table = f"raw.{source['schema']}.{source['name']}"
        try:
            newest = warehouse.con.execute(f"select max(loaded_at) from {table}").fetchone()[0]
        except duckdb.Error:
            continue
        age = (at - newest).total_seconds()
        rows.append(dict(
            run_id=run_id, unique_id=uid, source_name=source["source_name"],
            table_name=source["name"], status=freshness_status(age, source["freshness"]),
            max_loaded_at=newest, snapshotted_at=at, age_s=age,
        ))  # fmt: skip
    return rows


RUNNER_LOAD = (0.15, 1.3)  # a run's load: lognormal sigma, and at most this factor either way
JITTER = (0.10, 1.2)  # a model's own: the same


def _bounded(rng: random.Random, sigma: float, limit: float) -> float:
    return min(limit, max(1 / limit, rng.lognormvariate(0.0, sigma)))


def runner_seconds(base_s: float, day: int, rng: random.Random, run_factor: float) -> float:
    """A model's time on a shared CI runner: its production time growing with the data
    (0.3 % a day), the runner's load that day (``run_factor``, the same for every model of
    the run, at most +30 %), its own jitter (10 %, at most +20 %), and now and then a stall of
    1-2.5 s (another job's I/O, a cold cache: what takes a 1 s model to 3 s). Bounded: a 40-s
    model on the busiest runner takes at most 25 s longer, under the 30-s minimum effect;
    unbounded, one draw in a few thousand was a false alarm."""
    seconds = base_s * (1 + 0.003 * day) * run_factor * _bounded(rng, *JITTER)
    if rng.random() < 0.05:
        seconds += rng.uniform(1.0, 2.5)
    return round(seconds, 3)


SLOWEST_S = 40.0  # the reference build's slowest model takes this long in production


def node_rows(
    models: list[Model], plan: Plan, day: int, run_id: str, rng: random.Random
) -> list[dict[str, Any]]:
    """Each model's time: its share of the reference build's slowest, which takes
    ``SLOWEST_S``; the slow model (sessionising, the project's most expensive) takes that
    whatever a small reference build measured, so that three times slower is +80 s."""
    slowest = max((m.reference_s for m in models), default=1.0) or 1.0
    run_factor = _bounded(rng, *RUNNER_LOAD)
    rows = []
    for model in models:
        base = max(0.2, model.reference_s / slowest * SLOWEST_S)
        if model.unique_id == SLOW_MODEL:
            base = SLOWEST_S
        seconds = runner_seconds(base, day, rng, run_factor)
        if plan.kind_on(day) == "slow_model" and model.unique_id == SLOW_MODEL:
            seconds = round(seconds * SLOWER, 3)
        rows.append(dict(
            run_id=run_id, unique_id=model.unique_id, resource_type="model",
            name=model.unique_id.split(".", 2)[2], status="success", execution_time_s=seconds,
            message="", is_critical=False, started_at=plan.cut(day) + timedelta(hours=RUN_HOUR),
        ))  # fmt: skip
    return rows


def renamed_column_check(project: Project, warehouse: Warehouse) -> list[dict[str, Any]]:
    """The generator's `renamed_column` fault on the raw data, the real schema check of it,
    and the column back (the loader fixed by the next day)."""
    warehouse.con.execute("detach loaded")
    try:
        with duckdb.connect(str(project.raw_path)) as con:
            FAULTS["renamed_column"].apply(FaultContext(con, 0, None, datetime.now()))
        found = schema_changes.check(resolve(project, PRODUCTION)).changes
    finally:
        with duckdb.connect(str(project.raw_path)) as con:
            con.execute('alter table accounts.users rename column "userId" to user_id')
        warehouse.con.execute(f"attach '{project.raw_path}' as loaded (read_only)")
    return [change.as_row() for change in found]


def _synced(plan: Plan, day: int) -> dict[str, datetime]:
    """A stale source: its sync stopped two days before the refresh it lands in (past the
    36-hour SLO there, within it the refresh before: ``ONSET``), and resumes the day after."""
    stale = plan.day_of("stale_source")
    if stale is not None and stale - ONSET["stale_source"] <= day <= stale:
        return {".".join(STALE_SOURCE): plan.cut(stale - 2)}
    return {}


@dataclass
class Context:
    project: Project
    plan: Plan
    models: list[Model]
    manifest: dict[str, Any]
    warehouse: Warehouse
    rng: random.Random
    decorate: Callable[[history.RunRecord], None] | None = None
    settings: dict = field(default_factory=dict)  # the models' and sources' meta
    path: EventPath | None = None


def run_day(ctx: Context, day: int) -> history.RunRecord:
    """Refresh ``day``: the raw data as loaded by then, the schema check, the build, and the
    run's record, stored (and judged) in the run history."""
    plan = ctx.plan
    run_id = f"labelled-{day:03d}"
    at = plan.cut(day) + timedelta(hours=RUN_HOUR)
    ctx.warehouse.load(plan.cut(day), _synced(plan, day))
    record = history.RunRecord(run=dict(
        run_id=run_id, job="refresh", target=PRODUCTION, started_at=at, status="success",
        duration_s=0.0, nodes=0, recorded_at=at,
    ))  # fmt: skip
    record.source_freshness = freshness_rows(ctx.warehouse, ctx.manifest, run_id, at)
    if plan.kind_on(day) == "renamed_column":
        # a critical source's renamed key stops the job before dbt: nothing built or measured
        record.schema_changes = [
            {"run_id": run_id, **row} for row in renamed_column_check(ctx.project, ctx.warehouse)
        ]
        record.run["status"] = "failed"
    else:
        if ctx.path:
            ctx.path.cut = plan.cut(day)
        sizes = {**ctx.warehouse.build(ctx.models, ctx.path), **source_sizes(ctx.warehouse)}
        record.node_results = node_rows(ctx.models, plan, day, run_id, ctx.rng)
        record.relation_sizes = [
            dict(run_id=run_id, unique_id=uid, relation=uid, row_count=n, measured_at=at)
            for uid, n in sorted(sizes.items())
        ]  # fmt: skip
    record.run["nodes"] = len(record.node_results)
    record.settings = ctx.settings
    if ctx.decorate:
        ctx.decorate(record)
    history.store(resolve(ctx.project, PRODUCTION), record)
    return record


def simulate(
    project: Project,
    plan: Plan,
    reference_db: Path,
    decorate: Callable[[history.RunRecord], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> Simulation:
    """The whole labelled history into ``project``'s `prod` run history. ``project``: a copy
    built once by dbt (its manifest, run results and ``reference_db``, the database it built),
    whose raw data this replaces."""
    started = datetime.now()
    history.duckdb_path(resolve(project, PRODUCTION)).unlink(missing_ok=True)
    generate_raw(project, plan)
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    warehouse = Warehouse(project, reference_db, project.root / "labelled")
    models = models_in_order(project)
    ctx = Context(project, plan, models, manifest, warehouse,
                  random.Random(plan.seed), decorate, tuning.check(project))  # fmt: skip
    simulation = Simulation(plan, project)
    try:
        if plan.shortcut:
            ctx.path = EventPath(models, session_gap_minutes(project))
            ctx.path.prepare(warehouse, plan.cut(plan.days))
        for day in range(plan.days + 1):  # day 0: the nightly that starts the history
            simulation.runs[day] = run_day(ctx, day).run_id
            if ctx.path and day in plan.checked and plan.kind_on(day) != "renamed_column":
                simulation.differ[day] = ctx.path.check(warehouse)
            if progress and day % 10 == 0:
                progress(f"day {day} of {plan.days}")
    finally:
        warehouse.close()
    simulation.seconds = (datetime.now() - started).total_seconds()
    return simulation


# -- the score ----------------------------------------------------------------------------------

AFTERMATH = {"stale_source": 1, "renamed_column": 1}  # runs after: the catch-up, not normal
# runs before the one an incident lands in that it already changes: a source whose sync
# stopped is past its SLO on the second refresh, but the first already lacks a day of it
# (the models built from it add fewer rows: a true alert, not a false one)
ONSET = {"stale_source": 1}


def incident_span(plan: Plan, kind: str, day: int) -> range:
    """The refreshes an incident changes: its onset, the one it lands in, the catch-up."""
    last = plan.days if kind == "level_shift" else day + AFTERMATH.get(kind, 0)
    return range(day - ONSET.get(kind, 0), last + 1)


@dataclass
class KindScore:
    kind: str
    day: int
    detected: bool
    alerts: int  # new alerts on the incident's runs
    accepted_after: int | None = None  # level shift: runs until its value is normal again


@dataclass
class Score:
    kinds: list[KindScore]
    false_alarms: list[tuple[int, str, str]]  # (day, metric or check, what)
    ordinary_days: int

    @property
    def recall(self) -> float:
        return sum(k.detected for k in self.kinds) / max(1, len(self.kinds))

    def as_dict(self) -> dict[str, Any]:
        return {
            "per_metric": {m: sum(1 for f in self.false_alarms if f[1] == m)
                           for m in sorted({f[1] for f in self.false_alarms})},
            "recall": self.recall, "ordinary_days": self.ordinary_days,
            "false_alarms": len(self.false_alarms),
            "false_alarm_list": [list(f) for f in self.false_alarms],
            "kinds": [k.__dict__ for k in self.kinds],
        }  # fmt: skip


def _alerts(project: Project) -> list[tuple[str, str, str, float]]:
    """(run_id, metric, unique_id, score) of every new alert the history holds."""
    engine = resolve(project, PRODUCTION)
    columns = {r[0] for r in history.read(engine, "select column_name from "
               "information_schema.columns where table_name = 'anomalies'")}  # fmt: skip
    new = "and coalesce(status, 'anomaly') = 'anomaly'" if "status" in columns else ""
    return history.read(engine, "select run_id, metric, unique_id, score from "
                        f"monitoring.anomalies where is_anomaly {new}")  # fmt: skip


def score(simulation: Simulation) -> Score:
    """Recall and false alarms per incident kind, from what the run history holds."""
    plan, engine = simulation.plan, resolve(simulation.project, PRODUCTION)
    day_of_run = {run: day for day, run in simulation.runs.items()}
    alerts = [(day_of_run[r], m, u, s) for r, m, u, s in _alerts(simulation.project)]
    stale = {day_of_run[r] for (r,) in history.read(engine, "select run_id from "
             "monitoring.source_freshness where status <> 'pass'")}  # fmt: skip
    renamed = {day_of_run[r] for (r,) in history.read(engine, "select run_id from "
               "monitoring.schema_changes where change = 'renamed'")}  # fmt: skip
    affected: set[int] = set()
    kinds = []
    for day, kind in plan.incidents:
        span = incident_span(plan, kind, day)
        affected |= set(span)
        kinds.append(_kind_score(kind, day, span, alerts, stale, renamed, simulation))
    false_alarms = sorted(
        [(d, m, f"{u} (score {s})") for d, m, u, s in alerts if d not in affected and d > 0]
        + [(d, "freshness", "a source past its SLO") for d in stale if d not in affected]
        + [(d, "schema", "a renamed column") for d in renamed if d not in affected]
    )
    ordinary = [d for d in range(1, plan.days + 1) if d not in affected]
    return Score(kinds, false_alarms, len(ordinary))


def _kind_score(
    kind: str,
    day: int,
    span: range,
    alerts: list,
    stale: set[int],
    renamed: set[int],
    simulation: Simulation,
) -> KindScore:
    on_events = [(d, s) for d, m, u, s in alerts if m == "rows_added" and u == WATCH_EVENTS]
    signals: dict[str, Callable[[int], bool]] = {
        "tenfold_day": lambda d: any(x == d and s > 0 for x, s in on_events),
        "lost_day": lambda d: any(x == d and s < 0 for x, s in on_events),
        "partial_day": lambda d: any(x == d and s < 0 for x, s in on_events),
        "level_shift": lambda d: any(x == d and s > 0 for x, s in on_events),
        "slow_model": lambda d: any(x == d and m == "execution_time_s" and u == SLOW_MODEL
                                    for x, m, u, _ in alerts),
        "stale_source": lambda d: d in stale,
        "renamed_column": lambda d: d in renamed,
    }  # fmt: skip
    count = sum(1 for d, *_ in alerts if d in span)
    result = KindScore(kind, day, signals[kind](day), count)
    if kind == "level_shift":
        result.accepted_after = _accepted_after(simulation, day)
    return result


def _accepted_after(simulation: Simulation, day: int) -> int | None:
    """Runs after the shift until the watch events' rows added are accepted as the new
    normal (None: never; a shift that merely falls under the threshold is not accepted)."""
    status = dict(history.read(resolve(simulation.project, PRODUCTION), "select run_id, status "
                  f"from monitoring.anomalies where unique_id = '{WATCH_EVENTS}' "
                  "and metric = 'rows_added'"))  # fmt: skip
    for later in range(day + 1, simulation.plan.days + 1):
        if status.get(simulation.runs[later]) == "accepted":
            return later - day
    return None


def render(score_: Score) -> str:
    """The score as Markdown lines."""
    lines = ["| incident | refresh | detected | alerts | accepted after |", "|---|---|---|---|---|"]
    for k in score_.kinds:
        accepted = (
            "—"
            if k.accepted_after is None and k.kind != "level_shift"
            else (f"{k.accepted_after} runs" if k.accepted_after is not None else "never")
        )
        lines.append(f"| {k.kind} | {k.day} | {'yes' if k.detected else '**no**'} | {k.alerts} "
                     f"| {accepted} |")  # fmt: skip
    lines += ["", f"Recall {score_.recall:.0%}; false alarms {len(score_.false_alarms)} over "
              f"{score_.ordinary_days} ordinary refreshes."]  # fmt: skip
    lines += [f"- refresh {d}: {m} {what}" for d, m, what in score_.false_alarms]
    return "\n".join(lines)


def dump(score_: Score, path: Path) -> None:
    path.write_text(json.dumps(score_.as_dict(), indent=2, default=str) + "\n")
