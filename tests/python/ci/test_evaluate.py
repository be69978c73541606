"""`mediapulse evaluate` end to end: structural mistakes are reported and fail, a baseline
containing them passes, and fixed ones are listed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mediapulse.ci.evaluate import run_evaluate
from mediapulse.core.project import Project
from mediapulse.engines.targets import resolve

from ..conftest import clone_built

pytestmark = pytest.mark.dbt

UNDOCUMENTED = "models/intermediate/ads/int_ad_impressions_counted.sql"
FROM_SOURCE = "models/marts/ads/fct_campaigns_raw.sql"


def _rules(report: dict) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for violation in report["violations"]:
        found.setdefault(violation["rule"], set()).add(violation["label"])
    return found


def test_clean_project_passes(built: Project, tmp_path: Path) -> None:
    project = clone_built(built, tmp_path / "project")
    report = tmp_path / "clean.json"
    assert run_evaluate(resolve(project, "dev"), report) == 0
    assert json.loads(report.read_text())["violations"] == []


def test_violations_fail_and_a_baseline_admits_them(
    built: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(built, tmp_path / "project")
    (project.root / UNDOCUMENTED).parent.mkdir(parents=True, exist_ok=True)
    (project.root / UNDOCUMENTED).write_text(
        "select campaign_id, count(*) as impressions_count\n"
        "from {{ ref('stg_ads__ad_impressions') }}\ngroup by campaign_id\n"
    )
    (project.root / FROM_SOURCE).write_text("select * from {{ source('ads', 'campaigns') }}\n")

    first, markdown = tmp_path / "first.json", tmp_path / "first.md"
    capsys.readouterr()
    assert run_evaluate(resolve(project, "dev"), first, markdown_path=markdown) == 1
    out = capsys.readouterr().out
    report = json.loads(first.read_text())
    rules = _rules(report)
    assert {"int_ad_impressions_counted", "fct_campaigns_raw"} <= rules["fct_undocumented_models"]
    assert "fct_campaigns_raw" in " ".join(rules["fct_marts_or_intermediate_dependent_on_source"])
    assert all(v["severity"] == "error" for v in report["violations"])
    text = markdown.read_text()
    assert "### documentation" in text and "fct_undocumented_models" in text
    assert "### dag" in text and "`int_ad_impressions_counted`" in text
    assert "int_ad_impressions_counted" in out and "[documentation]" in out

    # main's report holds the same violations: nothing is new, the PR passes
    second = tmp_path / "second.json"
    assert run_evaluate(resolve(project, "dev"), second, baseline_path=first) == 0
    assert json.loads(second.read_text())["new"] == []

    # fixing one is reported as fixed
    (project.root / UNDOCUMENTED).unlink()
    third, third_md = tmp_path / "third.json", tmp_path / "third.md"
    assert (
        run_evaluate(resolve(project, "dev"), third, markdown_path=third_md, baseline_path=first)
        == 0
    )
    fixed = json.loads(third.read_text())["fixed"]
    assert any(f["label"] == "int_ad_impressions_counted" for f in fixed)
    assert "fixed since the baseline" in third_md.read_text()


def test_a_corrupt_baseline_is_a_clear_error(built: Project, tmp_path: Path) -> None:
    from mediapulse.core.errors import MediaPulseError

    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2")
    with pytest.raises(MediaPulseError, match="baseline"):
        run_evaluate(resolve(built, "dev"), tmp_path / "out.json", baseline_path=bad)
