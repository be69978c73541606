"""`mediapulse build`: the main job, on a developer's own target: `dbt build` after the
preparation every job shares (`mediapulse.jobs.prepare`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.dbt import artifacts
from mediapulse.dbt.runner import run_dbt
from mediapulse.develop.sample import describe, parse_window
from mediapulse.engines.base import Capability, Engine
from mediapulse.engines.duckdb import duckdb_file, open_duckdb
from mediapulse.jobs.prepare import check_duckdb_file, prepare, target_env
from mediapulse.monitoring import history
from mediapulse.monitoring.schema_changes import SchemaChangeError
from mediapulse.release.execute import release_lock

if TYPE_CHECKING:
    from dbt.event_time.sample_window import SampleWindow

EXAMPLE_MODEL = "fct_daily_engagement"
FAILED = frozenset(artifacts.FAILED_STATUSES)
WARNED = frozenset({"warn"})


def check_sample(engine: Engine, window: str) -> SampleWindow:
    """Before any work: the window parses as dbt parses it and holds some time, and the
    target is a developer's own."""
    target = engine.target
    parsed = parse_window(window)
    # production's targets (Engine.role) are the release jobs' (nightly, deploy, refresh,
    # rollback): a sample is never built there
    if engine.is_production:
        raise MediaPulseError(
            f"--sample on target '{target}': that is production, which only the release jobs "
            "build (nightly, deploy, refresh) and always in full; build a sample on your own "
            "target (--target dev, the default)"
        )
    return parsed


def check_sample_has_events(project: Project, text: str, window: SampleWindow) -> None:
    """A window that holds no watch events builds empty facts, on which every test passes
    and proves nothing: stop before dbt runs, with the range the data covers."""
    with open_duckdb(project.raw_path, "check the --sample window", read_only=True) as con:
        inside, first, last = con.execute(
            "select count(*) filter (where event_ts >= ? and event_ts < ?), "
            "min(event_ts), max(event_ts) from streaming.watch_events",
            [window.start.replace(tzinfo=None), window.end.replace(tzinfo=None)],
        ).fetchone()
    if not inside:
        raise MediaPulseError(
            f"--sample {text!r}: no watch events in {describe(window)} (the raw data has "
            f"{first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M}); widen the window or pass an "
            "absolute one inside that range"
            if first
            else f"--sample {text!r}: the raw data holds no watch events at all"
        )


def sample_marker(engine: Engine) -> Path:
    """Present while the target's incremental models may hold a sample: written before a
    sample build, removed by the next complete build, which rebuilds them in full."""
    project, target = engine.project, engine.target
    return project.warehouse_dir / f"{target}.sample.json"


def report_failures(project: Project, statuses: frozenset[str] = FAILED) -> list[str]:
    """Print one line per node with one of ``statuses``: model, column and rule named."""
    lines = [
        r.describe() for r in artifacts.node_results(project.target_dir) if r.status in statuses
    ]
    for line in lines:
        print(f"  {line}")
    return lines


def main_job(
    engine: Engine,
    full_refresh: bool = False,
    select: str | None = None,
    sample: str | None = None,
) -> int:
    """`dbt build` on ``target``. With ``sample`` (a dbt --sample window), the sources and
    large models that configure `event_time` are read from the window only, and the
    incremental models are rebuilt (--full-refresh): the warehouse then holds the sample and
    nothing else, whatever an earlier build left in it."""
    target = engine.target
    window = check_sample(engine, sample) if sample is not None else None
    clock = history.Job("build", target)
    try:
        engine = prepare(engine)
    except SchemaChangeError:
        # stopped before any model ran: a failed run all the same, with what the check found
        history.record_job(engine, clock, False, None)
        raise
    if engine.is_production and engine.can(Capability.STAGED_RELEASES):
        # production built in place: never while a release (or another build) runs on it
        with release_lock(engine, "build"):
            return _build(engine, clock, full_refresh, select, sample, window)
    return _build(engine, clock, full_refresh, select, sample, window)


def _build(
    engine: Engine,
    clock: history.Job,
    full_refresh: bool,
    select: str | None,
    sample: str | None,
    window: SampleWindow | None,
) -> int:
    project, target = engine.project, engine.target
    env = target_env(engine)
    if engine.embedded:
        check_duckdb_file(duckdb_file(project, target), f"build target '{target}'")
    marker = sample_marker(engine)
    args = ["build"]
    if window is not None:
        if engine.embedded:
            check_sample_has_events(project, str(sample), window)
        # Every incremental model starts over: an incremental run would add the window's new
        # loads to whatever the target held (a whole history, an older sample), not replace it.
        args += ["--full-refresh", "--sample", str(sample)]
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(json.dumps({"sample": sample, "window": describe(window)}) + "\n")
        print(f"sample: {describe(window)} (dbt --sample {sample!r}; incremental models rebuilt)")
    elif full_refresh:
        args.append("--full-refresh")
    elif marker.exists():
        # The incremental models hold a sample: an incremental run would add the new loads to
        # it and the reconciliations with the (whole) views below would fail.
        args.append("--full-refresh")
        print(
            f"the last build on '{target}' was a sample: rebuilding the incremental models in "
            "full (--full-refresh)"
        )
    if select:
        args += ["--select", select]
    # what the history records is this build's, never an earlier one's
    (project.target_dir / "run_results.json").unlink(missing_ok=True)
    result = run_dbt(engine, args, extra_env=env)
    recorded = history.record_job(engine, clock, result.success, project.target_dir)
    if not result.success:
        print(f"\ndbt build on target '{target}' failed:")
        if not report_failures(project) and result.error:
            print(f"  {result.error}")
        print(recorded)
        return 1
    if window is None and not select:
        marker.unlink(missing_ok=True)  # every model was built from the whole data
    on_sample = f" on the sample {sample!r}" if window else ""
    print(f"\ndbt build on target '{target}'{on_sample} passed in {result.elapsed_s:.0f} s.")
    if any(r.status == "warn" for r in artifacts.node_results(project.target_dir)):
        print("Warnings (signals, see docs/test-severity.md):")
        report_failures(project, WARNED)
    print(recorded)
    if engine.embedded:
        _print_where(engine)
    return 0


def _print_where(engine: Engine) -> None:
    project, target = engine.project, engine.target
    path = duckdb_file(project, target)
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
