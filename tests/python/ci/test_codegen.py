"""Codegen end to end: a model's YAML deleted comes back with types; nothing else moves."""

from __future__ import annotations

from pathlib import Path

import pytest
from ruamel.yaml import YAML

from mediapulse.ci.codegen import run_codegen
from mediapulse.core.project import Project
from mediapulse.engines.targets import resolve

from ..conftest import clone_built

pytestmark = pytest.mark.dbt

MODELS_YML = "models/staging/ads/_ads__models.yml"
SOURCES_YML = "models/staging/ads/_ads__sources.yml"


def _load(path: Path):  # type: ignore[no-untyped-def]
    return YAML().load(path.read_text())


def _plain(value):  # type: ignore[no-untyped-def]
    """ruamel's commented containers as plain dicts and lists, for comparisons."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def test_deleted_yaml_comes_back_and_nothing_else_changes(
    built: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(built, tmp_path / "project")
    models_path, sources_path = project.root / MODELS_YML, project.root / SOURCES_YML
    original = _plain(_load(models_path))
    original_sources = _plain(_load(sources_path))
    original_comments = [
        x for x in models_path.read_text().splitlines() if x.strip().startswith("#")
    ]

    # delete one model's whole entry, one column of another, and one source column
    document = _load(models_path)
    removed_model = document["models"][-1]["name"]
    del document["models"][-1]
    kept = document["models"][0]
    removed_column = kept["columns"][2]["name"]
    previous_column = kept["columns"][1]["name"]
    del kept["columns"][2]
    writer = YAML()
    writer.indent(mapping=2, sequence=4, offset=2)
    writer.width = 4096
    with models_path.open("w") as handle:
        writer.dump(document, handle)
    sources = _load(sources_path)
    table = sources["sources"][0]["tables"][0]
    removed_source_column = table["columns"][-1]["name"]
    del table["columns"][-1]
    with sources_path.open("w") as handle:
        writer.dump(sources, handle)
    damaged = models_path.read_text(), sources_path.read_text()

    capsys.readouterr()
    assert run_codegen(resolve(project, "dev"), check=True, dry_run=False) == 1
    out = capsys.readouterr().out
    assert f"missing: model {removed_model}" in out
    assert f"missing: column {kept['name']}.{removed_column}" in out
    assert f"{removed_source_column}" in out
    # one dbt process: the parse from scratch, then dbt-codegen's macro on that manifest
    assert "dbt: 2 invocations in one process, the project parsed once" in out, out
    assert "in full: asked for (--no-partial-parse)" in out, out
    assert (models_path.read_text(), sources_path.read_text()) == damaged, "--check writes nothing"

    assert run_codegen(resolve(project, "dev"), check=False, dry_run=True) == 0
    diff = capsys.readouterr().out
    assert f"+  - name: {removed_model}" in diff and f"b/{MODELS_YML}" in diff
    assert (models_path.read_text(), sources_path.read_text()) == damaged, (
        "--dry-run writes nothing"
    )

    assert run_codegen(resolve(project, "dev"), check=False, dry_run=False) == 0
    restored = _plain(_load(models_path))
    by_name = {m["name"]: m for m in restored["models"]}
    # the deleted model is back, every column with a data type, and an empty description
    back = by_name[removed_model]
    assert back["columns"] and all(c.get("data_type") for c in back["columns"])
    original_columns = [c["name"] for c in next(
        m for m in original["models"] if m["name"] == removed_model)["columns"]]  # fmt: skip
    assert [c["name"] for c in back["columns"]] == original_columns
    # the deleted column is back in its place, typed; the rest of that model is untouched
    columns = by_name[kept["name"]]["columns"]
    names = [c["name"] for c in columns]
    assert names.index(removed_column) == names.index(previous_column) + 1
    assert columns[names.index(removed_column)]["data_type"]
    original_kept = next(m for m in original["models"] if m["name"] == kept["name"])
    without_new = [c for c in columns if c["name"] != removed_column]
    assert without_new == [c for c in original_kept["columns"] if c["name"] != removed_column]
    assert {k: v for k, v in by_name[kept["name"]].items() if k != "columns"} == {
        k: v for k, v in original_kept.items() if k != "columns"
    }
    # every other model is exactly as it was, and the comments survived
    for model in original["models"]:
        if model["name"] not in (removed_model, kept["name"]):
            assert by_name[model["name"]] == model
    comments = [x for x in models_path.read_text().splitlines() if x.strip().startswith("#")]
    assert comments == original_comments
    restored_sources = _plain(_load(sources_path))
    restored_table = restored_sources["sources"][0]["tables"][0]
    assert restored_table["columns"][-1]["name"] == removed_source_column
    assert (
        restored_table["columns"][:-1]
        == original_sources["sources"][0]["tables"][0]["columns"][:-1]
    )

    # idempotent: a second run changes nothing, and --check is satisfied
    once = models_path.read_text(), sources_path.read_text()
    assert run_codegen(resolve(project, "dev"), check=False, dry_run=False) == 0
    assert (models_path.read_text(), sources_path.read_text()) == once
    assert run_codegen(resolve(project, "dev"), check=True, dry_run=False) == 0


def test_codegen_needs_a_built_warehouse(project_copy: Project) -> None:
    from mediapulse.core.errors import MediaPulseError
    from mediapulse.dbt import deps

    deps.install(project_copy)
    project_copy.warehouse_dir.mkdir()
    from mediapulse.data import generate

    generate.generate(
        project_copy.raw_path,
        generate.Params(users=50, days=2, start_date=generate.default_start_date(2)),
    )
    with pytest.raises(MediaPulseError, match="build the target first"):
        run_codegen(resolve(project_copy, "dev"), check=True, dry_run=False)
