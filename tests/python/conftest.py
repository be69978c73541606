"""Shared fixtures: throwaway copies of the project, and whether the dbt packages are there.

Tests marked ``dbt`` run dbt for real and need the pinned packages, from the hub or from the
mirror in $DBT_PACKAGES_MIRROR. Without either they are skipped with one loud line; with
either, a skipped test fails the session, so a green run always means dbt really ran.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Sequence
from functools import cache
from pathlib import Path

import pytest
from filelock import FileLock

from mediapulse.ci.changed import RUNS_EVERY_TEST, covers
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.data import generate
from mediapulse.dbt import artifacts, deps
from mediapulse.dbt.runner import run_dbt
from mediapulse.develop import build
from mediapulse.engines.targets import resolve

from .support import reach
from .support.reach import (  # noqa: F401
    pytest_runtest_makereport,
    pytest_runtest_protocol,
    pytest_runtest_teardown,
)

REPO = Path(__file__).resolve().parents[2]
_IGNORED = shutil.ignore_patterns(
    ".git", ".venv", "dbt_packages", "dbt_packages.*", "target", "logs", "warehouse",
    "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info", "bench",
)  # fmt: skip


@cache
def packages_problem() -> str | None:
    """None when the pinned dbt packages can be installed; else why not, in one line."""
    project = Project.discover(REPO)
    pins, _ = deps.load_pins(project)
    try:
        deps.resolve_from_mirror(pins, deps.mirror_dir())
        return None
    except MediaPulseError as exc:
        mirror_problem = str(exc)
    hub_problem = deps.probe_hub(deps.hub_url())
    if hub_problem is None:
        return None
    return f"{mirror_problem}; and the dbt hub {deps.hub_url()} is unreachable ({hub_problem})"


# The longest test files, longest first: `make test` hands whole files to its workers in
# collection order (pytest-xdist, --dist loadfile), so starting these first keeps one long file
# from running alone at the end. The rest keep their order.
LONGEST_FIRST = (
    "workflows/test_rehearsals.py", "release/test_postgres.py", "monitoring/test_views.py",
    "orchestrate/test_airflow.py", "orchestrate/test_dagster.py", "release/test_steps.py",
    "engines/test_spark.py", "release/test_faults.py", "data/test_faults.py",
    "security/test_pg_access.py", "data/test_rawload.py",
    "release/test_refresh.py", "ci/test_slim_ci.py", "release/test_deploy.py",
    "project/test_revenue.py", "engines/test_postgres.py", "ci/test_lint_sql.py",
)  # fmt: skip


def _weight(item: pytest.Item) -> int:
    name = item.path.relative_to(Path(__file__).parent).as_posix()
    return LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST)


def pytest_addoption(parser: pytest.Parser) -> None:
    reach.addoption(parser)


def pytest_configure(config: pytest.Config) -> None:
    reach.configure(config)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reach.deselect(config, items)
    items.sort(key=_weight)  # stable: the order inside each file is kept
    problem = packages_problem()
    if problem is None:
        return
    skip = pytest.mark.skip(reason=f"dbt packages unavailable: {problem}")
    for item in items:
        if "dbt" in item.keywords:
            item.add_marker(skip)


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    reach.summary(config, terminalreporter.write_line)
    problem = packages_problem()
    if problem is not None:
        terminalreporter.write_line(
            f"!!! DBT TESTS SKIPPED: no dbt packages: {problem} !!!", red=True, bold=True
        )
    from mediapulse.engines import spark

    if spark.java() is None:
        terminalreporter.write_line(
            f"!!! SPARK TESTS SKIPPED: no Java runtime (apt-get install {spark.JRE_PACKAGE}) !!!",
            red=True,
            bold=True,
        )


def _skip_reason(report: pytest.TestReport) -> str:
    longrepr = report.longrepr
    return str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped check proves nothing: skips fail the run unless the machine cannot run them.

    Allowed: the dbt tests when no package source exists (said loudly above), the
    PostgreSQL tests when no server binaries exist and the Spark tests without Java, except
    under MEDIAPULSE_REQUIRE_ALL_TESTS=1 (CI sets it), where every test must run.
    """
    if exitstatus == pytest.ExitCode.NO_TESTS_COLLECTED and session.config.getoption(reach.OPTION):
        session.exitstatus = pytest.ExitCode.OK  # the change reaches no test: nothing to run
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or exitstatus != 0:
        return
    strict = os.environ.get("MEDIAPULSE_REQUIRE_ALL_TESTS") == "1"
    reasons = [_skip_reason(r) for r in reporter.stats.get("skipped", [])]
    excused = (
        "dbt packages unavailable", "PostgreSQL server binaries not found", "no Java runtime"
    )  # fmt: skip
    unexcused = [r for r in reasons if strict or not any(e in r for e in excused)]
    if unexcused:
        reporter.write_line(
            f"FAILED: {len(unexcused)} test(s) skipped ({unexcused[0]}); a skipped check "
            "proves nothing",
            red=True,
            bold=True,
        )
        session.exitstatus = 1


