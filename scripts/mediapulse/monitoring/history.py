"""Run history: what every job did, kept where later jobs, the SLI models and the morning
report read it.

A job records itself after dbt has finished, from dbt's artifacts (run_results.json,
manifest.json, sources.json), never from `on-run-end` hooks: a hook runs inside dbt, on one
thread, with a round trip per insert (Elementary's hooks add a minute to a small run, its issue
#895). Recording here is a few inserts in one transaction.

Where the history lives, as tables of schema `monitoring`:

- PostgreSQL: in the target's database. A release swaps its own schemas (`*__green`,
  `*__previous`), never `monitoring`, so the history outlives releases and rollbacks.
- DuckDB: in a file of its own beside the target's, `monitoring_<target>.duckdb`, which every
  DuckDB target attaches read-only as catalog `monitoring` (for the SLI models). Not in the
  production file itself: a release replaces that file by a rename and a rollback puts an older
  one back (the history would go with it), a failed release must leave it byte for byte as it
  was, and a writer would need a lock that readers of production hold.

A run is keyed by dbt's invocation id of the job's build (a job that ran no dbt, such as a
refresh with nothing new, gets an id of its own): recording the same run again replaces its
rows, so loading twice changes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.core.sources import is_raw_source
from mediapulse.dbt import artifacts
from mediapulse.engines.base import Capability, Engine
from mediapulse.engines.duckdb import duckdb_file, open_duckdb
from mediapulse.engines.targets import resolve
from mediapulse.monitoring import anomalies, schema_changes, tuning

SCHEMA = "monitoring"
INSERT_BATCH = 500  # rows per insert statement on PostgreSQL
DUCKDB_TYPES = {"double precision": "double"}  # the portable names DuckDB's JSON reader lacks
CATALOG = "monitoring"  # DuckDB: the alias every target attaches the history file as

# table -> columns (name, portable type): the same DDL on DuckDB and PostgreSQL
TABLES: dict[str, tuple[tuple[str, str], ...]] = {
    "runs": (
        ("run_id", "varchar"),
        ("job", "varchar"),
        ("target", "varchar"),
        ("git_revision", "varchar"),
        ("started_at", "timestamp"),
        ("duration_s", "double precision"),
        ("dbt_seconds", "double precision"),
        ("status", "varchar"),
        ("release_id", "varchar"),
        ("dbt_version", "varchar"),
        ("nodes", "integer"),
        ("recorded_at", "timestamp"),
    ),
    "node_results": (
        ("run_id", "varchar"),
        ("unique_id", "varchar"),
        ("resource_type", "varchar"),
        ("name", "varchar"),
        ("status", "varchar"),
        ("execution_time_s", "double precision"),
        ("rows_affected", "bigint"),
        ("failures", "bigint"),
        ("message", "varchar"),
        ("tested_node", "varchar"),
        ("is_critical", "boolean"),
        ("owner", "varchar"),
        ("started_at", "timestamp"),
    ),
    "source_freshness": (
        ("run_id", "varchar"),
        ("unique_id", "varchar"),
        ("source_name", "varchar"),
        ("table_name", "varchar"),
        ("status", "varchar"),
        ("max_loaded_at", "timestamp"),
        ("snapshotted_at", "timestamp"),
        ("age_s", "double precision"),
    ),
    "relation_sizes": (
        ("run_id", "varchar"),
        ("unique_id", "varchar"),
        ("relation", "varchar"),
        ("row_count", "bigint"),
        ("measured_at", "timestamp"),
    ),
    # every value judged against its series' earlier runs (module anomalies): the trend data
    # of the report and the flags that keep anomalies out of later baselines
    "anomalies": (
        ("run_id", "varchar"),
        ("job", "varchar"),
        ("unique_id", "varchar"),
        ("metric", "varchar"),
        ("value", "double precision"),
        ("baseline_n", "integer"),
        ("baseline_median", "double precision"),
        ("baseline_mad", "double precision"),
        ("score", "double precision"),
        ("is_anomaly", "boolean"),
        # added by issue 30 (ADDED_COLUMNS): normal, anomaly (a new alert), persisting (the
        # anomaly before, still going on), accepted (a level shift become the new normal),
        # too_short (not judged); and why
        ("status", "varchar"),
        ("reason", "varchar"),
    ),
    # series someone marked an incident from a run on: a level shift there is never accepted
    # as the new normal (mark_incident)
    "anomaly_marks": (
        ("unique_id", "varchar"),
        ("metric", "varchar"),
        ("from_run_id", "varchar"),
        ("note", "varchar"),
        ("marked_at", "timestamp"),
    ),
    # what the check before the build found (module schema_changes)
    "schema_changes": (
        ("run_id", "varchar"),
        ("source_name", "varchar"),
        ("table_name", "varchar"),
        ("column_name", "varchar"),
        ("change", "varchar"),
        ("declared_type", "varchar"),
        ("actual_type", "varchar"),
        ("renamed_from", "varchar"),
        ("severity", "varchar"),
    ),
}


# columns added to a table after its first release: a history created before gets them
ADDED_COLUMNS = {"anomalies": ("status", "reason")}


@dataclass
class RunRecord:
    """One job's rows, ready to store (pure data)."""

    run: dict[str, Any]
    node_results: list[dict[str, Any]] = field(default_factory=list)
    source_freshness: list[dict[str, Any]] = field(default_factory=list)
    relation_sizes: list[dict[str, Any]] = field(default_factory=list)
    schema_changes: list[dict[str, Any]] = field(default_factory=list)
    anomalies: list[dict[str, Any]] = field(default_factory=list)  # computed when stored
    measured: bool = True  # the sizes were measured right after the job (not loaded later)
    # unique id -> how its series are judged (models' and sources' meta, module tuning)
    settings: dict[str, anomalies.Settings] = field(default_factory=dict)

    @property
    def run_id(self) -> str:
        return str(self.run["run_id"])

    def rows(self) -> dict[str, list[dict[str, Any]]]:
        return {
            "runs": [self.run],
            "node_results": self.node_results,
            "source_freshness": self.source_freshness,
            "relation_sizes": self.relation_sizes,
            "schema_changes": self.schema_changes,
            "anomalies": self.anomalies,
        }


