"""What a pull request changed, for the checks that need only look at that (the PR's lint and
its unit tests).

The files that differ between a base commit and the checkout (committed or not, new files
included), as git names them. On GitHub a pull request's checkout is a merge commit whose first
parent is the base branch, so `HEAD^1` is the base once the checkout fetched two commits.
A change to a macro or to the project's configuration can change how every model renders, so
it asks for every file; so does a base git cannot find (a shallow clone): never fewer files than
the change reaches.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

# Where the project's SQL lives (what `lint-sql` lints by default)
SQL_DIRS = ("models", "tests", "snapshots", "macros", "analyses")
# What renders every model: a change here lints them all
RENDERS_EVERY_MODEL = (
    "macros/", "dbt_project.yml", "packages.yml", "package-lock.yml", "profiles/",
    ".sqlfluff", ".sqlfluffignore", "requirements.lock",
)  # fmt: skip


class UnknownBase(Exception):
    """git cannot compare with the base (no repository, or the base commit is not fetched)."""


def _git(root: Path, *args: str) -> str:
    try:
        done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)
    except OSError as exc:  # no git at all
        raise UnknownBase(str(exc)) from exc
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        raise UnknownBase(lines[0] if lines else f"git exited with {done.returncode}")
    return done.stdout


def changed_files(root: Path, base: str, deleted: bool = False) -> list[str]:
    """The files that differ between ``base`` and the working tree, new untracked files
    included, relative to ``root``; deleted ones only if ``deleted`` (a lint has nothing left
    to check in them, but a test that read one reads something else now)."""
    names = _git(root, "diff", "--name-only", "--no-renames", "--relative", base, "--")
    names += _git(root, "ls-files", "--others", "--exclude-standard")
    found = sorted({n for n in names.splitlines() if n})
    return found if deleted else [n for n in found if (root / n).is_file()]


def sql_to_lint(root: Path, base: str) -> tuple[list[str] | None, str]:
    """(the SQL files to lint, or None for every file; why, in a few words)."""
    try:
        changed = changed_files(root, base)
    except UnknownBase as exc:
        return None, f"cannot tell what changed since {base} ({exc})"
    reaching = [n for n in changed if n.startswith(RENDERS_EVERY_MODEL)]
    if reaching:
        return None, f"{reaching[0]} changed since {base}: it can change how every model renders"
    folders = tuple(f"{folder}/" for folder in SQL_DIRS)
    sql = [n for n in changed if n.endswith(".sql") and n.startswith(folders)]
    if not sql:
        return [], f"no SQL changed since {base}"
    return sql, f"{len(sql)} file{'' if len(sql) == 1 else 's'} changed since {base}"


# What reaches every Python test: the code, what installs it, and the project's configuration,
# which the package reads wherever it opens the project (its targets, packages and selectors).
# A test declares the other files it reads (tests/python/support/reach.py checks it does).
RUNS_EVERY_TEST = (
    "pyproject.toml", "requirements.lock", "dbt_project.yml", "profiles/", "packages.yml",
    "package-lock.yml", "selectors.yml", ".ci/",
)  # fmt: skip
EVERYTHING = "*"  # a test that reads the whole checkout (a copy of the project)


def reaches_every_test(path: str) -> bool:
    """Python code, what installs it, or the project's configuration."""
    return path.endswith(".py") or path.startswith(RUNS_EVERY_TEST)


def covers(reads: tuple[str, ...], path: str) -> bool:
    """Whether the checkout paths a test declares it reads (files, or folders holding them;
    ``*`` for all) include ``path``."""
    return any(r == EVERYTHING or path == r or path.startswith(r.rstrip("/") + "/") for r in reads)


def reaching(changed: list[str], reads: tuple[str, ...]) -> str | None:
    """The first changed path that reaches a test declaring ``reads``; None when the change
    cannot alter what the test sees."""
    return next((p for p in changed if reaches_every_test(p) or covers(reads, p)), None)
