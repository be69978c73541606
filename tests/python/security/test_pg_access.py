"""Attacks on PostgreSQL production from a pull request's role (issue 27), played against a
throwaway server set up exactly as docs/targets/postgresql-production.md ("Setting up a
server") says: the three roles, the loader's raw data, the grants `mediapulse access-sql`
prints piped to `psql` as the owner.

As `ci`, a pull request's hook or `run_query` could create the schemas production resolves by
name (`transformer`, a live-looking `analytics_zz`, `monitoring`) and plant functions there
that production's build would call with every e-mail address. Here `ci` tries each and is
refused; its one way to a schema, `mediapulse_ci.create_schema`, creates nothing but a CI
run's; the traps it can still plant (in its run's schema) and the ones only a superuser could
(in a `transformer` schema and `public`) are never reached by production's next nightly, which
releases normally with the same e-mail hashes. Then slim CI as `ci` builds a change to the
users' staging model from the masked copy of the raw users, and nothing `ci` can select holds
an e-mail address or a name. Also: TLS on every connection, a lost runner's CI schemas dropped
after a bound, and a run history that refuses a `monitoring` schema it does not own.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from mediapulse.cli.main import main
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.data import generate
from mediapulse.dbt import deps
from mediapulse.engines.postgres import connect_postgres
from mediapulse.engines.targets import resolve
from mediapulse.monitoring import history

from ..conftest import copy_project
from ..support import pgserver

pytestmark = [pytest.mark.dbt, pytest.mark.postgres]

TARGET = "postgres"
DATA = dict(seed=17, users=60, days=4, events_per_user_day=6.0)
TRAP_RUN = "ci_31337_1"  # the attacker's own run schema
CAPTURED = "trapbox.captured"  # what the traps copy their arguments into; `ci` reads it
PINNED = "pg_catalog, pg_temp"
# Unqualified calls, as any model, package or dbt itself may write them. Each has a planted
# rival below that PostgreSQL would prefer if its schema were on the search path: a
# `convert_to(text, text)` beats pg_catalog's `(text, name)` for a text literal, a
# `div(bigint, bigint)` beats `(numeric, numeric)`, a `||` of two varchars beats text's.
PROBE_MODEL = """{{ config(materialized='table') }}
-- a probe of the connection production builds with (tests/python/security/test_pg_access.py)
select
    convert_to('probe', 'UTF8') as converted,
    div(cast(7 as bigint), 2) as quotient,
    cast('a' as varchar) || cast('b' as varchar) as joined,
    current_setting('search_path') as search_path
"""
# The traps: each copies its arguments into CAPTURED, then does what the real one does (its
# own SQL qualified: it runs with its caller's search path, where it would find itself).
TRAPS = """
create function {schema}.convert_to(text, text) returns bytea language plpgsql as $f$
begin
    insert into trapbox.captured (argument) values ($1);
    return pg_catalog.convert_to($1, $2::name);
end $f$;
create function {schema}.div(bigint, bigint) returns numeric language plpgsql as $f$
begin
    insert into trapbox.captured (argument) values (pg_catalog.concat('div ', $1, ' ', $2));
    return pg_catalog.div($1, $2);
end $f$;
create function {schema}.trap_cat(varchar, varchar) returns text language plpgsql as $f$
begin
    insert into trapbox.captured (argument) values (pg_catalog.textcat($1, $2));
    return pg_catalog.textcat($1, $2);
end $f$;
create operator {schema}.|| (leftarg = varchar, rightarg = varchar,
    function = {schema}.trap_cat);
