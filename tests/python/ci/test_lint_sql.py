"""`mediapulse lint-sql` (`make lint-sql`): sqlfluff, through dbt, holds the SQL to the house shape.

Run as a contributor runs it, on a fresh copy of the project (no warehouse, no build): a model
in the shape of the others passes, and one that departs from it is named with each rule.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from mediapulse.core.project import Project

from ..cli.test_main import run_cli

PROBE = "models/marts/ads/fct_lint_probe.sql"

HOUSE_SHAPE = """\
with

campaigns as (

    select * from {{ ref('stg_ads__campaigns') }}

),

delivery as (

    select * from {{ ref('fct_ad_impressions') }}

),

final as (

    select
        -- ids
        campaigns.campaign_id,

        -- numerics
        count(*) as impressions_count

    from campaigns
    inner join delivery
        on campaigns.campaign_id = delivery.campaign_id
    group by campaigns.campaign_id

)

select * from final
"""

# The same model with the departures the rules exist for: upper-case keywords, a bare join,
# an alias without `as`, a leading comma, group by position.
DEPARTING = """\
with

campaigns as (

    SELECT * from {{ ref('stg_ads__campaigns') }}

),

delivery as (

    select * from {{ ref('fct_ad_impressions') }}

),

final as (

    select
        campaigns.campaign_id
        , count(*) impressions_count

    from campaigns
    join delivery
        on campaigns.campaign_id = delivery.campaign_id
    group by 1

)

select * from final
"""


@pytest.mark.dbt
def test_lint_sql_passes_the_house_shape_and_names_each_departure(project_copy: Project) -> None:
    root = project_copy.root
    probe = root / PROBE

    probe.write_text(DEPARTING)
    found = run_cli("lint-sql", PROBE, cwd=root)
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"== [{PROBE}] FAIL" in found.stdout, found.stdout
    for rule in ("CP01", "AM05", "AL02", "LT04", "AM06"):
        assert f"| {rule} |" in found.stdout, f"{rule} not reported:\n{found.stdout}"

    probe.write_text(HOUSE_SHAPE)
    clean = run_cli("lint-sql", PROBE, cwd=root)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert "FAIL" not in clean.stdout

    # linting needs no data: it never created the checkout's warehouse or dbt's target files
    assert not (root / "warehouse").exists()
    assert sorted(p.name for p in (root / "target").iterdir()) == ["sqlfluff"]


# An incremental model whose two renderings differ: a departure (an upper-case keyword) on
# line 15, only in the branch an incremental run renders, and another on line 24, only in the
# branch a full refresh renders. Intermediate, so no contract is needed to build it.
INCREMENTAL_PROBE = "models/intermediate/int_lint_probe_incremental.sql"
INCREMENTAL = """\
{{ config(materialized='incremental', unique_key='campaign_id') }}

with

campaigns as (

    select * from {{ ref('stg_ads__campaigns') }}

),

{% if is_incremental() %}

campaigns_changed as (

    SELECT campaigns.* from campaigns
    where campaigns.loaded_at > (select max(held.loaded_at) from {{ this }} as held)

),

{% else %}

campaigns_changed as (

    SELECT * from campaigns

),

{% endif %}

final as (

    select
        -- ids
        campaign_id,

        -- timestamps
        loaded_at

    from campaigns_changed

)

