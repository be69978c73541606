"""Schema changes of the raw data, found before any model runs.

Each source table's actual columns and types (read from the raw database's catalog) are
compared with the columns and `data_type`s its sources YAML declares: added, removed and
retyped columns, a likely rename (``user_id`` gone, ``userId`` new with the same type) in one
line, and missing tables. On a critical source (tag ``critical``) anything but an added column
stops the job before dbt runs: a renamed key would otherwise reach the models as a "column not
found" at best, as nulls at worst. Elsewhere it is a warning (docs/test-severity.md, "Schema
changes of the sources").

The comparison is pure (``compare``, ``compare_table``); reading the YAML (PyYAML, no dbt
parse) and the catalog (DuckDB's ``duckdb_columns()``, PostgreSQL's ``pg_attribute``) is thin
I/O around it. It reads no rows: its cost does not grow with the data.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.sources import (
    DeclaredColumn,
    DeclaredTable,
    declared_sources,
    normalise_type,
    resolve_database,
)
from mediapulse.engines.base import Capability, Engine
from mediapulse.engines.duckdb import open_duckdb

CHANGES = ("added", "removed", "retyped", "renamed", "missing_table")
# Added columns are never errors: nothing reads a column the sources do not declare yet.
_ERRORS_ON_CRITICAL = frozenset({"removed", "retyped", "renamed", "missing_table"})
ROW_FIELDS = (
    "source_name", "table_name", "column_name", "change", "declared_type", "actual_type",
    "renamed_from", "severity",
)  # fmt: skip


def severity(change: str, critical: bool) -> str:
    """The policy: on a critical source every change but a new column stops the job."""
    if change not in CHANGES:
        raise ValueError(f"unknown schema change {change!r}")
    return "error" if critical and change in _ERRORS_ON_CRITICAL else "warn"


@dataclass(frozen=True)
class SchemaChange:
    """One difference between a source's declared and actual columns; ``as_row()`` is its row
    of the run history."""

    source_name: str
    table_name: str
    column_name: str | None  # None for a missing table; the new name for a rename
    change: str  # one of CHANGES
    declared_type: str | None
    actual_type: str | None
    renamed_from: str | None
    severity: str  # 'error' | 'warn'
    relation: str | None = field(default=None, compare=False)  # schema.table, for the message

    def as_row(self) -> dict[str, Any]:
        """The run history's row: every field but ``relation``."""
        return {name: getattr(self, name) for name in ROW_FIELDS}

    def line(self) -> str:
        """What the user reads, in one line: where, what changed, and the fix."""
        where = f"{self.severity}: source {self.source_name}.{self.table_name}"
        column, declared, actual = self.column_name, self.declared_type, self.actual_type
        if self.change == "added":
            what = (
                f"column {column} ({actual}) is new: nothing reads it yet; declare it in the "
                "source's columns with its data_type when a model needs it"
            )
        elif self.change == "removed":
            what = (
                f"column {column} ({declared}) is gone: restore it in the loader, or remove it "
                "from the source's columns and the models that read it"
            )
        elif self.change == "retyped":
            what = (
                f"column {column} is {actual}, declared {declared}: restore its type in the "
                "loader, or update the source's data_type and check the staging model's casts"
            )
        elif self.change == "renamed":
            what = (
                f"column {self.renamed_from} is gone and {column} ({actual}) is new: likely "
                f"renamed {self.renamed_from} -> {column}; rename it back in the loader, or "
                "update the source's columns and staging model"
            )
        else:
            relation = self.relation or self.table_name
            what = (
                f"table {relation} is missing: load it with the EL tool (the demo data: "
                "`mediapulse generate`, `mediapulse load-raw` on a server), or remove it from "
                "the source"
            )
        return f"{where}: {what}"

    def __str__(self) -> str:
        return self.line()


def _fold(name: str) -> str:
    """Names equal after normalising case and underscores: user_id, userId, USER_ID."""
    return name.replace("_", "").lower()


