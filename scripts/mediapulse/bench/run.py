"""`mediapulse bench`: how fast the warehouse builds, and what incremental runs and slim CI save.

Everything runs in a throwaway copy of the project with its own warehouse, at a chosen scale
(default 10 M watch events over 90 days), each measurement repeated (median, min, max) with
the dbt process's peak memory. Ratios are measured side by side in one run, on dbt's own
execution time (run_results.json `elapsed_time`: without interpreter start-up and project
parsing, which are measured on their own); wall-clock times are reported beside them.

Before any number is reported, the results are checked: the incremental run must give what a
full refresh gives, and slim CI what the full build gives. A mismatch fails loudly.
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb

from mediapulse.bench.detector import detector_targets, measure_detector
from mediapulse.bench.jobs import measure_jobs
from mediapulse.bench.measures import Measure, Sample, Target
from mediapulse.bench.review import wait as review_wait
from mediapulse.ci import datadiff
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.markdown import markdown_table
from mediapulse.core.project import Project
from mediapulse.data import generate
from mediapulse.dbt import artifacts, deps
from mediapulse.dbt.runner import DbtRun, run_dbt
from mediapulse.engines.base import CI_TARGET
from mediapulse.engines.duckdb import PRODUCTION
from mediapulse.engines.targets import resolve

SCALES = {"1M": 1_000_000, "10M": 10_000_000, "50M": 50_000_000}
EVENTS_PER_USER_DAY = 6.0
# share of generated accounts that have signed up and watch in a given window (measured)
VISIBLE_SHARE = 0.815
TARGET = PRODUCTION  # DuckDB production, as the release jobs build it
# the models edited for the slim-CI measurements: one mart, and the event staging model
ONE_MART = "models/marts/ads/fct_campaign_delivery.sql"
EVENT_STAGING = "models/staging/streaming/stg_streaming__watch_events.sql"
# Written into the work directory when the benchmark creates it. The next run empties the
# directory (a fresh project copy and warehouse every time), so it only ever empties one that
# carries this file: `--work-dir ~` must not delete a home directory.
WORK_DIR_MARKER = ".mediapulse-bench"
_IGNORED_EVERYWHERE = shutil.ignore_patterns(
    ".git", ".venv", "dbt_packages*", "target", "logs", "warehouse", "ci-artifacts",
    "ci-output", "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info",
)  # fmt: skip
IGNORED_AT_THE_TOP = {"site"}  # the checkout's built docs site


def copy_ignore(root: Path, work: Path) -> Callable[[str, list[str]], set[str]]:
    """What the project copy leaves out of the checkout ``root`` (shutil.copytree's ignore):
    build products, and the benchmark's work directory ``work`` when it is inside the checkout
    (`bench/work` by default). The reports in bench/ are copied: the docs name them."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        ignored = set(_IGNORED_EVERYWHERE(directory, names))
        if Path(directory) == root:
            ignored |= IGNORED_AT_THE_TOP & set(names)
        return ignored | {name for name in names if Path(directory, name).resolve() == work}

    return ignore


def params_for(events: int, days: int, seed: int) -> generate.Params:
    users = max(50, math.ceil(events / (days * EVENTS_PER_USER_DAY * VISIBLE_SHARE)))
    return generate.Params(
        seed=seed,
        users=users,
        days=days,
        events_per_user_day=EVENTS_PER_USER_DAY,
        start_date=generate.default_start_date(days),
    )


def machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gib = None
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory_gib = round(pages / 2**30, 1)
    except (ValueError, OSError):
        pass
    from importlib.metadata import version

    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": memory_gib,
        "os": platform.platform(),
        "python": platform.python_version(),
        "dbt_core": version("dbt-core"),
        "dbt_duckdb": version("dbt-duckdb"),
        "duckdb": duckdb.__version__,
    }


