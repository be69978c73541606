"""What git holds: only files a user needs, none of them large, none citing documents we lack.

These read the files git tracks (`git ls-files`), as they are in the working tree, so a
change is caught before it is committed; they need no dbt, and `make unit-test` runs them.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pathspec
import pytest

from ..conftest import REPO

pytestmark = pytest.mark.reads("*")

# Anything larger is a build product, a data set or a download, not source: it belongs in a
# package index, an artifact store or a generator, and every clone would pay for it forever.
MAX_TRACKED_BYTES = 1_000_000

# Documents the project once cited but never held. The pattern is spelled so that this file
# does not match it: a rule is stated in the project's own words, where it applies.
MISSING_DOCUMENTS = re.compile(rb"\b(?:STYLE|DESIGN)\.md\b", re.IGNORECASE)


def _git(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=False)


def _not_ignored(root: Path) -> list[str]:
    """Every file under ``root`` that its .gitignore does not exclude: what git would track."""
    ignored = pathspec.GitIgnoreSpec.from_lines(
        [".git", *(root / ".gitignore").read_text().splitlines()]
    )
    names = []
    for folder, dirs, files in os.walk(root):
        relative = Path(folder).relative_to(root)
        dirs[:] = [d for d in dirs if not ignored.match_file(f"{(relative / d).as_posix()}/")]
        names += [n for f in files if not ignored.match_file(n := (relative / f).as_posix())]
    return names


def tracked_files() -> list[Path]:
    """The tracked files present in the working tree (a file deleted there is on its way out).

    The workflow rehearsals run the unit tests in a copy of the checkout without git's
    directory; there, the files are those .gitignore does not exclude, as a commit would take.
    """
    top = _git("rev-parse", "--show-toplevel")
    if top.returncode == 0 and Path(top.stdout.strip()).resolve() == REPO.resolve():
        listed = _git("ls-files", "-z")
        assert listed.returncode == 0, f"git ls-files in {REPO}: {listed.stderr.strip()}"
        names = [name for name in listed.stdout.split("\0") if name]
    else:
        names = _not_ignored(REPO)
    paths = [REPO / name for name in names]
    return [path for path in paths if path.is_file() and not path.is_symlink()]


def test_the_checks_read_the_real_checkout() -> None:
    # the two tests below would pass on an empty list: make sure they see the project's files
    names = {path.relative_to(REPO).as_posix() for path in tracked_files()}
    assert {"README.md", "dbt_project.yml", "Makefile"} <= names


def test_no_tracked_file_is_over_1_mb() -> None:
    large = {
        path.relative_to(REPO).as_posix(): size
        for path in tracked_files()
        if (size := path.stat().st_size) > MAX_TRACKED_BYTES
    }
    assert not large, "tracked files over 1 MB (a user does not need them; `git rm` them): " + (
        ", ".join(f"{name} ({size / 1e6:.1f} MB)" for name, size in sorted(large.items()))
    )


def test_no_tracked_file_cites_documents_the_repository_lacks() -> None:
    citing = [
        f"{path.relative_to(REPO).as_posix()}:{number}"
        for path in tracked_files()
        for number, line in enumerate(path.read_bytes().splitlines(), start=1)
        if MISSING_DOCUMENTS.search(line)
    ]
    assert not citing, (
        "these cite a style or design document the repository does not hold; say what they "
        f"mean in the project's own words: {citing}"
    )