# -- from artifacts to rows (pure) ------------------------------------------------------------


def _timestamp(text: Any) -> datetime | None:
    """dbt's ISO timestamps (UTC, with or without `Z`) as naive UTC datetimes."""
    if not text:
        return None
    value = datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return value.astimezone(UTC).replace(tzinfo=None) if value.tzinfo else value


def _started_at(result: dict[str, Any]) -> datetime | None:
    starts = [_timestamp(t.get("started_at")) for t in result.get("timing") or []]
    starts = [s for s in starts if s is not None]
    return min(starts) if starts else None


def _rows_affected(result: dict[str, Any]) -> int | None:
    value = (result.get("adapter_response") or {}).get("rows_affected")
    return int(value) if isinstance(value, int | float) and value >= 0 else None


def _tested_node(node: dict[str, Any]) -> str | None:
    """What a test tests: its attached node, a unit test's model, or (a source's tests name
    no attached node) the source it reads."""
    kind = node.get("resource_type")
    if kind == "unit_test":
        return node.get("model")
    if kind != "test":
        return None
    depends = (node.get("depends_on") or {}).get("nodes", [])
    return node.get("attached_node") or next((p for p in depends if p.startswith("source.")), None)


def node_rows(run_id: str, run_results: dict[str, Any], manifest: dict[str, Any]) -> list[dict]:
    """A row per node dbt ran: status, time, rows, failures, and for tests what they test."""
    nodes = {**manifest.get("nodes", {}), **manifest.get("unit_tests", {})}
    rows = []
    for result in run_results.get("results", []):
        uid = result["unique_id"]
        node = nodes.get(uid) or manifest.get("sources", {}).get(uid) or {}
        config = node.get("config") or {}
        tags = set(node.get("tags") or []) | set(config.get("tags") or [])
        tested = _tested_node(node)
        if tested and not tested.startswith(("model.", "seed.", "snapshot.", "source.")):
            tested = f"model.{node.get('package_name')}.{tested}"
        message = str(result.get("message") or "")
        rows.append({
            "run_id": run_id,
            "unique_id": uid,
            "resource_type": node.get("resource_type") or uid.split(".")[0],
            "name": node.get("name") or uid.split(".")[-1],
            "status": str(result.get("status")),
            "execution_time_s": float(result.get("execution_time") or 0.0),
            "rows_affected": _rows_affected(result),
            "failures": result.get("failures"),
            "message": message[:2000],
            "tested_node": tested,
            "is_critical": "critical" in tags,
            "owner": config.get("group") or node.get("group"),
            "started_at": _started_at(result),
        })  # fmt: skip
    return rows


