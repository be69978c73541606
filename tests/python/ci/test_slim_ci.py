"""Slim CI end to end: after a nightly, a change builds exactly itself and its descendants,
defers the rest to production, and gives what a full build gives."""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from mediapulse.ci import slim_ci
from mediapulse.cli.main import main
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.dbt import artifacts
from mediapulse.develop import build
from mediapulse.engines.base import CI_TARGET
from mediapulse.engines.duckdb import duckdb_file, production_file
from mediapulse.engines.targets import resolve
from mediapulse.monitoring import history
from mediapulse.release import plan as planning

from ..conftest import clone_built, manifest_models, relation_of

pytestmark = pytest.mark.dbt

BUILDABLE = ("model", "seed", "snapshot")


def _edit(project: Project, relative: str, old: str, new: str) -> None:
    path = project.root / relative
    text = path.read_text()
    assert old in text, f"{old!r} not in {relative}"
    path.write_text(text.replace(old, new, 1))


def _run(project: Project, capsys: pytest.CaptureFixture[str], **kwargs) -> tuple[int, str]:
    capsys.readouterr()
    engine = resolve(project, kwargs.pop("target", CI_TARGET))
    code = slim_ci.run_slim_ci(
        engine, state_dir=project.root / "state", summary=project.root / "slim.md", **kwargs
    )
    return code, capsys.readouterr().out


def _built(project: Project) -> set[str]:
    return {
        r.unique_id
        for r in artifacts.node_results(project.target_dir)
        if r.resource_type in BUILDABLE and r.status == "success"
    }


def _descendants(manifest: dict, roots: set[str]) -> set[str]:
    found, todo = set(), list(roots)
    while todo:
        node = todo.pop()
        for child in manifest["child_map"].get(node, []):
            if child.split(".")[0] in BUILDABLE and child not in found:
                found.add(child)
                todo.append(child)
    return found


def _plan_row(out: str, label: str) -> set[str]:
    row = re.search(rf"^\| {label} \| \d+ \| (.*) \|$", out, re.MULTILINE)
    assert row, f"no '{label}' row in the printed plan"
    return set() if row.group(1) == "none" else set(row.group(1).split(", "))


def _same_tables(project: Project, left: str, other: Project, right: str, relations) -> None:
    """Compare tables of two warehouses. Each file is attached under its own catalog name,
    with raw and production beside them, because DuckDB views name the catalogs they read."""
    with duckdb.connect() as con:
        con.execute(f"attach '{duckdb_file(project, left)}' as {left} (read_only)")
        con.execute(f"attach '{duckdb_file(other, right)}' as {right} (read_only)")
        con.execute(f"attach '{project.raw_path}' as raw (read_only)")
        con.execute(f"attach '{duckdb_file(project, 'prod')}' as prod (read_only)")
        for a, b in relations:
            a, b = f"{left}.{a}", f"{right}.{b}"
            diff = con.execute(
                f"select count(*) from ((select * from {a} except all select * from {b}) "
                f"union all (select * from {b} except all select * from {a}))"
            ).fetchone()[0]
            assert diff == 0, f"{a} vs {b}: {diff} rows differ"


def test_staging_change_builds_it_and_its_descendants_only(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "pr")
    model = "models/staging/catalog/stg_catalog__content.sql"
    _edit(project, model, "        title,\n", "        upper(title) as title,\n")
    code, out = _run(project, capsys)
    assert code == 0, out

    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    changed = "model.mediapulse.stg_catalog__content"
    expected = {changed} | _descendants(manifest, {changed})
    assert _built(project) == expected
    assert _plan_row(out, "modified") == {"stg_catalog__content"}
    assert _plan_row(out, "downstream") == {planning.node_name(n) for n in expected - {changed}}
    deferred = _plan_row(out, "deferred to production")
    # what the built nodes and their tests read without rebuilding it comes from production
    tests_run = {
        r.unique_id for r in artifacts.node_results(project.target_dir)
        if r.resource_type in ("test", "unit_test")
    }  # fmt: skip
    parents = {
        p for n in expected | tests_run for p in manifest["parent_map"][n]
        if p.split(".")[0] in BUILDABLE and p not in expected
        and manifest["nodes"][p]["config"]["materialized"] != "ephemeral"
    }  # fmt: skip
    assert deferred == {planning.node_name(p) for p in parents} and deferred
    assert "## Slim CI plan" in (project.root / "slim.md").read_text()

    # what slim CI built equals a full build of the changed project
    full = clone_built(after_nightly, tmp_path / "full")
    _edit(full, model, "        title,\n", "        upper(title) as title,\n")
    assert build.main_job(resolve(full, "dev")) == 0
    ci_models = manifest_models(project)
    full_models = manifest_models(full)
    names = [planning.node_name(n) for n in expected if n.startswith("model.")]
    relations = [
        (relation_of(ci_models[n]).split(".", 1)[1], relation_of(full_models[n]).split(".", 1)[1])
        for n in names
        if ci_models[n]["config"]["materialized"] != "ephemeral"
    ]
    assert relations
    _same_tables(project, "ci", full, "dev", relations)
    with duckdb.connect(str(duckdb_file(project, "ci")), read_only=True) as con:
        titles = con.execute(
            f"select count(*) from {relation_of(ci_models['dim_content']).split('.', 1)[1]} "
            "where title <> upper(title)"
        ).fetchone()[0]
    assert titles == 0, "the change reached the mart"


