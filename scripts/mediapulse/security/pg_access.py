"""Least privilege on PostgreSQL: the database grants the roles need, and CI's own schemas.

Three roles (docs/targets/postgresql-production.md, "Roles and grants"): `transformer` builds
and owns production (the `postgres` target's user), `ci` reads production and owns only the
schemas of its own run (the `postgres_ci` target), `reporter` reads the marts. What production
grants on its relations and schemas is dbt's: the `grants` config and the `grant_schema_usage`
hook (dbt_project.yml). What must exist before any job runs is set up once by the database
owner, with the idempotent SQL `mediapulse access-sql` prints:

- No role a pull request runs as may create an object production resolves by name: `ci` has
  CONNECT on the database and no CREATE anywhere. It gets its run's schemas from
  `mediapulse_ci.create_schema(name)`, a SECURITY DEFINER function owned by a NOLOGIN role
  (`mediapulse_ci_creator`: CREATE on the database, member of `ci`) that creates only names
  of CI runs (CI_SCHEMA_PATTERN), owned by `ci`, and records each in `mediapulse_ci.schemas`.
  dbt calls it when the connected role may not create schemas (macros/ci/create_schema.sql).
- Every role's sessions in the database, and every connection the targets open, have the
  search path PINNED_SEARCH_PATH: an unqualified name resolves to the catalog only.
- `ci` reads no personal raw value: the raw tables of a source with personal columns are read
  on a server CI run from `<schema>__masked`, views of them with every personal value masked
  (mediapulse.security.personal), salted from a table `ci` may not read.
"""

from __future__ import annotations

import os
import re

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.sources import declared_raw_tables
from mediapulse.engines.base import Capability, Engine
from mediapulse.engines.duckdb import duckdb_file
from mediapulse.engines.postgres import (
    CI_ROLE_ENV,
    CI_SCHEMA_PREFIX,
    PINNED_SEARCH_PATH,
    REPORTER_ROLE_ENV,
    ci_role,
    reporter_role,
    target_credentials,
)
from mediapulse.security.personal import PersonalTable, masked_name, masked_select, masked_tables

# A CI run's schemas: `ci_<run id>_<attempt>` and `..._<layer>`, lower case, within
# PostgreSQL's 63 bytes. The database function checks the same pattern.
CI_SCHEMA_PATTERN = r"^ci_[a-z0-9]+(_[a-z0-9]+)*$"
CI_ADMIN_SCHEMA = "mediapulse_ci"  # the function, its registry, the masks' salt
CI_CREATOR_ROLE = "mediapulse_ci_creator"
MAX_AGE_ENV = "MEDIAPULSE_CI_SCHEMA_MAX_AGE_HOURS"
DEFAULT_MAX_AGE_HOURS = 24.0


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def check_roles(engine: Engine) -> None:
    """The roles the models grant to exist, or a one-line error before any work (dbt would
    stop at the first model's grant with a database error)."""
    target = engine.target
    wanted = {CI_ROLE_ENV: ci_role(), REPORTER_ROLE_ENV: reporter_role()}
    with engine.connect("check the roles the models grant") as session:
        rows = session.query(
            f"select rolname from pg_catalog.pg_roles where rolname = any({session.marker})",
            [list(wanted.values())],
        )
    found = {row[0] for row in rows}
    for variable, role in wanted.items():
        if role not in found:
            raise MediaPulseError(
                f"role {role} not found on target '{target}': the models grant it SELECT "
                "(dbt_project.yml `+grants`); create it "
                '(docs/targets/postgresql-production.md, "Setting up a server") or '
                f"set {variable} to an existing role"
            )


# -- the owner's SQL ---------------------------------------------------------------------------


def access_sql(engine: Engine) -> str:
    """The SQL the database owner runs once, and again whenever a raw schema or a personal
    column is added: every statement may run again and leaves the same grants."""
    project, target = engine.project, engine.target
    engine.require(Capability.ROLES, "access-sql")
    masked = masked_tables(project)  # a personal source CI could not read: refused here
    creds = target_credentials(project, target)
    names = {"transformer": creds.user, "ci": ci_role(), "reporter": reporter_role()}
    roles = {key: _ident(name) for key, name in names.items()}
    lines = [
        f"-- MediaPulse roles on database {creds.database}: run as a superuser (or the database",
        "-- owner with CREATEROLE that may grant on the raw tables), after the raw schemas exist.",
        f"-- The roles must exist (LOGIN). {names['transformer']}: builds and owns production;",
        f"-- {names['ci']}: slim CI, reads production and masked raw data, owns only its run's",
        f"-- schemas; {names['reporter']}: reads the marts (dbt grants). Safe to run again.",
        f"set search_path = {PINNED_SEARCH_PATH};",
        "begin;",
        *_database_sql(_ident(creds.database), roles),
        *_ci_schemas_sql(_ident(creds.database), names["ci"]),
        *_raw_sql(declared_raw_tables(project), masked, roles),
        "commit;",
    ]
    return "\n".join(lines) + "\n"


