"""Which raw columns are personal, and the masked copy pull requests read instead (pure, and
on a real DuckDB table; PostgreSQL runs the same SQL in the access tests)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from mediapulse.core.project import Project
from mediapulse.core.sources import RAW_SCHEMA_SUFFIX_ENV, declared_raw_tables, declared_sources
from mediapulse.dbt.env import dbt_env
from mediapulse.engines.targets import resolve
from mediapulse.security import personal

from ..cli.test_main import _one_line_error, run_cli
from ..conftest import REPO, copy_project

pytestmark = pytest.mark.reads("*")


def test_the_sources_yaml_decides_what_is_personal() -> None:
    tables = {t.name: t for t in personal.personal_tables(Project.discover(REPO))}
    assert set(tables) == {"accounts.users"}
    assert tables["accounts.users"].personal == ("email", "full_name", "birth_date")


def test_a_masked_copy_keeps_rows_and_shapes_and_no_personal_value() -> None:
    table = personal.PersonalTable(
        "accounts",
        "users",
        (("user_id", "bigint", False), ("email", "varchar", True),
         ("full_name", "varchar", True), ("birth_date", "date", True),
         ("score", "integer", True), ("country_code", "varchar", False)),
    )  # fmt: skip
    con = duckdb.connect()
    con.execute(
        "create table users as select * from (values "
        "(1, 'Ann.Lee@mail.test', 'Ann Lee', date '1990-05-17', 7, 'DE'), "
        "(2, 'bo@mail.test', 'Bo Ek', date '1985-12-01', 3, 'SE'), "
        "(3, 'Ann.Lee@mail.test', null, null, null, 'DE')) "
        "as t(user_id, email, full_name, birth_date, score, country_code)"
    )
    rows = con.execute(personal.masked_select(table, "users", "'secret-salt'") + " order by 1")
    masked = rows.fetchall()
    assert [r[0] for r in masked] == [1, 2, 3] and [r[5] for r in masked] == ["DE", "SE", "DE"]
    text = repr(masked)
    for clear in ("Ann", "Lee", "mail.test", "Bo Ek", "05-17", "1990, 5"):
        assert clear not in text
    assert masked[0][1] == masked[2][1] != masked[1][1]  # equal addresses stay equal
    assert masked[0][1].startswith("masked-") and masked[0][1].endswith("@example.invalid")
    assert masked[2][2] is None and masked[2][3] is None  # nulls stay null
    assert str(masked[0][3]) == "1990-01-01" and masked[0][4] is None
    # another salt, other pseudonyms: a dictionary without the salt matches nothing
    other = con.execute(personal.masked_select(table, "users", "'other'") + " order by 1")
    assert other.fetchall()[0][1] != masked[0][1]


def test_a_ci_run_on_a_server_reads_the_users_from_their_masked_copy(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The source takes the suffix; what reads its `schema:` itself takes the loader's schema,
    whatever the environment says."""
    project = Project.discover(REPO)
    monkeypatch.setenv(RAW_SCHEMA_SUFFIX_ENV, "__masked")
    assert [personal.masked_name(t) for t in personal.masked_tables(project)] == [
        "accounts__masked.users"
    ]
    assert "accounts.users" in declared_raw_tables(project)
    assert {t.schema for t in declared_sources(project)} == {
        "accounts", "ads", "billing", "catalog", "streaming"
    }  # fmt: skip
    # dbt's environment: the suffix for the CI target on a server only
    assert dbt_env(resolve(project, "ci"))[RAW_SCHEMA_SUFFIX_ENV] == ""
    monkeypatch.setenv("MEDIAPULSE_PII_HASH_KEY", "k")
    assert dbt_env(resolve(project, "postgres"))[RAW_SCHEMA_SUFFIX_ENV] == ""
    assert dbt_env(resolve(project, "postgres_ci"))[RAW_SCHEMA_SUFFIX_ENV] == "__masked"


def test_access_sql_refuses_a_personal_source_ci_could_not_read(tmp_path: Path) -> None:
    project = copy_project(tmp_path / "project")
    sources = project.root / "models/staging/accounts/_accounts__sources.yml"
    text = sources.read_text()
    written = "schema: \"accounts{{ env_var('MEDIAPULSE_RAW_SCHEMA_SUFFIX', '') }}\""
    assert written in text
    sources.write_text(text.replace(written, "schema: accounts"))
    result = run_cli("access-sql", "--target", "postgres", cwd=project.root)
    line = _one_line_error(result, "source accounts has personal columns", written)
    assert "Personal data" in line