def claim_work_dir(work: Path) -> None:
    """Make ``work`` an empty directory of the benchmark's own, or refuse before touching it.

    A missing or empty directory is used; one carrying the marker a previous run wrote is
    emptied. Anything else holds files the benchmark did not put there, including the work
    directory of a run from before the marker existed: it is refused, never deleted.
    """
    work = work.resolve()
    if work.exists() and not work.is_dir():
        raise MediaPulseError(
            f"--work-dir {work} is a file, not a directory: choose an empty or new directory"
        )
    marker = work / WORK_DIR_MARKER
    if work.is_dir() and any(work.iterdir()):
        if not marker.is_file():
            raise MediaPulseError(
                f"--work-dir {work} is not empty and was not created by mediapulse bench (no "
                f"{WORK_DIR_MARKER} file), and each run deletes its work directory: choose an "
                f"empty or new directory with --work-dir, or, if it is an older benchmark's "
                f"work directory, remove it (rm -rf {work})"
            )
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    marker.write_text(
        "Created by `mediapulse bench`: the next run deletes this directory and starts afresh.\n"
    )


class Bench:
    """One benchmark run in ``work``: a project copy, its warehouse and the measurements."""

    def __init__(self, source: Project, work: Path, runs: int) -> None:
        claim_work_dir(work)
        shutil.copytree(source.root, work / "project",
                        ignore=copy_ignore(source.root, work.resolve()))  # fmt: skip
        self.project = Project.discover(work / "project", work / "project" / "warehouse")
        self.work = work
        self.runs = runs
        self.measures: dict[str, Measure] = {}
        self.checks: dict[str, str] = {}
        self.job_notes: dict[str, list[str]] = {}  # a job's report lines (staged copy, parses)
        # time to review: each PR job's steps' medians
        self.review: dict[str, dict[str, dict[str, float]]] = {}
        # dbt's threads: the profile's default unless the caller sets one (it is reported)
        self.env = {"MEDIAPULSE_THREADS": os.environ.get("MEDIAPULSE_THREADS", "4")}

    # -- plumbing ------------------------------------------------------------------------------

    def dbt(self, args: list[str], target: str = TARGET, env: dict | None = None) -> DbtRun:
        run_results = self.project.target_dir / "run_results.json"
        run_results.unlink(missing_ok=True)
        result = run_dbt(
            resolve(self.project, target), args, extra_env={**self.env, **(env or {})}, quiet=True
        )
        if not result.success:
            failed = []
            if run_results.exists():
                failed = [r.describe() for r in artifacts.node_results(self.project.target_dir)
                          if r.failed]  # fmt: skip
            raise MediaPulseError(
                f"benchmark step `{result.command}` failed: "
                + ("; ".join(failed[:3]) or result.error or "see the dbt log")
            )
        return result

    def exec_time(self) -> float | None:
        path = self.project.target_dir / "run_results.json"
        if not path.exists():
            return None
        return float(artifacts.load_json(path, "run results").get("elapsed_time") or 0.0)

    def measure(
        self,
        name: str,
        args: list[str],
        before: Callable[[], None] | None = None,
        target: str = TARGET,
        env: dict | None = None,
    ) -> Measure:
        # the work directory is the caller's choice: the report names it, not its path
        measure = Measure(name, "dbt " + " ".join(args).replace(str(self.work), "<work-dir>"))
        for _ in range(self.runs):
            if before:
                before()
            result = self.dbt(args, target=target, env=env)
            measure.samples.append(Sample(result.elapsed_s, self.exec_time(), result.peak_rss_mb))
            print(f"  {name}: {result.elapsed_s:.1f} s wall, peak {result.peak_rss_mb:.0f} MB")
        self.measures[name] = measure
        return measure

    def file(self, name: str) -> Path:
        return self.project.warehouse_dir / name

    def save(self, name: str, *files: str) -> None:
        folder = self.work / name
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        for file in files:
            shutil.copy2(self.file(file), folder / file)

    def restore(self, name: str) -> Callable[[], None]:
        def restore() -> None:
            for saved in (self.work / name).iterdir():
                shutil.copy2(saved, self.file(saved.name))
            for leftover in self.project.warehouse_dir.glob("*.wal"):
                leftover.unlink()

        return restore

    def fresh(self, *files: str) -> Callable[[], None]:
        def remove() -> None:
            for file in files:
                self.file(file).unlink(missing_ok=True)
                self.file(file + ".wal").unlink(missing_ok=True)

        return remove

    # -- the steps -----------------------------------------------------------------------------

    def generate(self, params: generate.Params) -> dict[str, Any]:
        started = time.perf_counter()
        summary = generate.generate(self.project.raw_path, params, overwrite=True)
        seconds = time.perf_counter() - started
        events = summary.rows["streaming.watch_events"]
        print(f"generated {events:,} watch events in {seconds:.1f} s")
        return {"seconds": seconds, "rows": summary.rows, "params": {
            k: str(v) for k, v in asdict(params).items()}}  # fmt: skip

    def compare(self, label: str, pairs: list[tuple[str, str]], attach: dict[str, Path]) -> None:
        """Every pair of relations holds the same rows, or the benchmark stops."""
        with duckdb.connect() as con:
            for alias, path in attach.items():
                con.execute(f"attach '{path}' as {alias} (read_only)")
            for left, right in pairs:
                diff = con.execute(
                    f"select count(*) from ((select * from {left} except all select * from "
                    f"{right}) union all (select * from {right} except all select * from {left}))"
                ).fetchone()[0]
                if diff:
                    raise MediaPulseError(
                        f"benchmark check '{label}' FAILED: {left} and {right} differ in {diff} "
                        "rows; the numbers below would be meaningless"
                    )
        self.checks[label] = f"equal ({len(pairs)} relations)"
        print(f"check {label}: equal ({len(pairs)} relations)")

    def built_tables(self) -> list[str]:
        """schema.table of every table or incremental model of the project, from the manifest."""
        manifest = artifacts.load_json(self.project.target_dir / "manifest.json", "manifest")
        return sorted(
            artifacts.unquoted_relation(n).split(".", 1)[1]
            for n in manifest["nodes"].values()
            if n["resource_type"] == "model"
            and n["package_name"] == "mediapulse"
            and n["config"]["materialized"] in ("table", "incremental")
        )

    def floor(self) -> Measure:
        """The compiled SQL of every model run directly in DuckDB in DAG order, without dbt."""
        self.dbt(
            [
                "compile",
                "--full-refresh",
                "--exclude",
                "package:dbt_project_evaluator",
                "path:models/monitoring",
            ]
        )
        manifest = artifacts.load_json(self.project.target_dir / "manifest.json", "manifest")
        models = {
            uid: n for uid, n in manifest["nodes"].items()
            if n["resource_type"] == "model" and n["package_name"] == "mediapulse"
            and n["config"]["materialized"] != "ephemeral"
            and "compiled_code" in n  # the monitoring views are not compiled: no data of theirs
        }  # fmt: skip
        order: list[str] = []
        seen: set[str] = set()

        def visit(uid: str) -> None:
            if uid in seen:
                return
            seen.add(uid)
            for parent in manifest["nodes"].get(uid, {}).get("depends_on", {}).get("nodes", []):
                if parent in models:
                    visit(parent)
            order.append(uid)

        for uid in sorted(models):
            visit(uid)
        # (relation, view or table, compiled SQL) of every model, parents first
        steps = [
            (artifacts.unquoted_relation(models[uid]),
             "view" if models[uid]["config"]["materialized"] == "view" else "table",
             models[uid]["compiled_code"])
            for uid in order
        ]  # fmt: skip
        measure = Measure("floor", f"{len(order)} models' compiled SQL in DuckDB, no dbt")
        for _ in range(self.runs):
            self.restore("after_full")()
            with duckdb.connect(str(self.file("prod.duckdb"))) as con:
                # start from what dbt starts from: seeds loaded, no model built yet
                for relation, kind, _sql in reversed(steps):
                    con.execute(f"drop {kind} if exists {relation} cascade")
            started = time.perf_counter()
            with duckdb.connect(str(self.file("prod.duckdb"))) as con:
                con.execute(f"attach '{self.project.raw_path}' as raw (read_only)")
                con.execute(f"set threads = {os.cpu_count() or 2}")
                for relation, kind, sql in steps:
                    con.execute(f"create or replace {kind} {relation} as {sql}")
            seconds = time.perf_counter() - started
            measure.samples.append(Sample(seconds, seconds, 0.0))
            print(f"  floor: {seconds:.1f} s")
        self.measures["floor"] = measure
        return measure

    def edit(self, relative: str) -> Callable[[], None]:
        """Change a model without changing its result; returns the undo."""
        path = self.project.root / relative
        original = path.read_text()
        path.write_text(original + "\n-- benchmark: a change slim CI must rebuild\n")
        return lambda: path.write_text(original)


