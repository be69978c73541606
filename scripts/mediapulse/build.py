"""`mediapulse build`: the main job, on a developer's own target: `dbt build` after the
preparation every job shares (`mediapulse.prepare`)."""

from __future__ import annotations

from mediapulse import artifacts
from mediapulse.errors import MediaPulseError
from mediapulse.prepare import check_duckdb_file, prepare, target_env
from mediapulse.project import Project
from mediapulse.runner import run_dbt

EXAMPLE_MODEL = "fct_daily_engagement"
FAILED = frozenset(artifacts.FAILED_STATUSES)
WARNED = frozenset({"warn"})


def report_failures(project: Project, statuses: frozenset[str] = FAILED) -> list[str]:
    """Print one line per node with one of ``statuses``: model, column and rule named."""
    lines = [
        r.describe() for r in artifacts.node_results(project.target_dir) if r.status in statuses
    ]
    for line in lines:
        print(f"  {line}")
    return lines


def main_job(
    project: Project, target: str, full_refresh: bool = False, select: str | None = None
) -> int:
    kind = prepare(project, target)
    env = target_env(project, target)
    if kind == "duckdb":
        check_duckdb_file(project.duckdb_path(target), f"build target '{target}'")
    args = ["build"]
    if full_refresh:
        args.append("--full-refresh")
    if select:
        args += ["--select", select]
    result = run_dbt(project, args, target=target, extra_env=env)
    if not result.success:
        print(f"\ndbt build on target '{target}' failed:")
        if not report_failures(project) and result.error:
            print(f"  {result.error}")
        return 1
    print(f"\ndbt build on target '{target}' passed in {result.elapsed_s:.0f} s.")
    if any(r.status == "warn" for r in artifacts.node_results(project.target_dir)):
        print("Warnings (signals, see docs/test-severity.md):")
        report_failures(project, WARNED)
    if kind == "duckdb":
        _print_where(project, target)
    return 0


def _print_where(project: Project, target: str) -> None:
    path = project.duckdb_path(target)
    try:
        relation = artifacts.relation_name(project.target_dir, EXAMPLE_MODEL)
    except MediaPulseError:
        return
    print(f"The warehouse is {path}")
    print("Try:")
    print(
        f'  .venv/bin/mediapulse query --target {target} "select activity_date, '
        f"count(*) as viewers, round(sum(watch_seconds) / 3600) as watch_hours "
        f'from {relation} group by 1 order by 1 desc limit 7"'
    )
