"""Raw data on a server target (PostgreSQL): the loader's, never a job's.

DuckDB targets attach ``raw.duckdb`` directly. On a server the raw schemas belong to the EL
tool that fills them, so the jobs only check that every raw table the sources declare is
there (`check_raw_tables`). Loading the demo data set into a server is its own explicit
command, `mediapulse load-raw` (`load_raw`): it copies every raw table in one transaction,
skips the copy when the target already holds the same data set (same ``_mediapulse.generation``
row), and replaces only tables it created itself. It records those in
``_mediapulse.raw_tables`` with their oid: a table someone else created, or dropped and
re-created since (a new oid), is refused by name, never truncated, dropped or altered.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.sources import RAW_TABLES, declared_raw_tables
from mediapulse.engines.base import Engine
from mediapulse.engines.duckdb import open_duckdb
from mediapulse.security.personal import masked_name, masked_tables

REGISTRY = "_mediapulse.raw_tables"
_POSTGRES_TYPES = {
    "BIGINT": "bigint",
    "INTEGER": "integer",
    "VARCHAR": "text",
    "TIMESTAMP": "timestamp",
    "DATE": "date",
    "BOOLEAN": "boolean",
    "DOUBLE": "double precision",
}


def _postgres_type(duckdb_type: str) -> str:
    if duckdb_type.startswith("DECIMAL"):
        return duckdb_type.replace("DECIMAL", "numeric")
    try:
        return _POSTGRES_TYPES[duckdb_type]
    except KeyError:
        raise MediaPulseError(f"raw column type {duckdb_type} has no PostgreSQL mapping") from None


def _generation_row(cursor) -> tuple | None:  # type: ignore[no-untyped-def]
    cursor.execute("select to_regclass('_mediapulse.generation')")
    if cursor.fetchone()[0] is None:
        return None
    cursor.execute("select * from _mediapulse.generation")
    return cursor.fetchone()


def check_raw_tables(engine: Engine) -> None:
    """What a job needs from a server's raw schemas: every declared table exists, and for a
    CI run the masked copies it reads instead of the personal ones. Read only."""
    project, target = engine.project, engine.target
    masked = []
    if engine.raw_schema_suffix:
        masked = [masked_name(table) for table in masked_tables(project)]
    with engine.connect("check the raw tables") as session, session.con.cursor() as cursor:
        for table in declared_raw_tables(project):
            cursor.execute("select pg_catalog.to_regclass(%s)", [table])
            if cursor.fetchone()[0] is None:
                raise MediaPulseError(
                    f"raw table {table} not found in target '{target}': load it with your "
                    f"EL tool or `mediapulse load-raw --target {target}`"
                )
        for view in masked:
            cursor.execute("select pg_catalog.to_regclass(%s)", [view])
            if cursor.fetchone()[0] is None:
                raise MediaPulseError(
                    f"masked copy {view} not found in target '{target}': a CI run reads "
                    "personal raw data only masked; the database owner creates it by "
                    "running `mediapulse access-sql` again "
                    '(docs/targets/postgresql-production.md, "Setting up a server")'
                )


def _registered(cursor) -> dict[str, int]:  # type: ignore[no-untyped-def]
    """The tables load-raw created, with the oid each had when it did."""
    cursor.execute("select to_regclass(%s)", [REGISTRY])
    if cursor.fetchone()[0] is None:
        return {}
    cursor.execute(f"select table_name, table_oid from {REGISTRY}")
    return {name: int(oid) for name, oid in cursor.fetchall()}


def check_owned(cursor, target: str) -> None:  # type: ignore[no-untyped-def]
    """Refuse, naming the table, when a raw table load-raw would replace is not its own."""
    registered = _registered(cursor)
    for table in RAW_TABLES:
        cursor.execute("select to_regclass(%s)::oid", [table])
        oid = cursor.fetchone()[0]
        if oid is not None and registered.get(table) != int(oid):
            raise MediaPulseError(
                f"raw table {table} in target '{target}' was not created by `mediapulse "
                "load-raw`: it belongs to your loader; refusing to replace it (drop it "
                "yourself only if it holds nothing but demo data, e.g. from an earlier "
                "mediapulse)"
            )


def _register(cursor, table: str) -> None:  # type: ignore[no-untyped-def]
    cursor.execute(
        f"create table if not exists {REGISTRY} (table_name text primary key, "
        "table_oid oid not null, loaded_at timestamp with time zone not null default now())"
    )
    cursor.execute(
        f"insert into {REGISTRY} (table_name, table_oid) values (%s, to_regclass(%s)::oid) "
        "on conflict (table_name) do update set table_oid = excluded.table_oid, "
        "loaded_at = now()",
        [table, table],
    )


def load_raw(engine: Engine) -> str:
    """Make the target's raw schemas hold the data set in raw.duckdb; returns what it did."""
    project, target = engine.project, engine.target
    source = open_duckdb(project.raw_path, purpose="read the raw data", read_only=True)
    try:
        with engine.connect("load the raw data", write=True) as session:
            with session.con.cursor() as cursor:
                wanted = source.execute("select * from _mediapulse.generation").fetchone()
                if _generation_row(cursor) == wanted:
                    return f"raw data already loaded into target '{target}'"
                check_owned(cursor, target)
            with (
                tempfile.TemporaryDirectory(prefix="mediapulse-raw-") as tmp,
                session.con.cursor() as cursor,
            ):
                counts = {}
                cursor.execute("create schema if not exists _mediapulse")
                for table in RAW_TABLES:
                    counts[table] = _copy_table(source, cursor, table, Path(tmp))
                    _register(cursor, table)
    finally:
        source.close()
    rows = sum(v for k, v in counts.items() if not k.startswith("_"))
    return f"loaded {rows:,} raw rows into target '{target}' ({len(counts) - 1} tables)"


