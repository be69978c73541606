"""The CLI as a user meets it: one-line errors that name the thing and the fix, exit codes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pytest

from mediapulse.core.project import Project

from ..conftest import REPO

COMMANDS = ("deps", "generate", "build", "query")


def run_cli(*args: str, cwd: Path = REPO, env: dict[str, str] | None = None):
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAPULSE_")}
    full_env.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "mediapulse", *args],
        cwd=cwd, env=full_env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def _one_line_error(result: subprocess.CompletedProcess, *needles: str) -> str:
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def test_help_lists_every_command_and_each_has_help() -> None:
    top = run_cli("--help")
    assert top.returncode == 0
    for command in COMMANDS:
        assert command in top.stdout
        sub = run_cli(command, "--help")
        assert sub.returncode == 0, sub.stderr
        assert "usage: mediapulse" in sub.stdout


def test_unknown_flag_is_one_line_pointing_at_help() -> None:
    _one_line_error(run_cli("generate", "--bogus"), "unrecognized arguments: --bogus", "--help")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("generate", "--users", "0"), "'0' must be greater than zero"),
        (("generate", "--days", "many"), "'many' is not a whole number"),
        (("generate", "--start-date", "31/01/2026"), "is not a date like 2026-01-31"),
        (("generate", "--fault", "meteor_strike"), "invalid choice: 'meteor_strike'"),
        (("deps", "--source", "ftp"), "invalid choice: 'ftp'"),
    ],
)
def test_bad_values_are_named(args: tuple[str, ...], needle: str) -> None:
    _one_line_error(run_cli(*args), needle)


def test_unknown_target_lists_the_known_ones(project_copy: Project) -> None:
    line = _one_line_error(
        run_cli("build", "--target", "staging", cwd=project_copy.root),
        "unknown target 'staging'",
        "dev",
        "prod",
    )
    assert "--target" in line
    assert not (project_copy.root / "warehouse").exists(), "nothing is done for a bad target"


def test_build_without_hub_or_mirror_fails_with_the_package_error(project_copy: Project) -> None:
    env = {
        "DBT_PACKAGES_MIRROR": "/nonexistent/mirror",
        "DBT_PACKAGE_HUB_URL": "http://127.0.0.1:9/",
    }
    result = run_cli("build", cwd=project_copy.root, env=env)
    _one_line_error(result, "cannot install dbt packages", "/nonexistent/mirror", "unreachable")
    assert not (project_copy.root / "warehouse").exists(), "no data generated, nothing built"
    assert not (project_copy.root / "dbt_packages").exists()


def test_not_a_checkout_is_named(tmp_path: Path) -> None:
    _one_line_error(run_cli("query", "select 1", cwd=tmp_path), "not inside a MediaPulse checkout")


def test_absent_corrupt_and_locked_warehouse_files(project_copy: Project) -> None:
    warehouse = project_copy.root / "warehouse"
    _one_line_error(
        run_cli("query", "select 1", cwd=project_copy.root), "dev.duckdb does not exist"
    )

    warehouse.mkdir()
    (warehouse / "dev.duckdb").write_bytes(b"\x00garbage" * 1000)
    _one_line_error(
        run_cli("query", "select 1", cwd=project_copy.root), "not a readable DuckDB database"
    )

    (warehouse / "dev.duckdb").unlink()
    holder = duckdb.connect(str(warehouse / "dev.duckdb"))  # a writer holds the lock
    try:
        _one_line_error(
            run_cli("query", "select 1", cwd=project_copy.root),
            "is locked by another process",
            f"process {os.getpid()}",
        )
    finally:
        holder.close()
    ok = run_cli("query", "select 42 as answer", cwd=project_copy.root)
    assert ok.returncode == 0 and "42" in ok.stdout


def test_append_day_without_a_data_set(project_copy: Project) -> None:
    _one_line_error(
        run_cli("generate", "--append-day", cwd=project_copy.root), "raw.duckdb does not exist"
    )


def test_generate_then_query_the_raw_data(project_copy: Project) -> None:
    gen = run_cli(
        "generate", "--users", "50", "--days", "2", "--start-date", "2026-02-01",
        cwd=project_copy.root,
    )  # fmt: skip
    assert gen.returncode == 0, gen.stderr
    assert "streaming.watch_events" in gen.stdout
    again = run_cli("generate", "--users", "50", cwd=project_copy.root)
    _one_line_error(again, "already holds a data set", "--force")
    dev = duckdb.connect(str(project_copy.root / "warehouse" / "dev.duckdb"))
    dev.close()
    result = run_cli("query", "select count(*) as n from raw.accounts.users", cwd=project_copy.root)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0].strip() == "n"
