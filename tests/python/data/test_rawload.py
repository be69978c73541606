"""Raw data belongs to the loader, on a real PostgreSQL server.

No job (`build`, `nightly`, `deploy`, `slim-ci`) writes to a server's raw schemas or generates
demo data for it: a raw table someone else loaded survives every job byte for byte (rows,
columns, and the table's storage, so not even a truncate and refill), and a missing one stops
the job with one line naming it and the fix. `mediapulse load-raw` loads the demo data set
explicitly and refuses, naming the table, to replace a raw table it did not create.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from collections.abc import Iterator

import pytest

from mediapulse.core.project import Project
from mediapulse.data import generate
from mediapulse.dbt import deps

from ..conftest import copy_project
from ..support import pgserver

pytestmark = [pytest.mark.dbt, pytest.mark.postgres]

RAW_SCHEMAS = ("streaming", "catalog", "accounts", "billing", "ads", "_mediapulse")
# Smaller than the end-to-end data set: these tests are about who writes the raw tables.
DATA = dict(seed=11, users=150, days=7, events_per_user_day=8.0)
KEY = "test-pii-key-not-a-secret"
MISSING = re.compile(
    r"raw table (\w+\.\w+) not found in target '(postgres|postgres_ci)': load it with your EL "
    r"tool or `mediapulse load-raw --target \2`"
)
HANDMADE_DB = "handmade"


@pytest.fixture(scope="module")
def server() -> Iterator[pgserver.PgServer]:
    server = pgserver.start_server()
    if server is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql-15)")
    try:
        connection = server.connect()
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"create database {HANDMADE_DB}")
        connection.close()
        yield server
    finally:
        server.stop()


def _sql(server: pgserver.PgServer, database: str, *statements: str) -> list[tuple]:
    return server.execute(*statements, database=database)


def _env(server: pgserver.PgServer, database: str) -> dict[str, str]:
    """The server's user for every target, CI's (`postgres_ci`) included: roles are another
    test's business (release/test_postgres.py)."""
    return {**server.env, "MEDIAPULSE_PG_DATABASE": database, "MEDIAPULSE_PII_HASH_KEY": KEY,
            "MEDIAPULSE_PG_CI_USER": pgserver.USER,
            "MEDIAPULSE_PG_CI_PASSWORD": pgserver.PASSWORD}  # fmt: skip