def compare_table(
    table: DeclaredTable, actual: list[tuple[str, str]], case_sensitive: bool = False
) -> list[SchemaChange]:
    """The changes of one existing table: ``actual`` is its (column, type) in order.

    ``case_sensitive``: DuckDB resolves ``user_id`` to a column ``USER_ID``, PostgreSQL does
    not (it folds an unquoted name to lower case, and the YAML's names are unquoted)."""
    if not table.columns:  # nothing declared to compare with: only the table's existence
        return []

    def change(kind: str, column: str, declared: str | None, found: str | None,
               renamed_from: str | None = None) -> SchemaChange:  # fmt: skip
        return SchemaChange(
            table.source_name,
            table.table_name,
            column,
            kind,
            declared,
            found,
            renamed_from,
            severity(kind, table.critical),
        )

    found = {
        (name if case_sensitive else name.lower()): (name, normalise_type(type_))
        for name, type_ in actual
    }
    declared = {c.name.lower(): (c.name, _type_of(c)) for c in table.columns}
    changes = [
        change("retyped", name, type_, found[key][1])
        for key, (name, type_) in declared.items()
        if key in found and type_ is not None and type_ != found[key][1]
    ]
    removed = [column for key, column in declared.items() if key not in found]
    added = [column for key, column in found.items() if key not in declared]

    def rename(old: tuple[str, str | None], new: tuple[str, str]) -> None:
        removed.remove(old)
        added.remove(new)
        changes.append(change("renamed", new[0], old[1], new[1], renamed_from=old[0]))

    # A rename keeps the type. First the same name in another case or spelling (user_id,
    # userId), then the only removed and the only added column of one type; more than one
    # candidate is not guessed.
    for old in list(removed):
        twins = [new for new in added if _fold(new[0]) == _fold(old[0]) and new[1] == old[1]]
        if len(twins) == 1:
            rename(old, twins[0])
    for type_ in sorted({t for _, t in removed if t is not None}):
        olds = [old for old in removed if old[1] == type_]
        news = [new for new in added if new[1] == type_]
        if len(olds) == 1 and len(news) == 1:
            rename(olds[0], news[0])
    changes += [change("removed", name, type_, None) for name, type_ in removed]
    changes += [change("added", name, None, type_) for name, type_ in added]
    # in the table's order: declared columns first, then the new ones
    order = [c.name.lower() for c in table.columns] + [name.lower() for name, _ in actual]
    return sorted(changes, key=lambda c: order.index((c.renamed_from or c.column_name).lower()))


def _type_of(column: DeclaredColumn) -> str | None:
    return normalise_type(column.data_type) if column.data_type else None


def compare(
    declared: list[DeclaredTable],
    actual: dict[tuple[str, str], list[tuple[str, str]]],
    case_sensitive: bool = False,
) -> list[SchemaChange]:
    """Every change of every declared table; ``actual`` maps (schema, table) to its columns,
    names as the engine stores them (lower-cased on DuckDB, which ignores case)."""
    changes: list[SchemaChange] = []
    for table in declared:
        relation = (table.schema, table.identifier)
        if not case_sensitive:
            relation = (table.schema.lower(), table.identifier.lower())
        columns = actual.get(relation)
        if columns is None:
            missing = SchemaChange(
                table.source_name, table.table_name, None, "missing_table", None, None, None,
                severity("missing_table", table.critical), f"{table.schema}.{table.identifier}",
            )  # fmt: skip
            changes.append(missing)
            continue
        changes += compare_table(table, columns, case_sensitive)
    return changes


# -- the declared sources: the YAML as written, no dbt parse -------------------------------------


# -- the actual columns: the catalog only ----------------------------------------------------------


def duckdb_columns(path: Path) -> tuple[str, dict[tuple[str, str], list[tuple[str, str]]]]:
    """(the catalog's name, (schema, table) -> [(column, type)]) of a raw DuckDB file."""
    con = open_duckdb(path, purpose="read the raw data's columns", read_only=True)
    try:
        database = con.execute("select current_database()").fetchone()[0]
        rows = con.execute(
            "select schema_name, table_name, column_name, data_type from duckdb_columns() "
            "where database_name = current_database() and not internal "
            "order by schema_name, table_name, column_index"
        ).fetchall()
    finally:
        con.close()
    columns: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for schema, table, column, type_ in rows:  # DuckDB ignores the case of names
        columns.setdefault((schema.lower(), table.lower()), []).append((column, type_))
    return database, columns


