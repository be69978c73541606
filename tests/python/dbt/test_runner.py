"""One parse per job: a job that calls dbt several times parses the project once, measured in
dbt's own log (each invocation logs "Running with dbt=", each parse its partial-parse check)."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from mediapulse.cli.main import main
from mediapulse.core.project import Project

from ..conftest import change_one_mart, clone_built

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


# a release's parse of its code for the CI target, published for slim CI (not the job's own)
CI_PARSE = "'target_path': '" + tempfile.gettempdir() + "/mediapulse-ci-parse-"


def _counts(log: str, ci_parses: int = 0) -> tuple[int, int]:
    """(dbt invocations, invocations that parsed): a parse logs its partial-parse check, one
    line or one per reason dbt gives for parsing in full. The parse published for slim CI is
    left out, and there must be ``ci_parses`` of it."""
    invocations = log.split("Running with dbt=")[1:]
    published = [chunk for chunk in invocations if CI_PARSE in chunk]
    assert len(published) == ci_parses, (len(published), ci_parses)
    ours = [chunk for chunk in invocations if CI_PARSE not in chunk]
    return len(ours), sum(bool(PARSE.search(chunk)) for chunk in ours)


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
    invocations, parses = _counts(log, ci_parses=1)
    assert invocations >= 5 and parses == 1, (invocations, parses)
    assert re.search(r"dbt: \d+ invocations in one process, the project parsed once", out)