def run_bench(
    source: Project,
    events: int,
    days: int,
    runs: int,
    work: Path,
    out_json: Path,
    out_markdown: Path,
    seed: int = 42,
    review_staging: bool = True,
) -> int:
    started = time.perf_counter()
    bench = Bench(source, work, runs)
    print(deps.install(bench.project, force=False).summary())
    info = {**machine(), "dbt_threads": int(bench.env["MEDIAPULSE_THREADS"])}
    print("machine: " + ", ".join(f"{k} {v}" for k, v in info.items()))
    gen = bench.generate(params_for(events, days, seed))
    events_loaded = gen["rows"]["streaming.watch_events"]
    # the steps in this order: each starts from the warehouses and raw data the ones before saved
    path_seconds = measure_full_refresh(bench)
    measure_incremental(bench)
    measure_slim_ci(bench)
    bench.floor()  # the same SQL without dbt
    measure_parsing(bench)
    # the jobs as users run them, whole commands; the PR's checks of a one-mart change, and
    # unless told otherwise of a change to the watch events' staging model
    measure_jobs(bench, ONE_MART, EVENT_STAGING if review_staging else None)
    # the anomaly detector on a labelled history at this scale's daily volume (issue 30)
    detector_section = measure_detector(bench, events_loaded, days)

    m = bench.measures
    targets = bench_targets(m, events)
    scaling = _scaling(
        out_json, events_loaded, m, host_name(info), datetime.now(UTC).date().isoformat()
    )
    flat = flatness_target(scaling)
    if flat is not None:
        targets.append(flat)
    targets += detector_targets(detector_section)
    report = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": info,
        "scale": {"events": events_loaded, "days": days, "runs": runs},
        "generator": gen,
        "watch_event_path": {
            "models": list(WATCH_EVENT_PATH),
            "seconds": path_seconds,
            "events_per_second": events_loaded / path_seconds if path_seconds else None,
            "full_build_events_per_second": events_loaded / m["full_build"].exec_median,
        },
        "measures": {
            k: {
                "command": v.command,
                "wall_s": v.stat("wall_s"),
                "exec_s": v.stat("exec_s"),
                "peak_mb": v.stat("peak_mb"),
            }
            for k, v in m.items()
        },
        "targets": [{**asdict(t), "met": t.met} for t in targets],
        "checks": bench.checks,
        "job_notes": bench.job_notes,
        "review": bench.review,
        "scaling": scaling,
        "detector": detector_section,
        "total_seconds": time.perf_counter() - started,
    }
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(report, indent=2) + "\n")
    markdown = render(report)
    out_markdown.write_text(markdown)
    print(markdown)
    print(f"results: {out_json}, {out_markdown}")
    return 0