def test_description_only_change_builds_nothing(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "pr")
    path = next((project.root / "models/marts/core").glob("_*__models.yml"))
    text = path.read_text()
    first = re.search(r"^    description: (.+)$", text, re.MULTILINE)
    assert first
    path.write_text(text.replace(first.group(0), first.group(0) + " (reworded)", 1))
    (project.target_dir / "run_results.json").unlink(missing_ok=True)
    code, out = _run(project, capsys)
    assert code == 0
    assert "No changes against production: nothing to build." in out
    assert not (project.target_dir / "run_results.json").exists()


def test_seed_change_builds_the_seed_and_its_descendants(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "pr")
    _edit(project, "seeds/genres.csv", "action,Action\n", "action,Action & Adventure\n")
    code, out = _run(project, capsys)
    assert code == 0, out
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    seed = "seed.mediapulse.genres"
    assert _built(project) == {seed} | _descendants(manifest, {seed})
    assert _plan_row(out, "modified") == {"genres"}


def test_macro_change_rebuilds_every_model_using_it(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "pr")
    macro = "macros/incremental/loaded_after_watermark.sql"
    path = project.root / macro
    text = path.read_text()
    head = re.search(r"\{% macro loaded_after_watermark\(.*?%\}\n", text)
    assert head
    # a change inside the macro's body (a comment outside a macro is no change to dbt)
    path.write_text(text.replace(head.group(0), head.group(0) + "    {#- reviewed -#}\n", 1))
    code, out = _run(project, capsys)
    assert code == 0, out
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    users = {
        uid for uid, n in manifest["nodes"].items()
        if "macro.mediapulse.loaded_after_watermark" in n.get("depends_on", {}).get("macros", [])
    }  # fmt: skip
    assert len(users) >= 2
    modified = _plan_row(out, "modified")
    assert {u.split(".")[-1] for u in users} <= modified
    assert _built(project) == users | _descendants(manifest, users) | {
        m for m in _built(project) if planning.node_name(m) in modified
    }


def test_removed_contract_column_fails_naming_model_and_column(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "pr")
    models = manifest_models(project)
    mart = models["fct_campaign_delivery"]
    column = list(mart["columns"])[-1]
    yml = project.root / mart["patch_path"].split("://", 1)[-1]
    lines = yml.read_text().splitlines(keepends=True)
    start = next(
        i for i, line in enumerate(lines)
        if line.strip() == f"- name: {column}" and i > next(
            j for j, x in enumerate(lines) if x.strip() == "- name: fct_campaign_delivery")
    )  # fmt: skip
    indent = len(lines[start]) - len(lines[start].lstrip())
    end = start + 1
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
    ):
        end += 1
    del lines[start:end]
    yml.write_text("".join(lines))
    sql = project.root / mart["original_file_path"]
    sql.write_text(re.sub(rf"^\s*[^\n]*\b{column},?\n", "", sql.read_text(), count=1, flags=re.M))

    prod = production_file(project)
    before = hashlib.sha256(prod.read_bytes()).hexdigest()
    with pytest.raises(MediaPulseError) as err:
        _run(project, capsys)
    text = str(err.value)
    assert "fct_campaign_delivery" in text and column in text and "removed" in text
    assert err.value.exit_code == 1
    assert hashlib.sha256(prod.read_bytes()).hexdigest() == before, "production untouched"


def test_no_state_runs_a_full_build_with_a_notice(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "pr")
    capsys.readouterr()
    code = slim_ci.run_slim_ci(resolve(project, CI_TARGET), state_dir=tmp_path / "never-published")
    out = capsys.readouterr().out
    assert code == 0
    assert "no production state" in out and "full build" in out
    models = manifest_models(project)
    built = {planning.node_name(u) for u in _built(project) if u.startswith("model.")}
    # what a plain `dbt build` builds: every model but the views over the run history
    assert built == {
        n for n, node in models.items()
        if node["config"]["materialized"] != "ephemeral" and node["fqn"][1] != "monitoring"
    }  # fmt: skip


