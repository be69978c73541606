"""Which tests a change reaches, and a check that every test says what it reads.

`pytest --changed-from=BASE` (the pull request's `make unit-test-pr`) runs only the tests a
change since BASE can reach: all of them when Python code, or what installs it, changed;
otherwise those that read a changed file, as their ``reads`` marker declares
(``@pytest.mark.reads("models", "docs/index.md")``: files or folders of the checkout; ``"*"``
for all of it). A test using a copy of the project reads all of it.

A declaration nobody checks would rot, so every run checks them: while a test runs (its
fixtures' set-up included, not the tear-down, where a module's fixtures end) an audit hook
notes each file of the checkout it opens, each folder of it it lists, and each process it
starts in the checkout; a test that read a file it does not declare, or started a process there
without declaring what that process reads, fails at tear-down, naming the file and the marker
to add. A test that runs dbt, or is given a copy of the project, reads all of it.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

from mediapulse.ci.changed import (
    EVERYTHING,
    RUNS_EVERY_TEST,
    UnknownBase,
    changed_files,
    covers,
    reaches_every_test,
    reaching,
)

REPO = Path(__file__).resolve().parents[3]
OPTION = "--changed-from"
# The fixtures that hand a test a copy of the whole checkout (conftest.py)
COPIES_PROJECT = frozenset({"project_copy", "built", "parsed_manifest", "after_nightly"})
# ...and of its configuration only (what reaches every test anyway)
COPIES_CONFIG = frozenset({"config_copy"})
LISTS = frozenset({"os.listdir", "os.scandir"})
_ROOT = str(REPO) + os.sep


@dataclass
class Seen:
    """What the running test touched in the checkout."""

    files: set[str] = field(default_factory=set)
    folders: set[str] = field(default_factory=set)
    started: list[str] = field(default_factory=list)
    recording: bool = True


_seen: Seen | None = None  # the running test's (None: no test is running)


@cache
def tracked() -> tuple[frozenset[str], frozenset[str]]:
    """The checkout's tracked files, and the folders holding files a test must declare (any
    but code and configuration), relative to its root."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True)
    files = frozenset(n for n in listed.stdout.split("\0") if n)
    data = [Path(f) for f in files if not reaches_every_test(f)]
    folders = {str(p) for f in data for p in f.parents}
    return files, frozenset(folders)


def _inside(path: object) -> str | None:
    """``path`` relative to the checkout, if it is in it."""
    if isinstance(path, int) or path is None:
        return None
    try:
        absolute = os.path.abspath(os.fsdecode(path))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    if absolute == str(REPO):
        return "."
    return absolute[len(_ROOT) :] if absolute.startswith(_ROOT) else None


def _audit(event: str, args: tuple[object, ...]) -> None:
    seen = _seen
    if seen is None or not seen.recording:
        return
    if event == "open":
        relative = _inside(args[0])
        if relative is not None and not reaches_every_test(relative):
            seen.files.add(relative)
    elif event in LISTS:
        relative = _inside(args[0] if args else ".")
        if relative is not None:
            seen.folders.add(relative)
    elif event == "subprocess.Popen":
        cwd = args[2] if len(args) > 2 and args[2] is not None else os.getcwd()
        if _inside(cwd) is not None:
            program = args[1][0] if isinstance(args[1], list | tuple) and args[1] else args[0]
            seen.started.append(os.path.basename(os.fsdecode(program)))  # type: ignore[arg-type]


def declared(item: pytest.Item) -> tuple[str, ...] | None:
    """The checkout paths ``item`` reads: its ``reads`` markers; all of it for a test that
    runs dbt (dbt parses the whole project) or is given a copy of the project, and the
    configuration for one given a copy of that; None when it declares nothing."""
    marks = list(item.iter_markers("reads"))
    fixtures = set(getattr(item, "fixturenames", ()))
    if item.get_closest_marker("dbt") or COPIES_PROJECT & fixtures:
        return (EVERYTHING,)
    config = RUNS_EVERY_TEST if COPIES_CONFIG & fixtures else ()
    if not marks and not config:
        return None
    return (*config, *(p for mark in marks for p in mark.args))


def undeclared(reads: tuple[str, ...] | None, files: Iterable[str], folders: Iterable[str],
               started: list[str]) -> str | None:  # fmt: skip
    """What a test touched beyond what it declares (``reads``; None: no marker), in one line
    (None: nothing)."""
    tracked_files, tracked_folders = tracked()
    missed = sorted(f for f in files if f in tracked_files and not covers(reads or (), f))
    if missed:
        more = f" and {len(missed) - 1} more file(s)" if len(missed) > 1 else ""
        return f"it read {missed[0]}{more}"
    listed = sorted(f for f in folders if f in tracked_folders and f != ".")
    for folder in listed:
        if not covers(reads or (), folder):
            return f"it listed the folder {folder}"
    if started and reads is None:
        return (
            f"it started `{started[0]}` in the checkout, whose reads no audit hook sees "
            "(a test that knows the process reads no file of the checkout declares reads())"
        )
    return None


def addoption(parser: pytest.Parser) -> None:
    parser.addoption(
        OPTION, metavar="BASE", default=None,
        help="run only the tests a change since the git commit BASE reaches (tests declare "
        "what they read: @pytest.mark.reads)",
    )  # fmt: skip


def configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "reads(*paths): checkout files or folders the test reads ('*': all of it)"
    )
    tracked()  # before the hook: git's own reads are not a test's
    sys.addaudithook(_audit)


def deselect(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Under --changed-from BASE, keep only the tests the change reaches."""
    base = config.getoption(OPTION)
    if base is None:
        return
    try:
        changed = changed_files(REPO, base, deleted=True)
    except UnknownBase:
        return  # every test: never fewer than the change reaches
    reached = {id(i): reaching(changed, declared(i) or ()) is not None for i in items}
    kept = [i for i in items if reached[id(i)]]
    gone = [i for i in items if not reached[id(i)]]
    if gone:
        config.hook.pytest_deselected(items=gone)
        items[:] = kept


def summary(config: pytest.Config, write: object) -> None:
    """One line on what --changed-from chose, for the job's log."""
    base = config.getoption(OPTION)
    if base is None:
        return
    try:
        changed = changed_files(REPO, base, deleted=True)
    except UnknownBase as exc:
        line = f"cannot tell what changed since {base} ({exc}): every test ran"
    else:
        code = next((p for p in changed if reaches_every_test(p)), None)
        line = (
            f"{code} changed since {base}: it reaches every test" if code
            else f"{len(changed)} file(s) changed since {base}, no Python: only the tests that "
            "read them ran (the rest deselected)"
        )  # fmt: skip
    write(line)  # type: ignore[operator]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):  # type: ignore[no-untyped-def]
    global _seen
    _seen = Seen()
    try:
        yield
    finally:
        _seen = None


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    """Reads end with the test: tear-down also ends the fixtures of its module or session,
    which are not this test's."""
    if _seen is not None:
        _seen.recording = False


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if call.when != "teardown" or _seen is None or report.failed:
        return
    problem = undeclared(declared(item), _seen.files, _seen.folders, _seen.started)
    if problem:
        where = item.path.relative_to(REPO).as_posix()
        report.outcome = "failed"
        report.longrepr = (
            f"{where}::{item.name} reads the checkout beyond its reads marker: {problem}. "
            "Declare it (pytestmark = pytest.mark.reads(...) in the file, or on the test), so "
            "that a pull request changing it runs this test (`make unit-test-pr`)"
        )