# the models a watch event passes through, staging to mart
WATCH_EVENT_PATH = (
    "stg_streaming__watch_events", "int_watch_events_sessionized",
    "int_watch_sessions_aggregated", "fct_watch_sessions",
)  # fmt: skip


def measure_full_refresh(bench: Bench) -> float:
    """Step 1: the full refresh, a build with every test and a run of the models only. Saves
    production as built (`after_full`, and its artifacts as the state slim CI compares to);
    returns the seconds the watch-event path's models took in the run."""
    bench.measure("full_build", ["build", "--full-refresh"], before=bench.fresh("prod.duckdb"))
    bench.save("after_full", "prod.duckdb")
    shutil.copytree(bench.project.target_dir, bench.work / "state", dirs_exist_ok=True)
    bench.measure("full_run", ["run", "--full-refresh"], before=bench.restore("after_full"))
    return sum(
        r.execution_time for r in artifacts.node_results(bench.project.target_dir)
        if r.name in WATCH_EVENT_PATH
    )  # fmt: skip


def measure_incremental(bench: Bench) -> None:
    """Step 2: one more day of raw data (`raw_before`, `raw_after`), then the incremental run
    and build; checked: the incremental result equals a full refresh on the same raw data."""
    bench.save("raw_before", "raw.duckdb")
    generate.append_day(bench.project.raw_path)
    bench.save("raw_after", "raw.duckdb")
    bench.measure("incremental_run", ["run"], before=bench.restore("after_full"))
    bench.save("after_incremental", "prod.duckdb")
    bench.measure("incremental_build", ["build"], before=bench.restore("after_full"))
    bench.restore("after_full")()
    bench.dbt(["build", "--full-refresh"])
    bench.save("full_after", "prod.duckdb")  # the jobs' refresh is checked against it too
    bench.compare(
        "incremental == full refresh",
        [(f"inc.{t}", f"prod.{t}") for t in bench.built_tables()],
        {
            "inc": bench.work / "after_incremental" / "prod.duckdb",
            PRODUCTION: bench.file("prod.duckdb"),
        },
    )