def test_corrupt_state_and_bad_selector_are_clear_errors(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "pr")
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "manifest.json").write_text("{ not json")
    with pytest.raises(MediaPulseError, match=r"production manifest .*corrupt"):
        slim_ci.run_slim_ci(resolve(project, CI_TARGET), state_dir=corrupt)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "run_results.json").write_text("{}")
    with pytest.raises(MediaPulseError, match=r"manifest\.json"):
        slim_ci.run_slim_ci(resolve(project, CI_TARGET), state_dir=foreign)
    with pytest.raises(MediaPulseError, match="matches no model"):
        slim_ci.run_slim_ci(
            resolve(project, CI_TARGET), state_dir=project.root / "state", select="no_such_model"
        )
    with pytest.raises(MediaPulseError, match="unknown target"):
        slim_ci.run_slim_ci(resolve(project, "qa"), state_dir=project.root / "state")
    # another process writing to production holds its lock
    holder = subprocess.Popen(
        [sys.executable, "-c", "import duckdb, sys, time; c = duckdb.connect(sys.argv[1]); "
         "print('ready', flush=True); time.sleep(120)", str(production_file(project))],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        with pytest.raises(MediaPulseError, match="locked by another process"):
            slim_ci.run_slim_ci(resolve(project, CI_TARGET), state_dir=project.root / "state")
    finally:
        holder.kill()
        holder.wait()
    with pytest.raises(MediaPulseError, match="not found"):
        slim_ci.run_slim_ci(
            resolve(project, CI_TARGET),
            state_dir=project.root / "state",
            prod_warehouse=tmp_path / "nope.duckdb",
        )


# -- changes dbt marks modified that are not models: each is built or tested, never dropped ---

REVENUE_TEST = "tests/marts/finance/assert_subscription_revenue_fully_allocated.sql"


def _first_failure(project: Project) -> str:
    """The first failure line of the job summary slim CI wrote."""
    summary = (project.root / "slim.md").read_text()
    return next(line for line in summary.splitlines() if line.startswith("- FAIL"))


def _ran(project: Project) -> dict[str, str]:
    """Every node slim CI ran, by name, with its status (exposures are no-ops, left out)."""
    return {
        r.name: r.status
        for r in artifacts.node_results(project.target_dir)
        if r.resource_type != "exposure"
    }


def test_a_changed_singular_test_runs_against_production_and_fails_the_job(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "pr")
    (project.root / REVENUE_TEST).write_text(
        "select 1 as broken from {{ ref('fct_subscription_revenue') }} limit 1\n"
    )
    code, out = _run(project, capsys)
    assert code == 1, out
    assert _plan_row(out, "modified tests") == {"assert_subscription_revenue_fully_allocated"}
    assert _plan_row(out, "modified") == set()
    assert "fct_subscription_revenue" in _plan_row(out, "deferred to production")
    assert _built(project) == set(), "nothing is rebuilt: the test reads production"
    assert _ran(project) == {"assert_subscription_revenue_fully_allocated": "fail"}
    failure = _first_failure(project)
    assert "assert_subscription_revenue_fully_allocated" in failure
    assert "model fct_subscription_revenue" in failure


def test_a_changed_generic_test_runs_and_names_model_and_column(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "pr")
    _edit(
        project,
        "models/staging/catalog/_catalog__models.yml",
        "values: ['movie', 'episode', 'live']",
        "values: ['movie', 'episode']",
    )
    code, out = _run(project, capsys)
    assert code == 1, out
    (test,) = _plan_row(out, "modified tests")
    assert test.startswith("accepted_values_stg_catalog__content_content_type")
    assert _built(project) == set()
    failure = _first_failure(project)
    assert "accepted_values on model stg_catalog__content, column content_type" in failure


def test_a_new_unit_test_runs_and_fails_the_job(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "pr")
    (project.root / "models/marts/core/_core__unit_tests.yml").write_text(
        """unit_tests:
  - name: dim_content_names_the_genre_of_a_title
    description: A title's genre name comes from seed `genres` (expectation wrong on purpose).
    model: dim_content
    given:
      - input: ref('stg_catalog__content')
        rows:
          - {content_id: 1, content_type: movie, title: Heat, genre_code: action}
      - input: ref('genres')
        rows:
          - {genre_code: action, genre_name: Action}
    expect:
      rows:
        - {content_id: 1, genre_name: Drama}
"""
    )
    code, out = _run(project, capsys)
    assert code == 1, out
    assert _plan_row(out, "modified tests") == {"dim_content_names_the_genre_of_a_title"}
    assert _built(project) == set()
    assert _ran(project) == {"dim_content_names_the_genre_of_a_title": "fail"}


def test_a_changed_var_rebuilds_every_model_reading_it(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "pr")
    _edit(
        project,
        "dbt_project.yml",
        "max_playback_seconds_per_event: 180",
        "max_playback_seconds_per_event: 120",
    )
    code, out = _run(project, capsys)
    assert code == 0, out
    assert "| vars changed | 1 | max_playback_seconds_per_event |" in out
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    readers = {
        uid for uid, n in manifest["nodes"].items()
        if n["resource_type"] == "model" and "max_playback_seconds_per_event" in n["raw_code"]
    }  # fmt: skip
    assert readers, "some model reads the var"
    assert _built(project) == readers | _descendants(manifest, readers)


def test_a_changed_exposure_runs_the_tests_of_what_it_reads(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "pr")
    _edit(project, "models/marts/_exposures.yml", "maturity: high", "maturity: medium")
    code, out = _run(project, capsys)
    assert code == 0, out
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    exposure = next(u for u, e in manifest["exposures"].items() if e["maturity"] == "medium")
    assert planning.node_name(exposure) in _plan_row(
        out, r"modified exposures \(their inputs' tests run\)"
    )
    inputs = manifest["exposures"][exposure]["depends_on"]["nodes"]
    expected = {
        manifest["nodes"][t]["name"]
        for parent in inputs for t in manifest["child_map"][parent] if t.startswith("test.")
    }  # fmt: skip
    assert _built(project) == set()
    ran = _ran(project)
    assert set(ran) == expected and set(ran.values()) == {"pass"}


def test_a_changed_snapshot_is_built(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(after_nightly, tmp_path / "pr")
    _edit(
        project,
        "snapshots/_snapshots.yml",
        "      unique_key: content_id\n",
        "      unique_key: content_id\n      meta:\n        owner: catalog-analytics\n",
    )
    code, out = _run(project, capsys)
    assert code == 0, out
    assert "content_snapshot" in _plan_row(out, "modified")
    assert "snapshot.mediapulse.content_snapshot" in _built(project)


def test_a_change_to_the_monitoring_models_builds_and_tests_them_over_a_run_history(
    after_nightly: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's reproduction: a comment inside the macro only the SLI models call."""
    project = clone_built(after_nightly, tmp_path / "pr")
    _edit(
        project, "macros/monitoring/monitoring_slo.sql",
        "{% macro monitoring_slo(key) -%}\n",
        "{% macro monitoring_slo(key) -%}\n    {#- the targets live in dbt_project.yml -#}\n",
    )  # fmt: skip
    code, out = _run(project, capsys)
    assert code == 0, out
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    users = {
        uid for uid, n in manifest["nodes"].items()
        if "macro.mediapulse.monitoring_slo" in n.get("depends_on", {}).get("macros", [])
    }  # fmt: skip
    assert {planning.node_name(u) for u in users} == {
        "sli_runs", "sli_run_success_rate", "sli_critical_mart_freshness",
    }  # fmt: skip
    assert {planning.node_name(u) for u in users} <= _plan_row(out, "modified")
    ran = _ran(project)
    unit_tests = {
        t["name"] for t in manifest["unit_tests"].values() if set(t["depends_on"]["nodes"]) & users
    }  # fmt: skip
    assert unit_tests and {ran.get(t) for t in unit_tests} == {"pass"}, ran
    data_tests = {
        manifest["nodes"][t]["name"] for u in users for t in manifest["child_map"][u]
        if t.startswith("test.")
    }  # fmt: skip
    assert data_tests and {ran.get(t) for t in data_tests} == {"pass"}, ran
    # what they read of the run history is built in CI too, over the CI target's own history
    # (production's views are in production's history file): nothing of it deferred
    selected = users | _descendants(manifest, users)
    parents, todo = set(), list(selected)
    while todo:
        for parent in manifest["parent_map"][todo.pop()]:
            if parent.startswith("model.") and parent not in selected | parents:
                parents.add(parent)
                todo.append(parent)
    assert {planning.node_name(u) for u in parents} == _plan_row(
        out, "run history models they read, built over this target's history"
    )
    assert parents and all(manifest["nodes"][u]["fqn"][1] == "monitoring" for u in parents)
    assert _built(project) == selected | parents
    assert not _plan_row(out, "deferred to production")
    with duckdb.connect() as con:  # the views CI built read its history: this run is there
        con.execute(
            f"attach '{history.duckdb_path(resolve(project, 'ci'))}' as monitoring (read_only)"
        )
        jobs = con.execute("select job from monitoring.ci_monitoring.sli_runs").fetchall()
    assert jobs == [("slim-ci",)]
    # the data diff says why it compares none of them, and passes
    summary = project.root / "data-diff.md"
    assert main(["--project-dir", str(project.root), "diff", "--target", "ci",
                 "--summary", str(summary)]) == 0  # fmt: skip
    assert "views over the run history, built and tested over this CI run's own history" in (
        summary.read_text()
    )
