"""The same project on PostgreSQL 15: it builds, its tests pass, the marts hold the same rows
as on DuckDB (money to the last decimal), and incremental runs there equal a full refresh there.
This is what "portable SQL" has to mean, and all it means: two engines, proven by these tests."""

from __future__ import annotations

import datetime as dt
import decimal
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from mediapulse.core.project import Project
from mediapulse.data import generate
from mediapulse.data.rawload import load_raw
from mediapulse.dbt import artifacts
from mediapulse.develop import build
from mediapulse.engines.duckdb import duckdb_file
from mediapulse.engines.postgres import connect_postgres
from mediapulse.engines.targets import resolve

from ..conftest import clone_built, manifest_models, relation_of
from ..support import pgserver
from ..support.compare_marts import ROUNDED_FROM_A_DOUBLE, same_rows, tolerances_of

pytestmark = [pytest.mark.dbt, pytest.mark.postgres]


@pytest.fixture(scope="module")
def postgres() -> Iterator[pgserver.PgServer]:
    server = pgserver.start_server()
    if server is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql-15)")
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in server.env.items():
                patch.setenv(name, value)
            yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def on_postgres(built: Project, postgres: pgserver.PgServer, tmp_path_factory) -> Project:
    project = clone_built(built, tmp_path_factory.mktemp("pg") / "project")
    # The raw schemas are the loader's: jobs only read them, so the demo set is loaded first.
    assert "loaded" in load_raw(resolve(project, "postgres"))
    assert build.main_job(resolve(project, "postgres")) == 0
    return project


def test_only_ratios_outside_finance_are_compared_with_a_tolerance(on_postgres: Project) -> None:
    models = manifest_models(on_postgres)
    for model, column in sorted(ROUNDED_FROM_A_DOUBLE):
        assert model in models and column in models[model]["columns"], f"{model}.{column} is gone"
        assert models[model]["fqn"][2] != "finance", f"{model}.{column}: finance is exact"
        assert not column.endswith("_usd"), f"{model}.{column}: money is compared exactly"


def test_the_comparison_is_exact_except_for_the_listed_ratios() -> None:
    """The comparison itself: one millionth of a dollar apart is a difference; a listed ratio
    may be one unit of its last decimal apart, not two; a double is refused."""
    money, ratio = [None], [None, decimal.Decimal("0.0001")]
    cent = decimal.Decimal
    assert same_rows([(cent("0.357150"),)], [(cent("0.357149"),)], money, "m") is not None
    assert same_rows([(cent("0.357150"),)], [(cent("0.35715"),)], money, "m") is None
    assert same_rows([(1, cent("0.1235"))], [(1, cent("0.1234"))], ratio, "r") is None
    assert same_rows([(1, cent("0.1236"))], [(1, cent("0.1234"))], ratio, "r") is not None
    assert same_rows([(1, None)], [(1, cent("0.1234"))], ratio, "r") is not None
    with pytest.raises(AssertionError, match="a double column"):
        same_rows([(0.5,)], [(0.5,)], money, "d")


def test_build_and_tests_pass_on_postgres(on_postgres: Project) -> None:
    results = artifacts.node_results(on_postgres.target_dir)
    bad = [r.describe() for r in results if r.status not in ("success", "pass", "no-op")]
    assert not bad
    assert sum(r.resource_type == "test" for r in results) >= 50


def test_marts_hold_the_same_rows_on_postgres_and_duckdb(
    built: Project, on_postgres: Project
) -> None:
    duck_models = manifest_models(built)
    pg_models = manifest_models(on_postgres)
    marts = [name for name, node in pg_models.items() if node["fqn"][1] == "marts"]
    assert {"fct_subscription_revenue", "revenue_by_content"} <= set(marts)
    pg = connect_postgres(on_postgres, "postgres")
    try:
        with duckdb.connect(str(duckdb_file(built, "dev")), read_only=True) as duck:
            for name in marts:
                duck_rel = relation_of(duck_models[name])
                pg_rel = relation_of(pg_models[name]).split(".", 1)[1]
                columns = [c["name"] for c in pg_models[name]["columns"].values()]
                assert columns, f"{name} documents no columns"
                select = ", ".join(columns)
                duck_rows = duck.execute(f"select {select} from {duck_rel}").fetchall()
                with pg.cursor() as cursor:
                    cursor.execute(f"select {select} from {pg_rel}")
                    pg_rows = cursor.fetchall()
                assert len(duck_rows) == len(pg_rows), name
                tolerances = tolerances_of(name, pg_models[name])
                difference = same_rows(duck_rows, pg_rows, tolerances, name, "PostgreSQL")
                assert difference is None, f"{name}: {difference}"
    finally:
        pg.close()


