"""The CI workflows rehearsed with `make ci-*` in a throwaway copy, a local directory standing
in for the artifact store: a first PR before any nightly, the nightly, a PR that edits one
model, a PR that breaks a contract, validation, a deploy, and a deploy that must not land."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from mediapulse import artifacts
from mediapulse.project import Project
from mediapulse.summarize import MARKER

from .conftest import clone_built, manifest_models, relation_of

pytestmark = pytest.mark.dbt

VENV = Path(sys.executable).parent.parent
STATE = "ci-artifacts/production-state"


def _make(project: Project, target: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAPULSE_", "GITHUB_"))}
    env["DBT_PROJECT_EVALUATOR_SEVERITY"] = "error"
    # the copy uses this checkout's virtualenv and must never reinstall into it
    cmd = ["make", f"VENV={VENV}", "-o", str(VENV / ".installed"), target]
    return subprocess.run(
        cmd, cwd=project.root, env=env, capture_output=True, text=True, timeout=1800
    )


def _ok(result: subprocess.CompletedProcess) -> None:
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _titles_upper(manifest: Path, database: Path) -> bool:
    """Every title in `database`'s dim_content is upper case; the relation is the one the
    manifest names (target/ for the CI build, the published state for production)."""
    nodes = artifacts.load_json(manifest, "manifest")["nodes"]
    node = next(n for n in nodes.values() if n["resource_type"] == "model"
                and n["name"] == "dim_content")  # fmt: skip
    relation = relation_of(node).split(".", 1)[1]
    with duckdb.connect(str(database), read_only=True) as con:
        sql = f"select count(*) from {relation} where title <> upper(title)"
        return con.execute(sql).fetchone()[0] == 0


def test_the_workflows_rehearsed_end_to_end(built: Project, tmp_path: Path) -> None:
    project = clone_built(built, tmp_path / "repo")
    out = project.root / "ci-output"
    state = project.root / STATE
    prod = project.duckdb_path("prod")

    # 1. the first pull request ever: no production state yet, a full build with a notice
    first = _make(project, "ci-pr")
    _ok(first)
    assert "no production state" in first.stdout and "full build" in first.stdout
    assert "no baseline" in first.stdout
    assert (out / "pr-comment.md").read_text().startswith(MARKER)

    # 2. the nightly: production built, state published
    nightly = _make(project, "ci-nightly")
    _ok(nightly)
    for name in (
        "manifest.json",
        "run_results.json",
        "sources.json",
        "catalog.json",
        "evaluator.json",
    ):
        assert (state / name).is_file(), name
    assert json.loads((state / "evaluator.json").read_text())["violations"] == []
    assert "passed, production replaced" in (out / "nightly.md").read_text()
    assert prod.is_file()

    # 3. a pull request that edits one staging model
    model = project.root / "models/staging/catalog/stg_catalog__content.sql"
    original_model = model.read_text()
    model.write_text(
        original_model.replace("        title,\n", "        upper(title) as title,\n", 1)
    )
    prod_before = _digest(prod)
    pr = _make(project, "ci-pr")
    _ok(pr)
    slim = (out / "slim-ci.md").read_text()
    assert "| modified | 1 | stg_catalog__content |" in slim
    assert "Slim CI results: passed" in slim
    comment = (out / "pr-comment.md").read_text()
    assert comment.startswith(MARKER)
    assert (
        "## Slim CI plan" in comment and "dbt-project-evaluator" in comment and "Codegen" in comment
    )
    ci_manifest = project.target_dir / "manifest.json"
    assert _titles_upper(ci_manifest, project.duckdb_path("ci")), "the change was built in CI"
    assert _digest(prod) == prod_before, "a PR never touches production"

    # 4. validation of the critical path before merge
    _ok(_make(project, "ci-validate"))
    results = artifacts.node_results(project.target_dir)
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    built_models = {r.unique_id for r in results if r.resource_type == "model"}
    critical = {
        uid for uid, n in manifest["nodes"].items()
        if n["resource_type"] == "model" and "critical" in n["tags"]
        and n["config"]["materialized"] != "ephemeral"
    }  # fmt: skip
    descendants, todo = set(), list(critical)
    while todo:
        for child in manifest["child_map"].get(todo.pop(), []):
            if child.startswith("model.") and child not in descendants:
                descendants.add(child)
                todo.append(child)
    assert critical and built_models == critical | descendants
    assert "Slim CI results: passed" in (out / "validate.md").read_text()

    # 5. deploy the merged change: production swapped, the old one kept, state republished
    deploy = _make(project, "ci-deploy")
    _ok(deploy)
    assert _titles_upper(state / "manifest.json", prod)
    assert project.duckdb_path("prod").with_name("prod.previous.duckdb").is_file()
    deployed = artifacts.load_json(state / "manifest.json", "manifest")
    # the published state is the merged code's, so the next PR compares against the change
    raw_code = deployed["nodes"]["model.mediapulse.stg_catalog__content"]["raw_code"]
    assert "upper(title) as title" in raw_code

    # 6. a change that breaks a contract: slim CI fails and says where, in the PR comment too
    mart = project.root / "models/marts/core/dim_content.sql"
    yml = next((project.root / "models/marts/core").glob("_*__models.yml"))
    mart_text, yml_text = mart.read_text(), yml.read_text()
    node = manifest_models(project)["dim_content"]
    column = "is_original" if "is_original" in node["columns"] else list(node["columns"])[-1]
    mart.write_text("\n".join(x for x in mart_text.splitlines() if f".{column}," not in x) + "\n")
    lines = yml_text.splitlines(keepends=True)
    model_line = yml_text[: yml_text.index("name: dim_content")].count("\n")
    start = next(
        i for i, x in enumerate(lines) if x.strip() == f"- name: {column}" and i > model_line
    )
    end = start + 1
    indent = len(lines[start]) - len(lines[start].lstrip())
    while end < len(lines) and (
        not lines[end].strip() or len(lines[end]) - len(lines[end].lstrip()) > indent
    ):
        end += 1
    yml.write_text("".join(lines[:start] + lines[end:]))
    broken = _make(project, "ci-pr")
    assert broken.returncode != 0
    assert "breaking change to the contract of model dim_content" in broken.stderr
    assert column in (out / "slim-ci.md").read_text()
    mart.write_text(mart_text)
    yml.write_text(yml_text)

    # 7. a deploy whose error-severity test fails leaves production and its state untouched
    prod_before, manifest_before = _digest(prod), _digest(state / "manifest.json")
    failing = project.root / "tests" / "marts" / "assert_deploy_gate_rehearsal.sql"
    failing.parent.mkdir(parents=True, exist_ok=True)
    failing.write_text(
        "-- a rule that no data can satisfy, to prove a failing deploy changes nothing\n"
        "select content_id from {{ ref('dim_content') }}\n"
    )
    refused = _make(project, "ci-deploy")
    assert refused.returncode != 0
    assert "production left as it was" in refused.stdout
    assert "assert_deploy_gate_rehearsal" in (out / "deploy.md").read_text()
    assert _digest(prod) == prod_before
    assert _digest(state / "manifest.json") == manifest_before
    assert not (project.warehouse_dir / ".release").exists()
