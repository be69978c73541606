"""The same project on PostgreSQL 15: it builds, its tests pass, and the marts hold the same rows
as on DuckDB. This is what "portable SQL" has to mean."""

from __future__ import annotations

import datetime as dt
import decimal
import math
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest

from mediapulse import artifacts, build
from mediapulse.project import Project
from mediapulse.rawload import connect_postgres

from . import pgserver
from .conftest import clone_built, manifest_models, relation_of

pytestmark = [pytest.mark.dbt, pytest.mark.postgres]


@pytest.fixture(scope="session")
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


@pytest.fixture(scope="session")
def on_postgres(built: Project, postgres: pgserver.PgServer, tmp_path_factory) -> Project:
    project = clone_built(built, tmp_path_factory.mktemp("pg") / "project")
    assert build.main_job(project, target="postgres") == 0
    return project


def _normalise(value: object) -> object:
    if isinstance(value, float | decimal.Decimal):
        return float(value)
    if isinstance(value, dt.datetime):
        return value.replace(tzinfo=None).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    return value


def _split(row: tuple) -> tuple[tuple, tuple[float, ...]]:
    """(the exact part, the fractional numbers) of a row."""
    exact = tuple(v for v in row if not isinstance(v, float))
    numbers = tuple(v for v in row if isinstance(v, float))
    return exact, numbers


def _same_rows(left: list[tuple], right: list[tuple]) -> str | None:
    """None when both hold the same rows; fractional numbers may differ by the last digit a
    model rounds to (DuckDB rounds doubles, PostgreSQL exact numerics, at a .5 boundary)."""
    groups: dict[tuple, list[list[tuple[float, ...]]]] = {}
    for side, rows in enumerate((left, right)):
        for row in rows:
            exact, numbers = _split(tuple(map(_normalise, row)))
            groups.setdefault(exact, [[], []])[side].append(numbers)
    for exact, (a, b) in groups.items():
        if len(a) != len(b):
            return f"row {exact}: {len(a)} on DuckDB, {len(b)} on PostgreSQL"
        for x, y in zip(sorted(a), sorted(b), strict=True):
            if not all(
                math.isclose(u, v, rel_tol=1e-9, abs_tol=1.01e-4) for u, v in zip(x, y, strict=True)
            ):
                return f"row {exact}: {x} on DuckDB, {y} on PostgreSQL"
    return None


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
    assert marts
    pg = connect_postgres(on_postgres, "postgres")
    try:
        with duckdb.connect(str(built.duckdb_path("dev")), read_only=True) as duck:
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
                difference = _same_rows(duck_rows, pg_rows)
                assert difference is None, f"{name}: {difference}"
    finally:
        pg.close()


def test_raw_load_is_skipped_when_the_target_is_current(on_postgres: Project) -> None:
    from mediapulse.rawload import load_raw

    assert "already loaded" in load_raw(on_postgres, "postgres")


def test_wrong_credentials_are_one_clear_error(
    on_postgres: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mediapulse.errors import MediaPulseError

    monkeypatch.setenv("MEDIAPULSE_PG_PASSWORD", "wrong")
    with pytest.raises(MediaPulseError) as err:
        connect_postgres(on_postgres, "postgres")
    text = str(err.value)
    assert "cannot connect to target 'postgres'" in text and "MEDIAPULSE_PG_PASSWORD" in text
    assert "wrong" not in text, "a secret is never printed"


def test_appended_day_reloads_raw_and_builds_incrementally(
    on_postgres: Project, tmp_path: Path
) -> None:
    from mediapulse import generate

    project = clone_built(on_postgres, tmp_path / "project")
    generate.append_day(project.raw_path)
    assert build.main_job(project, target="postgres") == 0
    results = artifacts.node_results(project.target_dir)
    assert all(r.status in ("success", "pass", "no-op") for r in results)