def measure_slim_ci(bench: Bench) -> None:
    """Step 3: slim CI against the production built in step 1, after editing one mart and
    after editing the event staging model; checked: what it rebuilt equals the full build."""
    bench.restore("raw_before")()
    bench.restore("after_full")()
    slim_env = {"MEDIAPULSE_PROD_WAREHOUSE": str(bench.file("prod.duckdb"))}
    slim_args = ["build", "--select", "state:modified+", "--exclude"]
    slim_args += [
        "package:dbt_project_evaluator",
        "path:models/monitoring",
        "--defer",
        "--state",
        str(bench.work / "state"),
    ]
    for name, model in (("slim_ci_one_mart", ONE_MART), ("slim_ci_event_staging", EVENT_STAGING)):
        undo = bench.edit(model)
        try:
            bench.measure(name, slim_args, before=bench.fresh("ci.duckdb"), target=CI_TARGET,
                          env=slim_env)  # fmt: skip
            manifest = artifacts.load_json(bench.project.target_dir / "manifest.json", "m")
            bench.compare(
                f"{name} == full build",
                _rebuilt_pairs(bench, manifest),
                {
                    "ci": bench.file("ci.duckdb"),
                    PRODUCTION: bench.file("prod.duckdb"),
                    "raw": bench.project.raw_path,
                },
            )
            bench.measures[name].command += f" (after editing {model})"
            if name == "slim_ci_event_staging":
                measure_data_diff(bench, manifest, slim_env)
        finally:
            undo()


def _rebuilt_pairs(bench: Bench, manifest: dict[str, Any]) -> list[tuple[str, str]]:
    """(CI's relation, production's) of every table slim CI's last run rebuilt."""
    built = [r for r in artifacts.node_results(bench.project.target_dir)
             if r.resource_type == "model" and r.status == "success"]  # fmt: skip
    pairs = []
    for result in built:
        node = manifest["nodes"][result.unique_id]
        if node["config"]["materialized"] in ("table", "incremental"):
            relation = artifacts.unquoted_relation(node).split(".", 1)[1]
            prod_relation = relation.replace("ci_", "", 1)
            pairs.append((f"ci.{relation}", f"prod.{prod_relation}"))
    return pairs


def measure_parsing(bench: Bench) -> None:
    """Step 5: dbt's parse, cold and partial, and the project evaluator."""
    partial = bench.project.target_dir / "partial_parse.msgpack"
    bench.measure("parse_cold", ["parse"], before=lambda: partial.unlink(missing_ok=True))
    bench.measure("parse_partial", ["parse"])
    bench.measure("evaluator", ["build", "--selector", "project_evaluator"],
                  env={"DBT_PROJECT_EVALUATOR_SEVERITY": "warn"})  # fmt: skip


