"""Tooling: the dbt packages the project pins, and the benchmark.

Each command imports the room it runs inside its function, for start-up time: DuckDB, dbt
and the rooms take most of a second to load, `mediapulse --help` a tenth.
"""

from __future__ import annotations

from pathlib import Path

import click

from mediapulse.cli.options import POSITIVE_INT, command, option, pass_project
from mediapulse.core.project import Project


@command("deps")
@option(
    "--source",
    type=click.Choice(["auto", "hub", "mirror"]),
    default="auto",
    help="auto: the hub when it answers, else the mirror $DBT_PACKAGES_MIRROR (default)",
)
@option(
    "--if-needed",
    is_flag=True,
    help="do nothing when exactly the pinned versions are already installed",
)
@option(
    "--lock",
    is_flag=True,
    help="rewrite package-lock.yml from packages.yml (names read from the mirror)",
)
@pass_project
def deps_command(project: Project, source: str, if_needed: bool, lock: bool) -> int:
    """install the pinned dbt packages (hub, or mirror offline)"""
    from mediapulse.dbt import deps

    if lock:
        path = deps.write_lock(project, deps.mirror_dir())
        print(f"wrote {path}")
        return 0
    report = deps.install(project, deps.Source(source), force=not if_needed)
    print(report.summary())
    return 0


@command("bench")
@option("--scale", default="10M", help="watch events: 1M, 10M (default), 50M or a number")
@option("--days", type=POSITIVE_INT, default=90, help="days (default: 90)")
@option("--runs", type=POSITIVE_INT, default=3, help="repetitions per measurement (default: 3)")
@option("--work-dir", default="bench/work", help="throwaway project copy and warehouse")
@option("--out", default="bench/results.json", help="JSON report")
@option("--markdown", help="Markdown report (default: beside --out, .md)")
@option(
    "--review",
    type=click.Choice(["both", "one-mart"]),
    default="both",
    help="time to review (the PR workflow's checks, minutes each): for a one-mart change and "
    "a staging change (default), or the one-mart change only",
)
@pass_project
def bench_command(
    project: Project,
    scale: str,
    days: int,
    runs: int,
    work_dir: str,
    out: str,
    markdown: str | None,
    review: str,
) -> int:
    """measure full, incremental and slim-CI builds side by side; write a report"""
    from mediapulse.bench.run import check_scale, run_bench

    out_path = Path(out)
    return run_bench(
        project,
        events=check_scale(scale),
        days=days,
        runs=runs,
        work=Path(work_dir).resolve(),
        out_json=out_path,
        out_markdown=Path(markdown) if markdown else out_path.with_suffix(".md"),
        review_staging=review == "both",
    )


COMMANDS = [deps_command, bench_command]
