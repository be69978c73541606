"""Least privilege on PostgreSQL: the database grants the roles need, and CI's own schemas.

Three roles (README, "Roles and grants"): `transformer` builds and owns production (the
`postgres` target's user), `ci` reads production and owns only the schemas of its own run (the
`postgres_ci` target), `reporter` reads the marts. What production grants on its relations and
schemas is dbt's: the `grants` config and the `grant_schema_usage` hook (dbt_project.yml). What
must exist before any job runs (creating schemas in the database, reading the loader's raw
tables) is granted once by the database owner, with the SQL `mediapulse access-sql` prints.
"""

from __future__ import annotations

import os

from mediapulse.errors import MediaPulseError
from mediapulse.project import Project

CI_ROLE_ENV = "MEDIAPULSE_PG_CI_ROLE"
REPORTER_ROLE_ENV = "MEDIAPULSE_PG_REPORTER_ROLE"
CI_SCHEMA_PREFIX = "ci_"


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def ci_role() -> str:
    return os.environ.get(CI_ROLE_ENV) or "ci"


def reporter_role() -> str:
    return os.environ.get(REPORTER_ROLE_ENV) or "reporter"


def check_roles(project: Project, target: str) -> None:
    """The roles the models grant to exist, or a one-line error before any work (dbt would
    stop at the first model's grant with a database error)."""
    from mediapulse.rawload import connect_postgres

    wanted = {CI_ROLE_ENV: ci_role(), REPORTER_ROLE_ENV: reporter_role()}
    con = connect_postgres(project, target)
    try:
        with con.cursor() as cursor:
            cursor.execute("select rolname from pg_roles where rolname = any(%s)",
                           [list(wanted.values())])  # fmt: skip
            found = {row[0] for row in cursor.fetchall()}
    finally:
        con.rollback()
        con.close()
    for variable, role in wanted.items():
        if role not in found:
            raise MediaPulseError(
                f"role {role} not found on target '{target}': the models grant it SELECT "
                '(dbt_project.yml `+grants`); create it (README, "Setting up a server") or '
                f"set {variable} to an existing role"
            )


def access_sql(project: Project, target: str) -> str:
    """The grants the database owner runs once (and again when a raw schema is added): the
    transformer and ci may create schemas; both read the raw schemas, now and later."""
    from mediapulse.rawload import declared_raw_tables, target_credentials

    if project.target_type(target) != "postgres":
        raise MediaPulseError(
            f"target '{target}' is {project.target_type(target)}: access-sql is for a "
            "PostgreSQL production target (DuckDB has no roles)"
        )
    creds = target_credentials(project, target)
    transformer, ci, reporter = _ident(creds.user), _ident(ci_role()), _ident(reporter_role())
    database = _ident(creds.database)
    readers = f"{transformer}, {ci}"
    lines = [
        f"-- MediaPulse roles on database {creds.database}: run as its owner or a superuser,",
        "-- after the raw schemas exist (the loader's). The roles must exist (LOGIN).",
        f"-- {creds.user}: builds and owns production; {ci_role()}: slim CI, reads production",
        f"-- and owns only its run's schemas; {reporter_role()}: reads the marts (dbt grants).",
        f"grant connect, create on database {database} to {transformer}, {ci};",
        f"grant connect on database {database} to {reporter};",
    ]
    for schema in sorted({table.split(".")[0] for table in declared_raw_tables(project)}):
        raw = _ident(schema)
        lines += [
            f"grant usage on schema {raw} to {readers};",
            f"grant select on all tables in schema {raw} to {readers};",
            "-- tables the loader creates later (run by the loader's role):",
            f"alter default privileges in schema {raw} grant select on tables to {readers};",
        ]
    return "\n".join(lines) + "\n"


def ci_schema(project: Project, target: str, why: str) -> str:
    """The schema a server CI target builds in: a CI run's (`ci_...`), or a one-line error."""
    from mediapulse.rawload import target_credentials

    base = str(target_credentials(project, target).schema)
    if not base.startswith(CI_SCHEMA_PREFIX):
        raise MediaPulseError(
            f"target '{target}' builds in schema {base}, not a CI run's schema "
            f"({CI_SCHEMA_PREFIX}...): {why}; pass the CI target (postgres_ci)"
        )
    return base


def drop_ci_schemas(project: Project, target: str) -> str:
    """Drop the schemas of this CI run (the target's schema and `<it>_*`) that its role owns.
    Returns what was done, in one line."""
    from mediapulse.rawload import connect_postgres

    kind = project.target_type(target)
    if kind == "duckdb":
        return (
            f"target '{target}' is DuckDB: its schemas are in {project.duckdb_path(target)}, "
            "which goes with the runner; nothing to drop"
        )
    if kind != "postgres":
        raise MediaPulseError(f"drop-ci-schemas: target '{target}' ({kind}) is not supported")
    base = ci_schema(project, target, "drop-ci-schemas drops only those")
    con = connect_postgres(project, target)
    try:
        with con.cursor() as cursor:
            cursor.execute(
                "select nspname from pg_namespace where pg_get_userbyid(nspowner) = current_user "
                "and (nspname = %s or starts_with(nspname, %s)) order by 1",
                [base, base + "_"],
            )
            schemas = [row[0] for row in cursor.fetchall()]
            for schema in schemas:
                cursor.execute(f"drop schema {_ident(schema)} cascade")
        con.commit()
    finally:
        con.close()
    if not schemas:
        return f"no schema of CI run {base} on target '{target}': nothing to drop"
    return f"dropped the {len(schemas)} schemas of CI run {base}: {', '.join(schemas)}"
