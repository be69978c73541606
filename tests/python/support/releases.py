"""Releases without dbt: what a passing nightly leaves in DuckDB production's file and in the
published state, the build stood in for by one table."""

from __future__ import annotations

import json
from pathlib import Path

import duckdb

from mediapulse.core.project import Project
from mediapulse.release.duckdb import DuckDbRelease
from mediapulse.release.execute import publish_state, write_record
from mediapulse.release.state import Stamp

from ..conftest import REPO


def fake_release(
    project: Project, state: Path, release_id: str, rows: int, code: str = "c1",
    publish: bool = True, data: str | None = None,
) -> None:  # fmt: skip
    """What a passing nightly does to the file and the state (the dbt build stood in for by
    a table of ``rows`` rows); ``publish=False`` stops after the swap, as a killed job does."""
    release = DuckDbRelease(project)
    release.prepare()
    with duckdb.connect(str(release.staged)) as con:
        con.execute(f"create or replace table marts_dim as select range as id from range({rows})")
    staged = state.with_name("state.partial")
    staged.mkdir()
    (staged / "manifest.json").write_text(json.dumps({"release": release_id}))
    write_record(staged, release_id, "nightly", {"lookback": 2}, {"code": code})
    release.stamp(Stamp(release_id, job="nightly", code=code, data_code=data or code), staged)
    release.publish()
    release.prune()
    if publish:
        publish_state(staged, state)


def two_releases(tmp_path: Path) -> tuple[Project, Path]:
    """Production after two releases: r1 (10 rows) replaced by r2 (20 rows)."""
    # the checkout itself (only its profiles are read), with its warehouse in a temporary place
    project = Project.discover(REPO, tmp_path / "warehouse")
    project.warehouse_dir.mkdir()
    state = tmp_path / "state"
    fake_release(project, state, "r1", 10)
    fake_release(project, state, "r2", 20)
    return project, state