select * from final
"""


def _finding(output: str, line: int, rule: str) -> str:
    """The report line of the finding of ``rule`` on ``line``; fails when there is none."""
    pattern = re.compile(rf"^L:\s*{line} \| P:\s*\d+ \| {rule} \| .*$", re.MULTILINE)
    match = pattern.search(output)
    assert match, f"no {rule} on line {line}:\n{output}"
    return match.group(0)


@pytest.mark.dbt
def test_lint_sql_lints_both_branches_of_an_incremental_model(project_copy: Project) -> None:
    root = project_copy.root
    (root / INCREMENTAL_PROBE).write_text(INCREMENTAL)

    found = run_cli("lint-sql", INCREMENTAL_PROBE, cwd=root)
    assert found.returncode == 1, found.stdout + found.stderr
    assert f"== [{INCREMENTAL_PROBE}] FAIL" in found.stdout, found.stdout
    assert _finding(found.stdout, 15, "CP01").endswith("(incremental run)")
    assert _finding(found.stdout, 24, "CP01").endswith("(full refresh)")
    # nothing else: the rest of the probe is in the house shape in both renderings
    assert len(re.findall(r"^L:", found.stdout, re.MULTILINE)) == 2, found.stdout
    assert not (root / "warehouse").exists()


@pytest.mark.dbt
def test_lint_sql_names_source_lines_over_the_limit(project_copy: Project) -> None:
    """sqlfluff's LT05 measures lines after dbt renders them (off in .sqlfluff); the lint
    command measures the lines as written, in every .sql file, macros included."""
    root = project_copy.root
    long_comment = "    -- " + "x" * 94  # 101 characters
    assert len(long_comment) == 101
    probe = HOUSE_SHAPE.replace(
        "    select\n        -- ids\n", f"{long_comment}\n    select\n        -- ids\n"
    )
    (root / PROBE).write_text(probe)
    macro = root / "macros" / "lint_probe.sql"
    macro.write_text(
        f"{{% macro lint_probe() %}}\n{long_comment}\n    select 1\n{{% endmacro %}}\n"
    )

    found = run_cli("lint-sql", PROBE, "macros/lint_probe.sql", cwd=root)
    assert found.returncode == 1, found.stdout + found.stderr
    line = probe.splitlines().index(long_comment) + 1
    assert f"== [{PROBE}] FAIL" in found.stdout, found.stdout
    assert "101 characters" in _finding(found.stdout, line, "MP01")
    assert "== [macros/lint_probe.sql] FAIL" in found.stdout, found.stdout
    assert "101 characters" in _finding(found.stdout, 2, "MP01")


def _make(root: Path, target: str, *variables: str) -> subprocess.CompletedProcess[str]:
    """`make <target> [NAME=value...]` in a project copy, with this session's virtualenv as its
    .venv (as a CI runner with a warm cache has one, tests/python/support/gha.py)."""
    venv = root / ".venv"
    if not venv.exists():
        venv.mkdir()
        (venv / "bin").symlink_to(Path(sys.executable).parent, target_is_directory=True)
        for part in ("", "-dev", "-postgres", "-spark", "-docs"):  # base and extras (Makefile)
            (venv / f".installed{part}").touch()  # newer than the copied lock files: no install
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MEDIAPULSE_", "MAKE"))}
    return subprocess.run(
        ["make", target, *variables], cwd=root, env=env, capture_output=True, text=True, timeout=900
    )


@pytest.mark.dbt
def test_make_lint_fails_on_sql_that_departs_from_the_house_shape(project_copy: Project) -> None:
    """The gate: `make lint` (so `make test` and the PR workflow's Lint step) lints the SQL, on
    a fresh copy without packages or a warehouse, and stops on a finding naming file, line and
    rule."""
    root = project_copy.root
    (root / PROBE).write_text(DEPARTING)

    result = _make(root, "lint")
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"== [{PROBE}] FAIL" in result.stdout, output
    lines = DEPARTING.splitlines()
    _finding(
        result.stdout, lines.index("    SELECT * from {{ ref('stg_ads__campaigns') }}") + 1, "CP01"
    )
    _finding(result.stdout, lines.index("    group by 1") + 1, "AM06")


def _git(root: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=Contributor", "-c", "user.email=c@example.invalid", *args],
        cwd=root, check=True, capture_output=True, text=True,
    )  # fmt: skip


@pytest.mark.dbt
def test_pre_commit_hooks_stop_a_commit_with_departing_sql_or_python(
    project_copy: Project, tmp_path: Path
) -> None:
    """As a contributor has it: `pre-commit install` in a clone, then `git commit` of a model
    and a module that break the rules is refused, each file named; fixed, the commit goes in."""
    root = project_copy.root
    venv = root / ".venv"
    venv.mkdir()
    (venv / "bin").symlink_to(Path(sys.executable).parent, target_is_directory=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("MEDIAPULSE_")},
        "PRE_COMMIT_HOME": str(tmp_path / "pre-commit-home"),
    }
    _git(root, "init", "-q")
    (root / ".git" / "info" / "exclude").write_text(".venv\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "--no-verify", "-m", "the project")
    installed = subprocess.run(
        [str(venv / "bin" / "pre-commit"), "install"], cwd=root, env=env,
        capture_output=True, text=True,
    )  # fmt: skip
    assert installed.returncode == 0, installed.stdout + installed.stderr

    module = root / "scripts" / "mediapulse" / "lint_probe.py"
    module.write_text("import os\n")  # F401: imported and never used
    (root / PROBE).write_text(DEPARTING)
    _git(root, "add", PROBE, str(module.relative_to(root)))

    def commit() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-c", "user.name=Contributor", "-c", "user.email=c@example.invalid",
             "commit", "-m", "a probe"],
            cwd=root, env=env, capture_output=True, text=True, timeout=900,
        )  # fmt: skip

    refused = commit()
    output = refused.stdout + refused.stderr
    assert refused.returncode != 0, output
    assert "F401" in output and "lint_probe.py" in output, output
    assert f"== [{PROBE}] FAIL" in output and "| CP01 |" in output, output

    module.write_text('"""A probe."""\n')
    (root / PROBE).write_text(HOUSE_SHAPE)
    _git(root, "add", PROBE, str(module.relative_to(root)))
    accepted = commit()
    assert accepted.returncode == 0, accepted.stdout + accepted.stderr


def _commit_all(root: Path, message: str) -> None:
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "--no-verify", "-m", message)


@pytest.mark.dbt
def test_make_lint_pr_lints_only_the_sql_the_pull_request_changed(project_copy: Project) -> None:
    """The PR workflow's Lint step (`make lint-pr`, on GitHub's merge commit whose first parent
    is the base): sqlfluff on the SQL files the pull request changed, not every file; none when
    it changed no SQL; every file when it changed what renders them all (a macro)."""
    root = project_copy.root
    _git(root, "init", "-q")
    (root / ".git" / "info" / "exclude").write_text(".venv\n")
    _commit_all(root, "main")

    # a pull request adding a model that departs from the house shape: named, and alone linted
    (root / PROBE).write_text(DEPARTING)
    _commit_all(root, "a pull request with one model")
    departing = _make(root, "lint-pr")
    output = departing.stdout + departing.stderr
    assert departing.returncode != 0, output
    assert f"== [{PROBE}] FAIL" in departing.stdout, output
    assert "sqlfluff on 1 file changed since HEAD^1 as a full refresh renders them" in output

    # the same model in the house shape, and a change to Python only: sqlfluff is not started
    _git(root, "reset", "-q", "--hard", "HEAD^1")
    (root / PROBE).write_text(HOUSE_SHAPE)
    _commit_all(root, "main, with the model")
    note = root / "scripts" / "mediapulse" / "__init__.py"
    note.write_text(note.read_text() + "# a pull request changing Python only\n")
    _commit_all(root, "a pull request changing Python")
    python_only = _make(root, "lint-pr")
    output = python_only.stdout + python_only.stderr
    assert python_only.returncode == 0, output
    assert "no SQL changed since HEAD^1: sqlfluff not run" in output, output
    assert "sqlfluff on" not in output, output


def test_lint_sql_changed_from_lints_everything_when_a_change_renders_every_file(
    project_copy: Project,
) -> None:
    """Which files `lint-sql --changed-from` lints: a macro or the project's configuration
    renders every model differently, so all are linted; without git's answer, all too."""
    from mediapulse.ci.changed import sql_to_lint

    root = project_copy.root
    _git(root, "init", "-q")
    _commit_all(root, "main")
    base = "HEAD"
    assert sql_to_lint(root, base) == ([], "no SQL changed since HEAD")
    (root / PROBE).write_text(HOUSE_SHAPE)
    readme = root / "README.md"
    readme.write_text(readme.read_text() + "\nA line.\n")
    assert sql_to_lint(root, base) == ([PROBE], "1 file changed since HEAD")
    macro = root / "macros" / "lint_probe.sql"
    macro.write_text("{% macro lint_probe() %}\n    select 1\n{% endmacro %}\n")
    assert sql_to_lint(root, base) == (
        None, "macros/lint_probe.sql changed since HEAD: it can change how every model renders"
    )  # fmt: skip
    macro.unlink()
    project_file = root / "dbt_project.yml"
    project_file.write_text(project_file.read_text() + "\n")
    assert sql_to_lint(root, base)[0] is None
    # a base git does not have (a shallow clone without it): every file, saying why
    files, why = sql_to_lint(root, "0" * 40)
    assert files is None and why.startswith(f"cannot tell what changed since {'0' * 40}")