def freshness_rows(run_id: str, sources: dict[str, Any]) -> list[dict]:
    """A row per source freshness check (sources.json)."""
    rows = []
    for result in sources.get("results", []):
        uid = str(result.get("unique_id"))
        parts = uid.split(".")
        rows.append({
            "run_id": run_id,
            "unique_id": uid,
            "source_name": parts[2] if len(parts) > 3 else None,
            "table_name": parts[-1],
            "status": str(result.get("status")),
            "max_loaded_at": _timestamp(result.get("max_loaded_at")),
            "snapshotted_at": _timestamp(result.get("snapshotted_at")),
            "age_s": result.get("max_loaded_at_time_ago_in_s"),
        })  # fmt: skip
    return rows


def measured_relations(manifest: dict[str, Any]) -> dict[str, str]:
    """unique id -> relation whose size a run records: the project's tables (incremental
    included) and snapshots, and its sources."""
    ours = manifest.get("metadata", {}).get("project_name")
    relations = {
        uid: artifacts.unquoted_relation(node)
        for uid, node in manifest.get("nodes", {}).items()
        if node.get("package_name") == ours and node.get("relation_name")
        and (node.get("resource_type") == "snapshot" or (
            node.get("resource_type") == "model"
            and (node.get("config") or {}).get("materialized") in ("table", "incremental")))
    }  # fmt: skip
    relations.update({
        uid: artifacts.unquoted_relation(source)
        for uid, source in manifest.get("sources", {}).items()
        if source.get("package_name") == ours and source.get("relation_name")
        and is_raw_source(source)
    })  # fmt: skip
    return relations


def git_revision(project: Project) -> str | None:
    """The commit the job ran (GitHub gives it; elsewhere git), or None outside a repository."""
    if os.environ.get("GITHUB_SHA"):
        return os.environ["GITHUB_SHA"]
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=project.root, capture_output=True, text=True,
            timeout=10, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None


@dataclass
class Job:
    """What the job knows about itself, beside dbt's artifacts."""

    job: str
    target: str
    started: datetime = field(default_factory=lambda: datetime.now(UTC).replace(tzinfo=None))
    clock: float = field(default_factory=time.perf_counter)

    def record(
        self,
        project: Project,
        ok: bool,
        artifacts_dir: Path | None,
        release_id: str | None = None,
        sizes: dict[str, int] | None = None,
    ) -> RunRecord:
        """This job's rows, from the artifacts in ``artifacts_dir`` (none: a job that ran no
        dbt)."""
        run_results = _optional(artifacts_dir, "run_results.json")
        manifest = _optional(artifacts_dir, "manifest.json") or {}
        sources = _optional(artifacts_dir, "sources.json")
        meta = (run_results or {}).get("metadata", {})
        run_id = meta.get("invocation_id") or f"{self.job}-{uuid.uuid4().hex}"
        now = datetime.now(UTC).replace(tzinfo=None)
        record = RunRecord(run={
            "run_id": run_id,
            "job": self.job,
            "target": self.target,
            "git_revision": git_revision(project),
            "started_at": self.started,
            "duration_s": round(time.perf_counter() - self.clock, 3),
            "dbt_seconds": (run_results or {}).get("elapsed_time"),
            "status": "success" if ok else "failed",
            "release_id": release_id,
            "dbt_version": meta.get("dbt_version"),
            "nodes": len((run_results or {}).get("results", [])),
            "recorded_at": now,
        })  # fmt: skip
        if run_results:
            record.node_results = node_rows(run_id, run_results, manifest)
        if sources and _same_run(sources, run_results):
            record.source_freshness = freshness_rows(run_id, sources)
        record.schema_changes = [
            {"run_id": run_id, **change.as_row()}
            for change in schema_changes.found(resolve(project, self.target))
        ]
        record.settings = tuning.from_manifest(manifest)
        relations = measured_relations(manifest)
        record.relation_sizes = [
            dict(run_id=run_id, unique_id=uid, relation=relations[uid], row_count=count,
                 measured_at=now)
            for uid, count in sorted((sizes or {}).items())
            if uid in relations
        ]  # fmt: skip
        return record


