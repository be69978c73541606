"""The benchmark's job measurements: whole `mediapulse` commands as users and the workflows
run them (a fresh process each: interpreter start-up, packages check, dbt's parse, the release's
staged copy and swap), each with dbt's own execution time beside its wall clock.

Measured on the benchmark's copy of the project and its warehouse, after `bench.run_bench` has
generated the data (`raw_before`) and appended a day (`raw_after`).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from mediapulse.bench.measures import Measure, Sample
from mediapulse.bench.orchestrators import CLI_NIGHTLY, orchestrated_nightlies, run_orchestrated
from mediapulse.bench.review import measure_review
from mediapulse.core.errors import MediaPulseError
from mediapulse.dbt import artifacts
from mediapulse.engines.duckdb import PRODUCTION
from mediapulse.engines.targets import resolve
from mediapulse.monitoring import history
from mediapulse.release.duckdb import KEPT_DIR

if TYPE_CHECKING:
    from mediapulse.bench.run import Bench

STAGED = re.compile(r"staged copy of production: ([\d.]+) s, ([\d,.]+) MiB")
PARSED = re.compile(
    r"dbt: (\d+) invocations in one process, the project parsed (\w+)(?: \([^)]*\))?"
)
RECORDED = re.compile(
    r"run history: run \S+ recorded \(\d+ nodes, \d+ relation sizes\) in [\d.]+ s"
)
# what a release prints the moment production serves it, and its report's line on the state
LIVE = re.compile(r"^release \S+: production live ([\d.]+) s after the job started", re.M)
STATE_PUBLISHED = re.compile(r"state published ([\d.]+) s after the job started")


def _elapsed(run_results: Path) -> float | None:
    if not run_results.exists():
        return None
    return float(artifacts.load_json(run_results, "run results").get("elapsed_time") or 0.0)


def _streamed(argv: list[str], env: dict[str, str]) -> tuple[int, str, float, float | None]:
    """Run ``argv``; (exit code, its output, wall seconds, seconds until it printed that
    production is live, if it did), timed from here as a user waiting on it would."""
    started = time.perf_counter()
    live_at = None
    lines = []
    with subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          text=True) as proc:  # fmt: skip
        assert proc.stdout is not None
        for line in proc.stdout:
            if live_at is None and LIVE.match(line):
                live_at = time.perf_counter() - started
            lines.append(line)
    return proc.returncode, "".join(lines), time.perf_counter() - started, live_at


def run_job(
    bench: Bench, name: str, argv: list[str], results: Path, before: Callable[[], None],
    live_as: str | None = None, runs: int | None = None,
) -> Measure:  # fmt: skip
    """``mediapulse <argv>`` ``runs`` times (default ``bench.runs``), each after ``before``,
    adding to the measure ``name`` if it has samples; exec is the dbt time recorded in
    ``results`` (the run_results.json the job leaves). ``live_as``: also measure, under that
    name, the wait until production served the release, and ``<live_as>_state`` until its state
    was published."""
    shown = " ".join(argv).replace(str(bench.work), "<work-dir>")
    measure = bench.measures.get(name) or Measure(name, f"mediapulse {shown}")
    live = bench.measures.get(str(live_as)) or Measure(
        str(live_as), f"mediapulse {shown}: until production serves the release"
    )
    state = bench.measures.get(f"{live_as}_state") or Measure(
        f"{live_as}_state", f"mediapulse {shown}: until its state is published"
    )
    env = {**os.environ, **bench.env}
    for _ in range(bench.runs if runs is None else runs):
        before()
        results.unlink(missing_ok=True)
        code, out, wall, live_at = _streamed(
            [sys.executable, "-m", "mediapulse", "--project-dir", str(bench.project.root), *argv],
            env,
        )  # fmt: skip
        if code != 0:
            tail = " | ".join(out.strip().splitlines()[-4:])
            raise MediaPulseError(f"benchmark step `mediapulse {shown}` failed: {tail}")
        measure.samples.append(Sample(wall, _elapsed(results), 0.0))
        if live_as:
            inside, published = LIVE.search(out), STATE_PUBLISHED.search(out)
            if live_at is None or inside is None or published is None:
                raise MediaPulseError(
                    f"benchmark step `mediapulse {shown}` said no moment production went live "
                    "or its state was published"
                )
            live.samples.append(Sample(live_at, None, 0.0))
            after_live = float(published[1]) - float(inside[1])  # the job's own clock
            state.samples.append(Sample(live_at + after_live, None, 0.0))
        found = (pattern.search(out) for pattern in (STAGED, PARSED, RECORDED))
        notes = [m.group(0) for m in found if m]
        bench.job_notes[name] = notes
        print(f"  {name}: {wall:.1f} s wall, dbt {measure.samples[-1].exec_s or 0:.1f} s; "
              + "; ".join(notes))  # fmt: skip
    bench.measures[name] = measure
    if live_as:
        bench.measures[live_as] = live
        bench.measures[state.name] = state
    return measure


def measure_jobs(bench: Bench, one_mart: str, event_staging: str | None) -> None:
    """nightly, refresh of the appended day, deploy of a one-mart change, slim CI of it; the
    PR workflow's checks (time to review) of that change and of one to ``event_staging``."""
    state = bench.work / "jobs-state"
    measure_nightlies(bench, state)
    live = bench.work / "jobs-live"  # production as the nightly left it: each job starts there
    shutil.rmtree(live, ignore_errors=True)
    live.mkdir()
    shutil.copy2(bench.file("prod.duckdb"), live / "prod.duckdb")
    shutil.copytree(state, live / "state")
    tables = measure_refresh_job(bench, state, live)
    undo = bench.edit(one_mart)
    try:
        measure_deploy_job(bench, state, live, tables)
        measure_slim_ci_job(bench, state, live)
    finally:
        undo()
    bench.measures["job_deploy_one_mart"].command += f" (after editing {one_mart})"
    bench.measures["job_slim_ci_one_mart"].command += f" (after editing {one_mart})"
    restore = _live_release(bench, state, live, "raw_before")
    for name, model in (("review_one_mart", one_mart), ("review_event_staging", event_staging)):
        if model is None:
            continue
        bench.review[name] = measure_review(bench, name, lambda m=model: bench.edit(m), state,
                                            restore)  # fmt: skip
        bench.measures[name].command += f" (after editing {model})"


