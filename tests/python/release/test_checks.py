"""The refusals before a release stages anything: production whose file or history says it
exists is never rebuilt from empty without --start-over (release/checks.py)."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.engines.targets import resolve
from mediapulse.monitoring import history
from mediapulse.release.checks import check_production_present
from mediapulse.release.duckdb import DuckDbRelease

from ..conftest import REPO
from ..support.releases import two_releases


@pytest.fixture
def released(tmp_path: Path) -> tuple[Project, Path]:
    return two_releases(tmp_path)


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


def test_production_the_run_history_records_is_not_rebuilt_from_demo_data(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Both artifacts expired (no state, no production file) but the run history, kept
    longer, records a release: a nightly stops instead of generating demo data."""
    project = Project.discover(REPO, tmp_path / "warehouse")
    history.ensure(resolve(project, "prod"))
    with duckdb.connect(str(history.duckdb_path(resolve(project, "prod")))) as con:
        con.execute(
            "insert into monitoring.runs (run_id, job, target, started_at, status, release_id) "
            "values ('x', 'nightly', 'prod', timestamp '2026-12-01 02:00:00', 'success', 'r9')"
        )
    with pytest.raises(MediaPulseError) as err:
        check_production_present(project, DuckDbRelease(project), tmp_path / "state", False)
    text = str(err.value)
    assert "records production (release r9 of 2026-12-01 02:00:00)" in text
    assert "--start-over" in text and len(text.splitlines()) == 1
    check_production_present(project, DuckDbRelease(project), tmp_path / "state", True)
    assert "building production from scratch" in capsys.readouterr().out