def bench_targets(m: dict[str, Measure], events: int) -> list[Target]:
    """The performance targets, measured (``events``: the scale asked for, which sets some)."""

    def exec_ratio(slow: str, fast: str) -> float:
        return m[slow].exec_median / max(m[fast].exec_median, 1e-9)

    def wall_ratio(slow: str, fast: str) -> float:
        return m[slow].wall_median / max(m[fast].wall_median, 1e-9)

    peak_gib = max(s.peak_mb for s in m["full_build"].samples) / 1024
    return [
        Target("incremental run vs full refresh (dbt run)",
               exec_ratio("full_run", "incremental_run"), 10, "higher", "x"),
        Target("slim CI, one mart, vs full build",
               exec_ratio("full_build", "slim_ci_one_mart"), 20, "higher", "x"),
        Target("dbt full refresh over the raw-SQL floor", exec_ratio("full_run", "floor"), 1.5,
               "lower", "x"),
        Target("full build wall clock", m["full_build"].wall_median, 60, "lower", "s"),
        # 4 GiB at 10 M; at 50 M, under 6 GiB (a 16 GB laptop): DuckDB's limit and spilling
        Target("full build peak memory", peak_gib, 4 if events < 30_000_000 else 6, "lower",
               "GiB"),
        # the same ratios as a user at the terminal sees them: dbt's start-up and parsing
        # (several seconds whatever the change) included
        Target("incremental run vs full refresh, wall clock",
               wall_ratio("full_run", "incremental_run"), 10, "higher", "x"),
        Target("slim CI, one mart, vs full build, wall clock",
               wall_ratio("full_build", "slim_ci_one_mart"), 20, "higher", "x"),
        # the jobs, whole commands: the refresh's dbt time against the full build with its tests
        Target("mediapulse refresh of a day vs full build, both with their tests",
               exec_ratio("full_build", "job_refresh"), 5 if events < 30_000_000 else 15,
               "higher", "x"),
        Target("mediapulse deploy of one mart vs full deploy (nightly's build), dbt time",
               exec_ratio("job_nightly", "job_deploy_one_mart"), 10, "higher", "x"),
        Target("mediapulse slim-ci, one mart, wall clock", m["job_slim_ci_one_mart"].wall_median,
               6, "lower", "s"),
        # what people wait for (docs/performance.md): a reviewer, a merger, the nightly's users
        Target("time to review a one-mart change (the PR workflow's jobs, lint to report)",
               m["review_one_mart"].wall_median, 60, "lower", "s"),
        Target("merge to live of a one-mart change (deploy's start to the swap)",
               m["merge_to_live_one_mart"].wall_median, 10, "lower", "s"),
        Target("mediapulse nightly's wall clock over its dbt time",
               m["job_nightly"].wall_median / max(m["job_nightly"].exec_median, 1e-9), 1.3,
               "lower", "x"),
        # the same nightly scheduled one task per model, whole commands (docs/orchestrators)
        Target("Airflow + Cosmos nightly vs mediapulse nightly, wall clock",
               wall_ratio("job_nightly_airflow", "job_nightly"), 1.5, "lower", "x"),
        Target("Dagster nightly vs mediapulse nightly, wall clock",
               wall_ratio("job_nightly_dagster", "job_nightly"), 1.5, "lower", "x"),
        Target("data diff of fct_watch_sessions against production",
               m["data_diff_watch_sessions"].wall_median, 5, "lower", "s"),
    ]  # fmt: skip


DIFFED = "model.mediapulse.fct_watch_sessions"


def measure_data_diff(bench: Bench, manifest: dict[str, Any], env: dict[str, str]) -> None:
    """`mediapulse diff`'s work on the largest mart slim CI rebuilt: the value diff of
    fct_watch_sessions against production, in the warehouse (a full outer join on its key)."""
    production = artifacts.load_json(bench.work / "state" / "manifest.json", "production")
    measure = Measure(
        "data_diff_watch_sessions", "mediapulse diff of fct_watch_sessions (after slim CI)"
    )
    for _ in range(bench.runs):
        started = time.perf_counter()
        prod = Path(env["MEDIAPULSE_PROD_WAREHOUSE"])
        with datadiff.connect(resolve(bench.project, "ci"), prod) as wh:
            diff = datadiff.diff_model(wh, manifest, production, DIFFED, modified=False)
        seconds = time.perf_counter() - started
        if diff.status != "compared" or not diff.key or diff.data_changed:
            raise MediaPulseError(f"the benchmark's data diff went wrong: {diff}")
        measure.samples.append(Sample(seconds, seconds, 0.0))
        print(f"  data diff of fct_watch_sessions: {seconds:.2f} s, {diff.matched} rows matched")
    bench.measures[measure.name] = measure
    bench.checks["data diff of an unchanged fct_watch_sessions"] = (
        f"equal ({diff.matched} rows matched on {', '.join(diff.key)})"
    )


