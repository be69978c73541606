"""Targets resolve once into engines: each knows its engine, its role and what it can do, and
no module outside engines/ compares engine names or hard-codes a target's name. The optional
engines (pyproject extras `postgres` and `spark`): the DuckDB default runs without either, and a
target whose engine's extra is missing stops in one line naming the target, its engine and the
install."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mediapulse.ci.changed import RUNS_EVERY_TEST
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.engines.base import Capability
from mediapulse.engines.duckdb import DuckDb
from mediapulse.engines.postgres import Postgres
from mediapulse.engines.spark import Spark
from mediapulse.engines.targets import resolve

from ..conftest import REPO

# the profile and the project's configuration, in the checkout and in the copies (not the
# models: a change to one does not reach these tests)
pytestmark = pytest.mark.reads(*RUNS_EVERY_TEST)

PACKAGE = REPO / "scripts" / "mediapulse"
# What deciding by engine or target name looks like: the profile's type compared with a
# literal, the type read from Project, a target named in Python.
ENGINE_NAME = r"""["'](?:duckdb|postgres|spark)["']"""
DECIDING = [
    re.compile(r"target_type\("),
    re.compile(rf"[=!]=\s*{ENGINE_NAME}|{ENGINE_NAME}\s*[=!]="),
    re.compile(rf"\bin\s*[(\[{{]\s*{ENGINE_NAME}"),
    re.compile(r"""outputs?\b[^\n]*(?:\.get\(["']type["']\)|\[["']type["']\])"""),
    re.compile(r"""["'](?:prod|postgres_ci|dev|spark_cluster)["']"""),
    re.compile(r"""(?:target|TARGET)\w*\s*(?::\s*str\s*)?=\s*["']ci["']|\bor\s+["']ci["']"""),
]


@pytest.mark.reads("scripts/mediapulse")
def test_no_module_outside_engines_decides_by_engine_or_target_name() -> None:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        room = path.relative_to(PACKAGE).parts[0]
        if room == "engines":
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            code = line.split("#", 1)[0]
            if any(p.search(code) for p in DECIDING):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not found, "ask the target's engine (engines.targets.resolve) instead:\n" + "\n".join(
        found
    )


def test_the_grep_sees_what_it_forbids() -> None:
    """The patterns above catch the forms the code used before engines were classes."""
    for line in (
        'if project.target_type(target) == "duckdb":',
        'if kind != "postgres":',
        'if kind in ("duckdb", "postgres"):',
        'TARGET = "prod"',
        'ci = os.environ.get(CI_TARGET_ENV) or "ci"',
        'if output.get("type") != "duckdb"',
        '    target: str = "ci",',
    ):
        assert any(p.search(line) for p in DECIDING), line


def test_each_target_of_the_profile_resolves_to_its_engine_and_role() -> None:
    project = Project.discover(REPO, REPO / "warehouse")
    kinds = {name: type(resolve(project, name)) for name in project.outputs}
    assert kinds == {
        "dev": DuckDb, "ci": DuckDb, "prod": DuckDb, "postgres": Postgres,
        "postgres_ci": Postgres, "spark": Spark, "spark_cluster": Spark,
    }  # fmt: skip
    roles = {name: resolve(project, name).role for name in ("dev", "ci", "prod", "spark")}
    assert roles == {"dev": "dev", "ci": "ci", "prod": "prod", "spark": "dev"}
    assert resolve(project, "prod").embedded and not resolve(project, "postgres").embedded


def test_production_follows_the_workflows_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    project = Project.discover(REPO, REPO / "warehouse")
    monkeypatch.setenv("MEDIAPULSE_PROD_TARGET", "dev")
    assert resolve(project, "dev").is_production


def test_what_an_engine_cannot_do_is_one_line_naming_target_engine_and_what_to_use() -> None:
    project = Project.discover(REPO, REPO / "warehouse")
    spark = resolve(project, "spark")
    assert not spark.can(Capability.STAGED_RELEASES)
    with pytest.raises(MediaPulseError) as caught:
        spark.require(Capability.STAGED_RELEASES, "rollback")
    text = str(caught.value)
    assert "\n" not in text
    assert text.startswith("rollback: target 'spark' (Spark) cannot stage a release")
    assert text.endswith("use a DuckDB or PostgreSQL target")
    resolve(project, "prod").require(Capability.STAGED_RELEASES)  # no error
    with pytest.raises(MediaPulseError, match=r"cannot grant database roles"):
        resolve(project, "prod").require(Capability.ROLES, "access-sql")


def test_an_unknown_target_or_engine_is_one_line(config_copy: Project) -> None:
    project = config_copy
    with pytest.raises(MediaPulseError, match=r"^unknown target 'nope': .*--target$"):
        resolve(project, "nope")
    profiles = project.profiles_dir / "profiles.yml"
    profiles.write_text(profiles.read_text().replace("type: spark", "type: snowflake", 1))
    fresh = Project.discover(project.root, project.warehouse_dir)
    name = next(n for n, o in fresh.outputs.items() if o["type"] == "snowflake")
    with pytest.raises(MediaPulseError) as caught:
        resolve(fresh, name)
    assert str(caught.value) == (
        f"target '{name}' is of type 'snowflake', which MediaPulse does not run on: use a target "
        "of type duckdb (DuckDB), postgres (PostgreSQL), spark (Spark) in profiles/profiles.yml"
    )


# The optional engines, without a throwaway virtualenv: the real CLI runs in a child Python
# where an extra's modules cannot be imported (`sys.modules[name] = None`: Python then refuses
# to import them, as it would if they were absent), so these tests take seconds.
EXTRA_MODULES = {
    "postgres": ("psycopg2", "dbt.adapters.postgres"),
    "spark": ("pyspark", "dbt.adapters.spark"),
}
EVERY_EXTRA = tuple(m for modules in EXTRA_MODULES.values() for m in modules)
CHILD = """
import sys
for name in sys.argv[1].split(","):
    sys.modules[name] = None  # `import name` now raises ImportError
if sys.argv[2] == "--import-all":
    import importlib, pkgutil, mediapulse
    for info in pkgutil.walk_packages(mediapulse.__path__, "mediapulse."):
        if info.name != "mediapulse.__main__":
            importlib.import_module(info.name)
    sys.exit(0)
from mediapulse.cli.main import main
sys.exit(main(sys.argv[2:]))
"""


def run_without(modules: tuple[str, ...], *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MEDIAPULSE_")}
    return subprocess.run(
        [sys.executable, "-c", CHILD, ",".join(modules), *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_no_module_imports_an_optional_engine_when_imported(config_copy: Project) -> None:
    root = config_copy.root
    result = run_without(EVERY_EXTRA, "--import-all", cwd=root)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_duckdb_path_runs_without_either_optional_engine(config_copy: Project) -> None:
    root = config_copy.root
    helped = run_without(EVERY_EXTRA, "--help", cwd=root)
    assert helped.returncode == 0 and "Usage: mediapulse" in helped.stdout, helped.stderr
    # a command that resolves its target: DuckDB's needs neither extra
    loaded = run_without(EVERY_EXTRA, "load-raw", "--target", "dev", cwd=root)
    assert loaded.returncode == 0, loaded.stdout + loaded.stderr
    assert "is DuckDB" in loaded.stdout


@pytest.mark.parametrize(
    ("command", "target", "extra", "engine"),
    [
        ("build", "postgres", "postgres", "PostgreSQL"),
        ("load-raw", "postgres", "postgres", "PostgreSQL"),
        ("drop-ci-schemas", "postgres_ci", "postgres", "PostgreSQL"),
        ("build", "spark", "spark", "Spark"),
        ("load-raw", "spark", "spark", "Spark"),
        ("build", "spark_cluster", "spark", "Spark"),
    ],
)
def test_a_target_without_its_extra_stops_in_one_line_naming_the_install(
    config_copy: Project, command: str, target: str, extra: str, engine: str
) -> None:
    root = config_copy.root
    result = run_without(EXTRA_MODULES[extra], command, "--target", target, cwd=root)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for needle in (
        f"target '{target}' ({engine}) needs the {extra} extra",
        f"make venv TARGET={target}",
        f"pip install -c requirements.lock -e '.[{extra}]'",
    ):
        assert needle in lines[0], lines[0]
    # it stops before any work: no packages installed, no data generated
    assert not (root / "dbt_packages").exists() and not (root / "warehouse").exists()
    # each target needs only its own engine's extra
    other = next(e for e in EXTRA_MODULES if e != extra)
    assert f"{other} extra" not in lines[0]