def timed_by_dbt(folder: Path) -> dict[str, Any]:
    """A run's start and duration as its artifacts give them (dbt's build), for a run loaded
    after the fact."""
    run_results = _optional(folder, "run_results.json") or {}
    elapsed = float(run_results.get("elapsed_time") or 0.0)
    written = _timestamp(run_results.get("metadata", {}).get("generated_at"))
    started = written - timedelta(seconds=elapsed) if written else None
    return {"started_at": started, "duration_s": round(elapsed, 3)}


def _optional(folder: Path | None, name: str) -> dict[str, Any] | None:
    if folder is None or not (folder / name).is_file():
        return None
    return artifacts.load_json(folder / name, f"dbt {name}")


def _same_run(sources: dict[str, Any], run_results: dict[str, Any] | None) -> bool:
    """sources.json belongs to this job: written by it, not carried over from the release it
    replaced (a refresh or a deploy keeps the nightly's freshness in the published state)."""
    if run_results is None:
        return True
    written = _timestamp(sources.get("metadata", {}).get("generated_at"))
    started = _timestamp(run_results.get("metadata", {}).get("generated_at"))
    return written is not None and started is not None and written >= started


# -- the store --------------------------------------------------------------------------------


def duckdb_path(engine: Engine) -> Path:
    project, target = engine.project, engine.target
    return project.warehouse_dir / f"{CATALOG}_{target}.duckdb"


def _ddl(table: str, columns: Sequence[tuple[str, str]]) -> str:
    body = ", ".join(f"{name} {kind}" for name, kind in columns)
    return f"create table if not exists {SCHEMA}.{table} ({body})"


def _create(cursor: Any) -> None:
    cursor.execute(f"create schema if not exists {SCHEMA}")
    for table, columns in TABLES.items():
        cursor.execute(_ddl(table, columns))
    for table, added in ADDED_COLUMNS.items():
        kinds = dict(TABLES[table])
        for name in added:
            cursor.execute(
                f"alter table {SCHEMA}.{table} add column if not exists {name} {kinds[name]}"
            )


@contextmanager
def _connect(engine: Engine, write: bool) -> Iterator[tuple[Any, str]]:
    """A DB-API connection to the target's history and its parameter marker."""
    target = engine.target
    engine.require(Capability.RUN_HISTORY)
    purpose = "record the run history" if write else "read the run history"
    if engine.embedded:  # a file of its own beside the target's (profiles.yml attaches it)
        path = duckdb_path(engine)
        if write and not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            duckdb.connect(str(path)).close()
        with open_duckdb(path, purpose, read_only=not write) as con:
            yield con, "?"
        return
    with engine.connect(purpose) as session:  # a schema of the target's database
        if write:
            _check_owner(session.con, target)
        yield session.con, session.marker


def _check_owner(con: Any, target: str) -> None:
    """A `monitoring` schema the writing role does not own is refused: its owner could read
    or rewrite what production records, or replace the tables it writes into. (No other role
    may create schemas, docs/targets/postgresql-production.md, "Roles and grants"; this holds
    even if one could.)"""
    with con.cursor() as cursor:
        cursor.execute(
            "select pg_catalog.pg_get_userbyid(nspowner), current_user "
            "from pg_catalog.pg_namespace where nspname = %s",
            [SCHEMA],
        )
        row = cursor.fetchone()
    con.rollback()
    if row is not None and row[0] != row[1]:
        owner, writer = row
        raise MediaPulseError(
            f"schema {SCHEMA} on target '{target}' is owned by {owner}, not {writer} (the role "
            "that writes the run history): refusing to write there; as the database owner, "
            f"check what it holds, then `alter schema {SCHEMA} rename to {SCHEMA}_suspect` (or "
            f"drop it) and let the next job create it, or `alter schema {SCHEMA} owner to "
            f"{writer}` if it is the history"
        )