def test_raw_load_is_skipped_when_the_target_is_current(on_postgres: Project) -> None:
    assert "already loaded" in load_raw(resolve(on_postgres, "postgres"))


def test_wrong_credentials_are_one_clear_error(
    on_postgres: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mediapulse.core.errors import MediaPulseError

    monkeypatch.setenv("MEDIAPULSE_PG_PASSWORD", "wrong")
    with pytest.raises(MediaPulseError) as err:
        connect_postgres(on_postgres, "postgres")
    text = str(err.value)
    assert "cannot connect to target 'postgres'" in text and "MEDIAPULSE_PG_PASSWORD" in text
    assert "wrong" not in text, "a secret is never printed"


def _tables(project: Project) -> dict[str, str]:
    """The models dbt materialises as tables (incremental or rebuilt), by name: schema.table."""
    return {
        name: relation_of(node).split(".", 1)[1]
        for name, node in manifest_models(project).items()
        if node["config"]["materialized"] in ("table", "incremental")
    }


def _latest_event_load(project: Project) -> dt.datetime:
    events = _tables(project)["stg_streaming__watch_events"]
    pg = connect_postgres(project, "postgres")
    try:
        with pg.cursor() as cursor:
            cursor.execute(f"select max(loaded_at) from {events}")
            return cursor.fetchone()[0]
    finally:
        pg.close()


def test_incremental_run_on_postgres_equals_a_full_refresh_there(
    on_postgres: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each side in its own schemas of the one database: a copied project directory does not
    # copy what it built on PostgreSQL. Last in this file: the appended day is loaded into the
    # raw schemas, which every schema of the database reads, so the raw data of `on_postgres`
    # is no longer the one loaded (the marts it built, tables, are untouched).
    incremental = clone_built(on_postgres, tmp_path / "incremental")
    monkeypatch.setenv("MEDIAPULSE_PG_SCHEMA", "incremental")
    assert build.main_job(resolve(incremental, "postgres")) == 0
    loaded_before = _latest_event_load(incremental)
    assert generate.append_day(incremental.raw_path).added["streaming.watch_events"] > 0
    # The loader brings the appended day (jobs never write raw data); then an incremental build.
    assert "loaded" in load_raw(resolve(incremental, "postgres"))
    assert build.main_job(resolve(incremental, "postgres")) == 0
    results = artifacts.node_results(incremental.target_dir)
    assert all(r.status in ("success", "pass", "no-op") for r in results)
    assert _latest_event_load(incremental) > loaded_before, "no new events were picked up"

    full = clone_built(incremental, tmp_path / "full")
    monkeypatch.setenv("MEDIAPULSE_PG_SCHEMA", "full_refresh")
    assert build.main_job(resolve(full, "postgres"), full_refresh=True) == 0

    left, right = _tables(incremental), _tables(full)
    assert left.keys() == right.keys()
    materialized = {n: node["config"]["materialized"] for n, node in manifest_models(full).items()}
    assert sum(kind == "incremental" for kind in materialized.values()) >= 5
    pg = connect_postgres(full, "postgres")
    try:
        with pg.cursor() as cursor:
            for name in sorted(left):
                a, b = left[name], right[name]
                assert a != b, f"{name}: both sides wrote {a}"
                # Row for row: EXCEPT ALL keeps duplicates, and numerics compare exactly.
                cursor.execute(
                    f"select count(*) from ((select * from {a} except all select * from {b}) "
                    f"union all (select * from {b} except all select * from {a})) as differing"
                )
                differing = cursor.fetchone()[0]
                assert differing == 0, (
                    f"{name} ({materialized[name]}): {differing} rows differ between the "
                    "incremental run and a full refresh on PostgreSQL"
                )
    finally:
        pg.close()
