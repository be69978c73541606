"""`mediapulse lint-sql`: sqlfluff on the project's SQL, rendered by dbt as a build renders it.

The rules are in `.sqlfluff` (the house SQL shape) and what is not linted in `.sqlfluffignore`.
sqlfluff's dbt templater compiles each model on the `dev` target, which attaches the raw
catalog read-only, so dbt needs a warehouse to open but no data in it. Linting runs on a
scratch warehouse of its own under target/sqlfluff (an empty raw database) with its own dbt
target and log directories: the same result on a fresh clone and on a built checkout, without
opening warehouse/ or replacing the manifest a build left in target/. Kept between runs, the
scratch target lets dbt parse only what changed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import duckdb

from mediapulse import deps
from mediapulse.errors import MediaPulseError
from mediapulse.project import WAREHOUSE_ENV, Project

CONFIG_FILES = (".sqlfluff", ".sqlfluffignore")
# Where the SQL sqlfluff can render lives (macros are excluded in .sqlfluffignore: the dbt
# templater cannot render a macro on its own).
DEFAULT_PATHS = ("models", "tests", "snapshots")
# the target `.sqlfluff` names for the dbt templater
LINT_TARGET = "dev"


def scratch_env(project: Project) -> dict[str, str]:
    """The environment for sqlfluff: target `dev` on an empty scratch warehouse."""
    scratch = project.target_dir / "sqlfluff"
    warehouse = scratch / "warehouse"
    warehouse.mkdir(parents=True, exist_ok=True)
    raw = warehouse / "raw.duckdb"
    if not raw.exists():
        duckdb.connect(str(raw)).close()
    return {
        **os.environ,
        **project.dbt_env(LINT_TARGET),
        WAREHOUSE_ENV: str(warehouse),
        "DBT_TARGET_PATH": str(scratch / "target"),
        "DBT_LOG_PATH": str(scratch / "logs"),
    }


def _relative(project: Project, path: Path) -> str:
    return str(path.relative_to(project.root)) if path.is_relative_to(project.root) else str(path)


def lint_sql(project: Project, paths: list[str], fix: bool = False) -> int:
    """Run `sqlfluff lint` (or `fix`) on ``paths`` (default: models, tests, snapshots).

    Returns sqlfluff's exit code: 0 clean, 1 findings (each printed with file, line and rule).
    """
    for name in CONFIG_FILES:
        if not (project.root / name).is_file():
            raise MediaPulseError(
                f"{project.root / name} is missing: it holds the house SQL rules; restore it "
                f"from git (git checkout -- {name})"
            )
    report = deps.install(project, force=False)  # the dbt templater compiles with them
    if not report.already_installed:
        print(report.summary())
    # relative to the checkout, so that findings name `models/...` as git does
    targets = [_relative(project, Path(p).resolve()) for p in paths] or [
        p for p in DEFAULT_PATHS if (project.root / p).is_dir()
    ]
    command = [sys.executable, "-m", "sqlfluff", "fix" if fix else "lint", *targets]
    return subprocess.run(command, cwd=project.root, env=scratch_env(project)).returncode