def _database_sql(database: str, roles: dict[str, str]) -> list[str]:
    transformer, ci, reporter = roles["transformer"], roles["ci"], roles["reporter"]
    return [
        "-- Who may create what: production's role only. Not ci, whose pull requests run any",
        "-- SQL (hooks, run_query): a schema it created could be resolved by name by production.",
        f"grant connect on database {database} to {transformer}, {ci}, {reporter};",
        f"grant create on database {database} to {transformer};",
        f"revoke create on database {database} from {ci}, {reporter};",
        "-- PostgreSQL 15's default, said explicitly (a database upgraded from 14 still grants it)",
        "revoke create on schema public from public;",
        f"revoke create on schema public from {ci}, {reporter};",
        "-- An unqualified name resolves to the catalog only, in every session of these roles",
        "-- (dashboards, psql); the targets pin the same on their connections.",
        *(
            f"alter role {role} in database {database} set search_path = {PINNED_SEARCH_PATH};"
            for role in (transformer, ci, reporter)
        ),
    ]


def _ci_schemas_sql(database: str, ci: str) -> list[str]:
    """The narrow way to a CI run's schema: a function of a NOLOGIN role, for ci only."""
    admin, creator, quoted_ci = _ident(CI_ADMIN_SCHEMA), _ident(CI_CREATOR_ROLE), _ident(ci)
    registry = f"{admin}.schemas"
    return [
        "-- CI run schemas come from one function, owned by a role nobody logs in as. It may",
        "-- create schemas; it is a member of ci (to make them ci's) but inherits nothing.",
        "do $roles$ begin",
        f"    if not exists (select from pg_catalog.pg_roles where rolname = {_literal(CI_CREATOR_ROLE)}) then",  # noqa: E501
        f"        create role {creator} nologin noinherit;",
        "    end if;",
        "    -- an owner that is not a superuser hands objects to the role through membership",
        f"    if not pg_catalog.pg_has_role({_literal(CI_CREATOR_ROLE)}, 'USAGE') then",
        f"        execute pg_catalog.format('grant %I to %I', {_literal(CI_CREATOR_ROLE)}, current_user);",  # noqa: E501
        "    end if;",
        "end $roles$;",
        f"alter role {creator} nologin noinherit nocreatedb nocreaterole;",
        f"grant {quoted_ci} to {creator};",
        f"grant create on database {database} to {creator};",
        f"create schema if not exists {admin};",
        f"revoke all on schema {admin} from public;",
        f"grant usage on schema {admin} to {quoted_ci}, {creator};",
        f"grant create on schema {admin} to {creator};",
        f"create table if not exists {registry} (",
        "    name text primary key,",
        "    created_at timestamp with time zone not null default pg_catalog.now()",
        ");",
        f"alter table {registry} owner to {creator};",
        f"revoke all on {registry} from public;",
        f"grant select on {registry} to {quoted_ci};",
        f"create or replace function {admin}.create_schema(schema_name text) returns void",
        "    language plpgsql security definer",
        f"    set search_path = {PINNED_SEARCH_PATH}",
        "as $function$",
        "declare",
        "    owner_name text;",
        "begin",
        f"    if schema_name is null or schema_name !~ {_literal(CI_SCHEMA_PATTERN)}",
        "            or pg_catalog.octet_length(schema_name) > 63 then",
        "        raise exception '% is not a CI run''s schema name "
        "(ci_<run id>_<attempt>[_<layer>], lower case)',",
        "            pg_catalog.to_json(schema_name)",
        "            using errcode = 'insufficient_privilege';",
        "    end if;",
        "    -- forget the schemas that are gone, so the registry holds the live ones only",
        f"    delete from {registry} as r where not exists (",
        "        select from pg_catalog.pg_namespace as n where n.nspname = r.name);",
        f"    execute pg_catalog.format('create schema if not exists %I authorization %I', schema_name, {_literal(ci)});",  # noqa: E501
        "    select pg_catalog.pg_get_userbyid(nspowner) into owner_name",
        "        from pg_catalog.pg_namespace where nspname = schema_name;",
        f"    if owner_name <> {_literal(ci)} then",
        f"        raise exception 'schema % exists and is owned by %, not {ci}', schema_name, owner_name",  # noqa: E501
        "            using errcode = 'insufficient_privilege';",
        "    end if;",
        f"    insert into {registry} (name) values (schema_name) on conflict (name) do nothing;",
        "end",
        "$function$;",
        f"alter function {admin}.create_schema(text) owner to {creator};",
        f"revoke all on function {admin}.create_schema(text) from public;",
        f"grant execute on function {admin}.create_schema(text) to {quoted_ci};",
        "-- CI schemas from before the registry: dated now, dropped as lost after the bound",
        f"insert into {registry} (name) select nspname from pg_catalog.pg_namespace",
        f"    where pg_catalog.pg_get_userbyid(nspowner) = {_literal(ci)}",
        f"    and nspname ~ {_literal(CI_SCHEMA_PATTERN)} on conflict (name) do nothing;",
        "-- what ci created while it could create anything: check it, then drop it",
        "do $leftovers$ declare found record; begin",
        "    for found in select nspname from pg_catalog.pg_namespace",
        f"            where pg_catalog.pg_get_userbyid(nspowner) = {_literal(ci)} and nspname !~ {_literal(CI_SCHEMA_PATTERN)} loop",  # noqa: E501
        f"        raise warning 'schema % is owned by {ci} but is not a CI run''s: production may "
        "resolve it by name; drop it', found.nspname;",
        "    end loop;",
        "end $leftovers$;",
    ]