def _copy_table(source: duckdb.DuckDBPyConnection, cursor, table: str, tmp: Path) -> int:  # type: ignore[no-untyped-def]
    schema, name = table.split(".")
    columns = source.execute(
        "select column_name, data_type from information_schema.columns "
        "where table_schema = ? and table_name = ? order by ordinal_position",
        [schema, name],
    ).fetchall()
    if not columns:
        raise MediaPulseError(f"raw table {table} is missing from {source}: regenerate the data")
    column_sql = ", ".join(f'"{c}" {_postgres_type(t)}' for c, t in columns)
    csv_path = tmp / f"{schema}.{name}.csv"
    source.execute(f"copy (select * from {table}) to '{csv_path}' (header false, format csv)")
    cursor.execute(f"create schema if not exists {schema}")
    if _pg_columns(cursor, schema, name) == [(c, _postgres_type(t)) for c, t in columns]:
        # same shape: keep the table, so the staging views that read it stay valid
        cursor.execute(f"truncate table {table}")
    else:
        # a new or changed shape (a fault renames a column): dbt rebuilds dependent views.
        # Only ever a table load-raw created (check_owned ran first, in this transaction).
        cursor.execute(f"drop table if exists {table} cascade")
        cursor.execute(f"create table {table} ({column_sql})")
    with csv_path.open() as handle:
        cursor.copy_expert(f"copy {table} from stdin with (format csv)", handle)
    return cursor.rowcount


def _pg_columns(cursor, schema: str, name: str) -> list[tuple[str, str]]:  # type: ignore[no-untyped-def]
    cursor.execute(
        "select a.attname, format_type(a.atttypid, a.atttypmod) from pg_attribute a "
        "where a.attrelid = to_regclass(%s) and a.attnum > 0 and not a.attisdropped "
        "order by a.attnum",
        [f"{schema}.{name}"],
    )
    return [
        (n, t.replace("timestamp without time zone", "timestamp")) for n, t in cursor.fetchall()
    ]
