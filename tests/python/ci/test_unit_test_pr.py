"""The pull request's unit tests (`make unit-test-pr`): only those its change reaches.

Every Python test declares the files of the checkout it reads (``pytest.mark.reads``), and every
run checks the declarations with an audit hook (tests/python/support/reach.py)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mediapulse.ci.changed import RUNS_EVERY_TEST, reaching
from mediapulse.core.project import Project

from ..conftest import ONE_MART, REPO
from .test_lint_sql import _commit_all, _git, _make

# What the selection needs of the checkout: the configuration, the Makefile, the tests, and the
# one file the pull request changes (a smaller copy than the whole project's, so that a change
# to any other file does not run this test)
CHECKOUT = (*RUNS_EVERY_TEST, "Makefile", "tests/python", ONE_MART)


def _pr(root: Path, change: str) -> None:
    """A git checkout of CHECKOUT whose last commit is a pull request's ``change``."""
    for name in CHECKOUT:
        source, copy = REPO / name, root / name
        if source.is_dir():
            shutil.copytree(source, copy, ignore=shutil.ignore_patterns("__pycache__"))
        elif source.exists():
            copy.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, copy)
    _git(root, "init", "-q")
    (root / ".git" / "info" / "exclude").write_text(".venv\n")
    _commit_all(root, "main")
    (root / change).write_text((root / change).read_text() + "\n-- a pull request's change\n")
    _commit_all(root, "a pull request")


def _collected(root: Path, *pytest_args: str) -> subprocess.CompletedProcess[str]:
    """`make unit-test-pr`, collecting only (one process: TEST_JOBS=0)."""
    return _make(root, "unit-test-pr", "TEST_JOBS=0", f"PYTEST_ARGS={' '.join(pytest_args)}")


# tests that read no model: a one-mart change does not run them, a Python change does
UNREACHED = (
    "workflows/test_workflows.py::", "cli/test_main.py::test_version",
    "release/test_execute.py::", "monitoring/test_alerts.py::",
    "engines/test_targets.py::",  # a copy of the project's configuration only
)  # fmt: skip


def _count(output: str) -> int:
    """How many tests pytest's collection kept ("63/652 tests collected (589 deselected)")."""
    found = re.search(r"(\d+)/\d+ tests collected", output)
    assert found, output
    return int(found[1])


@pytest.mark.reads(*CHECKOUT)
def test_a_one_mart_change_runs_only_the_tests_that_read_the_models(tmp_path: Path) -> None:
    """A change to one mart's SQL: the tests that read models/ (or the whole checkout) run;
    those of the workflows, the CLI's help or the release's locks, which read no model, do not.
    A Python change runs them all."""
    root = tmp_path / "checkout"
    _pr(root, ONE_MART)
    run = _collected(root, "--collect-only", "-q")
    out = run.stdout + run.stderr
    assert run.returncode == 0, out
    assert "1 file(s) changed since HEAD^1, no Python: only the tests that read them ran" in out
    assert "tests/python/project/test_personal_data.py::" in out  # reads("models")
    assert "tests/python/workflows/test_docs_site.py::" in out  # reads("*")
    assert "tests/python/develop/test_sample.py::" in out  # a copy of the project
    for unreached in UNREACHED:
        assert f"tests/python/{unreached}" not in out, out
    reached = _count(out)

    # nothing reached under a -k that picks only unreached tests: a pass, not pytest's "no tests"
    nothing = _collected(root, "-k", "test_version", "--collect-only")
    assert nothing.returncode == 0, nothing.stdout + nothing.stderr

    python = root / "tests" / "python" / "conftest.py"
    python.write_text(python.read_text() + "# a pull request changing Python\n")
    _commit_all(root, "a pull request changing Python too")
    every = _collected(root, "--collect-only", "-q")
    out = every.stdout + every.stderr
    assert every.returncode == 0, out
    assert "tests/python/conftest.py changed since HEAD^1: it reaches every test" in out
    for unreached in UNREACHED:
        assert f"tests/python/{unreached}" in out, out
    assert _count(out) > reached, out


PROBE = "tests/python/test_probe_reads.py"


@pytest.mark.reads("*")
def test_a_test_that_reads_what_it_does_not_declare_fails_naming_the_file(
    project_copy: Project,
) -> None:
    """The declarations are checked: a test reading README.md without declaring it fails,
    naming the file; so does one starting a process in the checkout; declared, both pass."""
    root = project_copy.root
    (root / PROBE).write_text(
        "import subprocess, sys\n"
        "from pathlib import Path\n"
        "import pytest\n\n"
        "ROOT = Path(__file__).resolve().parents[2]\n\n"
        "def test_reads_the_readme():\n"
        "    assert (ROOT / 'README.md').read_text()\n\n"
        "def test_starts_a_process():\n"
        "    subprocess.run([sys.executable, '-c', 'pass'], cwd=ROOT, check=True)\n\n"
        "@pytest.mark.reads('README.md')\n"
        "def test_declares_the_readme():\n"
        "    assert (ROOT / 'README.md').read_text()\n\n"
        "@pytest.mark.reads()\n"
        "def test_declares_its_process_reads_nothing():\n"
        "    subprocess.run([sys.executable, '-c', 'pass'], cwd=ROOT, check=True)\n"
    )
    _git(root, "init", "-q")
    _commit_all(root, "main")  # the audit knows the checkout's files from git
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", PROBE],
        cwd=root, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    out = run.stdout + run.stderr
    assert run.returncode == 1, out
    assert "4 passed, 2 errors" in out, out  # the two undeclared fail at tear-down
    assert (
        "test_reads_the_readme reads the checkout beyond its reads marker: it read README.md"
    ) in out
    assert "test_starts_a_process reads the checkout beyond its reads marker: it started" in out


@pytest.mark.parametrize(
    ("changed", "reads", "reached"),
    [
        ([ONE_MART], ("models",), True),
        ([ONE_MART], ("models/staging",), False),
        ([ONE_MART], ("docs", ".github"), False),
        ([ONE_MART], ("*",), True),
        (["docs/index.md"], ("docs/index.md",), True),
        (["docs/index.md"], ("docs/index",), False),  # a prefix of a name is not its folder
        (["scripts/mediapulse/cli/main.py"], (), True),  # Python reaches every test
        (["dbt_project.yml"], (), True),  # so does the project's configuration
        (["profiles/profiles.yml"], (), True),
        (["requirements.lock"], (), True),
    ],
)
def test_what_a_change_reaches(changed: list[str], reads: tuple[str, ...], reached: bool) -> None:
    assert (reaching(changed, reads) is not None) is reached
