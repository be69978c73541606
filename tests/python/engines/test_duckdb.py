"""Bounded memory on DuckDB: every DuckDB target sets a memory limit and a spill directory from
the environment (MEDIAPULSE_DUCKDB_MEMORY_LIMIT, MEDIAPULSE_DUCKDB_TEMP_DIR), with defaults that
fit a 16 GB laptop, and DuckDB itself runs with them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mediapulse.core.project import Project
from mediapulse.dbt import artifacts
from mediapulse.dbt.runner import run_dbt
from mediapulse.engines.postgres import target_credentials
from mediapulse.engines.targets import resolve

from ..conftest import REPO, clone_built

DUCKDB_TARGETS = ("dev", "ci", "prod")


@pytest.mark.parametrize("target", DUCKDB_TARGETS)
def test_every_duckdb_target_has_a_memory_limit_and_a_spill_directory(
    target: str, isolated_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project = Project.discover(REPO, tmp_path / "warehouse")
    monkeypatch.setenv("MEDIAPULSE_WAREHOUSE_DIR", str(project.warehouse_dir))
    settings = target_credentials(project, target).config_options
    assert settings["memory_limit"] == "4GB"
    assert settings["temp_directory"] == str(project.warehouse_dir / f"{target}.duckdb.tmp")

    monkeypatch.setenv("MEDIAPULSE_DUCKDB_MEMORY_LIMIT", "12GB")
    monkeypatch.setenv("MEDIAPULSE_DUCKDB_TEMP_DIR", "/mnt/scratch")
    settings = target_credentials(project, target).config_options
    # one directory per target: DuckDB instances must not share a spill directory
    assert settings == {"memory_limit": "12GB", "temp_directory": f"/mnt/scratch/{target}"}


def test_a_releases_spill_directory_is_beside_the_staged_copy(
    isolated_env: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    project = Project.discover(REPO, tmp_path / "warehouse")
    monkeypatch.setenv("MEDIAPULSE_PROD_DIR", str(tmp_path / "warehouse" / ".release"))
    settings = target_credentials(project, "prod").config_options
    assert settings["temp_directory"] == str(tmp_path / "warehouse" / ".release/prod.duckdb.tmp")


@pytest.mark.dbt
def test_duckdb_runs_with_the_limit(built: Project, tmp_path: Path) -> None:
    """What DuckDB reports inside a dbt run on the default settings. On a copy: `dbt show`
    writes its own run_results.json, which other tests read from the shared build."""
    project = clone_built(built, tmp_path / "project")
    result = run_dbt(
        resolve(project, "dev"),
        ["show", "--inline", "select current_setting('memory_limit') as memory_limit, "
         "current_setting('temp_directory') as temp_directory", "--output", "json"],
        capture_events=["ShowNode"],
        quiet=True,
    )  # fmt: skip
    assert result.success, result.error
    shown = json.loads(result.messages[0])["show"][0]
    assert shown["memory_limit"] == "3.7 GiB"  # 4 GB, as DuckDB prints it
    assert shown["temp_directory"].endswith("dev.duckdb.tmp")


@pytest.mark.dbt
def test_a_build_that_spills_to_disk_succeeds(
    built: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The limit makes DuckDB spill what does not fit instead of failing, and the build goes
    on after it. A model sorting ~400 MB under a 128 MB limit spills; its child then runs on
    another of dbt's cursors. DuckDB fixes its spill directory once it has used it, so the
    directory must be set once, when the database opens, not again on each cursor (which
    failed with "Cannot switch temporary directory after the current one has been used" as
    soon as a model had spilled: the 50M benchmark's full build did). Under 64 MB the sort
    itself ran out of memory now and then on a busy machine ("failed to pin block"): the
    threads' own buffers were most of the limit."""
    project = clone_built(built, tmp_path / "project")
    probe = project.root / "models" / "probe"
    probe.mkdir()
    (probe / "spill_probe.sql").write_text(
        "{{ config(materialized='table') }}\n"
        "select i, md5(cast(i as varchar)) as h from range(6000000) as t(i) order by h\n"
    )
    (probe / "after_spill.sql").write_text(
        "{{ config(materialized='table') }}\nselect count(*) as n from {{ ref('spill_probe') }}\n"
    )
    monkeypatch.setenv("MEDIAPULSE_DUCKDB_MEMORY_LIMIT", "128MB")
    result = run_dbt(resolve(project, "dev"), ["build", "--select", "spill_probe+"], quiet=True)
    results = artifacts.node_results(project.target_dir)
    built_models = {r.name: r.status for r in results}
    # dbt's own message for each node (the output is quiet): what failed, when it does
    assert result.success, (result.error, [(r.name, r.status, r.message) for r in results])
    assert built_models == {"spill_probe": "success", "after_spill": "success"}, built_models