def copy_project(destination: Path, only: Sequence[str] | None = None) -> Project:
    """A throwaway copy of the checkout: tracked and new files, no build products or data;
    ``only`` those files and folders (what the test's ``reads`` marker declares, so that a
    change to anything else does not reach it)."""
    try:
        listed = subprocess.run(
            ["git", "ls-files", "-co", "--exclude-standard", "-z"],
            cwd=REPO, check=True, capture_output=True, text=True,
        ).stdout.split("\0")  # fmt: skip
        for name in filter(None, listed):
            if only is not None and not covers(tuple(only), name):
                continue
            source = REPO / name
            if source.is_file():
                target = destination / name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    except (OSError, subprocess.CalledProcessError):
        for name in [""] if only is None else only:  # not a git checkout
            source, target = REPO / name, destination / name
            if source.is_dir():
                shutil.copytree(source, target, ignore=_IGNORED, dirs_exist_ok=True)
            elif source.is_file():
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(source, target)
    return Project.discover(destination, destination / "warehouse")


def clone_built(source: Project, destination: Path) -> Project:
    """A copy of an already built project copy, warehouse and artifacts included."""
    shutil.copytree(source.root, destination, symlinks=True)
    return Project.discover(destination, destination / "warehouse")


# The MEDIAPULSE_* variables of the shell `make test` started in. A fixture that sets more (a
# PostgreSQL server's, its hash key) must take them away when its file is done: `make test`
# runs several files in one process, and a key left behind makes a later file's DuckDB build
# hash e-mail addresses differently from the session's shared build.
_SHELL_ENV = {k: v for k, v in os.environ.items() if k.startswith("MEDIAPULSE_")}


@pytest.fixture(autouse=True, scope="module")
def _no_variables_left_behind() -> None:
    here = {k: v for k, v in os.environ.items() if k.startswith("MEDIAPULSE_")}
    left = sorted(k for k in here.keys() | _SHELL_ENV.keys() if here.get(k) != _SHELL_ENV.get(k))
    assert not left, f"variables left behind by an earlier test file: {left}"


@pytest.fixture
def project_copy(tmp_path: Path) -> Project:
    return copy_project(tmp_path / "project")


@pytest.fixture
def config_copy(tmp_path: Path) -> Project:
    """A copy of the project's configuration only (what reaches every test): for a test whose
    command stops before reading a model, so that a change to one does not run it."""
    return copy_project(tmp_path / "project", only=RUNS_EVERY_TEST)


@pytest.fixture
def isolated_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """No MediaPulse variables leaking in from the developer's shell."""
    for name in list(os.environ):
        if name.startswith("MEDIAPULSE_"):
            monkeypatch.delenv(name)
    yield


