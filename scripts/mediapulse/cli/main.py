"""The `mediapulse` command: parses arguments, calls one command module, maps errors to exit codes.

Exit codes: 0 success; 1 the job ran and found a problem (a failing test, a violation);
2 bad usage or an expected error that stopped the job (the message says what to fix).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from datetime import date
from pathlib import Path

from mediapulse import __version__
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project

Handler = Callable[[argparse.Namespace, Project], int]


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the command and pointing at --help."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than zero")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text!r} must be greater than zero")
    return value


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date like 2026-01-31") from None


# -- command handlers: each imports its module lazily so `--help` stays fast -----------------


def _cmd_deps(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.dbt import deps

    if args.lock:
        path = deps.write_lock(project, deps.mirror_dir())
        print(f"wrote {path}")
        return 0
    report = deps.install(project, deps.Source(args.source), force=not args.if_needed)
    print(report.summary())
    return 0


def _cmd_generate(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.data import generate

    out = Path(args.out) if args.out else project.raw_path
    if args.append_day:
        summary = generate.append_day(out, faults=args.fault, event_copies=args.event_copies)
    elif args.event_copies != 1:
        raise MediaPulseError("--event-copies applies to --append-day only")
    else:
        params = generate.Params(
            seed=args.seed,
            users=args.users,
            days=args.days,
            events_per_user_day=args.events_per_user,
            start_date=args.start_date or generate.default_start_date(args.days),
        )
        summary = generate.generate(out, params, faults=args.fault, overwrite=args.force)
    print(summary)
    return 0


def _cmd_build(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.develop import build

    return build.main_job(
        project,
        target=args.target,
        full_refresh=args.full_refresh,
        select=args.select,
        sample=args.sample,
    )


def _cmd_load_raw(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.engines.base import Capability
    from mediapulse.engines.targets import resolve
    from mediapulse.jobs import prepare

    engine = resolve(project, args.target)
    if engine.embedded:
        print(
            f"target '{args.target}' is DuckDB: it attaches {project.raw_path} read-only, "
            "nothing to load (`mediapulse generate` writes that file)"
        )
        return 0
    prepare.ensure_raw_data(project)
    if not engine.can(Capability.LOADER_SCHEMAS):  # a local Spark session's catalog
        from mediapulse.data import sparkload
        from mediapulse.dbt import deps

        deps.install(project, force=False)  # dbt registers the tables: it parses the project
        print(sparkload.load_raw(project, args.target))
        return 0
    from mediapulse.data.rawload import load_raw

    print(load_raw(project, args.target))
    return 0


def _cmd_access_sql(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.security.pg_access import access_sql

    print(access_sql(project, args.target), end="")
    return 0


def _cmd_drop_ci_schemas(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.security.pg_access import drop_ci_schemas

    print(drop_ci_schemas(project, args.target))
    return 0


def _cmd_nightly(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.release.execute import check_artifacts_dir, run_nightly

    artifacts_dir = check_artifacts_dir(Path(args.artifacts).resolve())
    summary = Path(args.summary) if args.summary else None
    return run_nightly(project, args.target, artifacts_dir, summary, start_over=args.start_over)


def _cmd_deploy(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.release.execute import check_artifacts_dir, run_deploy

    artifacts_dir = check_artifacts_dir(Path(args.artifacts).resolve())
    summary = Path(args.summary) if args.summary else None
    return run_deploy(project, args.target, artifacts_dir, summary, start_over=args.start_over)


def _cmd_refresh(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.release.execute import check_artifacts_dir, run_refresh

    artifacts_dir = check_artifacts_dir(Path(args.artifacts).resolve())
    summary = Path(args.summary) if args.summary else None
    return run_refresh(project, args.target, artifacts_dir, summary)


def _cmd_rollback(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.release.execute import check_artifacts_dir, rollback

    state_dir = check_artifacts_dir(Path(args.artifacts).resolve())
    print(rollback(project, args.target, state_dir, to=args.to or None))
    print(f"its state is in {state_dir}, for slim CI")
    return 0


def _cmd_releases(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.release.execute import list_releases

    print(list_releases(project, args.target))
    return 0


def _cmd_unseal_raw(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.security.raw_artifacts import unseal_raw

    print(unseal_raw(project, args.target))
    return 0


def _cmd_seal_raw(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.security.raw_artifacts import seal_raw

    print(seal_raw(project, args.target))
    return 0


def _cmd_mask_raw(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.security.raw_artifacts import mask_raw

    print(mask_raw(project, args.target, Path(args.out).resolve()))
    return 0


def _cmd_record(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.monitoring.history import record_artifacts

    print(record_artifacts(project, args.target, args.job, Path(args.artifacts).resolve()))
    return 0


def _cmd_report(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.core.markdown import write_summary
    from mediapulse.monitoring import report as morning_report

    project.check_target(args.target)
    artifacts_dir = Path(args.artifacts).resolve() if args.artifacts else None
    _, lines, data = morning_report.write(
        project, args.target, Path(args.out).resolve(), artifacts_dir, rebuild=args.rebuild
    )
    print("\n".join(lines))
    write_summary(
        morning_report.summary_markdown(data), Path(args.summary) if args.summary else None
    )
    return 0


def _cmd_notify(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.monitoring.notify import notify

    summary = Path(args.summary) if args.summary else None
    print(notify(args.webhook_env, args.title, args.status, summary))
    return 0


def _cmd_alert(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.monitoring.alerts import run_alert

    return run_alert(
        project, args.target, job=args.job, run_id=args.run_id,
        summary=Path(args.summary) if args.summary else None, dry_run=args.dry_run,
        timeout=args.timeout, within_min=args.within, job_failed=args.job_failed,
    )  # fmt: skip


def _cmd_summarize(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.ci.summarize import write_combined

    out = write_combined(args.title, [Path(p) for p in args.inputs], Path(args.out))
    print(f"wrote {out}")
    return 0


def _cmd_slim_ci(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.ci.slim_ci import run_slim_ci

    return run_slim_ci(
        project,
        state_dir=Path(args.state).resolve() if args.state else None,
        target=args.target,
        select=args.select,
        prod_warehouse=Path(args.prod_warehouse).resolve() if args.prod_warehouse else None,
        summary=Path(args.summary) if args.summary else None,
    )


def _cmd_diff(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.ci.datadiff import run_diff

    return run_diff(
        project,
        target=args.target,
        state_dir=Path(args.state).resolve() if args.state else None,
        prod_warehouse=Path(args.prod_warehouse).resolve() if args.prod_warehouse else None,
        summary=Path(args.summary) if args.summary else None,
        max_chars=args.max_chars,
        json_out=Path(args.json) if args.json else None,
    )


def _cmd_evaluate(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.ci.evaluate import run_evaluate

    return run_evaluate(
        project,
        target=args.target,
        json_path=Path(args.json) if args.json else project.target_dir / "evaluator.json",
        markdown_path=Path(args.markdown) if args.markdown else None,
        baseline_path=Path(args.baseline) if args.baseline else None,
    )


def _cmd_codegen(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.ci.codegen import run_codegen

    markdown = Path(args.markdown) if args.markdown else None
    return run_codegen(
        project, target=args.target, check=args.check, dry_run=args.dry_run, markdown=markdown
    )


def _cmd_bench(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.bench.run import check_scale, run_bench

    out = Path(args.out)
    return run_bench(
        project,
        events=check_scale(args.scale),
        days=args.days,
        runs=args.runs,
        work=Path(args.work_dir).resolve(),
        out_json=out,
        out_markdown=Path(args.markdown) if args.markdown else out.with_suffix(".md"),
    )


def _cmd_query(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.develop.query import run_query

    print(run_query(project, args.target, args.sql, max_rows=args.max_rows))
    return 0


def _cmd_lint_sql(args: argparse.Namespace, project: Project) -> int:
    from mediapulse.ci.lint_sql import lint_sql

    return lint_sql(project, args.paths, fix=args.fix)


# -- parser ------------------------------------------------------------------------------------


# Where a command's --target comes from when not given: CI sets these from repository
# variables, so a workflow step never spells the target (DuckDB targets are the default).
TARGET_ENVS = {
    "dev": "MEDIAPULSE_TARGET",
    "prod": "MEDIAPULSE_PROD_TARGET",
    "ci": "MEDIAPULSE_CI_TARGET",
}


def _release_arguments(parser: argparse.ArgumentParser, start_over: bool = True) -> None:
    """What the releases share: they build production and publish its state."""
    _target_argument(parser, default="prod")
    parser.add_argument(
        "--artifacts", required=True, help="directory to write the production state to"
    )
    parser.add_argument(
        "--summary", help="Markdown report path (default: $GITHUB_STEP_SUMMARY when set)"
    )
    if not start_over:  # a refresh adds to production: there is nothing to start over
        return
    parser.add_argument(
        "--start-over",
        action="store_true",
        help="build production from empty although its state says it exists (its warehouse "
        "file was lost): snapshot history starts again",
    )


def _target_argument(parser: argparse.ArgumentParser, default: str = "dev") -> None:
    env = TARGET_ENVS[default]
    parser.add_argument(
        "--target",
        default=os.environ.get(env) or default,
        help=f"dbt target from profiles/profiles.yml (default: ${env} or {default})",
    )


def build_parser() -> argparse.ArgumentParser:
    from mediapulse.data.faults import FAULTS

    parser = _Parser(
        prog="mediapulse",
        description="MediaPulse tooling: generate data, install dbt packages, run the dbt jobs.",
    )
    parser.add_argument("--version", action="version", version=f"mediapulse {__version__}")
    parser.add_argument(
        "--project-dir",
        help="the MediaPulse checkout (default: found from the current directory)",
    )
    parser.add_argument(
        "--warehouse-dir",
        help="where the DuckDB files live (default: $MEDIAPULSE_WAREHOUSE_DIR or ./warehouse)",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, handler: Handler, help_text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=help_text, description=help_text)
        sub.set_defaults(handler=handler)
        return sub

    deps_p = command("deps", _cmd_deps, "install the pinned dbt packages (hub, or mirror offline)")
    deps_p.add_argument(
        "--source",
        choices=["auto", "hub", "mirror"],
        default="auto",
        help="auto: the hub when it answers, else the mirror $DBT_PACKAGES_MIRROR (default)",
    )
    deps_p.add_argument(
        "--if-needed",
        action="store_true",
        help="do nothing when exactly the pinned versions are already installed",
    )
    deps_p.add_argument(
        "--lock",
        action="store_true",
        help="rewrite package-lock.yml from packages.yml (names read from the mirror)",
    )

    gen = command("generate", _cmd_generate, "write (or extend) the raw source data")
    gen.add_argument("--seed", type=int, default=42, help="random seed (default: 42)")
    gen.add_argument("--users", type=_positive_int, default=2_000, help="accounts (default: 2000)")
    gen.add_argument("--days", type=_positive_int, default=30, help="days of events (default: 30)")
    gen.add_argument(
        "--events-per-user",
        type=_positive_float,
        default=12.0,
        help="mean watch events per account per day (default: 12)",
    )
    gen.add_argument(
        "--start-date",
        type=_iso_date,
        help="first day of events (default: so that the last day is yesterday, UTC)",
    )
    gen.add_argument(
        "--append-day",
        action="store_true",
        help="add the next day to an existing data set (and the late events it brings)",
    )
    gen.add_argument(
        "--event-copies",
        type=int,
        default=1,
        metavar="N",
        help="with --append-day: each watch event of the day is delivered N times (0: the "
        "day's events are lost; 10: a loader replaying its batch): volume anomalies",
    )
    gen.add_argument(
        "--fault",
        action="append",
        default=[],
        choices=sorted(FAULTS),
        metavar="NAME",
        help=f"inject a named fault (repeatable): {', '.join(sorted(FAULTS))}",
    )
    gen.add_argument("--out", help="raw DuckDB file (default: <warehouse-dir>/raw.duckdb)")
    gen.add_argument("--force", action="store_true", help="replace an existing data set")

    build_p = command(
        "build", _cmd_build, "the main job: packages if needed, demo data if none, dbt build"
    )
    _target_argument(build_p)
    build_p.add_argument("--full-refresh", action="store_true", help="rebuild incremental models")
    build_p.add_argument("--select", help="dbt node selection (default: the whole project)")
    build_p.add_argument(
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

    load_p = command(
        "load-raw",
        _cmd_load_raw,
        "load the demo raw data set into a server target (never a table it did not create)",
    )
    _target_argument(load_p)

    access_p = command(
        "access-sql",
        _cmd_access_sql,
        "print the SQL a PostgreSQL database owner runs once (safe again) for the MediaPulse roles",
    )
    _target_argument(access_p, default="prod")

    drop_ci_p = command(
        "drop-ci-schemas",
        _cmd_drop_ci_schemas,
        "drop this CI run's schemas on a PostgreSQL CI target (the end of a pull-request job), "
        "and lost runs' older than $MEDIAPULSE_CI_SCHEMA_MAX_AGE_HOURS",
    )
    _target_argument(drop_ci_p, default="ci")

    eval_p = command(
        "evaluate",
        _cmd_evaluate,
        "run dbt-project-evaluator and report violations by category and rule",
    )
    _target_argument(eval_p)
    eval_p.add_argument("--json", help="JSON report path (default: target/evaluator.json)")
    eval_p.add_argument(
        "--markdown", help="Markdown report path (default: $GITHUB_STEP_SUMMARY when set)"
    )
    eval_p.add_argument(
        "--baseline",
        help="a previous --json report (e.g. of main): only violations not in it fail; "
        "a missing file (first run) means no baseline",
    )

    codegen_p = command(
        "codegen",
        _cmd_codegen,
        "write YAML for undocumented sources, models and columns with dbt-codegen",
    )
    _target_argument(codegen_p)
    mode = codegen_p.add_mutually_exclusive_group()
    mode.add_argument(
        "--check", action="store_true", help="change nothing; exit 1 listing what is missing"
    )
    mode.add_argument("--dry-run", action="store_true", help="print the diff, change nothing")
    codegen_p.add_argument("--markdown", help="also write the findings as Markdown here")

    nightly_p = command(
        "nightly",
        _cmd_nightly,
        "full refresh of production, freshness, tests, docs; publish the state slim CI reads",
    )
    _release_arguments(nightly_p)

    deploy_p = command(
        "deploy",
        _cmd_deploy,
        "build production from this checkout with every test; swap it in only if all pass",
    )
    _release_arguments(deploy_p)

    refresh_p = command(
        "refresh",
        _cmd_refresh,
        "add the raw rows loaded since the live release (incremental models, their tests on "
        "the new rows); release it like any other change, or do nothing if nothing is new",
    )
    _release_arguments(refresh_p, start_over=False)

    rollback_p = command(
        "rollback",
        _cmd_rollback,
        "put back a kept release (by default the newest built from other code than the live "
        "one) and the state it published",
    )
    _target_argument(rollback_p, default="prod")
    rollback_p.add_argument(
        "--artifacts",
        required=True,
        help="the production state directory releases publish to (rewritten to the restored "
        "release's state)",
    )
    rollback_p.add_argument(
        "--to",
        metavar="RELEASE_ID",
        help="the kept release to restore (`mediapulse releases` lists them; empty: the default)",
    )

    releases_p = command(
        "releases",
        _cmd_releases,
        "list the live release and the ones kept for a rollback, newest first",
    )
    _target_argument(releases_p, default="prod")

    unseal_p = command(
        "unseal-raw",
        _cmd_unseal_raw,
        "open the sealed raw data production's jobs download (<warehouse-dir>/raw.duckdb.sealed, "
        "key in $MEDIAPULSE_RAW_ARTIFACT_KEY) into raw.duckdb; DuckDB targets only",
    )
    _target_argument(unseal_p, default="prod")
    seal_p = command(
        "seal-raw",
        _cmd_seal_raw,
        "seal raw.duckdb (AES-256-GCM, key in $MEDIAPULSE_RAW_ARTIFACT_KEY) into "
        "raw.duckdb.sealed, the only form it travels in as an artifact; DuckDB targets only",
    )
    _target_argument(seal_p, default="prod")
    mask_p = command(
        "mask-raw",
        _cmd_mask_raw,
        "write the copy of raw.duckdb pull requests read: every personal column masked "
        "(docs/personal-data.md); DuckDB targets only",
    )
    _target_argument(mask_p, default="prod")
    mask_p.add_argument("--out", required=True, help="the masked raw.duckdb to write")

    record_p = command(
        "record",
        _cmd_record,
        "load a job's dbt artifacts into the target's run history (again: it changes nothing)",
    )
    _target_argument(record_p, default="prod")
    record_p.add_argument("--artifacts", required=True, help="the directory with run_results.json")
    record_p.add_argument(
        "--job", required=True, choices=["nightly", "deploy", "refresh", "build", "slim-ci"]
    )

    report_p = command(
        "report",
        _cmd_report,
        "the morning report: one static HTML page over the target's run history",
    )
    _target_argument(report_p, default="prod")
    report_p.add_argument(
        "--out", default="report", help="directory for index.html (default: report)"
    )
    report_p.add_argument(
        "--artifacts",
        help="a job's published state with dbt's static docs (static_index.html), copied beside "
        "the report as docs.html (default: the target directory's)",
    )
    report_p.add_argument(
        "--rebuild", action="store_true", help="rebuild the monitoring views (after changing them)"
    )
    report_p.add_argument("--summary", help="also write the report's headline here (Markdown)")

    notify_p = command(
        "notify", _cmd_notify, "post a job's outcome to the chat webhook held in a secret"
    )
    notify_p.add_argument(
        "--webhook-env",
        default="MEDIAPULSE_WEBHOOK_URL",
        help="environment variable holding the webhook URL; unset: do nothing",
    )
    notify_p.add_argument("--title", required=True, help="what ran, e.g. 'Nightly full refresh'")
    notify_p.add_argument("--status", required=True, choices=["failure", "success", "cancelled"])
    notify_p.add_argument("--summary", help="Markdown report to include")

    alert_p = command(
        "alert",
        _cmd_alert,
        "one message for a failed or degraded run, page or ticket, to its owners' webhook "
        "(exits 0 whatever the webhook does)",
    )
    _target_argument(alert_p, default="prod")
    which = alert_p.add_mutually_exclusive_group()
    which.add_argument(
        "--job",
        choices=["nightly", "deploy", "refresh", "build", "slim-ci"],
        help="alert for this job's latest run (default: the latest run of any job)",
    )
    which.add_argument("--run-id", help="alert for this run (dbt's invocation id)")
    alert_p.add_argument(
        "--within",
        type=_positive_float,
        metavar="MINUTES",
        help="the run must have started this recently, else the job recorded none (CI: the "
        "job's timeout)",
    )
    alert_p.add_argument(
        "--job-failed",
        action="store_true",
        help="the CI job failed: alert even when its run is healthy or was never recorded",
    )
    alert_p.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="SECONDS",
        help="how long to wait for the webhook (default: $MEDIAPULSE_ALERT_TIMEOUT_S or 5)",
    )
    alert_p.add_argument("--dry-run", action="store_true", help="print the payload, send nothing")
    alert_p.add_argument(
        "--summary", help="Markdown report path (default: $GITHUB_STEP_SUMMARY when set)"
    )

    summarize_p = command(
        "summarize", _cmd_summarize, "combine the CI steps' Markdown reports into one"
    )
    summarize_p.add_argument("--title", default="MediaPulse CI", help="the report's heading")
    summarize_p.add_argument("--out", required=True, help="where to write the combined report")
    summarize_p.add_argument("inputs", nargs="+", help="Markdown reports, in order")

    slim_p = command(
        "slim-ci",
        _cmd_slim_ci,
        "build and test only what changed (state:modified+), deferring the rest to production",
    )
    _target_argument(slim_p, default="ci")
    slim_p.add_argument(
        "--state",
        help="production artifacts (from `nightly --artifacts`); none or empty: full build",
    )
    slim_p.add_argument("--select", help="dbt selection (default: state:modified+)")
    slim_p.add_argument(
        "--prod-warehouse",
        help="production DuckDB file to defer to (default: <warehouse-dir>/prod.duckdb)",
    )
    slim_p.add_argument(
        "--summary", help="Markdown report path (default: $GITHUB_STEP_SUMMARY when set)"
    )

    diff_p = command(
        "diff",
        _cmd_diff,
        "after slim-ci: compare every model it built with production (schema, rows, values)",
    )
    _target_argument(diff_p, default="ci")
    diff_p.add_argument(
        "--state", help="production artifacts (default: the state slim-ci compared with)"
    )
    diff_p.add_argument(
        "--prod-warehouse",
        help="production DuckDB file (default: <warehouse-dir>/prod.duckdb)",
    )
    diff_p.add_argument(
        "--summary", help="Markdown report path (default: $GITHUB_STEP_SUMMARY when set)"
    )
    diff_p.add_argument(
        "--max-chars",
        type=_positive_int,
        default=40_000,
        help="longest report (default 40000: a PR comment holds 65536 characters)",
    )
    diff_p.add_argument("--json", help="also write every model's diff as JSON here")

    bench_p = command(
        "bench",
        _cmd_bench,
        "measure full, incremental and slim-CI builds side by side; write a report",
    )
    bench_p.add_argument(
        "--scale", default="10M", help="watch events: 1M, 10M (default), 50M or a number"
    )
    bench_p.add_argument("--days", type=_positive_int, default=90, help="days (default: 90)")
    bench_p.add_argument(
        "--runs", type=_positive_int, default=3, help="repetitions per measurement (default: 3)"
    )
    bench_p.add_argument(
        "--work-dir", default="bench/work", help="throwaway project copy and warehouse"
    )
    bench_p.add_argument("--out", default="bench/results.json", help="JSON report")
    bench_p.add_argument("--markdown", help="Markdown report (default: beside --out, .md)")

    query_p = command("query", _cmd_query, "run read-only SQL on a DuckDB target's warehouse")
    _target_argument(query_p)
    query_p.add_argument("sql", help="the SQL to run; raw data is attached as catalog `raw`")
    query_p.add_argument("--max-rows", type=_positive_int, default=50, help="rows to print")

    lint_p = command(
        "lint-sql",
        _cmd_lint_sql,
        "sqlfluff on the SQL as dbt renders it, a full refresh and an incremental run (the "
        "rules: .sqlfluff), and line lengths as written",
    )
    lint_p.add_argument(
        "paths",
        nargs="*",
        help="files or directories (default: models, tests, snapshots, macros, analyses)",
    )
    lint_p.add_argument("--fix", action="store_true", help="rewrite the files to the rules")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        project = Project.discover(args.project_dir, args.warehouse_dir)
        return int(args.handler(args, project))
    except MediaPulseError as exc:
        print(f"mediapulse {args.command}: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except BrokenPipeError:  # output piped into `head` and the like: not an error
        sys.stderr.close()
        return 0
    except KeyboardInterrupt:
        print(f"mediapulse {args.command}: interrupted", file=sys.stderr)
        return 130
