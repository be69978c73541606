"""A release in steps, as a scheduler runs it: `mediapulse release prepare`, dbt calls through
`mediapulse-dbt` (one per model if the scheduler likes), `mediapulse release publish` or
`discard`. Real dbt on a real DuckDB production built by the nightly."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from mediapulse.cli.main import main
from mediapulse.core.project import Project
from mediapulse.release.duckdb import warehouse_release_id
from mediapulse.release.execute import code_fingerprint
from mediapulse.release.in_release import release_args, transient
from mediapulse.release.record import StagedRelease, expected_nodes, publish_problems

from ..conftest import clone_built

pytestmark = pytest.mark.dbt

MART = "models/marts/engagement/fct_daily_engagement.sql"
MART_ID = "model.mediapulse.fct_daily_engagement"
BIN = Path(sys.executable).parent


def _cli(project: Project, *args: str) -> int:
    return main(["--project-dir", str(project.root), "--warehouse-dir",
                 str(project.warehouse_dir), *args])  # fmt: skip


def _dbt(project: Project, *args: str) -> subprocess.CompletedProcess[str]:
    """dbt as a scheduler calls it: `mediapulse-dbt` from the project's directory."""
    env = {**os.environ, "MEDIAPULSE_ARTIFACTS": str(project.root / "state"),
           "MEDIAPULSE_PROJECT_DIR": str(project.root),
           "MEDIAPULSE_WAREHOUSE_DIR": str(project.warehouse_dir)}  # fmt: skip
    return subprocess.run([str(BIN / "mediapulse-dbt"), *args], cwd=project.root, env=env,
                          capture_output=True, text=True, timeout=600)  # fmt: skip


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tables(path: Path) -> dict[str, list[tuple]]:
    with duckdb.connect(str(path), read_only=True) as con:
        names = con.execute(
            "select table_schema || '.' || table_name from information_schema.tables "
            "where table_schema like '%marts%' order by 1"
        ).fetchall()
        return {n: sorted(map(repr, con.execute(f"select * from {n}").fetchall()))
                for (n,) in names}  # fmt: skip


@pytest.fixture
def production(after_nightly: Project, tmp_path: Path) -> Project:
    return clone_built(after_nightly, tmp_path / "project")


def test_a_failed_model_keeps_production_and_rebuilding_it_resumes_the_release(
    production: Project, capsys
) -> None:
    """A scheduler's calls: the seeds and snapshots, then everything else, with one mart
    broken; publish refuses and production stays byte for byte; the mart fixed and built again
    (with what it skipped), the release publishes the marts the nightly built."""
    prod = production.warehouse_dir / "prod.duckdb"
    state = str(production.root / "state")
    before_id, before, digest = warehouse_release_id(prod), _tables(prod), _digest(prod)
    mart = production.root / MART
    good = mart.read_text()
    mart.write_text(good.replace("select", "select no_such_column,", 1))  # merged broken
    assert _cli(production, "release", "prepare", "--job", "nightly", "--artifacts", state) == 0
    seeds = _dbt(production, "build", "--select", "resource_type:seed resource_type:snapshot")
    assert seeds.returncode == 0, seeds.stdout[-3000:] + seeds.stderr[-2000:]
    failed = _dbt(production, "build", "--exclude", "resource_type:seed resource_type:snapshot")
    assert failed.returncode == 1
    capsys.readouterr()
    # publish refuses, with one line naming the model; production is byte for byte as it was
    assert _cli(production, "release", "publish", "--artifacts", state) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "fct_daily_engagement" in err[0] and "cannot be published" in err[0]
    assert _digest(prod) == digest and warehouse_release_id(prod) == before_id
    # a nightly meanwhile would stage over the held release: refused, one line
    assert _cli(production, "nightly", "--artifacts", state) == 2
    assert "is staged and not yet published" in capsys.readouterr().err
    # fixed, the failed model and what it skipped are built again, nothing else (naming the
    # profile and target as Cosmos does)
    mart.write_text(good)
    retried = _dbt(production, "build", "--select", "fct_daily_engagement+",
                   "--profile", "mediapulse", "--target", "prod")  # fmt: skip
    assert retried.returncode == 0, retried.stdout[-3000:]
    record = json.loads((production.root / "state.staged" / "staged-release.json").read_text())
    assert record["nodes"][MART_ID]["status"] == "success"
    assert [b["success"] for b in record["builds"]] == [True, False, True]
    assert _cli(production, "release", "publish", "--artifacts", state) == 0
    out = capsys.readouterr().out
    assert "passed, release" in out
    # publish starts from the builds' saved parse, whatever flags named the same profile
    assert "the project parsed once" in out and "partially" in out, out[-1500:]
    after_id = warehouse_release_id(prod)
    assert after_id != before_id
    published = json.loads((production.root / "state" / "release.json").read_text())
    assert published["release_id"] == after_id
    # it records the code it holds, the fixed checkout's: the next refresh runs on it
    assert published["code"] == code_fingerprint(production)
    assert _tables(prod) == before  # the same marts as the nightly's, table by table
    # the record says so: a build against it now is refused
    again = _dbt(production, "build", "--select", "fct_daily_engagement")
    assert again.returncode == 2 and "already published" in again.stderr


