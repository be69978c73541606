"""Operate: production's data and its watch: raw data into a server, sealed and masked
between runners, the roles' SQL; the run history, the morning report, alerts.

Each command imports the room it runs inside its function, for start-up time: DuckDB, dbt
and the rooms take most of a second to load, `mediapulse --help` a tenth.
"""

from __future__ import annotations

from pathlib import Path

import click

from mediapulse.cli.options import (
    JOBS,
    POSITIVE_FLOAT,
    artifacts_option,
    command,
    option,
    pass_engine,
    pass_project,
    summary_option,
    target_option,
)
from mediapulse.core.project import Project
from mediapulse.engines.base import PROD_ROLE, Engine


@command("load-raw")
@target_option()
@pass_engine
def load_raw_command(engine: Engine) -> int:
    """load the demo raw data set into a server target (never a table it did not create)"""
    from mediapulse.engines.base import Capability
    from mediapulse.jobs import prepare

    project, target = engine.project, engine.target
    if engine.embedded:
        print(
            f"target '{target}' is DuckDB: it attaches {project.raw_path} read-only, "
            "nothing to load (`mediapulse generate` writes that file)"
        )
        return 0
    prepare.ensure_raw_data(project)
    if not engine.can(Capability.LOADER_SCHEMAS):  # a local Spark session's catalog
        from mediapulse.data import sparkload
        from mediapulse.dbt import deps

        deps.install(project, force=False)  # dbt registers the tables: it parses the project
        print(sparkload.load_raw(engine))
        return 0
    from mediapulse.data.rawload import load_raw

    print(load_raw(engine))
    return 0


@command("unseal-raw")
@target_option(PROD_ROLE)
@pass_engine
def unseal_raw_command(engine: Engine) -> int:
    """open the sealed raw data production's jobs download (<warehouse-dir>/raw.duckdb.sealed,
    key in $MEDIAPULSE_RAW_ARTIFACT_KEY) into raw.duckdb; DuckDB targets only"""
    from mediapulse.security.raw_artifacts import unseal_raw

    print(unseal_raw(engine))
    return 0


@command("seal-raw")
@target_option(PROD_ROLE)
@pass_engine
def seal_raw_command(engine: Engine) -> int:
    """seal raw.duckdb (AES-256-GCM, key in $MEDIAPULSE_RAW_ARTIFACT_KEY) into
    raw.duckdb.sealed, the only form it travels in as an artifact; DuckDB targets only"""
    from mediapulse.security.raw_artifacts import seal_raw

    print(seal_raw(engine))
    return 0


@command("mask-raw")
@target_option(PROD_ROLE)
@option("--out", required=True, help="the masked raw.duckdb to write")
@pass_engine
def mask_raw_command(engine: Engine, out: str) -> int:
    """write the copy of raw.duckdb pull requests read: every personal column masked
    (docs/personal-data.md); DuckDB targets only"""
    from mediapulse.security.raw_artifacts import mask_raw

    print(mask_raw(engine, Path(out).resolve()))
    return 0


@command("record")
@target_option(PROD_ROLE)
@artifacts_option("the directory with run_results.json")
@option("--job", required=True, type=click.Choice(JOBS))
@pass_engine
def record_command(engine: Engine, artifacts: str, job: str) -> int:
    """load a job's dbt artifacts into the target's run history (again: it changes nothing)"""
    from mediapulse.monitoring.history import record_artifacts

    print(record_artifacts(engine, job, Path(artifacts).resolve()))
    return 0


@command("report")
@target_option(PROD_ROLE)
@option("--out", default="report", help="directory for index.html (default: report)")
@artifacts_option(
    "a job's published state with dbt's static docs (static_index.html), copied beside "
    "the report as docs.html (default: the target directory's)",
    required=False,
)
@option("--rebuild", is_flag=True, help="rebuild the monitoring views (after changing them)")
@summary_option("also write the report's headline here (Markdown)")
@pass_engine
def report_command(
    engine: Engine,
    out: str,
    artifacts: str | None,
    rebuild: bool,
    summary: str | None,
) -> int:
    """the morning report: one static HTML page over the target's run history"""
    from mediapulse.core.markdown import write_summary

    project, target = engine.project, engine.target
    from mediapulse.monitoring import report as morning_report

    project.check_target(target)
    artifacts_dir = Path(artifacts).resolve() if artifacts else None
    _, lines, data = morning_report.write(
        engine, Path(out).resolve(), artifacts_dir, rebuild=rebuild
    )
    print("\n".join(lines))
    write_summary(morning_report.summary_markdown(data), Path(summary) if summary else None)
    return 0