def _raw_sql(raw_tables: list[str], masked: list, roles: dict[str, str]) -> list[str]:  # type: ignore[type-arg]
    """transformer reads every raw table; ci every one in a schema without personal data, and
    the masked copies of the sources with personal data."""
    transformer, ci = roles["transformer"], roles["ci"]
    personal = {table.name for table in masked if table.personal}
    personal_schemas = {name.split(".")[0] for name in personal}
    lines = []
    for schema in sorted({table.split(".")[0] for table in raw_tables}):
        raw = _ident(schema)
        lines += [
            f"grant usage on schema {raw} to {transformer}, {ci};",
            f"grant select on all tables in schema {raw} to {transformer};",
            "-- tables the loader creates later (run by the loader's role):",
            f"alter default privileges in schema {raw} grant select on tables to {transformer};",
        ]
        if schema not in personal_schemas:
            lines += [
                f"grant select on all tables in schema {raw} to {ci};",
                f"alter default privileges in schema {raw} grant select on tables to {ci};",
            ]
            continue
        lines += [
            f"-- {schema} holds personal data: ci reads those tables masked, from {schema}__masked",
            f"revoke select on all tables in schema {raw} from {ci};",
            f"alter default privileges in schema {raw} revoke select on tables from {ci};",
            *(
                f"grant select on {_ident(schema)}.{_ident(name.split('.', 1)[1])} to {ci};"
                for name in raw_tables
                if name.split(".")[0] == schema and name not in personal
            ),
        ]
    if masked:
        salt = f"{_ident(CI_ADMIN_SCHEMA)}.mask_salt"
        lines += [
            "-- the masks' secret salt: read by the masked views (the owner's), never by ci",
            f"create table if not exists {salt} (salt text not null);",
            f"revoke all on {salt} from public;",
            f"insert into {salt} select pg_catalog.concat(pg_catalog.gen_random_uuid(), "
            f"pg_catalog.gen_random_uuid()) where not exists (select from {salt});",
        ]
    for table in masked:
        assert isinstance(table, PersonalTable)
        view = ".".join(_ident(part) for part in masked_name(table).split("."))
        schema = _ident(masked_name(table).split(".")[0])
        source = f"{_ident(table.schema)}.{_ident(table.identifier)}"
        select = masked_select(table, source, f"(select salt from {salt})")
        lines += [
            f"create schema if not exists {schema};",
            f"grant usage on schema {schema} to {ci};",
            "do $masked$ begin",
            f"    create or replace view {view} as {select};",
            "exception when invalid_table_definition or datatype_mismatch then",
            "    -- its columns changed (create or replace only appends): built anew",
            f"    drop view {view} cascade;",
            f"    create view {view} as {select};",
            "end $masked$;",
            f"grant select on {view} to {ci};",
        ]
    return lines


