"""`mediapulse build`: the main job. Packages if needed, demo data if none (DuckDB), `dbt build`."""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb

from mediapulse import artifacts, deps, generate, pii
from mediapulse.errors import MediaPulseError
from mediapulse.project import Project
from mediapulse.runner import run_dbt
from mediapulse.warehouse import open_duckdb

# The data set `make build` creates on a fresh clone: big enough to be interesting
# (~0.6 M watch events), small enough to build in well under a minute.
DEMO = generate.Params(seed=42, users=2_000, days=30, events_per_user_day=12.0)
EXAMPLE_MODEL = "fct_daily_engagement"
FAILED = frozenset(artifacts.FAILED_STATUSES)
WARNED = frozenset({"warn"})


def check_duckdb_file(path: Path, purpose: str) -> None:
    """Fail early, with the fix, when a warehouse file is corrupt or locked."""
    if path.exists():
        open_duckdb(path, purpose=purpose, read_only=True).close()


def require_built(project: Project, target: str, purpose: str) -> None:
    """For jobs that read what a DuckDB target built: its file exists and opens."""
    path = project.duckdb_path(target)
    if not path.exists():
        raise MediaPulseError(
            f"cannot {purpose}: target '{target}' has no warehouse at {path}: build the target "
            "first (`make build`)"
        )
    check_duckdb_file(path, purpose)


def ensure_raw_data(project: Project) -> None:
    raw = project.raw_path
    if raw.exists():
        check_duckdb_file(raw, "read the raw data")
        return
    print(
        f"no raw data at {raw}: generating the demo data set ({DEMO.users} users, {DEMO.days} days)"
    )
    params = generate.Params(
        seed=DEMO.seed,
        users=DEMO.users,
        days=DEMO.days,
        events_per_user_day=DEMO.events_per_user_day,
        start_date=generate.default_start_date(DEMO.days),
    )
    print(generate.generate(raw, params))


def prepare(project: Project, target: str) -> str:
    """What every job needs before dbt runs: a known target, packages, raw data where the
    target reads it. Returns the target's engine.

    A DuckDB target reads raw.duckdb (the demo data set is generated when there is none). A
    server's raw schemas belong to its loader: no job writes to them, it only checks that
    every raw table the sources declare is there (`mediapulse load-raw` loads the demo set).
    """
    kind = project.target_type(target)  # unknown targets fail here, before any work
    if kind != "duckdb":
        pii.hash_key_env(project, target)  # without the key: stop before any work
    print(deps.install(project, force=False).summary())
    if kind == "duckdb":
        ensure_raw_data(project)
    else:
        from mediapulse.pg_access import check_roles
        from mediapulse.rawload import check_raw_tables

        check_raw_tables(project, target)
        check_roles(project, target)
    return kind


PROD_WAREHOUSE_ENV = "MEDIAPULSE_PROD_WAREHOUSE"


def target_env(
    project: Project, target: str, prod_warehouse: Path | None = None, need_prod: bool = False
) -> dict[str, str]:
    """Extra environment a target needs: the production file a CI target attaches read-only
    (for --defer). Without production (a first run), an empty stand-in unless ``need_prod``."""
    output = project.outputs[project.check_target(target)]
    attaches_prod = any(a.get("alias") == "prod" for a in output.get("attach") or [])
    if output.get("type") != "duckdb" or not attaches_prod:
        return {}
    path = prod_warehouse or project.duckdb_path("prod")
    if path.exists():
        check_duckdb_file(path, "attach production for --defer")
        return {PROD_WAREHOUSE_ENV: str(path)}
    if need_prod:
        raise MediaPulseError(
            f"production warehouse {path} not found: slim CI reads unchanged models from it; "
            "pass --prod-warehouse (the file `mediapulse nightly` built)"
        )
    placeholder = Path(tempfile.mkdtemp(prefix="mediapulse-noprod-")) / "prod.duckdb"
    duckdb.connect(str(placeholder)).close()
    return {PROD_WAREHOUSE_ENV: str(placeholder)}


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