def flatness_target(scaling: dict[str, dict[str, Any]]) -> Target | None:
    """The refresh stays flat as history grows: the refresh at the largest scale measured
    against the largest scale at least 4x smaller (50 M against 10 M when 1 M, 10 M and 50 M
    were measured), at most 2x. Only rows measured on the same host on the same day are
    compared: a ratio between two machines says nothing about scaling."""
    if not scaling:
        return None
    large = max(scaling, key=int)
    where = (scaling[large].get("host"), scaling[large].get("day"))
    smaller = [
        events for events, row in scaling.items()
        if 4 * int(events) <= int(large) and (row.get("host"), row.get("day")) == where
        and None not in where
    ]  # fmt: skip
    if not smaller:
        return None
    small = max(smaller, key=int)
    ratio = scaling[large]["refresh_s"] / max(scaling[small]["refresh_s"], 1e-9)
    return Target(f"refresh at {int(large):,} vs at {int(small):,} events", ratio, 2, "lower", "x")


def host_name(info: dict[str, Any]) -> str:
    """The machine a scaling row was measured on, in a few words."""
    return (f"{platform.node() or 'unnamed'}: {info.get('cpu')}, {info.get('cores')} cores, "
            f"{info.get('memory_gib')} GiB")  # fmt: skip


def _scaling(
    out_json: Path, events: int, m: dict[str, Measure], host: str, day: str
) -> dict[str, dict[str, Any]]:
    """This run's row of the scaling table (with the host and day it was measured on), with
    the other scales' rows of the last report."""
    rows: dict[str, dict[str, Any]] = {}
    if out_json.exists():
        try:
            rows = dict(json.loads(out_json.read_text()).get("scaling") or {})
        except (OSError, ValueError):
            rows = {}
    rows[str(events)] = {
        "host": host,
        "day": day,
        "full_build_s": m["full_build"].exec_median,
        "nightly_wall_s": m["job_nightly"].wall_median,
        "refresh_s": m["job_refresh"].exec_median,
        "refresh_wall_s": m["job_refresh"].wall_median,
        "deploy_one_mart_s": m["job_deploy_one_mart"].exec_median,
        "deploy_one_mart_wall_s": m["job_deploy_one_mart"].wall_median,
        "slim_ci_wall_s": m["job_slim_ci_one_mart"].wall_median,
        "peak_gib": max(s.peak_mb for s in m["full_build"].samples) / 1024,
    }
    return dict(sorted(rows.items(), key=lambda kv: int(kv[0])))


def _fmt(value: float | None, digits: int = 2) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def _range(low: float | None, high: float | None) -> str:
    return "—" if low is None or high is None else f"{_fmt(low)}-{_fmt(high)}"


def render(report: dict[str, Any]) -> str:
    """The report as Markdown: machine, measurements, targets, checks (pure)."""
    machine_line = ", ".join(f"{k}: {v}" for k, v in report["machine"].items())
    scale = report["scale"]
    rows = []
    for name, measure in report["measures"].items():
        wall, exe, peak = measure["wall_s"], measure["exec_s"], measure["peak_mb"]
        rows.append((
            name, _fmt(exe["median"]), _range(exe["min"], exe["max"]),
            _fmt(wall["median"]), _fmt(peak["max"], 0), measure["command"],
        ))  # fmt: skip
    targets = [
        (t["name"], f"{_fmt(t['measured'])} {t['unit']}",
         f"{'≥' if t['better'] == 'higher' else '≤'} {t['limit']} {t['unit']}",
         "met" if t["met"] else "**MISSED**")
        for t in report["targets"]
    ]  # fmt: skip
    path = report["watch_event_path"]
    lines = [
        f"## Benchmark: {scale['events']:,} watch events, {scale['days']} days, "
        f"{scale['runs']} run(s) each",
        "",
        f"Machine: {machine_line}.",
        "",
        "Times in seconds. *exec* is dbt's own execution time (run_results `elapsed_time`), "
        "without interpreter start-up and project parsing (those are `parse_*`); *wall* is the "
        "whole `dbt` process. `<work-dir>` is the benchmark's `--work-dir`.",
        "",
        markdown_table(
            ("measure", "exec median", "exec min-max", "wall median", "peak MB", "command"), rows
        ),
        "",
        markdown_table(("target", "measured", "goal", ""), targets),
        "",
        f"Watch-event path ({', '.join(path['models'])}): "
        f"{_fmt(path['events_per_second'], 0)} events/s; whole full build: "
        f"{_fmt(path['full_build_events_per_second'], 0)} events/s. "
        f"Generating the data: {_fmt(report['generator']['seconds'], 1)} s.",
        "",
        "Checks: " + "; ".join(f"{k}: {v}" for k, v in report["checks"].items()) + ".",
    ]
    notes = report.get("job_notes") or {}
    if notes:
        lines += [
            "",
            "What the jobs reported (last run): "
            + "; ".join(f"{name}: {', '.join(found)}" for name, found in notes.items() if found)
            + ".",
        ]
        staged = [f"{name}: {n.split(': ', 1)[1]}" for name, found in notes.items()
                  for n in found if n.startswith("staged copy of production:")]  # fmt: skip
        if staged:
            lines += ["", "Staged copy of production (blue-green), per release: "
                      + "; ".join(staged) + "."]  # fmt: skip
    review = report.get("review") or {}
    if review:
        lines += ["", "### Time to review: the PR workflow's jobs, step by step (medians)", "",
                  render_review(review)]  # fmt: skip
    detector = report.get("detector")
    if detector:
        plan = detector["plan"]
        lines += ["", f"### Anomaly detector: labelled history ({plan['days']} daily refreshes, "
                  f"{plan['users']:,} accounts, seed {plan['seed']})", "",
                  detector["markdown"]]  # fmt: skip
    if any(not t["met"] for t in report["targets"]):
        lines += ["", "Missed targets: the measured reasons and what was tried are in the "
                  "docs/performance.md."]  # fmt: skip
    scaling = report.get("scaling") or {}
    if scaling:
        lines += ["", render_scaling(scaling)]
    return "\n".join(lines) + "\n"


