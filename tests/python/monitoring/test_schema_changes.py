"""Schema changes of the raw data are reported before any model runs (issue 15, step 4).

Each source table's actual columns and types are compared with the columns the sources YAML
declares: added, removed and retyped columns, a likely rename in one line, a missing table.
On a critical source anything but an added column stops the job before dbt runs; elsewhere it
is a warning (docs/test-severity.md, "Schema changes of the sources"). The comparison is pure
and tested here without a database; then on the demo raw data (DuckDB and PostgreSQL), and as
the user meets it: `mediapulse generate --fault renamed_column`, then `mediapulse build`.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.core.sources import DeclaredColumn, DeclaredTable, declared_sources, normalise_type
from mediapulse.data import generate
from mediapulse.engines.duckdb import duckdb_file
from mediapulse.engines.targets import resolve
from mediapulse.monitoring import history
from mediapulse.monitoring.schema_changes import (
    CHANGES,
    SchemaChange,
    SchemaChangeError,
    check,
    compare,
    compare_table,
    enforce,
    severity,
)

from ..conftest import E2E, REPO, clone_built
from ..support import pgserver
from ..support.policy import load_source_change_policy

RENAME_LINE = (
    "error: source accounts.users: column user_id is gone and userId (bigint) is new: likely "
    "renamed user_id -> userId; rename it back in the loader, or update the source's columns "
    "and staging model"
)


def _table(
    *columns: tuple[str, str | None], critical: bool = True, source: str = "accounts"
) -> DeclaredTable:
    return DeclaredTable(
        source_name=source,
        table_name="users",
        schema=source,
        identifier="users",
        database="raw",
        critical=critical,
        columns=tuple(DeclaredColumn(name, data_type) for name, data_type in columns),
    )


USERS = _table(("user_id", "bigint"), ("email", "varchar"), ("signup_ts", "timestamp"))
ACTUAL = [("user_id", "BIGINT"), ("email", "VARCHAR"), ("signup_ts", "TIMESTAMP")]


# -- the comparison, pure --------------------------------------------------------------------


def test_no_change() -> None:
    assert compare_table(USERS, ACTUAL) == []


def test_an_added_column_is_a_warning_even_on_a_critical_source() -> None:
    (change,) = compare_table(USERS, [*ACTUAL, ("app_version", "VARCHAR")])
    assert (change.change, change.column_name, change.actual_type, change.severity) == (
        "added", "app_version", "varchar", "warn",
    )  # fmt: skip
    assert change.declared_type is None and change.renamed_from is None
    line = change.line()
    assert line.startswith("warn: source accounts.users: column app_version (varchar) is new")
    assert "\n" not in line


@pytest.mark.parametrize(("critical", "expected"), [(True, "error"), (False, "warn")])
def test_a_removed_column(critical: bool, expected: str) -> None:
    table = _table(*((c.name, c.data_type) for c in USERS.columns), critical=critical)
    (change,) = compare_table(table, [c for c in ACTUAL if c[0] != "email"])
    assert (change.change, change.column_name, change.declared_type, change.severity) == (
        "removed", "email", "varchar", expected,
    )  # fmt: skip
    assert change.line().startswith(f"{expected}: source accounts.users: column email")
    assert "gone" in change.line()


def test_a_retyped_column_names_both_types() -> None:
    actual = [("user_id", "VARCHAR"), *ACTUAL[1:]]
    (change,) = compare_table(USERS, actual)
    assert (change.change, change.column_name, change.declared_type, change.actual_type) == (
        "retyped", "user_id", "bigint", "varchar",
    )  # fmt: skip
    assert change.severity == "error"
    assert "user_id is varchar, declared bigint" in change.line()


def test_a_case_change_of_the_same_name_is_a_likely_rename() -> None:
    actual = [("userId", "BIGINT"), *ACTUAL[1:]]
    (change,) = compare_table(USERS, actual)
    assert change.as_row() == {
        "source_name": "accounts",
        "table_name": "users",
        "column_name": "userId",
        "change": "renamed",
        "declared_type": "bigint",
        "actual_type": "bigint",
        "renamed_from": "user_id",
        "severity": "error",
    }
    assert change.line() == RENAME_LINE


def test_the_only_removed_and_added_pair_of_one_type_is_a_likely_rename() -> None:
    actual = [("user_id", "BIGINT"), ("email_address", "VARCHAR"), ("signup_ts", "TIMESTAMP")]
    (change,) = compare_table(USERS, actual)
    assert (change.change, change.renamed_from, change.column_name) == (
        "renamed", "email", "email_address",
    )  # fmt: skip


def test_a_removed_and_an_added_column_of_different_types_are_not_a_rename() -> None:
    actual = [("user_id", "BIGINT"), ("signup_ts", "TIMESTAMP"), ("email_hash", "BLOB")]
    changes = compare_table(USERS, actual)
    assert sorted((c.change, c.column_name) for c in changes) == [
        ("added", "email_hash"), ("removed", "email"),
    ]  # fmt: skip


def test_ambiguous_pairs_are_not_guessed() -> None:
    table = _table(("a_id", "bigint"), ("b_id", "bigint"))
    changes = compare_table(table, [("x", "BIGINT"), ("y", "BIGINT")])
    assert sorted((c.change, c.column_name) for c in changes) == [
        ("added", "x"), ("added", "y"), ("removed", "a_id"), ("removed", "b_id"),
    ]  # fmt: skip


def test_names_match_without_regard_to_case_on_duckdb_but_not_on_postgres() -> None:
    actual = [("USER_ID", "BIGINT"), *ACTUAL[1:]]
    assert compare_table(USERS, actual) == []
    (change,) = compare_table(USERS, actual, case_sensitive=True)
    assert (change.change, change.renamed_from, change.column_name) == (
        "renamed", "user_id", "USER_ID",
    )  # fmt: skip


@pytest.mark.parametrize(("critical", "expected"), [(True, "error"), (False, "warn")])
def test_a_missing_table(critical: bool, expected: str) -> None:
    table = _table(("user_id", "bigint"), critical=critical)
    (change,) = compare([table], {})
    assert (change.change, change.column_name, change.severity) == (
        "missing_table", None, expected,
    )  # fmt: skip
    assert change.line().startswith(f"{expected}: source accounts.users: table accounts.users")


def test_a_table_declared_without_columns_is_only_checked_for_existence() -> None:
    table = _table()
    assert compare([table], {("accounts", "users"): ACTUAL}) == []


@pytest.mark.parametrize(
    ("declared", "actual"),
    [
        ("varchar", "text"), ("varchar", "character varying"), ("varchar", "VARCHAR"),
        ("varchar", "character varying(64)"), ("timestamp", "timestamp without time zone"),
        ("timestamp", "TIMESTAMP"), ("integer", "int4"), ("integer", "INT"),
        ("bigint", "int8"), ("double", "double precision"), ("double", "float8"),
        ("boolean", "bool"), ("date", "DATE"), ("decimal(10,2)", "numeric(10,2)"),
        ("decimal(10,2)", "DECIMAL(10, 2)"), ("timestamptz", "timestamp with time zone"),
    ],
)  # fmt: skip
def test_type_names_are_the_same_across_engines(declared: str, actual: str) -> None:
    assert normalise_type(declared) == normalise_type(actual)


@pytest.mark.parametrize(
    ("declared", "actual"),
    [("integer", "bigint"), ("decimal(10,2)", "decimal(12,2)"), ("timestamp", "timestamptz"),
     ("varchar", "date"), ("double", "real")],
)  # fmt: skip
def test_different_types_stay_different(declared: str, actual: str) -> None:
    assert normalise_type(declared) != normalise_type(actual)


@pytest.mark.reads("docs/test-severity.md")
def test_severity_follows_the_written_policy() -> None:
    policy = load_source_change_policy(REPO / "docs" / "test-severity.md")
    assert set(policy) == set(CHANGES)
    for change, (on_critical, elsewhere) in policy.items():
        assert severity(change, critical=True) == on_critical, change
        assert severity(change, critical=False) == elsewhere, change


def test_errors_stop_with_every_error_line_and_warnings_are_printed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    actual = [("userId", "BIGINT"), ("email", "VARCHAR"), ("signup_ts", "DATE"), ("x", "DATE")]
    changes = compare_table(USERS, actual)
    with pytest.raises(SchemaChangeError) as raised:
        enforce(changes, elapsed_s=0.01)
    assert isinstance(raised.value, MediaPulseError)
    assert raised.value.changes == [c for c in changes if c.severity == "error"]
    message = str(raised.value)
    # the CLI prints "mediapulse <job>: error: " before the first line
    assert message.splitlines()[0] == RENAME_LINE.removeprefix("error: ")
    assert all(line.startswith("error: source ") for line in message.splitlines()[1:])
    assert len(message.splitlines()) == 2  # the rename and the retype; the new column warns
    assert "warn: source accounts.users: column x (date) is new" in capsys.readouterr().out


# -- the declared sources ----------------------------------------------------------------------


@pytest.mark.reads("models")
def test_every_source_column_declares_its_type() -> None:
    tables = declared_sources(Project.discover(REPO))
    assert {f"{t.schema}.{t.identifier}" for t in tables} == {
        "streaming.watch_events", "catalog.content", "accounts.users", "billing.subscriptions",
        "ads.campaigns", "ads.ad_impressions",
    }  # fmt: skip
    untyped = [f"{t.source_name}.{t.table_name}.{c.name}" for t in tables for c in t.columns
               if not c.data_type]  # fmt: skip
    assert not untyped, f"source columns without data_type: {untyped}"
    assert all(t.critical for t in tables), "every source feeds the exposures"


# -- on the demo raw data ----------------------------------------------------------------------


SMALL = generate.Params(seed=3, users=60, days=2, start_date=generate.default_start_date(2))


@pytest.fixture(scope="module")
def raw_project(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A project copy with a small demo raw data set (no dbt packages needed)."""
    from ..conftest import copy_project

    project = copy_project(tmp_path_factory.mktemp("schema") / "project")
    generate.generate(project.raw_path, SMALL)
    return project


