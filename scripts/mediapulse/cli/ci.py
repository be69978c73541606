"""CI: the pull-request checks: build what changed, compare it with production, the project
evaluator, one comment from the steps' reports, and a server CI run's schemas dropped.

Each command imports the room it runs inside its function, for start-up time: DuckDB, dbt
and the rooms take most of a second to load, `mediapulse --help` a tenth.
"""

from __future__ import annotations

from pathlib import Path

from mediapulse.cli.options import (
    POSITIVE_INT,
    argument,
    command,
    option,
    pass_engine,
    pass_project,
    summary_option,
    target_option,
)
from mediapulse.core.project import Project
from mediapulse.engines.base import CI_ROLE, Engine


@command("slim-ci")
@target_option(CI_ROLE)
@option(
    "--state", help="production artifacts (from `nightly --artifacts`); none or empty: full build"
)
@option("--select", help="dbt selection (default: state:modified+)")
@option(
    "--prod-warehouse",
    help="production DuckDB file to defer to (default: <warehouse-dir>/prod.duckdb)",
)
@summary_option()
@pass_engine
def slim_ci_command(
    engine: Engine,
    state: str | None,
    select: str | None,
    prod_warehouse: str | None,
    summary: str | None,
) -> int:
    """build and test only what changed (state:modified+), deferring the rest to production"""
    from mediapulse.ci.slim_ci import run_slim_ci

    return run_slim_ci(
        engine,
        state_dir=Path(state).resolve() if state else None,
        select=select,
        prod_warehouse=Path(prod_warehouse).resolve() if prod_warehouse else None,
        summary=Path(summary) if summary else None,
    )


@command("diff")
@target_option(CI_ROLE)
@option("--state", help="production artifacts (default: the state slim-ci compared with)")
@option("--prod-warehouse", help="production DuckDB file (default: <warehouse-dir>/prod.duckdb)")
@summary_option()
@option(
    "--max-chars",
    type=POSITIVE_INT,
    default=40_000,
    help="longest report (default 40000: a PR comment holds 65536 characters)",
)
@option("--json", help="also write every model's diff as JSON here")
@pass_engine
def diff_command(
    engine: Engine,
    state: str | None,
    prod_warehouse: str | None,
    summary: str | None,
    max_chars: int,
    json: str | None,
) -> int:
    """after slim-ci: compare every model it built with production (schema, rows, values)"""
    from mediapulse.ci.datadiff import run_diff

    return run_diff(
        engine,
        state_dir=Path(state).resolve() if state else None,
        prod_warehouse=Path(prod_warehouse).resolve() if prod_warehouse else None,
        summary=Path(summary) if summary else None,
        max_chars=max_chars,
        json_out=Path(json) if json else None,
    )


@command("evaluate")
@target_option()
@option("--json", help="JSON report path (default: target/evaluator.json)")
@option("--markdown", help="Markdown report path (default: $GITHUB_STEP_SUMMARY when set)")
@option(
    "--baseline",
    help="a previous --json report (e.g. of main): only violations not in it fail; "
    "a missing file (first run) means no baseline",
)
@pass_engine
def evaluate_command(
    engine: Engine,
    json: str | None,
    markdown: str | None,
    baseline: str | None,
) -> int:
    """run dbt-project-evaluator and report violations by category and rule"""
    from mediapulse.ci.evaluate import run_evaluate

    project = engine.project

    return run_evaluate(
        engine,
        json_path=Path(json) if json else project.target_dir / "evaluator.json",
        markdown_path=Path(markdown) if markdown else None,
        baseline_path=Path(baseline) if baseline else None,
    )


@command("summarize")
@option("--title", default="MediaPulse CI", help="the report's heading")
@option("--out", required=True, help="where to write the combined report")
@argument("inputs", nargs=-1, required=True, help="Markdown reports, in order")
@pass_project
def summarize_command(project: Project, title: str, out: str, inputs: tuple[str, ...]) -> int:
    """combine the CI steps' Markdown reports into one"""
    from mediapulse.ci.summarize import write_combined

    written = write_combined(title, [Path(p) for p in inputs], Path(out))
    print(f"wrote {written}")
    return 0


@command("drop-ci-schemas")
@target_option(CI_ROLE)
@pass_engine
def drop_ci_schemas_command(engine: Engine) -> int:
    """drop this CI run's schemas on a PostgreSQL CI target (the end of a pull-request job),
    and lost runs' older than $MEDIAPULSE_CI_SCHEMA_MAX_AGE_HOURS"""
    from mediapulse.security.pg_access import drop_ci_schemas

    print(drop_ci_schemas(engine))
    return 0


COMMANDS = [
    slim_ci_command,
    diff_command,
    evaluate_command,
    summarize_command,
    drop_ci_schemas_command,
]