@command("alert", exclusive=[("--job", "--run-id")])
@target_option(PROD_ROLE)
@option(
    "--job",
    type=click.Choice(JOBS),
    help="alert for this job's latest run (default: the latest run of any job)",
)
@option("--run-id", help="alert for this run (dbt's invocation id)")
@option(
    "--within",
    type=POSITIVE_FLOAT,
    metavar="MINUTES",
    help="the run must have started this recently, else the job recorded none (CI: the "
    "job's timeout)",
)
@option(
    "--job-failed",
    is_flag=True,
    help="the CI job failed: alert even when its run is healthy or was never recorded",
)
@option(
    "--timeout",
    type=POSITIVE_FLOAT,
    metavar="SECONDS",
    help="how long to wait for the webhook (default: $MEDIAPULSE_ALERT_TIMEOUT_S or 5)",
)
@option("--dry-run", is_flag=True, help="print the payload, send nothing")
@summary_option()
@pass_engine
def alert_command(
    engine: Engine,
    job: str | None,
    run_id: str | None,
    within: float | None,
    job_failed: bool,
    timeout: float | None,
    dry_run: bool,
    summary: str | None,
) -> int:
    """one message for a failed or degraded run, page or ticket, to its owners' webhook
    (exits 0 whatever the webhook does)"""
    from mediapulse.monitoring.alerts import run_alert

    return run_alert(
        engine, job=job, run_id=run_id,
        summary=Path(summary) if summary else None, dry_run=dry_run,
        timeout=timeout, within_min=within, job_failed=job_failed,
    )  # fmt: skip


@command("keep-diff")
@target_option(PROD_ROLE)
@option(
    "--diff",
    metavar="PATH",
    help="the pull request's `mediapulse diff --json` file; missing: kept as no diff known",
)
@option("--pull-request", metavar="NUMBER", help="the merged pull request's number")
@option(
    "--commit-message-env",
    metavar="NAME",
    help="find the pull request in the merge commit's message held in this variable",
)
@option("--release-id", help="the release to keep it with (default: the latest deploy's)")
@option(
    "--print-pull-request",
    is_flag=True,
    help="only print `pull_request=<number>`, also appended to the file $GITHUB_OUTPUT names "
    "(a step's output on GitHub Actions); keep nothing",
)
@pass_engine
def keep_diff_command(
    engine: Engine,
    diff: str | None,
    pull_request: str | None,
    commit_message_env: str | None,
    release_id: str | None,
    print_pull_request: bool,
) -> int:
    """keep a merged pull request's data diff with the release that deployed it, for the
    alerts that name the change behind an anomaly"""
    import os

    from mediapulse.monitoring import changes

    if pull_request is None and commit_message_env:
        pull_request = changes.merged_pull_request(os.environ.get(commit_message_env, ""))
    if print_pull_request:
        line = f"pull_request={pull_request or ''}"
        print(line)
        output = os.environ.get("GITHUB_OUTPUT")
        if output:  # the step's output, for the next steps (no shell redirection in a step)
            with open(output, "a", encoding="utf-8") as handle:
                handle.write(line + "\n")
        return 0
    print(changes.keep(engine, Path(diff) if diff else None, pull_request, release_id))
    return 0


@command("notify")
@option(
    "--webhook-env",
    default="MEDIAPULSE_WEBHOOK_URL",
    help="environment variable holding the webhook URL; unset: do nothing",
)
@option("--title", required=True, help="what ran, e.g. 'Nightly full refresh'")
@option("--status", required=True, type=click.Choice(["failure", "success", "cancelled"]))
@summary_option("Markdown report to include")
@pass_project
def notify_command(
    project: Project, webhook_env: str, title: str, status: str, summary: str | None
) -> int:
    """post a job's outcome to the chat webhook held in a secret"""
    from mediapulse.monitoring.notify import notify

    summary_path = Path(summary) if summary else None
    print(notify(webhook_env, title, status, summary_path))
    return 0


@command("access-sql")
@target_option(PROD_ROLE)
@pass_engine
def access_sql_command(engine: Engine) -> int:
    """print the SQL a PostgreSQL database owner runs once (safe again) for the MediaPulse
    roles"""
    from mediapulse.security.pg_access import access_sql

    print(access_sql(engine), end="")
    return 0


COMMANDS = [
    load_raw_command,
    unseal_raw_command,
    seal_raw_command,
    mask_raw_command,
    record_command,
    report_command,
    alert_command,
    keep_diff_command,
    notify_command,
    access_sql_command,
]
