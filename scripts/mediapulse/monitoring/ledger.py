"""Tables of the run history that the alerting keeps beside what jobs record: the data diff
kept with each release (module changes) and the incidents (module incidents).

They live in the history's schema `monitoring` (DuckDB: the history's own file; PostgreSQL:
the target's database), created with `create table if not exists` like the history's own, so
they outlive releases and rollbacks as the history does. Module history owns the job's
tables; this one only adds its own, through the history's public helpers (`ensure`, the
DuckDB file's path).
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from mediapulse.engines.base import Engine
from mediapulse.engines.duckdb import open_duckdb
from mediapulse.monitoring import history

Columns = Sequence[tuple[str, str]]


def prefix(marker: str) -> str:
    """How a reader of the monitoring views (module views) names the history's tables: on
    DuckDB the history is attached as catalog `monitoring`."""
    return f"{history.CATALOG}.{history.SCHEMA}" if marker == "?" else history.SCHEMA


@contextmanager
def writing(engine: Engine, purpose: str) -> Iterator[tuple[Any, str]]:
    """A connection that writes the target's history in one transaction, committed when the
    block ends, and its parameter marker. The history exists first (`history.ensure`, which
    on PostgreSQL refuses a schema it does not own)."""
    history.ensure(engine)
    if engine.embedded:
        con = open_duckdb(history.duckdb_path(engine), purpose)
        try:
            con.execute("begin transaction")
            yield con, "?"
            con.execute("commit")
        finally:
            con.close()
        return
    with engine.connect(purpose) as session:
        yield session.con, session.marker
        session.con.commit()


def _cursor(con: Any, marker: str) -> Any:
    """DuckDB: the connection itself (its cursor is a connection of its own, outside the
    transaction `writing` began)."""
    return con if marker == "?" else con.cursor()


def create(con: Any, marker: str, tables: Mapping[str, Columns]) -> None:
    cursor = _cursor(con, marker)
    for table, columns in tables.items():
        body = ", ".join(f"{name} {kind}" for name, kind in columns)
        cursor.execute(f"create table if not exists {history.SCHEMA}.{table} ({body})")


def insert(con: Any, marker: str, table: str, columns: Columns, rows: list[dict[str, Any]]) -> None:
    """Rows into ``table`` (a handful per run: no bulk path needed)."""
    if not rows:
        return
    names = [name for name, _ in columns]
    sql = (
        f"insert into {history.SCHEMA}.{table} ({', '.join(names)}) "
        f"values ({', '.join([marker] * len(names))})"
    )
    cursor = _cursor(con, marker)
    for row in rows:
        cursor.execute(sql, [row.get(name) for name in names])


def exists(reader: Any, table: str) -> bool:
    """Whether ``table`` of this module's is in the history yet (a history older than it)."""
    if reader.marker == "?":
        sql = (
            "select count(*) as n from duckdb_tables() where database_name = ? "
            "and schema_name = ? and table_name = ?"
        )
        params = [history.CATALOG, history.SCHEMA, table]
    else:
        sql = (
            "select count(*) as n from information_schema.tables where table_schema = %s "
            "and table_name = %s"
        )
        params = [history.SCHEMA, table]
    cursor = reader.con.cursor()
    cursor.execute(sql, params)
    return bool(cursor.fetchone()[0])


def execute(con: Any, marker: str, sql: str, params: Sequence[Any] = ()) -> None:
    """A statement on a `writing` connection; `{history}` names the history's schema."""
    _cursor(con, marker).execute(sql.replace("{history}", history.SCHEMA), list(params))


def rows(reader: Any, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Rows of ``sql`` as dicts; `{history}` in it names the history's schema."""
    cursor = reader.con.cursor()
    cursor.execute(sql.replace("{history}", prefix(reader.marker)), list(params))
    names = [d[0] for d in cursor.description]
    return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