def render_review(review: dict[str, dict[str, dict[str, float]]]) -> str:
    """Each change's steps, job by job, each job's sum, and the wait: the longer job (GitHub
    starts them together, each on a runner of its own)."""
    changes = list(review)
    jobs = list(dict.fromkeys(job for change in review.values() for job in change))
    table = []
    for job in jobs:
        each = [review[c].get(job, {}) for c in changes]
        steps = list(dict.fromkeys(step for one in each for step in one))
        table += [(f"{job}: {step}", *(_fmt(one.get(step), 1) for one in each))
                  for step in steps]  # fmt: skip
        table.append((f"*{job}, the job*", *(_fmt(sum(one.values()), 1) for one in each)))
    table.append(("**whole wait** (the longer job)",
                  *(_fmt(review_wait(review[c]), 1) for c in changes)))  # fmt: skip
    return markdown_table(("step", *changes), table)


def render_scaling(scaling: dict[str, dict[str, Any]]) -> str:
    """The scaling table: a row per scale, each naming the host and day it was measured on."""
    table = [
        (f"{int(events):,}", _fmt(r["full_build_s"], 1), _fmt(r["nightly_wall_s"], 1),
         _fmt(r["refresh_s"], 1), _fmt(r["refresh_wall_s"], 1),
         _fmt(r["deploy_one_mart_s"], 1), _fmt(r["deploy_one_mart_wall_s"], 1),
         _fmt(r["slim_ci_wall_s"], 1), _fmt(r["peak_gib"], 2),
         r.get("day", "—"), r.get("host", "unknown host"))
        for events, r in sorted(scaling.items(), key=lambda row: int(row[0]))
    ]  # fmt: skip
    return "\n".join([
        "### Scaling (each row from the run at that scale; dbt time, and wall)", "",
        "A ratio between two scales (the refresh's flatness target) compares rows measured on "
        "the same host on the same day only.", "",
        markdown_table(("events", "full build", "nightly wall", "refresh", "refresh wall",
                        "deploy 1 mart", "deploy wall", "slim CI wall", "peak GiB", "day",
                        "host"), table),
    ])  # fmt: skip


def check_scale(text: str) -> int:
    if text.upper() in SCALES:
        return SCALES[text.upper()]
    try:
        value = float(text.upper().removesuffix("M")) * (1e6 if text.upper().endswith("M") else 1)
    except ValueError:
        raise MediaPulseError(f"--scale {text!r}: use 1M, 10M, 50M or a number of events") from None
    if not math.isfinite(value) or value < 10_000:
        raise MediaPulseError(f"--scale {text!r}: at least 10000 events")
    return int(value)
