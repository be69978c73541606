"""End to end on DuckDB: the main job on generated data, and incremental runs == full refresh.

One small warehouse is built per session (``built``); tests that change things work on copies.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from mediapulse.core.project import Project
from mediapulse.data import generate
from mediapulse.dbt import artifacts
from mediapulse.develop import build
from mediapulse.engines.duckdb import duckdb_file
from mediapulse.engines.targets import resolve

from ..conftest import clone_built, manifest_models, relation_of

pytestmark = pytest.mark.dbt


def test_build_passes_with_no_error_warning_or_skip(built: Project) -> None:
    results = artifacts.node_results(built.target_dir)
    # exposures are reported as no-op: dbt has nothing to run for them
    bad = [r.describe() for r in results if r.status not in ("success", "pass", "no-op")]
    assert not bad
    assert {r.status for r in results if r.resource_type == "exposure"} == {"no-op"}
    kinds = {r.resource_type for r in results}
    assert {"model", "seed", "snapshot", "test"} <= kinds
    assert sum(r.resource_type == "test" for r in results) >= 50


def test_every_layer_is_there_and_every_mart_is_populated(built: Project) -> None:
    models = manifest_models(built)
    layers = {n["fqn"][1] for n in models.values()}
    assert {"staging", "intermediate", "marts"} <= layers
    expected = {
        "stg_streaming__watch_events", "stg_catalog__content", "stg_accounts__users",
        "stg_billing__subscriptions", "stg_ads__ad_impressions", "stg_ads__campaigns",
        "int_watch_events_sessionized", "int_watch_sessions_aggregated", "dim_users_v2",
        "dim_content", "fct_watch_sessions",
        "fct_daily_engagement", "fct_ad_impressions", "fct_campaign_delivery",
        "fct_subscription_revenue", "revenue_by_content",
    }  # fmt: skip
    assert expected <= set(models)
    marts = [n for n in models.values() if n["fqn"][1] == "marts"]
    with duckdb.connect(str(duckdb_file(built, "dev")), read_only=True) as con:
        for node in marts:
            count = con.execute(f"select count(*) from {relation_of(node)}").fetchone()[0]
            assert count > 0, f"{node['name']} is empty"
            assert node["config"]["contract"]["enforced"], f"{node['name']} has no contract"


def test_staging_is_the_only_layer_reading_sources(built: Project) -> None:
    for node in manifest_models(built).values():
        reads_source = any(p.startswith("source.") for p in node["depends_on"]["nodes"])
        # models/staging/, or the run history's own staging folder (models/monitoring/staging/)
        assert not reads_source or "staging" in node["fqn"][1:-1], node["name"]


def _incremental_models(project: Project) -> list[dict]:
    return [
        n for n in manifest_models(project).values() if n["config"]["materialized"] == "incremental"
    ]


def _table_diff(con: duckdb.DuckDBPyConnection, left: str, right: str) -> int:
    return con.execute(
        f"select count(*) from ((select * from {left} except all select * from {right}) "
        f"union all (select * from {right} except all select * from {left}))"
    ).fetchone()[0]


def test_incremental_runs_equal_a_full_refresh(built: Project, tmp_path: Path) -> None:
    incremental = clone_built(built, tmp_path / "incremental")
    # two more days, each loaded and built incrementally, late events of earlier days included
    for _ in range(2):
        summary = generate.append_day(incremental.raw_path)
        assert summary.added["streaming.watch_events"] > 0
        assert build.main_job(resolve(incremental, "dev")) == 0
    full = clone_built(incremental, tmp_path / "full")
    assert build.main_job(resolve(full, "dev"), full_refresh=True) == 0

    models = manifest_models(full)
    tables = [n for n in models.values() if n["config"]["materialized"] in ("table", "incremental")]
    assert len(_incremental_models(full)) >= 3
    with duckdb.connect() as con:
        con.execute(f"attach '{duckdb_file(incremental, 'dev')}' as inc (read_only)")
        con.execute(f"attach '{duckdb_file(full, 'dev')}' as fr (read_only)")
        for node in tables:
            relation = relation_of(node).split(".", 1)[1]
            diff = _table_diff(con, f"inc.{relation}", f"fr.{relation}")
            assert diff == 0, (
                f"{node['name']}: {diff} rows differ between incremental and full refresh"
            )


def test_rerun_without_new_data_changes_nothing(built: Project, tmp_path: Path) -> None:
    again = clone_built(built, tmp_path / "again")
    assert build.main_job(resolve(again, "dev")) == 0
    with duckdb.connect() as con:
        con.execute(f"attach '{duckdb_file(built, 'dev')}' as before (read_only)")
        con.execute(f"attach '{duckdb_file(again, 'dev')}' as after (read_only)")
        for node in _incremental_models(again):
            relation = relation_of(node).split(".", 1)[1]
            assert _table_diff(con, f"before.{relation}", f"after.{relation}") == 0, node["name"]