# The data set the end-to-end tests build: small, fresh (it ends yesterday), deterministic.
E2E = dict(seed=5, users=300, days=10, events_per_user_day=12.0)


def once_per_session(
    factory: pytest.TempPathFactory, name: str, make: Callable[[Path], Project]
) -> Project:
    """``make(destination)`` once for the whole test session, by whichever `make test` worker
    asks first (the others wait for it), and a copy of it for each worker: a built warehouse
    takes a minute or two, and every worker needs one."""
    here = factory.mktemp(name) / "project"
    if os.environ.get("PYTEST_XDIST_WORKER") is None:  # one process: nothing to share
        return make(here)
    shared = factory.getbasetemp().parent / f"shared-{name}"  # the session's, above the workers'
    with FileLock(str(shared) + ".lock"):
        if not (shared / ".made").exists():
            shutil.rmtree(shared, ignore_errors=True)
            make(shared / "project")
            (shared / ".made").touch()
    return clone_built(Project.discover(shared / "project", shared / "project" / "warehouse"), here)


def _build_e2e(destination: Path) -> Project:
    project = copy_project(destination)
    deps.install(project)
    params = generate.Params(**E2E, start_date=generate.default_start_date(E2E["days"]))
    generate.generate(project.raw_path, params)
    # Whichever worker builds it first, in whatever test: never with a hash key a module's
    # server fixture set (the build would then hash with it and write no checkout key, which
    # the tests of the hash read on the other worker)
    with pytest.MonkeyPatch.context() as patch:
        for name in [n for n in os.environ if n.startswith("MEDIAPULSE_")]:
            if name not in _SHELL_ENV:
                patch.delenv(name)
        for name, value in _SHELL_ENV.items():
            patch.setenv(name, value)
        assert build.main_job(resolve(project, "dev")) == 0
    return project


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A project copy with packages, raw data and a complete `dev` build on DuckDB."""
    return once_per_session(tmp_path_factory, "e2e", _build_e2e)


@pytest.fixture(scope="session")
def parsed_manifest(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The manifest of a plain `dbt parse` (target dev) of a project copy: no warehouse built."""
    project = copy_project(tmp_path_factory.mktemp("parsed") / "project")
    deps.install(project)
    parsed = run_dbt(resolve(project, "dev"), ["parse"])
    assert parsed.success, parsed.error
    return artifacts.load_json(project.target_dir / "manifest.json", "manifest")


def manifest_models(project: Project) -> dict[str, dict]:
    """The project's own models in the last manifest, by name (`<name>_v<n>` for a version)."""
    manifest = artifacts.load_json(project.target_dir / "manifest.json", "manifest")
    return {
        n["name"] if n.get("version") is None else f"{n['name']}_v{n['version']}": n
        for n in manifest["nodes"].values()
        if n["resource_type"] == "model" and n["package_name"] == "mediapulse"
    }


def relation_of(node: dict) -> str:
    return artifacts.unquoted_relation(node)


@pytest.fixture(scope="session")
def after_nightly(built: Project, tmp_path_factory: pytest.TempPathFactory) -> Project:
    """A project copy whose production was built by `mediapulse nightly`, with the state
    slim CI reads in <root>/state."""
    from mediapulse.release.execute import run_nightly

    def nightly(destination: Path) -> Project:
        project = clone_built(built, destination)
        assert run_nightly(resolve(project, "prod"), project.root / "state", None) == 0
        return project

    return once_per_session(tmp_path_factory, "nightly", nightly)


ONE_MART = "models/marts/engagement/fct_daily_engagement.sql"


def change_one_mart(project: Project) -> None:
    """A change to one mart's SQL that leaves its rows as they are (deploy and slim CI tests)."""
    path = project.root / ONE_MART
    text = path.read_text()
    old = "count(distinct content_id) as distinct_content_count"
    assert old in text
    path.write_text(text.replace(old, "count(distinct (content_id)) as distinct_content_count"))
