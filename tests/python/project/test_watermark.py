"""A poisoned watermark cannot freeze the warehouse, nor make a stale source look fresh.

A loader with a wrong clock stamps a few rows a year ahead (fault `future_loaded_at`). The
incremental models take their watermark from the largest `loaded_at` they hold, so if those
rows reached them (a `dbt run` without tests, or a warehouse loaded before the gate existed),
every later load would fall below the watermark and never be picked up; and `dbt source
freshness` would call the source fresh for a year. Here: the fault, incremental runs, the next
day, and the checks a user makes (the new day in the marts, incremental == full refresh, and
what freshness reports). The loads are in the past, as in production, so a watermark capped at
the run's start (`least(max(loaded_at), start)`) fails here too: it skips everything loaded
between the previous run and this one.
"""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from mediapulse.core.project import Project
from mediapulse.data import generate
from mediapulse.dbt import artifacts
from mediapulse.dbt.runner import run_dbt
from mediapulse.engines.duckdb import duckdb_file
from mediapulse.engines.targets import resolve

from ..conftest import clone_built, manifest_models, relation_of

pytestmark = pytest.mark.dbt

# The marts built from the two poisoned event tables, and the day column that says which
# simulated day a row belongs to.
NEW_DAY_COLUMNS = {
    "stg_streaming__watch_events": "event_at",
    "int_watch_events_sessionized": "event_at",
    "int_watch_sessions_aggregated": "session_date",
    "fct_watch_sessions": "session_date",
    "fct_daily_engagement": "activity_date",
    "fct_ad_impressions": "served_date",
}


def _run(project: Project, *args: str) -> None:
    result = run_dbt(resolve(project, "dev"), ["run", *args])
    assert result.success, result.error
    failed = [r.describe() for r in artifacts.node_results(project.target_dir) if r.failed]
    assert not failed, failed


def _rows_of_day(project: Project, day: object) -> dict[str, int]:
    models = manifest_models(project)
    with duckdb.connect(str(duckdb_file(project, "dev")), read_only=True) as con:
        return {
            name: con.execute(
                f"select count(*) from {relation_of(models[name])} "
                f"where cast({column} as date) = ?",
                [day],
            ).fetchone()[0]
            for name, column in NEW_DAY_COLUMNS.items()
        }


def _future_rows(raw: Path) -> dict[str, int]:
    """Raw rows stamped more than a month after now: what the fault wrote."""
    month_ahead = datetime.now(UTC).replace(tzinfo=None) + timedelta(days=30)
    with duckdb.connect(str(raw), read_only=True) as con:
        return {
            table: con.execute(
                f"select count(*) from {table} where loaded_at > ?", [month_ahead]
            ).fetchone()[0]
            for table in ("streaming.watch_events", "ads.ad_impressions")
        }


def test_a_row_loaded_in_the_future_does_not_freeze_incremental_runs(
    built: Project, tmp_path: Path
) -> None:
    incremental = clone_built(built, tmp_path / "incremental")
    # loads in the past, as in production: the data set ends three days ago, so the two days
    # appended below end at midnight today (a day appended to the session's data set, which
    # ends yesterday, would be stamped ahead of the clock, which hides a watermark that jumps
    # to the run's start)
    with duckdb.connect(str(incremental.raw_path), read_only=True) as con:
        params, _ = generate.read_params(con, incremental.raw_path)
    earlier = replace(params, start_date=params.start_date - timedelta(days=2))
    generate.generate(incremental.raw_path, earlier, overwrite=True)
    _run(incremental, "--full-refresh")
    # the loader's wrong clock strikes during one day, and those rows reach the incremental
    # tables: `dbt run` builds models without running the tests that would stop it
    generate.append_day(incremental.raw_path, faults=["future_loaded_at"])
    assert _future_rows(incremental.raw_path) == {
        "streaming.watch_events": 25,
        "ads.ad_impressions": 10,
    }
    _run(incremental)
    # the next day arrives, clean, and is built incrementally
    summary = generate.append_day(incremental.raw_path)
    new_day = summary.params.start_date + timedelta(days=summary.params.days - 1)
    assert summary.params.as_of <= datetime.now(UTC).replace(tzinfo=None)
    _run(incremental)

    full = clone_built(incremental, tmp_path / "full")
    _run(full, "--full-refresh")
    expected = _rows_of_day(full, new_day)
    assert all(count > 0 for count in expected.values()), expected
    assert _rows_of_day(incremental, new_day) == expected, (
        f"the rows of {new_day} loaded after the poisoned day are missing from the "
        "incremental tables"
    )

    # and every table equals a full refresh: rows held with a future loaded_at are picked
    # up again by each run until their time comes, never duplicated
    models = manifest_models(full)
    tables = [n for n in models.values() if n["config"]["materialized"] in ("table", "incremental")]
    with duckdb.connect() as con:
        con.execute(f"attach '{duckdb_file(incremental, 'dev')}' as inc (read_only)")
        con.execute(f"attach '{duckdb_file(full, 'dev')}' as fr (read_only)")
        for node in tables:
            relation = relation_of(node).split(".", 1)[1]
            diff = con.execute(
                f"select count(*) from ((select * from inc.{relation} except all "
                f"select * from fr.{relation}) union all (select * from fr.{relation} "
                f"except all select * from inc.{relation}))"
            ).fetchone()[0]
            assert diff == 0, f"{node['name']}: {diff} rows differ from a full refresh"


def test_freshness_is_not_fooled_by_a_row_loaded_in_the_future(
    built: Project, tmp_path: Path
) -> None:
    project = clone_built(built, tmp_path / "project")
    with duckdb.connect(str(project.raw_path), read_only=True) as con:
        params, _ = generate.read_params(con, project.raw_path)
    # a data set whose loads stopped three days ago (error_after is 60 hours), with a few
    # rows whose wrong clock says they were loaded a year from now
    stale = replace(params, start_date=params.start_date - timedelta(days=3))
    generate.generate(project.raw_path, stale, faults=["future_loaded_at"], overwrite=True)

    result = run_dbt(resolve(project, "dev"), ["source", "freshness", "--select", "source:*"])
    assert not result.success, "three days without a load is an error"
    sources = artifacts.load_json(project.target_dir / "sources.json", "sources")
    by_table = {r["unique_id"].split(".", 2)[2]: r for r in sources["results"]}
    now = datetime.now(UTC)
    for table in ("streaming.watch_events", "ads.ad_impressions"):
        outcome = by_table[table]
        assert outcome["status"] == "error", (
            f"source {table}: freshness says {outcome['status']} "
            f"(newest load {outcome.get('max_loaded_at')}) although nothing was loaded for "
            "three days"
        )
        newest = datetime.fromisoformat(outcome["max_loaded_at"])
        newest = newest if newest.tzinfo else newest.replace(tzinfo=UTC)
        assert newest <= now, f"source {table}: newest load {newest} is in the future"