def _cli(project: Project, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAPULSE_")}
    full_env.update(env)
    return subprocess.run(
        [sys.executable, "-m", "mediapulse", *args],
        cwd=project.root, env=full_env, capture_output=True, text=True, timeout=900,
    )  # fmt: skip


def _one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stdout[-3000:] + result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def _raw_state(server: pgserver.PgServer, database: str) -> dict[str, tuple]:
    """Every table in the raw schemas: its columns, a checksum of its rows, and its storage
    (oid and file: a truncate, a drop and re-create, or an `alter` changes one of them)."""
    tables = _sql(
        server, database,
        "select n.nspname || '.' || c.relname, c.oid::bigint, c.relfilenode::bigint "
        "from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        f"where c.relkind in ('r', 'p', 'v', 'm') and n.nspname in {RAW_SCHEMAS!r} order by 1",
    )  # fmt: skip
    state = {}
    for name, oid, filenode in tables:
        schema, table = name.split(".")
        columns = _sql(
            server, database,
            "select column_name, data_type, is_nullable from information_schema.columns "
            f"where table_schema = '{schema}' and table_name = '{table}' order by ordinal_position",
        )  # fmt: skip
        (checksum,) = _sql(
            server, database,
            f"select count(*), md5(coalesce(string_agg(t::text, E'\\n' order by t::text), '')) "
            f"from {name} as t",
        )  # fmt: skip
        state[name] = (tuple(columns), checksum, oid, filenode)
    return state


def _project(tmp_path_factory: pytest.TempPathFactory, name: str, data: bool) -> Project:
    project = copy_project(tmp_path_factory.mktemp(name) / "project")
    deps.install(project)
    if data:
        params = generate.Params(**DATA, start_date=generate.default_start_date(DATA["days"]))
        generate.generate(project.raw_path, params)
    return project


# -- a database whose `accounts.users` someone else created, and nothing else ------------------


@pytest.fixture(scope="module")
def handmade(
    server: pgserver.PgServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Project, dict[str, tuple]]:
    """A project with no raw data set at all, and a database holding one hand-made raw table
    with the very columns the loader would write (so that a truncate would fit it)."""
    _sql(
        server, HANDMADE_DB,
        "create schema accounts",
        "create table accounts.users (user_id bigint, email text, full_name text, "
        "birth_date date, country_code text, signup_ts timestamp, marketing_opt_in boolean, "
        "updated_at timestamp, loaded_at timestamp)",
        "insert into accounts.users values "
        "(1, 'ann@real.example', 'Ann Real', '1980-02-03', 'GB', '2024-01-01', true, "
        "'2024-01-02', '2024-01-02'), "
        "(2, 'bob@real.example', 'Bob Real', '1990-04-05', 'DE', '2024-02-01', false, "
        "'2024-02-02', '2024-02-02')",
    )  # fmt: skip
    project = _project(tmp_path_factory, "handmade", data=False)
    return project, _raw_state(server, HANDMADE_DB)


def test_load_raw_refuses_a_raw_table_it_did_not_create(
    server: pgserver.PgServer, handmade: tuple[Project, dict[str, tuple]]
) -> None:
    project, before = handmade
    generate.generate(
        project.raw_path,
        generate.Params(**DATA, start_date=generate.default_start_date(DATA["days"])),
    )
    try:
        result = _cli(project, _env(server, HANDMADE_DB), "load-raw", "--target", "postgres")
    finally:
        project.raw_path.unlink()  # the next test needs a project without raw data
    line = _one_line_error(result)
    assert (
        "raw table accounts.users in target 'postgres' was not created by `mediapulse load-raw`"
        in line
    ), line
    assert "refusing to replace it" in line, line
    assert _raw_state(server, HANDMADE_DB) == before, "load-raw changed the raw schemas"


@pytest.mark.parametrize(
    "job",
    [
        ("build", "--target", "postgres"),
        ("nightly", "--target", "postgres", "--artifacts", "state"),
        ("deploy", "--target", "postgres", "--artifacts", "state"),
        ("slim-ci", "--target", "postgres_ci", "--state", "state"),
        ("evaluate", "--target", "postgres"),
        ("codegen", "--target", "postgres", "--check"),
    ],
    ids=lambda job: job[0],
)
def test_a_job_stops_at_a_missing_raw_table_and_touches_nothing(
    server: pgserver.PgServer, handmade: tuple[Project, dict[str, tuple]], job: tuple[str, ...]
) -> None:
    project, before = handmade
    line = _one_line_error(_cli(project, _env(server, HANDMADE_DB), *job))
    found = MISSING.search(line)
    assert found, line
    assert found.group(1) != "accounts.users" and found.group(1) not in before, line
    assert _raw_state(server, HANDMADE_DB) == before, f"{job[0]} changed the raw schemas"
    assert not project.raw_path.exists(), f"{job[0]} generated demo data for a server target"


# -- a database the demo data set was loaded into, beside someone else's table ----------------


@pytest.fixture(scope="module")
def loaded(
    server: pgserver.PgServer, tmp_path_factory: pytest.TempPathFactory
) -> tuple[Project, dict[str, tuple]]:
    """The demo data set loaded by `mediapulse load-raw`, after a partner's loader had put a
    table of its own into schema `streaming`."""
    _sql(
        server, pgserver.DATABASE,
        "create schema streaming",
        "create table streaming.partner_events (id integer primary key, payload text, "
        "received_at timestamp)",
        "insert into streaming.partner_events "
        "select i, 'partner ' || i, timestamp '2026-01-01' + i * interval '1 minute' "
        "from generate_series(1, 500) as i",
    )  # fmt: skip
    project = _project(tmp_path_factory, "loaded", data=True)
    result = _cli(project, _env(server, pgserver.DATABASE), "load-raw", "--target", "postgres")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "loaded" in result.stdout, result.stdout
    # the owner's one-time SQL (docs/targets/postgresql-production.md, "Setting up a
    # server"): a CI run reads the raw users from their masked copy, whoever it connects as
    env = {**_env(server, pgserver.DATABASE), "MEDIAPULSE_PG_USER": "transformer"}
    access = _cli(project, env, "access-sql", "--target", "postgres")
    assert access.returncode == 0, access.stderr
    _sql(server, pgserver.DATABASE, access.stdout)
    return project, _raw_state(server, pgserver.DATABASE)


def test_load_raw_keeps_a_current_load_and_its_neighbours(
    server: pgserver.PgServer, loaded: tuple[Project, dict[str, tuple]]
) -> None:
    project, before = loaded
    assert {"streaming.partner_events", "streaming.watch_events", "accounts.users"} <= set(before)
    result = _cli(project, _env(server, pgserver.DATABASE), "load-raw", "--target", "postgres")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "already loaded" in result.stdout, result.stdout
    assert _raw_state(server, pgserver.DATABASE) == before


def test_a_job_stops_when_a_role_the_models_grant_to_is_missing(
    server: pgserver.PgServer, loaded: tuple[Project, dict[str, tuple]]
) -> None:
    project, before = loaded
    env = {**_env(server, pgserver.DATABASE), "MEDIAPULSE_PG_REPORTER_ROLE": "analysts"}
    line = _one_line_error(_cli(project, env, "build", "--target", "postgres"))
    assert "error: role analysts not found on target 'postgres'" in line, line
    assert "MEDIAPULSE_PG_REPORTER_ROLE" in line and "Setting up a server" in line, line
    assert _raw_state(server, pgserver.DATABASE) == before
    assert not [s for (s,) in _sql(server, pgserver.DATABASE, "select nspname from pg_namespace")
                if s.startswith("analytics")]  # fmt: skip


def test_load_raw_on_a_duckdb_target_says_there_is_nothing_to_load(
    loaded: tuple[Project, dict[str, tuple]],
) -> None:
    project, _ = loaded
    result = _cli(project, {}, "load-raw", "--target", "dev")
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == 1 and "raw.duckdb" in lines[0] and "nothing to load" in lines[0], lines


# The releases (`nightly`, `deploy`, `rollback`) on a loaded server are release/test_postgres.py's,
# whose last test checks the raw tables the same way after all of them.
JOBS = (
    ("build", "--target", "postgres"),
    ("slim-ci", "--target", "postgres_ci", "--state", "state"),
)


@pytest.fixture(scope="module")
def after_jobs(
    server: pgserver.PgServer, loaded: tuple[Project, dict[str, tuple]]
) -> tuple[Project, dict[str, tuple], dict[str, dict[str, tuple]]]:
    """Every job run once against the loaded database; the raw state after each."""
    project, before = loaded
    after = {}
    for job in JOBS:
        result = _cli(project, _env(server, pgserver.DATABASE), *job)
        assert result.returncode == 0, f"{job}: " + result.stdout[-4000:] + result.stderr[-2000:]
        after[job[0]] = _raw_state(server, pgserver.DATABASE)
    return project, before, after


@pytest.mark.parametrize("job", [job[0] for job in JOBS])
def test_every_job_leaves_the_raw_tables_byte_for_byte(
    after_jobs: tuple[Project, dict[str, tuple], dict[str, dict[str, tuple]]], job: str
) -> None:
    _, before, after = after_jobs
    changed = sorted(
        t for t in before.keys() | after[job].keys() if before.get(t) != after[job].get(t)
    )
    assert not changed, f"`mediapulse {job} --target postgres` changed raw tables {changed}"


def test_the_email_hash_is_keyed_on_postgres(
    server: pgserver.PgServer,
    after_jobs: tuple[Project, dict[str, tuple], dict[str, dict[str, tuple]]],
) -> None:
    """sha256 of the key, a separator and the normalised address: what the DuckDB build gives
    for the same key (tests/python/project/test_personal_data.py checks that side)."""
    _ = after_jobs  # after every job has run
    # what `build --target postgres` built (the last job, slim CI, built in its own schemas)
    staged = "analytics_staging.stg_accounts__users"
    rows = _sql(
        server, pgserver.DATABASE,
        f"select u.email, s.email_hash from accounts.users as u join {staged} as s "
        "on s.user_id = u.user_id order by u.user_id limit 50",
    )  # fmt: skip
    assert len(rows) == 50
    for email, digest in rows:
        normalised = email.strip().lower()
        assert digest == hashlib.sha256(f"{KEY}|{normalised}".encode()).hexdigest(), email
        assert digest != hashlib.md5(normalised.encode()).hexdigest()


def test_a_raw_table_replaced_by_someone_else_is_refused_afterwards(
    server: pgserver.PgServer,
    after_jobs: tuple[Project, dict[str, tuple], dict[str, dict[str, tuple]]],
) -> None:
    """The EL tool takes a table over (drops and re-creates it): load-raw's record no longer
    fits it, so the next load refuses instead of replacing the EL tool's data."""
    project, _, _ = after_jobs
    _sql(
        server, pgserver.DATABASE,
        "create table catalog.content_new (like catalog.content)",
        "insert into catalog.content_new select * from catalog.content limit 10",
        "drop table catalog.content cascade",
        "alter table catalog.content_new rename to content",
    )  # fmt: skip
    generate.append_day(project.raw_path)  # a new data set: load-raw would replace its tables
    before = _raw_state(server, pgserver.DATABASE)
    result = _cli(project, _env(server, pgserver.DATABASE), "load-raw", "--target", "postgres")
    line = _one_line_error(result)
    assert "raw table catalog.content in target 'postgres' was not created by" in line, line
    assert _raw_state(server, pgserver.DATABASE) == before