def ensure(engine: Engine) -> None:
    """The history tables exist (DuckDB: the file every target attaches read-only)."""
    with _connect(engine, write=True) as (con, _):
        cursor = con.cursor()
        _create(cursor)
        con.commit()


def store(engine: Engine, record: RunRecord, keep_run: bool = False) -> None:
    """Replace the run's rows with ``record``'s, in one transaction. ``keep_run``: a load
    after the fact (`mediapulse record`) keeps what the job recorded of itself (its times,
    the sizes it measured) and replaces only what the artifacts say, with the same rows."""
    with _connect(engine, write=True) as (con, marker):
        # DuckDB: the connection itself (a DuckDB cursor is a connection of its own, whose
        # transaction the connection's commit would not end)
        cursor = con if marker == "?" else con.cursor()
        _create(cursor)
        if marker == "?":
            cursor.execute("begin transaction")
        cursor.execute(f"select count(*) from {SCHEMA}.runs where run_id = {marker}",
                       [record.run_id])  # fmt: skip
        known = cursor.fetchone()[0] > 0
        for table, rows in record.rows().items():
            if table == "anomalies":
                continue  # judged below, from what the store now holds of the run
            if known and ((keep_run and table == "runs") or
                          (table == "relation_sizes" and not record.measured)):  # fmt: skip
                continue
            cursor.execute(f"delete from {SCHEMA}.{table} where run_id = {marker}", [record.run_id])
            if marker == "?":
                _insert_duckdb(cursor, table, rows)
            else:
                _insert_postgres(cursor, table, rows)
        record.anomalies = _judge_run(cursor, marker, record.run_id, record.settings)
        cursor.execute(f"delete from {SCHEMA}.anomalies where run_id = {marker}", [record.run_id])
        if marker == "?":
            _insert_duckdb(cursor, "anomalies", record.anomalies)
        else:
            _insert_postgres(cursor, "anomalies", record.anomalies)
        con.commit()


def _judge_run(
    cursor: Any, marker: str, run_id: str, settings: dict[str, anomalies.Settings] | None = None
) -> list[dict[str, Any]]:
    """The run's rows added (per relation, since the same job's previous measurement) and
    model execution times, each judged against the same job's earlier runs (module anomalies:
    the value itself and earlier anomalies are never part of a baseline)."""
    settings = settings or {}
    cursor.execute(f"select job, started_at from {SCHEMA}.runs where run_id = {marker}", [run_id])
    job, started = cursor.fetchone()
    values: dict[tuple[str, str], float] = {}
    cursor.execute(
        f"select unique_id, execution_time_s from {SCHEMA}.node_results where run_id = {marker} "
        "and resource_type = 'model' and status = 'success'",
        [run_id],
    )
    for uid, seconds in cursor.fetchall():
        values[(anomalies.EXECUTION_TIME.name, uid)] = float(seconds or 0.0)
    cursor.execute(
        f"""
        select now.unique_id, now.row_count, (
            select before.row_count
            from {SCHEMA}.relation_sizes as before
            inner join {SCHEMA}.runs as earlier on earlier.run_id = before.run_id
            where before.unique_id = now.unique_id and earlier.job = {marker}
                and earlier.started_at < {marker}
            order by earlier.started_at desc
            limit 1
        )
        from {SCHEMA}.relation_sizes as now
        where now.run_id = {marker}
        """,
        [job, started, run_id],
    )
    for uid, count, previous in cursor.fetchall():
        if previous is not None:
            values[(anomalies.ROWS_ADDED.name, uid)] = float(count - previous)
    if not values:
        return []
    baselines = _series(cursor, marker, job, started, run_id)
    marked = _marked(cursor, marker)
    rows = []
    for (metric, uid), value in sorted(values.items()):
        points = baselines.get((metric, uid), [])
        verdict = anomalies.judge_point(
            value, started, points, anomalies.METRICS[metric],
            settings.get(uid, anomalies.DEFAULT),
            marked=(metric, uid) in marked,
        )  # fmt: skip
        rows.append({
            "run_id": run_id, "job": job, "unique_id": uid, "metric": metric, "value": value,
            "baseline_n": verdict.baseline_n, "baseline_median": verdict.median,
            "baseline_mad": verdict.mad, "score": verdict.score, "is_anomaly": verdict.is_anomaly,
            "status": verdict.status, "reason": verdict.reason,
        })  # fmt: skip
    return rows


