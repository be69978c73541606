"""`mediapulse deploy` builds what changed, from the user's side: against the published
production state, only the changed models and what is downstream of them are rebuilt (an
incremental one from scratch), inside the staged copy; the release equals a from-scratch build
of the new code, table for table; without a usable state it builds everything and says why."""

from __future__ import annotations

import json
import re
from pathlib import Path

import duckdb
import pytest

from mediapulse.cli.main import main
from mediapulse.core.project import Project
from mediapulse.dbt import artifacts
from mediapulse.engines.duckdb import production_file
from mediapulse.engines.targets import resolve
from mediapulse.release.execute import run_nightly

from ..conftest import change_one_mart, clone_built

pytestmark = pytest.mark.dbt


def _deploy(project: Project, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    code = main(["--project-dir", str(project.root), "deploy", "--target", "prod",
                 "--artifacts", str(project.root / "state")])  # fmt: skip
    return code, capsys.readouterr().out


def _tables(project: Project) -> dict[str, list]:
    """Every model, seed and snapshot of the project's manifest, as production holds it."""
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    nodes = [
        n for n in manifest["nodes"].values()
        if n["resource_type"] in ("model", "seed", "snapshot")
        and n["package_name"] == "mediapulse" and n["config"]["materialized"] != "ephemeral"
        and n["fqn"][1] != "monitoring"  # views over the run history, not production's data
    ]  # fmt: skip
    with duckdb.connect(str(production_file(project)), read_only=True) as con:
        con.execute(f"attach '{project.raw_path}' as raw (read_only)")  # the staging views read it
        return {
            n["unique_id"]: sorted(
                con.execute(f"select * from {artifacts.unquoted_relation(n)}").fetchall(), key=repr
            )
            for n in nodes
            # snapshot rows carry the time they were taken: compared by their keys elsewhere
            if n["resource_type"] != "snapshot"
        }


@pytest.fixture
def production(after_nightly: Project, tmp_path: Path) -> Project:
    return clone_built(after_nightly, tmp_path / "project")


def test_a_one_mart_change_rebuilds_that_mart_whole_and_nothing_upstream(
    production: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    change_one_mart(production)
    code, out = _deploy(production, capsys)
    assert code == 0, out
    assert "builds what changed against release" in out and "1 modified" in out
    assert "incremental models rebuilt whole: fct_daily_engagement" in out
    results = artifacts.load_json(production.root / "state" / "run_results.json", "results")
    built = {r["unique_id"] for r in results["results"] if r["unique_id"].startswith("model.")}
    assert built == {"model.mediapulse.fct_daily_engagement"}, built
    mart = next(r for r in results["results"] if r["unique_id"].endswith("fct_daily_engagement"))
    # the incremental branch recomputes the days of changed sessions; a rebuild reads them all
    assert "days_to_recompute" not in mart["compiled_code"], "rebuilt whole, not incrementally"
    release = json.loads((production.root / "state" / "release.json").read_text())
    assert release["job"] == "deploy"
    # nothing that can come after the swap delays it: production serves the change before the
    # parse for slim CI is made (it is published with the state, after the swap)
    live = float(re.search(r"production live (\d+\.\d) s after the job started", out)[1])
    state = float(re.search(r"state published (\d+\.\d) s after the job started", out)[1])
    ci_parse = float(re.search(r"parse for slim CI on target `ci` published \((\d+\.\d) s\)",
                               out)[1])  # fmt: skip
    assert state - live >= ci_parse - 0.1, out
    # the monitoring views did not change: kept as they are, and they still answer
    assert "monitoring models unchanged since release" in out, out
    with duckdb.connect() as con:
        con.execute(f"attach '{production.warehouse_dir / 'monitoring_prod.duckdb'}' "
                    "as monitoring (read_only)")  # fmt: skip
        assert con.execute("select count(*) from monitoring.monitoring.sli_runs").fetchone()[0]

    # the release equals a from-scratch build of the new code, table for table
    full = clone_built(production, tmp_path / "full")
    assert run_nightly(resolve(full, "prod"), full.root / "state", None) == 0
    deployed, rebuilt = _tables(production), _tables(full)
    assert deployed.keys() == rebuilt.keys()
    different = [uid for uid in rebuilt if deployed[uid] != rebuilt[uid]]
    assert not different, f"differ from a full build: {different}"
    # the docs: a catalog of what was rebuilt, over the live one, equals a full build's, and
    # the docs page published with the state holds it
    assert "| docs | ok |" in out and "catalog of 1 rebuilt relation" in out, out
    assert _catalog(production) == _catalog(full)
    page = (production.root / "state" / "static_index.html").read_text()
    assert (production.root / "state" / "catalog.json").read_text() in page


def _catalog(project: Project) -> dict[str, dict]:
    """The published catalog's relations: each one's columns and kind."""
    catalog = json.loads((project.root / "state" / "catalog.json").read_text())
    return {
        uid: {"type": entry["metadata"]["type"], "columns": {
            name: (column["type"], column["index"]) for name, column in entry["columns"].items()
        }}
        for part in ("nodes", "sources") for uid, entry in catalog[part].items()
    }  # fmt: skip


def test_no_change_rebuilds_nothing_and_publishes_the_new_state(
    production: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = production.root / "models" / "marts" / "engagement" / "_engagement__docs.md"
    docs.write_text(docs.read_text() + "\n")
    code, out = _deploy(production, capsys)
    assert code == 0, out
    assert "nothing to rebuild" in out
    assert "| build |" not in out and "| docs | ok |" in out


def test_a_state_from_another_dbt_version_falls_back_to_the_full_build(
    production: Project, capsys: pytest.CaptureFixture[str]
) -> None:
    manifest = production.root / "state" / "manifest.json"
    data = json.loads(manifest.read_text())
    data["metadata"]["dbt_version"] = "1.10.0"
    manifest.write_text(json.dumps(data))
    change_one_mart(production)
    code, out = _deploy(production, capsys)
    assert code == 0, out
    assert "notice: the published state was written by dbt 1.10.0" in out
    assert "full build of the project" in out and "dbt build --full-refresh" in out


def test_a_state_of_another_project_or_none_is_a_reason_to_build_everything(
    tmp_path: Path,
) -> None:
    """The other reasons deploy_fallback gives (the dbt-version one runs a deploy above)."""
    from dbt.version import __version__ as dbt_version

    from mediapulse.release.execute import deploy_fallback

    from ..conftest import REPO

    project = Project.discover(REPO)
    state = tmp_path / "state"
    assert deploy_fallback(project, state) == f"no published production state in {state}"
    state.mkdir()
    manifest = {"metadata": {"project_name": "other_shop", "dbt_version": dbt_version,
                             "generated_at": "2026-11-30T02:00:00Z"}}  # fmt: skip
    (state / "manifest.json").write_text(json.dumps(manifest))
    assert deploy_fallback(project, state) == (
        "the published state is of project 'other_shop', not 'mediapulse'"
    )
    manifest["metadata"]["project_name"] = "mediapulse"
    (state / "manifest.json").write_text(json.dumps(manifest))
    assert deploy_fallback(project, state) is None
