"""Releases and rollback on real DuckDB files, without dbt: the release id travels with the
file and its state, a rollback puts both back or refuses with the reason, and a release stops
when the state says production exists but its file is gone."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import duckdb
import pytest

from mediapulse.cli import main
from mediapulse.duckdb_release import DuckDbRelease, warehouse_release_id
from mediapulse.errors import MediaPulseError
from mediapulse.project import Project
from mediapulse.release import check_production_present, publish_state, rollback

from .conftest import REPO


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def _release(project: Project, state: Path, release_id: str, rows: int) -> None:
    """What a passing nightly does to the file and the state (the dbt build stood in for by
    a table of ``rows`` rows)."""
    release = DuckDbRelease(project)
    release.prepare()
    with duckdb.connect(str(release.staged)) as con:
        con.execute(f"create or replace table marts_dim as select range as id from range({rows})")
    release.publish(release_id)
    staged = state.with_name("state.partial")
    staged.mkdir()
    (staged / "manifest.json").write_text(json.dumps({"release": release_id}))
    publish_state(staged, state, release_id, "nightly", {"lookback": 2})


@pytest.fixture
def released(tmp_path: Path) -> tuple[Project, Path]:
    """Production after two releases: r1 (10 rows) replaced by r2 (20 rows)."""
    # the checkout itself (only its profiles are read), with its warehouse in a temporary place
    project = Project.discover(REPO, tmp_path / "warehouse")
    project.warehouse_dir.mkdir()
    state = tmp_path / "state"
    _release(project, state, "r1", 10)
    _release(project, state, "r2", 20)
    return project, state


def _rows(path: Path) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("select count(*) from marts_dim").fetchone()[0]


def test_a_release_carries_its_id_in_the_file_and_the_state(released) -> None:
    project, state = released
    release = DuckDbRelease(project)
    assert warehouse_release_id(release.live) == "r2"
    assert warehouse_release_id(release.previous) == "r1"
    assert json.loads((state / "release.json").read_text())["release_id"] == "r2"
    assert json.loads((state / "previous" / "release.json").read_text())["release_id"] == "r1"
    assert json.loads((state / "release.json").read_text())["vars"] == {"lookback": 2}
    assert not (state / "previous" / "previous").exists(), "one release is kept, not a chain"


def test_rollback_puts_back_the_file_and_its_state_then_refuses(released, capsys) -> None:
    project, state = released
    code = main(["--project-dir", str(project.root), "--warehouse-dir",
                 str(project.warehouse_dir), "rollback", "--artifacts", str(state)])  # fmt: skip
    assert code == 0
    assert "rolled back to release r1" in capsys.readouterr().out
    release = DuckDbRelease(project)
    assert _rows(release.live) == 10 and warehouse_release_id(release.live) == "r1"
    assert json.loads((state / "manifest.json").read_text()) == {"release": "r1"}
    assert not release.previous.exists() and not (state / "previous").exists()

    before = _digest(project.warehouse_dir) | _digest(state)
    code = main(["--project-dir", str(project.root), "--warehouse-dir",
                 str(project.warehouse_dir), "rollback", "--artifacts", str(state)])  # fmt: skip
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing to roll back to" in err
    assert "prod.previous.duckdb" in err
    assert _digest(project.warehouse_dir) | _digest(state) == before


def test_rollback_refuses_a_state_of_another_release(released) -> None:
    project, state = released
    record = json.loads((state / "previous" / "release.json").read_text())
    record["release_id"] = "r0"
    (state / "previous" / "release.json").write_text(json.dumps(record))
    before = _digest(project.warehouse_dir) | _digest(state)
    with pytest.raises(MediaPulseError, match=r"release r1 but .* describes release r0"):
        rollback(project, "prod", state)
    assert _digest(project.warehouse_dir) | _digest(state) == before


def test_rollback_without_a_previous_state_refuses(released, tmp_path: Path) -> None:
    project, _ = released
    with pytest.raises(MediaPulseError, match="no previous production state"):
        rollback(project, "prod", tmp_path / "elsewhere")


def test_a_release_stops_when_production_exists_but_its_file_is_gone(
    released, capsys: pytest.CaptureFixture[str]
) -> None:
    project, state = released
    release = DuckDbRelease(project)
    release.live.unlink()
    with pytest.raises(MediaPulseError) as err:
        check_production_present(project, release, state, start_over=False)
    text = str(err.value)
    assert "release r2" in text and str(release.live) in text and "--start-over" in text
    check_production_present(project, release, state, start_over=True)
    assert "production starts again from empty" in capsys.readouterr().out


def test_a_first_release_says_so(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    project = Project.discover(REPO, tmp_path / "warehouse")
    check_production_present(project, DuckDbRelease(project), tmp_path / "state", start_over=False)
    assert "no production yet" in capsys.readouterr().out