SERIES_DEPTH = 240  # earlier points per series read to judge a value (about eight months)


def _series(
    cursor: Any, marker: str, job: str, started: Any, run_id: str
) -> dict[tuple[str, str], list[anomalies.Point]]:
    """Every series' earlier points of the same job, oldest first, with their verdicts."""
    cursor.execute(
        f"""
        select metric, unique_id, run_id, value, is_anomaly, started_at, status, score,
            baseline_median
        from (
            select judged.*, earlier.started_at, row_number() over (
                partition by judged.metric, judged.unique_id order by earlier.started_at desc
            ) as recency
            from {SCHEMA}.anomalies as judged
            inner join {SCHEMA}.runs as earlier on earlier.run_id = judged.run_id
            where judged.job = {marker} and earlier.started_at < {marker}
                and judged.run_id <> {marker}
        ) as baseline
        where recency <= {SERIES_DEPTH}
        order by metric, unique_id, recency desc
        """,
        [job, started, run_id],
    )
    series: dict[tuple[str, str], list[anomalies.Point]] = {}
    for metric, uid, run, value, flagged, at, status, score, median in cursor.fetchall():
        series.setdefault((metric, uid), []).append(
            anomalies.Point(run, float(value), bool(flagged), at, status, score, median)
        )
    return series


def _marked(cursor: Any, marker: str) -> set[tuple[str, str]]:
    cursor.execute(f"select metric, unique_id from {SCHEMA}.anomaly_marks")
    return {(metric, uid) for metric, uid in cursor.fetchall()}


def mark_incident(
    engine: Engine, unique_id: str, metric: str = "rows_added", note: str = ""
) -> str:
    """Mark a series' current anomaly an incident: its level is never accepted as the new
    normal (until the mark is removed from `monitoring.anomaly_marks`)."""
    if metric not in anomalies.METRICS:
        raise MediaPulseError(
            f"metric {metric!r}: use one of {', '.join(sorted(anomalies.METRICS))}"
        )
    with _connect(engine, write=True) as (con, marker):
        cursor = con if marker == "?" else con.cursor()
        _create(cursor)
        now = datetime.now(UTC).replace(tzinfo=None)
        cursor.execute(
            f"insert into {SCHEMA}.anomaly_marks values ({', '.join([marker] * 5)})",
            [unique_id, metric, None, note, now],
        )
        con.commit()
    return f"{unique_id} ({metric}) marked an incident: its level shift stays an anomaly"


def _insert_duckdb(con: Any, table: str, rows: list[dict[str, Any]]) -> None:
    """Rows into DuckDB through a JSON file it reads in one statement: binding parameters
    (executemany, or many rows per insert) took 1.3-3 s for a build's ~300 nodes."""
    if not rows:
        return
    columns = TABLES[table]
    types = ", ".join(
        f"'{name}': '{DUCKDB_TYPES.get(kind, kind).upper()}'" for name, kind in columns
    )
    with tempfile.TemporaryDirectory(prefix="mediapulse-history-") as folder:
        path = Path(folder) / f"{table}.json"
        with path.open("w") as handle:
            for row in rows:
                values = {name: row.get(name) for name, _ in columns}
                handle.write(json.dumps(values, default=_json_value) + "\n")
        names = ", ".join(name for name, _ in columns)
        con.execute(
            f"insert into {SCHEMA}.{table} ({names}) select {names} from read_json(?, "
            f"format = 'newline_delimited', columns = {{{types}}})",
            [str(path)],
        )


def _json_value(value: Any) -> str:
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    raise TypeError(f"run history: cannot store {type(value).__name__} {value!r}")


def _insert_postgres(cursor: Any, table: str, rows: list[dict[str, Any]]) -> None:
    """Rows into PostgreSQL, many per statement (one round trip per row otherwise)."""
    names = [name for name, _ in TABLES[table]]
    one = f"({', '.join(['%s'] * len(names))})"
    for start in range(0, len(rows), INSERT_BATCH):
        batch = rows[start : start + INSERT_BATCH]
        cursor.execute(
            f"insert into {SCHEMA}.{table} ({', '.join(names)}) values "
            + ", ".join([one] * len(batch)),
            [row.get(name) for row in batch for name in names],
        )