# -- a CI run's schemas ------------------------------------------------------------------------


def ci_schema(engine: Engine, why: str) -> str:
    """The schema a server CI target builds in: a CI run's (`ci_...`), or a one-line error."""
    project, target = engine.project, engine.target
    base = str(target_credentials(project, target).schema)
    if not base.startswith(CI_SCHEMA_PREFIX):
        raise MediaPulseError(
            f"target '{target}' builds in schema {base}, not a CI run's schema "
            f"({CI_SCHEMA_PREFIX}...): {why}; pass the CI target (postgres_ci)"
        )
    if not re.match(CI_SCHEMA_PATTERN, base):
        raise MediaPulseError(
            f"target '{target}' builds in schema {base}: a CI run's schema is ci_<run id>_"
            "<attempt>, lower-case letters, digits and single underscores (the only names "
            f"{CI_ADMIN_SCHEMA}.create_schema creates); fix MEDIAPULSE_PG_CI_SCHEMA"
        )
    return base


def max_age_hours() -> float:
    raw = os.environ.get(MAX_AGE_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_AGE_HOURS
    try:
        hours = float(raw)
    except ValueError:
        hours = -1.0
    if not hours > 0:
        raise MediaPulseError(
            f"{MAX_AGE_ENV}={raw!r} is not a positive number of hours: set it to how long a CI "
            f"run may take at most (default {DEFAULT_MAX_AGE_HOURS:g})"
        )
    return hours


def drop_ci_schemas(engine: Engine) -> str:
    """Drop the schemas of this CI run (the target's schema and `<it>_*`) that its role owns,
    and those of lost runs: CI schemas the registry says were created more than
    MAX_AGE_ENV hours ago (a runner that died never reached its own drop). Returns what was
    done, one line for each."""
    project, target = engine.project, engine.target
    if engine.embedded:
        return (
            f"{engine.described}: its schemas are in {duckdb_file(project, target)}, "
            "which goes with the runner; nothing to drop"
        )
    engine.require(Capability.CI_SCHEMAS, "drop-ci-schemas")
    base = ci_schema(engine, "drop-ci-schemas drops only those")
    hours = max_age_hours()
    with (
        engine.connect("drop the CI run's schemas", write=True) as session,
        session.con.cursor() as cursor,
    ):
        cursor.execute(
            "select nspname from pg_catalog.pg_namespace "
            "where pg_catalog.pg_get_userbyid(nspowner) = current_user "
            "and (nspname = %s or pg_catalog.starts_with(nspname, %s)) order by 1",
            [base, base + "_"],
        )
        schemas = [row[0] for row in cursor.fetchall()]
        lost = _lost_schemas(cursor, hours, set(schemas))
        for schema in schemas + lost:
            cursor.execute(f"drop schema {_ident(schema)} cascade")
    if not schemas:
        lines = [f"no schema of CI run {base} on target '{target}': nothing to drop"]
    else:
        lines = [f"dropped the {len(schemas)} schemas of CI run {base}: {', '.join(schemas)}"]
    if lost:
        lines.append(
            f"dropped {len(lost)} schemas of lost CI runs (older than {hours:g} h): "
            + ", ".join(lost)
        )
    return "\n".join(lines)


def _lost_schemas(cursor, hours: float, ours: set[str]) -> list[str]:  # type: ignore[no-untyped-def]
    """CI schemas of this role the registry dates more than ``hours`` back."""
    cursor.execute("select pg_catalog.to_regclass(%s)", [f"{CI_ADMIN_SCHEMA}.schemas"])
    if cursor.fetchone()[0] is None:
        return []  # a server set up before the registry: nothing is dated
    cursor.execute(
        f"select r.name from {_ident(CI_ADMIN_SCHEMA)}.schemas as r "
        "join pg_catalog.pg_namespace as n on n.nspname = r.name "
        "where pg_catalog.pg_get_userbyid(n.nspowner) = current_user "
        "and r.created_at < pg_catalog.now() - pg_catalog.make_interval(secs => %s) "
        "order by 1",
        [hours * 3600],
    )
    return [row[0] for row in cursor.fetchall() if row[0] not in ours]
