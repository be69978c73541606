"""`mediapulse refresh`, from the user's side: the hourly job that adds what the loader loaded
since the live release, tests those rows, and releases all or nothing.

On production after a nightly: with nothing new it releases nothing; after an appended day it
publishes a release equal, table for table, to a from-scratch build of the same raw data, having
run the row-level tests on the new rows only and left the whole-history ones to the nightly; a
fault injected into the appended day fails it with production unchanged; it refuses code that
is not the live release's.
"""

from __future__ import annotations

import json
import re
import zlib
from pathlib import Path

import duckdb
import pytest

from mediapulse.cli.main import main
from mediapulse.core.project import Project
from mediapulse.data import generate
from mediapulse.dbt import artifacts
from mediapulse.engines.duckdb import duckdb_file, production_file
from mediapulse.engines.targets import resolve
from mediapulse.release.duckdb import DuckDbRelease, read_state, warehouse_release_id
from mediapulse.release.execute import run_nightly

from ..conftest import clone_built, manifest_models, relation_of

pytestmark = pytest.mark.dbt


def _refresh(project: Project, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--project-dir", str(project.root), "refresh", "--target", "prod",
                 "--artifacts", str(project.root / "state")])  # fmt: skip
    return code, capsys.readouterr().out


def _deploy(project: Project, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--project-dir", str(project.root), "deploy", "--target", "prod",
                 "--artifacts", str(project.root / "state")])  # fmt: skip
    return code, capsys.readouterr().out


def _release_record(project: Project) -> dict:
    return json.loads((project.root / "state" / "release.json").read_text())


def _marts(project: Project) -> dict[str, list]:
    """Every mart's rows in production, sorted."""
    marts = {n: node for n, node in manifest_models(project).items() if node["fqn"][1] == "marts"}
    with duckdb.connect(str(production_file(project)), read_only=True) as con:
        return {
            name: sorted(con.execute(f"select * from {relation_of(node)}").fetchall(), key=repr)
            for name, node in marts.items()
        }


@pytest.fixture
def production(after_nightly: Project, tmp_path: Path) -> Project:
    """A copy of production after a nightly (the session's), to add to."""
    return clone_built(after_nightly, tmp_path / "project")