def read(engine: Engine, sql: str) -> list[tuple]:
    """Rows of a query on the history (schema `monitoring`), read only."""
    with _connect(engine, write=False) as (con, _):
        cursor = con.cursor()
        cursor.execute(sql)
        return list(cursor.fetchall())


def measure_sizes(
    engine: Engine, manifest: dict[str, Any], database: Path | None = None
) -> dict[str, int]:
    """Row counts of the relations a run records (`measured_relations`), read only: on DuckDB
    from ``database`` (the file the job built: the live production after a release) with the
    raw data attached, on PostgreSQL from the target's database. A relation that does not
    exist (not built yet) is left out."""
    project, target = engine.project, engine.target
    relations = measured_relations(manifest)
    if not relations:
        return {}
    sizes: dict[str, int] = {}
    if engine.embedded:
        path = database or duckdb_file(project, target)
        if not path.exists():
            return {}
        with open_duckdb(path, "measure the run's relations", read_only=True) as con:
            if project.raw_path.exists():
                con.execute(f"attach '{project.raw_path}' as raw (read_only)")
            for uid, relation in relations.items():
                try:
                    sizes[uid] = int(con.execute(f"select count(*) from {relation}").fetchone()[0])
                except duckdb.Error:
                    continue
        return sizes

    with engine.connect("measure the run's relations") as session:
        for uid, relation in relations.items():
            schema_table = ".".join(relation.split(".")[-2:])
            if session.one(f"select to_regclass({session.marker})", [schema_table])[0] is None:
                continue
            sizes[uid] = int(session.one(f"select count(*) from {schema_table}")[0])
    return sizes


def record_job(
    engine: Engine,
    job: Job,
    ok: bool,
    artifacts_dir: Path | None,
    release_id: str | None = None,
    database: Path | None = None,
    status: str | None = None,
) -> str:
    """Record a finished job; returns the report's line. Never fails the job: the history is
    how the job is watched, not part of what it does, so a failure to record is a notice."""
    project = engine.project
    if not engine.can(Capability.RUN_HISTORY):
        return f"notice: run history not recorded ({engine.described} does not keep one)"
    started = time.perf_counter()
    try:
        manifest = _optional(artifacts_dir, "manifest.json") or {}
        sizes = measure_sizes(engine, manifest, database) if ok and manifest else {}
        record = job.record(project, ok, artifacts_dir, release_id, sizes)
        if status:
            record.run["status"] = status
        store(engine, record)
    except (MediaPulseError, duckdb.Error, OSError, ValueError) as exc:
        return f"notice: run history not recorded ({exc})"
    except Exception as exc:  # psycopg2's errors, without importing it here
        if type(exc).__module__.split(".")[0] != "psycopg2":
            raise
        return f"notice: run history not recorded ({str(exc).strip().splitlines()[0]})"
    return (
        f"run history: run {record.run_id} recorded ({len(record.node_results)} nodes, "
        f"{len(record.relation_sizes)} relation sizes) in {time.perf_counter() - started:.2f} s"
    )


def record_artifacts(engine: Engine, job: str, folder: Path) -> str:
    """`mediapulse record`: load a job's artifacts after the fact (e.g. from a downloaded
    GitHub artifact). Its status is the nodes', its times dbt's; what the job recorded of
    itself (times, measured sizes) is kept when it did."""
    project, target = engine.project, engine.target
    if not (folder / "run_results.json").is_file():
        raise MediaPulseError(
            f"--artifacts {folder}: no run_results.json there; pass the directory a job left "
            "its dbt artifacts in (a release's published state, or target/ after a build)"
        )
    project.check_target(target)
    results = artifacts.load_json(folder / "run_results.json", "dbt run results")["results"]
    ok = not any(str(r.get("status")) in artifacts.FAILED_STATUSES for r in results)
    record = Job(job, target).record(project, ok, folder)
    record.measured = False
    record.run.update(timed_by_dbt(folder))  # the job's times, not this command's
    store(engine, record, keep_run=True)
    return (
        f"run {record.run_id} ({job} on '{target}') recorded: "
        f"{len(record.node_results)} nodes, {len(record.source_freshness)} freshness checks"
    )
