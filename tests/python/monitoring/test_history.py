"""The run history, from the user's side: every job records what it did, after dbt, in the
target's `monitoring` tables, which outlive releases and rollbacks; recording twice changes
nothing; a pull request's slim CI writes only its own CI warehouse's history."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pytest

from mediapulse.cli.main import main
from mediapulse.core.project import Project
from mediapulse.data import generate
from mediapulse.dbt import artifacts
from mediapulse.engines.duckdb import production_file
from mediapulse.engines.targets import resolve
from mediapulse.monitoring import history

from ..conftest import change_one_mart, clone_built

pytestmark = pytest.mark.dbt


def _runs(project: Project, target: str = "prod") -> list[tuple]:
    return history.read(
        resolve(project, target),
        "select job, status, release_id, nodes, run_id from monitoring.runs order by started_at",
    )  # fmt: skip


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_build_records_itself_in_the_developers_history(built: Project) -> None:
    runs = _runs(built, "dev")
    assert [(job, status) for job, status, *_ in runs] == [("build", "success")]
    nodes = history.read(resolve(built, "dev"), "select count(*) from monitoring.node_results")[0][
        0
    ]
    assert nodes == runs[0][3] > 250  # every model, seed, snapshot and test of the build


def test_a_nightly_records_its_nodes_freshness_and_the_sizes_of_what_it_published(
    after_nightly: Project, tmp_path: Path
) -> None:
    project = clone_built(after_nightly, tmp_path / "project")
    state = project.root / "state"
    published = json.loads((state / "release.json").read_text())
    run_results = artifacts.load_json(state / "run_results.json", "run results")
    [(job, status, release_id, nodes, run_id)] = _runs(project)
    assert (job, status, release_id) == ("nightly", "success", published["release_id"])
    assert run_id == run_results["metadata"]["invocation_id"]
    assert nodes == len(run_results["results"])

    tests = "select name, failures from monitoring.node_results where resource_type = 'test'"
    failures = dict(history.read(resolve(project, "prod"), tests))
    assert failures and None not in failures.values(), "every test has its failures count"
    assert failures["unique_dim_content_content_id"] == 0
    freshness = history.read(resolve(project, "prod"), "select table_name, status, age_s "
                             "from monitoring.source_freshness order by 1")  # fmt: skip
    assert [t for t, *_ in freshness] == sorted(
        ["watch_events", "content", "users", "subscriptions", "ad_impressions", "campaigns"]
    )
    assert all(status == "pass" and age >= 0 for _, status, age in freshness)

    sizes = dict(history.read(resolve(project, "prod"), "select relation, row_count "
                              "from monitoring.relation_sizes"))  # fmt: skip
    with duckdb.connect(str(production_file(project)), read_only=True) as con:
        for relation in ("prod.marts.fct_watch_sessions", "prod.marts.dim_content",
                         "prod.marts.revenue_by_content"):  # fmt: skip
            actual = con.execute(f"select count(*) from {relation}").fetchone()[0]
            assert sizes[relation] == actual > 0, relation
    assert sizes["raw.streaming.watch_events"] > sizes["prod.marts.fct_watch_sessions"]


def test_refreshes_passed_and_failed_are_recorded_and_outlive_a_rollback(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "project")
    state = ["--artifacts", str(project.root / "state")]
    generate.append_day(project.raw_path)
    capsys.readouterr()
    assert main(["--project-dir", str(project.root), "refresh", *state]) == 0
    out = capsys.readouterr().out
    assert "run history: run " in out and " recorded (" in out, out
    generate.append_day(project.raw_path, faults=["null_keys"])
    assert main(["--project-dir", str(project.root), "refresh", *state]) == 1

    runs = _runs(project)
    assert [(job, status) for job, status, *_ in runs] == [
        ("nightly", "success"), ("refresh", "success"), ("refresh", "failed"),
    ]  # fmt: skip
    failed_run = runs[2][4]
    failing = history.read(resolve(project, "prod"),
                           "select name, failures from monitoring.node_results "
        f"where run_id = '{failed_run}' and status = 'fail'")  # fmt: skip
    assert ("source_not_null_streaming_watch_events_user_id", failing[0][1]) in failing
    assert failing[0][1] > 0
    # what a failed run measured is not production's: no sizes
    assert history.read(resolve(project, "prod"), "select count(*) from monitoring.relation_sizes "
                        f"where run_id = '{failed_run}'") == [(0,)]  # fmt: skip

    # a rollback puts back the release before the refresh (the nightly, the same code: by
    # name); the history stays whole
    assert main(["--project-dir", str(project.root), "rollback", *state, "--to",
                 _release_of(project, "nightly")]) == 0  # fmt: skip
    assert len(_runs(project)) == 3


def _release_of(project: Project, job: str) -> str:
    return history.read(resolve(project, "prod"), "select release_id from monitoring.runs "
                        f"where job = '{job}' and status = 'success'")[0][0]  # fmt: skip


def test_recording_a_run_again_changes_nothing(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "project")

    def everything() -> dict[str, list[tuple]]:
        rows = {t: history.read(resolve(project, "prod"), f"select * from monitoring.{t}")
                for t in history.TABLES}  # fmt: skip
        return {table: sorted(found, key=repr) for table, found in rows.items()}

    before = everything()
    # every table holds the nightly's rows (a clean raw data set has no schema change)
    assert all(rows for table, rows in before.items()
               if table not in ("schema_changes", "anomaly_marks"))  # fmt: skip
    record = ["--project-dir", str(project.root), "record", "--job", "nightly",
              "--artifacts", str(project.root / "state")]  # fmt: skip
    assert main(record) == 0
    assert "recorded" in capsys.readouterr().out
    assert everything() == before, "loading the nightly's own artifacts again changes nothing"


def test_slim_ci_writes_its_own_history_and_never_productions(
    after_nightly: Project, tmp_path: Path
) -> None:
    project = clone_built(after_nightly, tmp_path / "pr")
    production_history = history.duckdb_path(resolve(project, "prod"))
    before = _digest(production_history)
    change_one_mart(project)
    assert main(["--project-dir", str(project.root), "slim-ci", "--target", "ci",
                 "--state", str(project.root / "state")]) == 0  # fmt: skip
    assert [(job, status) for job, status, *_ in _runs(project, "ci")] == [("slim-ci", "success")]
    assert _digest(production_history) == before