def test_nothing_new_releases_nothing(
    production: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    live = warehouse_release_id(duckdb_file(production, "prod"))
    inode = duckdb_file(production, "prod").stat().st_ino
    code, out = _refresh(production, capsys)
    assert code == 0
    assert f"No new raw rows since release {live}" in out
    assert "Nothing was built or released" in out
    assert duckdb_file(production, "prod").stat().st_ino == inode, "production file untouched"
    assert _release_record(production)["release_id"] == live


def test_an_appended_day_is_released_equal_to_a_full_build(
    production: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _release_record(production)
    generate.append_day(production.raw_path)
    code, out = _refresh(production, capsys)
    assert code == 0, out
    after = _release_record(production)
    assert after["release_id"] != before["release_id"] and after["job"] == "refresh"
    assert after["release_id"] == warehouse_release_id(duckdb_file(production, "prod"))
    assert "new raw rows since release" in out and "streaming.watch_events +" in out
    assert "staged copy of production:" in out and "MiB" in out
    # the nightly it refreshed is kept for a rollback, carrying its own state (the first
    # release of the live code; refreshes after it are not kept)
    assert [s.release_id for s in DuckDbRelease(production).kept()] == [before["release_id"]]
    assert "previous" not in {p.name for p in (production.root / "state").iterdir()}

    # what ran: incremental models incrementally; row-level tests on the new rows only; the
    # whole-history rules and the unit tests not at all
    manifest = artifacts.load_json(production.root / "state" / "manifest.json", "manifest")
    results = {
        r["unique_id"]: r
        for r in artifacts.load_json(production.root / "state" / "run_results.json", "results")[
            "results"
        ]
    }
    names = {manifest["nodes"][u]["name"]: r for u, r in results.items() if u in manifest["nodes"]}
    assert "unique_stg_streaming__watch_events_event_id" not in names
    assert "unique_fct_watch_sessions_session_id" not in names
    assert not [u for u in results if u.startswith("unit_test.")]
    scoped = names["not_null_stg_streaming__watch_events_user_id"]
    assert scoped["status"] == "pass"
    # the rows loaded after the live release's newest load, minus the incremental look-back
    since = min(before["raw"][t][2] for t in ("streaming.watch_events", "ads.ad_impressions"))
    scope = re.compile(
        r"where loaded_at >\s*\(?cast\('" + re.escape(since) + r"' as timestamp\) \+ "
        r"cast\(-2 as bigint\)"
    )
    assert scope.search(scoped["compiled_code"]), scoped["compiled_code"]
    source_test = names["source_not_null_streaming_watch_events_user_id"]
    assert scope.search(source_test["compiled_code"]), source_test["compiled_code"]
    # a table rebuilt from scratch keeps its uniqueness test, unscoped
    assert names["unique_dim_content_content_id"]["status"] == "pass"
    assert "dbt_subquery" not in names["unique_dim_content_content_id"]["compiled_code"]

    # production equals a from-scratch build of the same raw data, mart for mart
    full = clone_built(production, tmp_path / "full")
    assert run_nightly(resolve(full, "prod"), full.root / "state", None) == 0
    refreshed, rebuilt = _marts(production), _marts(full)
    assert refreshed.keys() == rebuilt.keys()
    for mart in rebuilt:
        assert refreshed[mart] == rebuilt[mart], f"{mart}: refresh differs from a full build"


def test_an_hour_of_player_events_rebuilds_only_what_they_reach(
    production: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only the loader's player events arrived (accounts, catalogue, billing and ads are as the
    live release read them): the refresh rebuilds the event path, what is built from it and
    what reads the clock, leaves seeds and the rest as they are live, and still equals a
    from-scratch build of the same raw data."""
    before = production.raw_path.with_name("raw.before.duckdb")
    before.write_bytes(production.raw_path.read_bytes())
    generate.append_day(production.raw_path)
    others = ("accounts.users", "catalog.content", "billing.subscriptions", "ads.campaigns",
              "ads.ad_impressions")  # fmt: skip
    with duckdb.connect(str(production.raw_path)) as con:
        con.execute(f"attach '{before}' as before (read_only)")
        for table in others:
            con.execute(f"create or replace table {table} as select * from before.{table}")
    before.unlink()
    code, out = _refresh(production, capsys)
    assert code == 0, out
    assert "streaming.watch_events +" in out and "catalog.content" not in out
    assert "rebuilds what the new rows reach" in out

    manifest = artifacts.load_json(production.root / "state" / "manifest.json", "manifest")
    ran = {
        r["unique_id"]
        for r in artifacts.load_json(production.root / "state" / "run_results.json", "results")[
            "results"
        ]
    }
    models = {u.split(".")[2] for u in ran if u.startswith("model.")}
    assert {"stg_streaming__watch_events", "int_watch_events_sessionized", "fct_watch_sessions",
            "fct_daily_engagement", "int_subscription_revenue_allocated",
            "revenue_by_content"} <= models  # fmt: skip
    # the clock moves the revenue as-of day, whatever was loaded
    assert "int_revenue_as_of_date" in models
    untouched = {"stg_catalog__content", "dim_content", "stg_ads__campaigns", "fct_ad_impressions",
                 "stg_ads__ad_impressions", "stg_accounts__users", "dim_users"}  # fmt: skip
    assert not models & untouched, models & untouched
    assert not [u for u in ran if u.startswith(("seed.", "snapshot."))]
    tested = {manifest["nodes"][u].get("attached_node") for u in ran if u.startswith("test.")}
    assert "model.mediapulse.dim_content" not in tested
    assert "model.mediapulse.stg_streaming__watch_events" in tested

    full = clone_built(production, tmp_path / "full")
    assert run_nightly(resolve(full, "prod"), full.root / "state", None) == 0
    refreshed, rebuilt = _marts(production), _marts(full)
    for mart in rebuilt:
        assert refreshed[mart] == rebuilt[mart], f"{mart}: refresh differs from a full build"


def test_refreshes_keep_the_release_a_rollback_returns_to(
    production: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    """A refresh is the live code with more rows: after a deploy and two refreshes, a
    rollback still returns to the release before the deploy, with its state (its data was
    built by other code than every release since)."""
    nightly = _release_record(production)["release_id"]
    model = production.root / "models" / "marts" / "core" / "dim_content.sql"
    model.write_text(model.read_text() + "\n-- a deployed change\n")
    code, out = _deploy(production, capsys)
    assert code == 0, out
    deployed = _release_record(production)["release_id"]
    for _ in range(2):
        generate.append_day(production.raw_path)
        code, out = _refresh(production, capsys)
        assert code == 0, out
    release = DuckDbRelease(production)
    kept = [s.release_id for s in release.kept()]
    assert len(kept) == 3 and kept[1:] == [deployed, nightly], kept  # the first refresh first
    previous = release.kept_path(nightly)
    assert warehouse_release_id(previous) == nightly
    kept = json.loads(zlib.decompress(dict(read_state(previous))["release.json"]))
    assert kept["release_id"] == nightly
    assert _release_record(production)["release_id"] not in (nightly, deployed)
    assert main(["--project-dir", str(production.root), "rollback",
                 "--artifacts", str(production.root / "state")]) == 0  # fmt: skip
    assert warehouse_release_id(duckdb_file(production, "prod")) == nightly
    assert _release_record(production)["release_id"] == nightly


# Faults caught by tests a refresh scopes to the new rows (a source's, a staging incremental
# model's): what scoping must not lose.
@pytest.mark.parametrize(
    ("fault", "test_name"),
    [
        ("null_keys", "source_not_null_streaming_watch_events_user_id"),
        ("future_timestamps", "dbt_utils_expression_is_true_stg_streaming__watch_events_event_at"),
        ("future_loaded_at", "source_not_in_future_streaming_watch_events_loaded_at"),
    ],
)
def test_a_fault_in_the_appended_day_fails_the_refresh(
    fault: str, test_name: str, production: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    live = warehouse_release_id(duckdb_file(production, "prod"))
    marts = _marts(production)
    generate.append_day(production.raw_path, faults=[fault])
    code, out = _refresh(production, capsys)
    assert code == 1, out
    assert "Refresh on `prod`: FAILED, production unchanged" in out
    assert "retry" not in out, "a failing test is never retried"
    assert test_name in out, f"the failing test is named: {out[-2000:]}"
    assert warehouse_release_id(duckdb_file(production, "prod")) == live
    assert _release_record(production)["release_id"] == live
    assert _marts(production) == marts


def test_other_code_than_the_live_release_is_refused(
    production: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    model = production.root / "models" / "marts" / "core" / "dim_content.sql"
    model.write_text(model.read_text() + "\n-- a change not deployed yet\n")
    generate.append_day(production.raw_path)
    live = warehouse_release_id(duckdb_file(production, "prod"))
    code = main(["--project-dir", str(production.root), "refresh",
                 "--artifacts", str(production.root / "state")])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0
    assert "was built from other code than this checkout" in err
    assert "mediapulse deploy" in err and len(err.strip().splitlines()) == 1
    assert warehouse_release_id(duckdb_file(production, "prod")) == live


def test_a_refresh_needs_a_live_release(
    project_copy: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["--project-dir", str(project_copy.root), "refresh",
                 "--artifacts", str(project_copy.root / "state")])  # fmt: skip
    err = capsys.readouterr().err
    assert code != 0 and "run `mediapulse nightly`" in err