@pytest.mark.reads("*")
def test_the_declared_types_are_the_demo_data_on_duckdb(raw_project: Project) -> None:
    result = check(resolve(raw_project, "dev"))
    assert result.changes == [], [c.line() for c in result.changes]
    assert result.tables == 6


def test_the_renamed_column_fault_is_one_likely_rename(
    raw_project: Project, tmp_path: Path
) -> None:
    project = Project.discover(raw_project.root, tmp_path / "warehouse")
    generate.generate(project.raw_path, SMALL, faults=["renamed_column"])
    (change,) = check(resolve(project, "dev")).changes
    assert change.line() == RENAME_LINE


@pytest.fixture(scope="module")
def postgres() -> Iterator[pgserver.PgServer]:
    server = pgserver.start_server()
    if server is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql-15)")
    try:
        with pytest.MonkeyPatch.context() as patch:
            # the production role, without any grant: the check reads only the catalog
            for name, value in server.role_env("transformer").items():
                patch.setenv(name, value)
            yield server
    finally:
        server.stop()


@pytest.mark.postgres
@pytest.mark.reads("*")
def test_the_declared_types_are_the_demo_data_on_postgres(
    raw_project: Project, postgres: pgserver.PgServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mediapulse.data.rawload import load_raw

    with monkeypatch.context() as loader:  # the loader's role writes the raw schemas
        for name, value in postgres.env.items():
            loader.setenv(name, value)
        assert "loaded" in load_raw(resolve(raw_project, "postgres"))
    result = check(resolve(raw_project, "postgres"))
    assert result.changes == [], [c.line() for c in result.changes]
    assert result.tables == 6
    postgres.execute('alter table accounts.users rename column user_id to "userId"')
    (change,) = check(resolve(raw_project, "postgres")).changes
    assert change.line() == RENAME_LINE


# -- as the user meets it ----------------------------------------------------------------------


def _cli(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAPULSE_")}
    return subprocess.run(
        [sys.executable, "-m", "mediapulse", *args],
        cwd=project.root, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.dbt
def test_a_renamed_key_stops_the_build_before_any_model_runs(
    built: Project, tmp_path: Path
) -> None:
    project = clone_built(built, tmp_path / "project")
    with duckdb.connect(str(project.raw_path), read_only=True) as con:
        params, _ = generate.read_params(con, project.raw_path)
    assert (params.seed, params.users, params.days) == (E2E["seed"], E2E["users"], E2E["days"])
    generated = _cli(
        project, "generate", "--force", "--fault", "renamed_column", "--seed", str(params.seed),
        "--users", str(params.users), "--days", str(params.days),
        "--start-date", params.start_date.isoformat(),
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    results = project.target_dir / "run_results.json"
    warehouse = duckdb_file(project, "dev")
    before = _digest(results), _digest(warehouse)

    result = _cli(project, "build")
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines == [f"mediapulse build: error: {RENAME_LINE.removeprefix('error: ')}"]
    assert "before any model runs" in result.stdout
    assert "dbt build" not in result.stdout
    assert (_digest(results), _digest(warehouse)) == before, "no model ran"
    # the run history keeps the stopped build, and why (the morning report and alerts read it)
    [(run_id, status)] = history.read(
        resolve(project, "dev"),
        "select run_id, status from monitoring.runs order by started_at desc "
        "limit 1",
    )  # fmt: skip
    assert status == "failed"
    changes = history.read(
        resolve(project, "dev"),
        "select source_name, table_name, column_name, change, renamed_from, "
        f"severity from monitoring.schema_changes where run_id = '{run_id}'",
    )  # fmt: skip
    assert changes == [("accounts", "users", "userId", "renamed", "user_id", "error")]


@pytest.mark.dbt
def test_new_columns_and_a_non_critical_source_only_warn(built: Project, tmp_path: Path) -> None:
    project = clone_built(built, tmp_path / "project")
    sources = project.root / "models" / "staging" / "catalog" / "_catalog__sources.yml"
    text = sources.read_text()
    assert "tags: ['critical']" in text
    sources.write_text(text.replace("tags: ['critical']", "tags: []"))
    with duckdb.connect(str(project.raw_path)) as con:
        con.execute("alter table catalog.content add column app_region varchar")
        con.execute("alter table catalog.content alter season_number type bigint")
        con.execute("alter table accounts.users add column nickname varchar")
    results = project.target_dir / "run_results.json"
    results.unlink()

    result = _cli(project, "build", "--select", "stg_catalog__content stg_accounts__users")
    assert result.returncode == 0, result.stdout + result.stderr
    warned = [x for x in result.stdout.splitlines() if x.startswith("warn: source ")]
    assert len(warned) == 3, result.stdout
    assert any(x.startswith("warn: source catalog.content: column app_region (varchar) is new")
               for x in warned)  # fmt: skip
    assert any(x.startswith("warn: source catalog.content: column season_number is bigint, "
                            "declared integer") for x in warned)  # fmt: skip
    assert any(x.startswith("warn: source accounts.users: column nickname (varchar) is new")
               for x in warned)  # fmt: skip
    assert "passed" in result.stdout and results.exists(), "the build went on"
    recorded = history.read(
        resolve(project, "dev"), "select c.table_name, c.column_name, c.change, c.severity from "
        "monitoring.schema_changes as c inner join monitoring.runs as r on r.run_id = c.run_id "
        "where r.status = 'success' order by 1, 2",
    )  # fmt: skip
    assert recorded == [
        ("content", "app_region", "added", "warn"),
        ("content", "season_number", "retyped", "warn"),
        ("users", "nickname", "added", "warn"),
    ]


def test_every_change_kind_has_a_row_shape() -> None:
    row = SchemaChange("s", "t", "c", "added", None, "varchar", None, "warn").as_row()
    assert list(row) == [
        "source_name", "table_name", "column_name", "change", "declared_type", "actual_type",
        "renamed_from", "severity",
    ]  # fmt: skip