def test_the_steps_refuse_bad_input_in_one_line_and_touch_nothing(
    production: Project, capsys
) -> None:
    prod = production.warehouse_dir / "prod.duckdb"
    state = str(production.root / "state")
    digest = _digest(prod)
    assert _cli(production, "release", "publish", "--artifacts", state) == 2
    assert "no release is prepared" in capsys.readouterr().err
    not_yet = _dbt(production, "build")
    assert not_yet.returncode == 2 and "no release is prepared" in not_yet.stderr
    assert _cli(production, "release", "prepare", "--job", "nightly", "--artifacts", state) == 0
    capsys.readouterr()
    assert _cli(production, "release", "prepare", "--job", "nightly", "--artifacts", state) == 2
    assert "is staged and not yet published" in capsys.readouterr().err
    assert _cli(production, "release", "publish", "--artifacts", state) == 2
    assert "nothing was built in it" in capsys.readouterr().err
    assert _cli(production, "release", "discard", "--artifacts", state) == 0
    assert "discarded: production left as it was" in capsys.readouterr().out
    gone = _dbt(production, "build")
    assert gone.returncode == 2 and "already discarded" in gone.stderr
    no_env = subprocess.run([str(BIN / "mediapulse-dbt"), "build"], cwd=production.root,
                            env={k: v for k, v in os.environ.items()
                                 if k != "MEDIAPULSE_ARTIFACTS"},
                            capture_output=True, text=True)  # fmt: skip
    assert no_env.returncode == 2 and "$MEDIAPULSE_ARTIFACTS is not set" in no_env.stderr
    assert _digest(prod) == digest
    assert not (production.warehouse_dir / ".release").exists()


# -- pure -------------------------------------------------------------------------------------


def _staged(refresh: dict | None = None, nodes: dict | None = None) -> StagedRelease:
    return StagedRelease(Path("."), {
        "release_id": "r1", "job": "nightly", "target": "prod", "prepared_at": "now",
        "refresh": refresh, "nodes": nodes or {}, "builds": [{"args": ["build"]}],
    })  # fmt: skip


def test_a_nightly_release_rebuilds_from_scratch_on_its_target() -> None:
    args = release_args(_staged(), ["build", "--select", "a"], "prod")
    assert args == ["build", "--select", "a", "--target", "prod", "--full-refresh"]
    assert release_args(_staged(), ["ls"], "prod") == ["ls", "--target", "prod"]
    # the project's own profile named (Cosmos does) is dropped; another profile is kept
    assert release_args(_staged(), ["ls", "--profile", "mediapulse"], "prod") == [
        "ls", "--target", "prod"]  # fmt: skip
    assert "other" in release_args(_staged(), ["ls", "--profile", "other"], "prod")


def test_a_refresh_narrows_every_selection_to_what_the_new_rows_reach() -> None:
    refresh = {"selection": ["source:raw.events+", "fqn:x+"], "excluded": ["fqn:t1"]}
    args = release_args(_staged(refresh), ["build", "--select", "m1", "--log-format", "json"],
                        "prod")  # fmt: skip
    assert args[args.index("--select") + 1:args.index("--select") + 3] == [
        "m1,source:raw.events+", "m1,fqn:x+"]  # fmt: skip
    assert "--full-refresh" not in args and "fqn:t1" in args and "json" in args
    # green schemas start empty: a refresh there builds everything it is asked to
    green = release_args(_staged({**refresh, "narrow": False}), ["build", "--select", "m1"],
                         "pg")  # fmt: skip
    assert green[:3] == ["build", "--select", "m1"] and "m1,fqn:x+" not in green


def test_only_transient_errors_are_retried() -> None:
    lost = [("model.a", "error", "Runtime Error\n  server closed the connection unexpectedly")]
    assert transient(lost, None) == "server closed the connection unexpectedly"
    assert transient([("test.a", "fail", "Got 3 results")], None) is None
    assert transient([("model.a", "error", "column x does not exist")], None) is None


def test_publish_names_failed_and_never_built_models() -> None:
    manifest = {"metadata": {"project_name": "p"}, "nodes": {
        f"model.p.{name}": {"resource_type": "model", "package_name": "p", "config": {},
                            "original_file_path": path, "checksum": {"checksum": "x"}}
        for name, path in (("a", "models/a.sql"), ("b", "models/b.sql"),
                           ("m", "models/monitoring/m.sql"))
    }}  # fmt: skip
    assert expected_nodes(manifest) == ["model.p.a", "model.p.b"]
    staged = _staged(nodes={"model.p.a": {"status": "error"}})
    problems = publish_problems(staged, manifest, full=True)
    assert problems == ["1 failed (a)", "1 never built (b)"]
    assert publish_problems(staged, manifest, full=False) == ["1 failed (a)"]
    # a model built, then its code changed: the release would not be the code it records
    for node in manifest["nodes"].values():
        node["checksum"] = {"checksum": "new"}
    built_before = _staged(
        nodes={
            "model.p.a": {"status": "success", "checksum": "old"},
            "model.p.b": {"status": "success", "checksum": "new"},
        }
    )
    assert publish_problems(built_before, manifest, full=True) == [
        "1 built from code changed since (a)"]  # fmt: skip
