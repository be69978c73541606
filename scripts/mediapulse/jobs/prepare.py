"""What every job needs before dbt runs: a known target, packages, raw data where the target
reads it, and the environment a target needs (the production file a CI target attaches).

`build`, `nightly`, `deploy`, `refresh`, `slim-ci`, `evaluate` and `codegen` all start here.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import duckdb

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.data import generate
from mediapulse.data.rawload import check_raw_tables
from mediapulse.dbt import deps, pii
from mediapulse.engines.base import Capability, Engine
from mediapulse.engines.duckdb import duckdb_file, open_duckdb, production_file
from mediapulse.monitoring import history, schema_changes, tuning
from mediapulse.security.pg_access import check_roles

# The data set `make build` creates on a fresh clone: big enough to be interesting
# (~0.6 M watch events), small enough to build in well under a minute.
DEMO = generate.Params(seed=42, users=2_000, days=30, events_per_user_day=12.0)


def check_duckdb_file(path: Path, purpose: str) -> None:
    """Fail early, with the fix, when a warehouse file is corrupt or locked."""
    if path.exists():
        open_duckdb(path, purpose=purpose, read_only=True).close()


def require_built(engine: Engine, purpose: str) -> None:
    """For jobs that read what a DuckDB target built: its file exists and opens."""
    project, target = engine.project, engine.target
    path = duckdb_file(project, target)
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


def prepare(engine: Engine) -> Engine:
    """What every job needs before dbt runs: a known target, packages, raw data where the
    target reads it, in the shape its sources declare. Returns the target's engine.

    A DuckDB target reads raw.duckdb (the demo data set is generated when there is none). A
    server's raw schemas belong to its loader: no job writes to them, it only checks that
    every raw table the sources declare is there (`mediapulse load-raw` loads the demo set).
    Then the raw tables' columns and types are compared with the sources' (schema_changes):
    a changed critical source raises SchemaChangeError, so no model runs and a release
    publishes nothing; other changes are printed as warnings.
    """
    project = engine.project
    if not engine.embedded:
        pii.hash_key_env(engine)  # without the key: stop before any work
    print(deps.install(project, force=False).summary())
    engine.check_runtime()
    if engine.embedded:
        ensure_raw_data(project)
        # the run history every DuckDB target attaches (profiles.yml): its tables exist before
        # dbt opens it, for a job that builds the monitoring views (slim CI of a change to them)
        history.ensure(engine)
    elif engine.can(Capability.LOADER_SCHEMAS):
        check_raw_tables(engine)  # a missing table stops here, on any source
    engine.check_raw_data()
    tuning.check(project)  # a wrong anomaly setting in a model's meta: one line, no run
    if engine.can(Capability.SCHEMA_CHECK):
        schema_changes.check_and_report(engine)
    else:
        # Spark's raw tables are a copy of raw.duckdb's (load-raw), whose shape the DuckDB and
        # PostgreSQL targets check; its catalog is not read before dbt starts Spark
        print(f"schema check: not run on {engine.described}; see docs/targets/spark.md")
    if engine.can(Capability.ROLES):
        check_roles(engine)
    return engine


PROD_WAREHOUSE_ENV = "MEDIAPULSE_PROD_WAREHOUSE"


def target_env(
    engine: Engine, prod_warehouse: Path | None = None, need_prod: bool = False
) -> dict[str, str]:
    """Extra environment a target needs: the production file a CI target attaches read-only
    (for --defer). Without production (a first run), an empty stand-in unless ``need_prod``."""
    project = engine.project
    if not (engine.embedded and engine.is_ci()):  # CI's file attaches production to defer to
        return {}
    path = prod_warehouse or production_file(project)
    if path.exists():
        check_duckdb_file(path, "attach production for --defer")
        return {PROD_WAREHOUSE_ENV: project.dbt_path(path)}
    if need_prod:
        raise MediaPulseError(
            f"production warehouse {path} not found: slim CI reads unchanged models from it; "
            "pass --prod-warehouse (the file `mediapulse nightly` built)"
        )
    placeholder = Path(tempfile.mkdtemp(prefix="mediapulse-noprod-")) / "prod.duckdb"
    duckdb.connect(str(placeholder)).close()
    return {PROD_WAREHOUSE_ENV: str(placeholder)}