def measure_nightlies(bench: Bench, state: Path) -> None:
    """The nightly on an empty production, from the data as generated (`raw_before`): the
    CLI's, and the same from Airflow and Dagster, taking turns sample by sample; production
    and its state are left as the CLI's last nightly published them."""

    def clean_production() -> None:
        bench.restore("raw_before")()
        bench.file("prod.duckdb").unlink(missing_ok=True)
        shutil.rmtree(bench.file(KEPT_DIR), ignore_errors=True)
        shutil.rmtree(state, ignore_errors=True)
        # and its run history: a history that records a production which is not here makes
        # a nightly refuse to start over silently (release/checks.py)
        history.duckdb_path(resolve(bench.project, PRODUCTION)).unlink(missing_ok=True)

    def fresh_runner() -> None:
        # the CLI's on a new runner: no target directory. (A scheduler draws its DAG from a
        # manifest before the first release: the orchestrators' keep the checkout's.)
        clean_production()
        shutil.rmtree(bench.project.target_dir, ignore_errors=True)

    nightly = ["nightly", "--target", PRODUCTION, "--artifacts", str(state)]
    saved = bench.work / CLI_NIGHTLY
    for turn in range(bench.runs):
        run_job(bench, "job_nightly", nightly, state / "run_results.json", fresh_runner,
                runs=1)  # fmt: skip
        if turn == 0:  # set up after the CLI's first sample, which keeps the report's order
            orchestrated = orchestrated_nightlies(bench, state)
        bench.save(CLI_NIGHTLY, "prod.duckdb")  # the CLI's production, and its state
        shutil.rmtree(saved / "state", ignore_errors=True)
        shutil.copytree(state, saved / "state")
        tables = bench.built_tables() if turn == bench.runs - 1 else None
        for job in orchestrated:
            run_orchestrated(bench, job, state, clean_production, tables)
    shutil.copy2(saved / "prod.duckdb", bench.file("prod.duckdb"))
    shutil.rmtree(state)
    shutil.copytree(saved / "state", state)


def _live_release(bench: Bench, state: Path, live: Path, raw: str) -> Callable[[], None]:
    """A job's `before`: production and its state as the nightly left them (``live``), over
    the raw data saved as ``raw``, on a new runner."""

    def restore() -> None:
        bench.restore(raw)()
        # a new runner: no target directory (no saved parse but the one the state publishes)
        shutil.rmtree(bench.project.target_dir, ignore_errors=True)
        shutil.rmtree(bench.file(KEPT_DIR), ignore_errors=True)
        shutil.copy2(live / "prod.duckdb", bench.file("prod.duckdb"))
        shutil.rmtree(state, ignore_errors=True)
        shutil.copytree(live / "state", state)

    return restore


def measure_refresh_job(bench: Bench, state: Path, live: Path) -> list[str]:
    """The refresh of the appended day; checked: what it published equals a full build of the
    same raw data (the one the incremental measurement was checked against). Returns the
    project's tables."""
    refresh = ["refresh", "--target", PRODUCTION, "--artifacts", str(state)]
    run_job(bench, "job_refresh", refresh, state / "run_results.json",
            _live_release(bench, state, live, "raw_after"), live_as="load_to_live")  # fmt: skip
    tables = bench.built_tables()
    bench.compare("mediapulse refresh == full refresh",
                  [(f"refreshed.{t}", f"rebuilt.{t}") for t in tables],
                  {"refreshed": bench.file("prod.duckdb"),
                   "rebuilt": bench.work / "full_after" / "prod.duckdb"})  # fmt: skip
    return tables


def measure_deploy_job(bench: Bench, state: Path, live: Path, tables: list[str]) -> None:
    """The deploy of a one-mart change (made by the caller); checked: the release it made
    holds what the one it replaced held (the edit changes no result)."""
    deploy = ["deploy", "--target", PRODUCTION, "--artifacts", str(state)]
    run_job(bench, "job_deploy_one_mart", deploy, state / "run_results.json",
            _live_release(bench, state, live, "raw_before"),
            live_as="merge_to_live_one_mart")  # fmt: skip
    bench.compare("deploy of one mart == the release it replaced",
                  [(f"deployed.{t}", f"live.{t}") for t in tables],
                  {"deployed": bench.file("prod.duckdb"), "live": live / "prod.duckdb",
                   "raw": bench.project.raw_path})  # fmt: skip


def measure_slim_ci_job(bench: Bench, state: Path, live: Path) -> None:
    """Slim CI of the one-mart change (made by the caller) against the live production."""
    _live_release(bench, state, live, "raw_before")()
    slim = ["slim-ci", "--target", "ci", "--state", str(state)]
    fresh_ci = bench.fresh("ci.duckdb")

    def fresh_runner() -> None:
        # a pull request's runner: no CI warehouse, and no saved parse of its own (slim
        # CI starts from the one production published)
        fresh_ci()
        (bench.project.target_dir / "partial_parse.msgpack").unlink(missing_ok=True)

    run_job(bench, "job_slim_ci_one_mart", slim, bench.project.target_dir / "run_results.json",
            fresh_runner)  # fmt: skip