"""


@pytest.fixture(scope="module")
def server() -> Iterator[pgserver.PgServer]:
    pg = pgserver.start_server()
    if pg is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql-15)")
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in pg.env.items():
                patch.setenv(name, value)
            patch.delenv("MEDIAPULSE_PG_SCHEMA", raising=False)
            yield pg
    finally:
        pg.stop()


def _psql(server: pgserver.PgServer, sql: str) -> subprocess.CompletedProcess:
    """SQL piped to psql as the owner (the server's superuser), as the docs say."""
    psql = shutil.which("psql") or str(server.bindir / "psql")
    env = {**os.environ, "PGPASSWORD": pgserver.PASSWORD, "PGSSLMODE": "require"}
    return subprocess.run(
        [psql, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-h", "127.0.0.1", "-p", str(server.port),
         "-U", pgserver.USER, pgserver.DATABASE],
        input=sql, capture_output=True, text=True, env=env, timeout=120,
    )  # fmt: skip


def _access_sql(project: Project, server: pgserver.PgServer) -> str:
    env = {**os.environ, **server.role_env("transformer")}
    return subprocess.run(
        [sys.executable, "-m", "mediapulse", "--project-dir", str(project.root),
         "access-sql", "--target", TARGET],
        capture_output=True, text=True, check=True, env=env,
    ).stdout  # fmt: skip


@pytest.fixture(scope="module")
def project(
    server: pgserver.PgServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    project = copy_project(tmp_path_factory.mktemp("attacks") / "project")
    (project.root / "models" / "probe").mkdir()
    (project.root / "models" / "probe" / "search_path_probe.sql").write_text(PROBE_MODEL)
    deps.install(project)
    params = generate.Params(**DATA, start_date=generate.default_start_date(DATA["days"]))
    generate.generate(project.raw_path, params)
    assert _cli(project, "load-raw", "--target", TARGET) == 0
    sql = _access_sql(project, server)
    done = _psql(server, sql)
    assert done.returncode == 0, done.stderr
    # the owner runs it again (a raw schema added later): the same, without an error
    again = _psql(server, sql)
    assert again.returncode == 0 and "ERROR" not in again.stderr, again.stderr
    with pytest.MonkeyPatch.context() as patch:
        for name, value in server.role_env("transformer").items():
            patch.setenv(name, value)
        yield project


@pytest.fixture(scope="module")
def state(project: Project) -> Path:
    return project.root / "state"


def _cli(project: Project, *args: str) -> int:
    return main(["--project-dir", str(project.root), "--warehouse-dir",
                 str(project.warehouse_dir), *args])  # fmt: skip


def _as_ci_job(project: Project, server: pgserver.PgServer, run_id: str, *args: str) -> int:
    """A command as a pull-request job runs it: the CI role's secret only, its run's id."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MEDIAPULSE_PG_USER")
        patch.delenv("MEDIAPULSE_PG_PASSWORD")
        for name, value in server.ci_env(run_id=run_id).items():
            patch.setenv(name, value)
        return _cli(project, *args, "--target", "postgres_ci")


def _attempt(server: pgserver.PgServer, role: str, sql: str, keep: bool = False) -> str | None:
    """None when ``role`` may run ``sql`` (rolled back unless ``keep``), else the refusal's
    first line."""
    con = server.connect(role)
    try:
        with con.cursor() as cursor:
            cursor.execute(sql)
        if keep:
            con.commit()
        return None
    except psycopg2.Error as exc:
        return str(exc).strip().splitlines()[0]
    finally:
        con.rollback()
        con.close()


def _schemas(server: pgserver.PgServer) -> dict[str, str]:
    return dict(server.execute(
        "select nspname, pg_get_userbyid(nspowner) from pg_namespace"
    ))  # fmt: skip


# -- (a) what `ci` may not create ------------------------------------------------------------


ATTACKS = {
    # the role's own name: first on PostgreSQL's default search path ("$user", public)
    "transformer schema": "create schema transformer",
    # a schema a release takes for one of its own: every swap after it failed
    "live-looking schema": "create schema analytics_zz; "
    "create table analytics_zz._mediapulse_release (release_id text, published_at timestamp)",
    # the run history's schema: production's jobs would write their history into ci's hands
    "monitoring schema": "create schema monitoring",
    # any schema at all, even one named like a CI run's: only the function creates those
    "a CI run's schema, directly": f"create schema {TRAP_RUN}_direct",
    # the second schema on the default search path
    "table in public": "create table public.planted (x int)",
    "function in public": "create function public.convert_to(text, text) returns bytea "
    "language sql as 'select pg_catalog.convert_to($1, $2::name)'",
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_ci_may_create_nothing_production_resolves_by_name(
    project: Project, server: pgserver.PgServer, attack: str
) -> None:
    refusal = _attempt(server, "ci", ATTACKS[attack])
    assert refusal is not None, f"ci was allowed: {ATTACKS[attack]}"
    assert "permission denied" in refusal, refusal


def test_ci_holds_connect_only_on_the_database(project: Project, server: pgserver.PgServer) -> None:
    rights = server.execute(
        "select has_database_privilege('ci', current_database(), 'CONNECT'), "
        "has_database_privilege('ci', current_database(), 'CREATE'), "
        "has_schema_privilege('ci', 'public', 'CREATE'), "
        "has_schema_privilege('public', 'public', 'CREATE')"
    )
    assert rights == [(True, False, False, False)], rights


# -- (b) the one way `ci` gets a schema ---------------------------------------------------------


REFUSED_NAMES = [
    "transformer", "monitoring", "analytics_zz", "public", "pg_temp", "ci", "ci_", "ci__1",
    "CI_1_1", "ci_1_1_Staging", "ci_1_1_", "ci-1-1", " ci_1_1", "ci_1_1\n", "ci_" + "9" * 61,
    'ci_1_1"; create schema transformer; --', "ci_1_1 authorization transformer",
    "ci_1_1; drop schema accounts cascade", "ci_1_1');create schema transformer;--", "",
]  # fmt: skip


def test_the_ci_schema_function_creates_only_a_ci_runs_schemas(
    project: Project, server: pgserver.PgServer
) -> None:
    before = _schemas(server)
    for name in REFUSED_NAMES:
        refusal = _attempt(server, "ci", f"select mediapulse_ci.create_schema({_literal(name)})")
        assert refusal is not None, f"created {name!r}"
        assert "not a CI run's schema name" in refusal, (name, refusal)
    assert _attempt(server, "ci", "select mediapulse_ci.create_schema(null)") is not None
    assert _schemas(server) == before
    # a CI run's name that exists and is not ci's: refused, not adopted
    server.execute("create schema ci_9_9 authorization transformer")
    refusal = _attempt(server, "ci", "select mediapulse_ci.create_schema('ci_9_9')")
    assert refusal is not None and "owned by transformer" in refusal, refusal
    server.execute("drop schema ci_9_9")
    # only ci may call it
    for role in ("transformer", "reporter"):
        refusal = _attempt(server, role, "select mediapulse_ci.create_schema('ci_8_1')")
        assert refusal is not None and "permission denied" in refusal, (role, refusal)
    # a CI run's name: created, owned by ci, recorded with its time; again: nothing changes
    for _ in range(2):
        assert _attempt(server, "ci", "select mediapulse_ci.create_schema('ci_7_1_staging')",
                        keep=True) is None  # fmt: skip
    assert _schemas(server)["ci_7_1_staging"] == "ci"
    assert server.execute("select name, created_at > now() - interval '1 minute' "
                          "from mediapulse_ci.schemas") == [("ci_7_1_staging", True)]  # fmt: skip
    # how it is defined: security definer, a pinned search path, nobody else may call it
    ((definer, config, public, owner),) = server.execute(
        "select prosecdef, proconfig, has_function_privilege('public', p.oid, 'execute'), "
        "pg_get_userbyid(proowner) from pg_proc p "
        "where p.oid = 'mediapulse_ci.create_schema(text)'::regprocedure"
    )
    assert definer and config == [f"search_path={PINNED}"] and not public, (config, public)
    assert owner != "ci" and owner != pgserver.USER, owner
    ((superuser, login, may_create),) = server.execute(
        f"select rolsuper, rolcanlogin, has_database_privilege(rolname, '{pgserver.DATABASE}', "
        f"'CREATE') from pg_roles where rolname = '{owner}'"
    )
    assert (superuser, login, may_create) == (False, False, True)
    server.execute("drop schema ci_7_1_staging")


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# -- TLS and the search path on every connection ---------------------------------------------


def test_every_connection_uses_tls_and_pins_the_search_path(
    project: Project, server: pgserver.PgServer
) -> None:
    # the server refuses a connection without TLS (pgserver's pg_hba.conf)
    with pytest.raises(psycopg2.OperationalError, match="no encryption"):
        psycopg2.connect(host="127.0.0.1", port=server.port, user="transformer",
                         password=server.role_password("transformer"),
                         dbname=pgserver.DATABASE, sslmode="disable")  # fmt: skip
    con = connect_postgres(project, TARGET)
    try:
        with con.cursor() as cursor:
            cursor.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()")
            assert cursor.fetchone() == (True,)
            cursor.execute("show search_path")
            assert cursor.fetchone() == (PINNED,)
    finally:
        con.close()
    # a role's own sessions (psql, a dashboard) have it pinned too: `alter role ... set`
    for role in ("transformer", "ci", "reporter"):
        assert server.execute("show search_path", role=role) == [(PINNED,)], role
    # verify-full against the server's certificate, as docs/targets/postgresql.md says (TLS)
    cert, _ = pgserver.certificate()
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDIAPULSE_PG_SSLMODE", "verify-full")
        patch.setenv("MEDIAPULSE_PG_SSLROOTCERT", str(cert))
        connect_postgres(project, TARGET).close()
        patch.setenv("MEDIAPULSE_PG_SSLROOTCERT", str(project.root / "no-such-root.crt"))
        with pytest.raises(MediaPulseError) as err:
            connect_postgres(project, TARGET)
    text = str(err.value)
    assert len(text.splitlines()) == 1 and "MEDIAPULSE_PG_SSLROOTCERT" in text, text


# -- a lost runner's schemas -------------------------------------------------------------------


def test_a_lost_runners_schemas_are_dropped_after_the_bound(
    project: Project, server: pgserver.PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("ci_1001_1", "ci_1001_1_staging", "ci_1002_1"):
        assert _attempt(server, "ci", f"select mediapulse_ci.create_schema('{name}')",
                        keep=True) is None  # fmt: skip
    # the first run's runner was lost a day and a half ago; the second is still running
    server.execute("update mediapulse_ci.schemas set created_at = now() - interval '36 hours' "
                   "where name like 'ci\\_1001\\_1%'")  # fmt: skip
    # not ci's, whatever the registry says: never dropped by ci
    server.execute(
        "create schema ci_1003_1 authorization transformer",
        "insert into mediapulse_ci.schemas values ('ci_1003_1', now() - interval '3 days')",
    )
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MEDIAPULSE_CI_SCHEMA_MAX_AGE_HOURS", "a day")
        assert _as_ci_job(project, server, "4243", "drop-ci-schemas") == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "MEDIAPULSE_CI_SCHEMA_MAX_AGE_HOURS" in err, err
    assert _as_ci_job(project, server, "4243", "drop-ci-schemas") == 0
    out = capsys.readouterr().out
    assert "2 schemas of lost CI runs (older than 24 h): ci_1001_1, ci_1001_1_staging" in out, out
    left = _schemas(server)
    assert "ci_1001_1" not in left and "ci_1001_1_staging" not in left
    assert left["ci_1002_1"] == "ci" and left["ci_1003_1"] == "transformer"
    server.execute("drop schema ci_1002_1", "drop schema ci_1003_1")


# -- (c) the traps -----------------------------------------------------------------------------


def test_ci_and_a_superuser_plant_traps(project: Project, server: pgserver.PgServer) -> None:
    # a table whose rows anyone may add and ci may read: where the traps copy what they get
    server.execute(
        "create schema trapbox",
        "create table trapbox.captured (argument text, captured_by name default current_user)",
        "grant usage on schema trapbox to public",
        "grant insert, select on trapbox.captured to public",
    )
    # what only a superuser can now do: a `transformer` schema (first on the default search
    # path) and public (second), with the traps, granted to production's role
    server.execute(
        "create schema transformer",
        "grant usage on schema transformer to transformer",
        TRAPS.format(schema="transformer"),
        TRAPS.format(schema="public"),
        "grant execute on all functions in schema transformer, public to transformer",
    )
    # ci, in its own run's schema, granted to everyone
    refusal = _attempt(
        server,
        "ci",
        f"select mediapulse_ci.create_schema('{TRAP_RUN}'); "
        + TRAPS.format(schema=TRAP_RUN)
        + f"grant usage on schema {TRAP_RUN} to public; "
        f"grant execute on all functions in schema {TRAP_RUN} to public",
        keep=True,
    )
    assert refusal is None, refusal
    # armed: on PostgreSQL's default search path, an unqualified call reaches the trap
    con = psycopg2.connect(
        host="127.0.0.1", port=server.port, user="transformer", dbname=pgserver.DATABASE,
        password=server.role_password("transformer"), sslmode="require",
        options='-c search_path="$user",public',
    )  # fmt: skip
    try:
        with con.cursor() as cursor:
            cursor.execute("select convert_to('armed', 'UTF8')")
            cursor.execute("select count(*) from trapbox.captured where argument = 'armed'")
            assert cursor.fetchone() == (1,)
    finally:
        con.rollback()  # the capture with it
        con.close()
    assert server.execute(f"select count(*) from {CAPTURED}") == [(0,)]


# -- (d) production's next nightly -------------------------------------------------------------


def _expected_hashes(server: pgserver.PgServer) -> dict[int, str | None]:
    """email_hash as docs/personal-data.md defines it, computed here from the raw users."""
    rows = server.execute("select user_id, email from accounts.users")
    key = pgserver.PII_HASH_KEY
    return {
        user_id: None if email is None
        else hashlib.sha256(f"{key}|{email.strip(' ').lower()}".encode()).hexdigest()
        for user_id, email in rows
    }  # fmt: skip


def test_productions_next_nightly_runs_none_of_cis_objects_and_releases(
    project: Project, server: pgserver.PgServer, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.perf_counter()
    code = _cli(project, "nightly", "--target", TARGET, "--artifacts", str(state))
    seconds = time.perf_counter() - started
    out = capsys.readouterr().out
    print(f"\nproduction's nightly after the attacks: {seconds:.1f} s")
    assert code == 0, out[-3000:]
    release_id = json.loads((state / "release.json").read_text())["release_id"]
    assert f"passed, release {release_id} is live" in out
    assert "run history: run " in out, out[-2000:]
    assert server.execute("select release_id from analytics_marts._mediapulse_release") == [
        (release_id,)
    ]
    assert server.execute(f"select count(*) from {CAPTURED}") == [(0,)], server.execute(
        f"select * from {CAPTURED} limit 5"
    )
    hashes = dict(server.execute("select user_id, email_hash from "
                                 "analytics_staging.stg_accounts__users"))  # fmt: skip
    assert hashes == _expected_hashes(server)
    probe = server.execute("select convert_from(converted, 'UTF8'), quotient, joined, search_path "
                           "from analytics.search_path_probe")  # fmt: skip
    assert probe == [("probe", 3, "ab", PINNED)], probe
    assert server.execute(f"select count(*) from {CAPTURED}") == [(0,)]


# -- ci reads no personal value ----------------------------------------------------------------


def test_slim_ci_as_ci_builds_the_users_model_from_their_masked_copy(
    project: Project, server: pgserver.PgServer, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = project.root / "models/staging/accounts/stg_accounts__users.sql"
    original = model.read_text()
    changed = original.replace("        country_code,\n", "        upper(country_code) as "
                               "country_code,\n", 1)  # fmt: skip
    assert changed != original
    model.write_text(changed)
    summary = project.root / "slim-ci.md"
    try:
        code = _as_ci_job(project, server, "4242", "slim-ci", "--state", str(state),
                          "--summary", str(summary))  # fmt: skip
    finally:
        model.write_text(original)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    # the source read from another schema is not a change: only the edited model is
    assert "| modified | 1 | stg_accounts__users |" in summary.read_text(), summary.read_text()
    built = dict(server.execute("select user_id, email_hash from "
                                "ci_4242_1_staging.stg_accounts__users"))  # fmt: skip
    production = _expected_hashes(server)
    assert set(built) == set(production)
    # hashed from the masked addresses: not one production hash among them
    assert not {h for h in built.values() if h} & {h for h in production.values() if h}
    assert server.execute(f"select count(*) from {CAPTURED}") == [(0,)]


def _personal_values(server: pgserver.PgServer) -> list[str]:
    rows = server.execute("select email, full_name from accounts.users")
    values = {v.strip().lower() for row in rows for v in row if v and v.strip()}
    assert len(values) > DATA["users"], "e-mail addresses and names of every user"
    return sorted(values)


def _scan_as_ci(
    server: pgserver.PgServer, readable: list[tuple], values: list[str]
) -> tuple[list[tuple[str, str]], list[str]]:
    """(relation, value) for each value found in a row of ``readable`` (oid, schema, name,
    columns), read as `ci`; and the relations that refused after all. The values go into a
    temporary table by COPY, so that no statement's text holds them (ci reads its own
    statements in pg_stat_activity)."""
    con = server.connect("ci")
    con.autocommit = True
    found, unreadable = [], []
    try:
        with con.cursor() as cursor:
            cursor.execute("create temporary table personal_values (v text)")
            cursor.copy_expert("copy personal_values from stdin", io.StringIO("\n".join(values)))
            # the control: the same query finds the values where they are
            for _, schema, table, columns in [(0, "pg_temp", "personal_values", ["v"]), *readable]:
                line = ", ".join(f't."{column}"::text' for column in columns)
                try:
                    cursor.execute(
                        f"with lines as materialized (select lower(concat_ws('|', {line})) "
                        f'as line from "{schema}"."{table}" as t) '
                        "select distinct p.v from lines, personal_values as p "
                        "where strpos(lines.line, p.v) > 0 limit 3"
                    )
                except psycopg2.Error as exc:
                    unreadable.append(f"{schema}.{table}: {str(exc).splitlines()[0]}")
                    continue
                found += [(f"{schema}.{table}", v) for (v,) in cursor.fetchall()]
    finally:
        con.close()
    return found, unreadable


def test_nothing_ci_can_select_holds_an_address_or_a_name(
    project: Project, server: pgserver.PgServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """After the nightly and slim CI (its schemas not yet dropped): every relation and column
    `ci` may select, the catalogs included (pg_stats shows sampled values), read as `ci`."""
    server.execute("analyze accounts.users")
    values = _personal_values(server)
    readable = server.execute(
        "select c.oid, n.nspname, c.relname, array_agg(a.attname::text order by a.attnum) "
        "from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped "
        "where c.relkind in ('r', 'v', 'm', 'p', 'f') "
        "and has_schema_privilege('ci', n.oid, 'USAGE') "
        "and has_column_privilege('ci', c.oid, a.attnum, 'SELECT') "
        "group by 1, 2, 3 order by 2, 3"
    )
    names = {f"{schema}.{table}" for _, schema, table, _ in readable}
    assert "accounts.users" not in names and "accounts__masked.users" in names
    assert {"ci_4242_1_staging.stg_accounts__users", "analytics_marts.dim_users_v2"} <= names
    found, unreadable = _scan_as_ci(server, readable, values)
    assert len([f for f in found if f[0] == "pg_temp.personal_values"]) == 3, found[:5]
    found = [f for f in found if f[0] != "pg_temp.personal_values"]
    with capsys.disabled():
        print(f"\nci can select {len(readable)} relations; unreadable after all: {unreadable}")
    assert len(readable) > 100 and not found, found[:10]
    # the masked view keeps its salt out of its definition, and out of ci's reach
    definition = server.execute("select pg_get_viewdef('accounts__masked.users'::regclass)")[0][0]
    salt = server.execute("select salt from mediapulse_ci.mask_salt")[0][0]
    assert salt not in definition and "mediapulse_ci.mask_salt" in definition
    refusal = _attempt(server, "ci", "select salt from mediapulse_ci.mask_salt")
    assert refusal is not None and "permission denied" in refusal
    assert _as_ci_job(project, server, "4242", "drop-ci-schemas") == 0
    assert "dropped the" in capsys.readouterr().out


# -- the run history refuses a schema it does not own -----------------------------------------


IN_MONITORING = (
    "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace "
    "where nspname = 'monitoring'"
)


def test_a_monitoring_schema_owned_by_another_role_is_refused(
    project: Project, server: pgserver.PgServer
) -> None:
    history.ensure(resolve(project, TARGET))  # production's own: fine
    server.execute(
        "alter schema monitoring rename to monitoring_kept",
        "create schema monitoring authorization ci",
    )
    try:
        before = server.execute(IN_MONITORING)
        with pytest.raises(MediaPulseError) as err:
            history.ensure(resolve(project, TARGET))
        text = str(err.value)
        assert len(text.splitlines()) == 1, text
        assert re.search(r"schema monitoring .*owned by ci.*not transformer", text), text
        assert "alter schema monitoring rename" in text, text
        line = history.record_job(
            resolve(project, TARGET), history.Job("nightly", TARGET), True, None
        )
        assert line.startswith("notice: run history not recorded") and "owned by ci" in line
        after = server.execute(IN_MONITORING)
        assert after == before == [(0,)], "nothing written into ci's schema"
    finally:
        server.execute("drop schema monitoring",
                       "alter schema monitoring_kept rename to monitoring")  # fmt: skip


def test_a_pull_request_cannot_seed_a_later_runs_evaluator_schemas(
    project: Project, server: pgserver.PgServer, tmp_path: Path
) -> None:
    """A pull request runs as `ci`, like the nightly's evaluator step: it may create the
    schemas of a later run (a guessed run id) and leave tables there. The evaluator starts
    its run from empty schemas: what was left is gone before it builds."""
    future = "ci_5555_1"
    for schema in (future, f"{future}_dbt_project_evaluator"):
        assert _attempt(server, "ci", f"select mediapulse_ci.create_schema('{schema}')",
                        keep=True) is None  # fmt: skip
        assert _attempt(server, "ci", f"create table {schema}.planted as select 'forged' as x",
                        keep=True) is None  # fmt: skip
    report = tmp_path / "evaluator.json"
    code = _as_ci_job(project, server, "5555", "evaluate", "--json", str(report))
    assert code in (0, 1), "the evaluator ran"
    assert "forged" not in report.read_text()
    left = server.execute(
        "select table_schema from information_schema.tables where table_name = 'planted'"
    )
    assert left == [], f"a later run found what a pull request left: {left}"
    assert _as_ci_job(project, server, "5555", "drop-ci-schemas") == 0