def postgres_columns(
    engine: Engine, schemas: list[str]
) -> tuple[str, dict[tuple[str, str], list[tuple[str, str]]]]:
    """(the connected database, (schema, table) -> [(column, type)]) of ``schemas``.

    From pg_catalog, not information_schema.columns: the latter lists only the columns the
    role may read, so a missing grant would look like a missing table (check_roles names the
    grant instead)."""
    with engine.connect("read the raw sources' columns") as session:
        [(database,)] = session.query("select current_database()")
        rows = session.query(
            "select n.nspname, c.relname, a.attname, format_type(a.atttypid, a.atttypmod) "
            "from pg_catalog.pg_attribute a "
            "join pg_catalog.pg_class c on c.oid = a.attrelid "
            "join pg_catalog.pg_namespace n on n.oid = c.relnamespace "
            f"where n.nspname = any({session.marker}) "
            "and c.relkind in ('r', 'p', 'v', 'm', 'f') and a.attnum > 0 and not a.attisdropped "
            "order by n.nspname, c.relname, a.attnum",
            [schemas],
        )
    columns: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for schema, table, column, type_ in rows:
        columns.setdefault((schema, table), []).append((column, type_))
    return database, columns


@dataclass(frozen=True)
class SchemaCheck:
    changes: list[SchemaChange]
    tables: int
    elapsed_s: float

    @property
    def errors(self) -> list[SchemaChange]:
        return [c for c in self.changes if c.severity == "error"]


def check(engine: Engine) -> SchemaCheck:
    """Compare every declared source table of ``target``'s raw data with its actual columns."""
    project, target = engine.project, engine.target
    started = time.perf_counter()
    engine.require(Capability.SCHEMA_CHECK)
    declared = declared_sources(project)
    if engine.embedded:  # raw.duckdb, attached as catalog `raw`
        database, actual = duckdb_columns(project.raw_path)
        case_sensitive = False
    else:
        schemas = sorted({t.schema for t in declared})
        database, actual = postgres_columns(engine, schemas)
        case_sensitive = True
    # only the sources that live where the target reads its raw data (every one, here)
    elsewhere = [
        t for t in declared
        if resolve_database(t.database, engine.kind, database, project.vars) != database
    ]  # fmt: skip
    if elsewhere:
        names = ", ".join(f"{t.source_name}.{t.table_name}" for t in elsewhere)
        raise MediaPulseError(
            f"sources {names} do not live in the raw database '{database}' of target "
            f"'{target}': the schema check reads only that one (var raw_database)"
        )
    changes = compare(declared, actual, case_sensitive)
    return SchemaCheck(changes, len(declared), time.perf_counter() - started)


class SchemaChangeError(MediaPulseError):
    """The raw data of a critical source changed shape; ``changes`` are the errors."""

    def __init__(self, changes: list[SchemaChange]) -> None:
        lines = [c.line() for c in changes]
        # the CLI prints "mediapulse <job>: error: " before the first line
        super().__init__("\n".join([lines[0].removeprefix("error: "), *lines[1:]]))
        self.changes = changes


def enforce(changes: list[SchemaChange], elapsed_s: float, tables: int | None = None) -> None:
    """Print the warnings; raise SchemaChangeError, with every error line, on any error."""
    errors = [c for c in changes if c.severity == "error"]
    for change in changes:
        if change.severity != "error":
            print(change.line())
    cost = f"({elapsed_s:.2f} s, the catalog only)"
    if errors:
        print(
            f"schema check: {_count(errors, 'error')} in the raw data's columns {cost}: "
            'stopping before any model runs (docs/test-severity.md, "Schema changes of the '
            'sources")'
        )
        raise SchemaChangeError(errors)
    if changes:
        print(f"schema check: {_count(changes, 'warning')}, no error {cost}")
    elif tables is not None:
        print(f"schema check: {tables} raw tables as their sources declare them {cost}")


def _count(items: list[SchemaChange], noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


# what the check found, per (checkout, target), for the run history of the job that ran it
_FOUND: dict[tuple[Path, str], SchemaCheck] = {}


def found(engine: Engine) -> list[SchemaChange]:
    """The changes this process's check of ``target`` found (none when it did not run)."""
    project, target = engine.project, engine.target
    result = _FOUND.get((project.root, target))
    return list(result.changes) if result else []


def check_and_report(engine: Engine) -> SchemaCheck:
    """``check``, then ``enforce``: what every job runs before dbt (prepare.prepare). What it
    found, errors or not, is kept for the job's run history (``found``)."""
    project, target = engine.project, engine.target
    result = check(engine)
    _FOUND[(project.root, target)] = result
    enforce(result.changes, result.elapsed_s, result.tables)
    return result
