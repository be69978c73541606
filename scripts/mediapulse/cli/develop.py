"""Develop: the commands for working on the project: demo data, a build, a query, the YAML
codegen writes and the SQL lint.

Each command imports the room it runs inside its function, for start-up time: DuckDB, dbt
and the rooms take most of a second to load, `mediapulse --help` a tenth.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from mediapulse.cli.options import (
    ISO_DATE,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    LazyChoice,
    argument,
    command,
    option,
    pass_engine,
    pass_project,
    target_option,
)
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.engines.base import Engine


def _fault_names() -> list[str]:
    """The faults `--fault` takes, read when it is given or its help shown (DuckDB loads)."""
    from mediapulse.data.faults import FAULTS

    return sorted(FAULTS)


@command("generate")
@option("--seed", type=int, default=42, help="random seed (default: 42)")
@option("--users", type=POSITIVE_INT, default=2_000, help="accounts (default: 2000)")
@option("--days", type=POSITIVE_INT, default=30, help="days of events (default: 30)")
@option(
    "--events-per-user",
    type=POSITIVE_FLOAT,
    default=12.0,
    help="mean watch events per account per day (default: 12)",
)
@option(
    "--start-date",
    type=ISO_DATE,
    help="first day of events (default: so that the last day is yesterday, UTC)",
)
@option(
    "--append-day",
    is_flag=True,
    help="add the next day to an existing data set (and the late events it brings)",
)
@option(
    "--event-copies",
    type=int,
    default=1,
    metavar="N",
    help="with --append-day: each watch event of the day is delivered N times (0: the "
    "day's events are lost; 10: a loader replaying its batch): volume anomalies",
)
@option(
    "--fault",
    multiple=True,
    type=LazyChoice(_fault_names),
    metavar="NAME",
    help=lambda: f"inject a named fault (repeatable): {', '.join(_fault_names())}",
)
@option("--out", help="raw DuckDB file (default: <warehouse-dir>/raw.duckdb)")
@option("--force", is_flag=True, help="replace an existing data set")
@pass_project
def generate_command(
    project: Project,
    seed: int,
    users: int,
    days: int,
    events_per_user: float,
    start_date: date | None,
    append_day: bool,
    event_copies: int,
    fault: tuple[str, ...],
    out: str | None,
    force: bool,
) -> int:
    """write (or extend) the raw source data"""
    from mediapulse.data import generate

    faults = list(fault)
    out_path = Path(out) if out else project.raw_path
    if append_day:
        summary = generate.append_day(out_path, faults=faults, event_copies=event_copies)
    elif event_copies != 1:
        raise MediaPulseError("--event-copies applies to --append-day only")
    else:
        params = generate.Params(
            seed=seed,
            users=users,
            days=days,
            events_per_user_day=events_per_user,
            start_date=start_date or generate.default_start_date(days),
        )
        summary = generate.generate(out_path, params, faults=faults, overwrite=force)
    print(summary)
    return 0


@command("build")
@target_option()
@option("--full-refresh", is_flag=True, help="rebuild incremental models")
@option("--select", help="dbt node selection (default: the whole project)")
@option(
    "--sample",
    metavar="WINDOW",
    help="build from the watch events and ad impressions of this window only (dbt's "
    "--sample on the sources and large models that set event_time; the rest in full): "
    '\'3 days\', \'12 hours\' (ending now) or \'{"start": "2026-11-01", "end": '
    '"2026-11-04"}\' (UTC, end excluded). Implies --full-refresh, so the warehouse '
    "holds the sample only, not the sample on top of an earlier build, and the next "
    "build without --sample rebuilds the incremental models in full again (an incremental "
    "run would only add new loads to the sample); never on production",
)
@pass_engine
def build_command(
    engine: Engine, full_refresh: bool, select: str | None, sample: str | None
) -> int:
    """the main job: packages if needed, demo data if none, dbt build"""
    from mediapulse.develop import build

    return build.main_job(
        engine,
        full_refresh=full_refresh,
        select=select,
        sample=sample,
    )


@command("query")
@target_option()
@argument("sql", help="the SQL to run; raw data is attached as catalog `raw`")
@option("--max-rows", type=POSITIVE_INT, default=50, help="rows to print")
@pass_engine
def query_command(engine: Engine, sql: str, max_rows: int) -> int:
    """run read-only SQL on a DuckDB target's warehouse"""
    from mediapulse.develop.query import run_query

    print(run_query(engine, sql, max_rows=max_rows))
    return 0


@command("codegen", exclusive=[("--check", "--dry-run")])
@target_option()
@option("--check", is_flag=True, help="change nothing; exit 1 listing what is missing")
@option("--dry-run", is_flag=True, help="print the diff, change nothing")
@option("--markdown", help="also write the findings as Markdown here")
@pass_engine
def codegen_command(engine: Engine, check: bool, dry_run: bool, markdown: str | None) -> int:
    """write YAML for undocumented sources, models and columns with dbt-codegen"""
    from mediapulse.ci.codegen import run_codegen

    markdown_path = Path(markdown) if markdown else None
    return run_codegen(engine, check=check, dry_run=dry_run, markdown=markdown_path)


@command("lint-sql")
@argument(
    "paths",
    nargs=-1,
    help="files or directories (default: models, tests, snapshots, macros, analyses)",
)
@option("--fix", is_flag=True, help="rewrite the files to the rules")
@option(
    "--changed-from",
    metavar="COMMIT",
    help="only the SQL files changed since this git commit (a pull request's base); every "
    "file when a macro or the project's configuration changed, or git cannot tell",
)
@pass_project
def lint_sql_command(
    project: Project, paths: tuple[str, ...], fix: bool, changed_from: str | None
) -> int:
    """sqlfluff on the SQL as dbt renders it, a full refresh and an incremental run (the
    rules: .sqlfluff), and line lengths as written"""
    from mediapulse.ci.lint_sql import lint_sql

    if changed_from is not None and paths:
        raise MediaPulseError("lint-sql: give files or --changed-from, not both")
    return lint_sql(project, list(paths), fix=fix, changed_from=changed_from)


COMMANDS = [generate_command, build_command, query_command, codegen_command, lint_sql_command]
