"""One parse per job: a job that calls dbt several times parses the project once, measured in
dbt's own log (each invocation logs "Running with dbt=", each parse its partial-parse check)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from mediapulse.cli import main
from mediapulse.project import Project

from .conftest import change_one_mart, clone_built

pytestmark = pytest.mark.dbt

PARSE = re.compile(r"Partial parsing enabled|Unable to do partial parsing|Starting full parse")


def _job(project: Project, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    """Run a `mediapulse` command; (what it printed, what dbt logged while it ran)."""
    log = project.root / "logs" / "dbt.log"
    log.unlink(missing_ok=True)
    capsys.readouterr()
    code = main(["--project-dir", str(project.root), *args])
    out = capsys.readouterr().out
    assert code == 0, out
    return out, log.read_text()


def _counts(log: str) -> tuple[int, int]:
    return log.count("Running with dbt="), len(PARSE.findall(log))


def test_slim_ci_parses_once_for_its_listings_and_build(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "pr")
    change_one_mart(project)
    out, log = _job(project, capsys, "slim-ci", "--target", "ci",
                    "--state", str(project.root / "state"))  # fmt: skip
    invocations, parses = _counts(log)
    # the parse, two listings (state:modified, then the whole selection), the build
    assert invocations >= 4 and parses == 1, (invocations, parses)
    assert "the project parsed once" in out
    assert "fct_daily_engagement" in out


def test_a_release_parses_once_for_its_plan_build_freshness_and_docs(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "prod")
    change_one_mart(project)
    out, log = _job(project, capsys, "deploy", "--target", "prod",
                    "--artifacts", str(project.root / "state"))  # fmt: skip
    invocations, parses = _counts(log)
    assert invocations >= 5 and parses == 1, (invocations, parses)
    assert re.search(r"dbt: \d+ invocations in one process, the project parsed once", out)
