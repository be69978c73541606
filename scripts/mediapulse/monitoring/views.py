"""The monitoring models (models/monitoring/): views over the run history, built with their
tests by selector `monitoring`.

Views, not tables: they show the history as it is when they are read, so they need building
only when their code changes. The nightly and the deploy build them in the job's own dbt
session (no parse of their own) with the code they release; `mediapulse report` builds them
when they are missing (a first report, a developer's target) or when asked (`--rebuild`).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import duckdb

from mediapulse.core.errors import MediaPulseError
from mediapulse.dbt.runner import run_dbt
from mediapulse.engines.base import Engine
from mediapulse.engines.duckdb import describe_open_error
from mediapulse.monitoring import history

SELECTOR = "monitoring"
# the views the morning report reads (models/monitoring/)
VIEWS = (
    "sli_runs",
    "sli_run_success_rate",
    "sli_model_execution_times",
    "sli_row_counts",
    "sli_failing_tests",
    "sli_critical_mart_freshness",
    "sli_source_freshness",
    "sli_schema_changes",
)


def build(engine: Engine, env: dict[str, str] | None = None) -> tuple[bool, str]:
    """`dbt build --selector monitoring` on ``target`` (in the active dbt session, if one
    serves it): the history tables exist first, so a first run has something to read.
    Returns (ok, the report's line)."""
    started = time.perf_counter()
    history.ensure(engine)
    run = run_dbt(engine, ["build", "--selector", SELECTOR], extra_env=env)
    seconds = time.perf_counter() - started
    if run.success:
        return True, (
            f"monitoring models (views over the run history) built and tested in {seconds:.1f} s"
        )
    return False, (
        f"notice: the monitoring models did not build ({run.error or 'a test failed'}); "
        "the job's result stands, `mediapulse report --rebuild` tries again"
    )


def _duckdb_reader(engine: Engine) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the target's history attached read-only under the name the
    views were built with (`monitoring`: their SQL names it)."""
    target = engine.target
    path = history.duckdb_path(engine)
    if not path.is_file():
        raise MediaPulseError(
            f"no run history for target '{target}' at {path}: run a job on it first "
            "(`mediapulse build`, `nightly`, ...), or download the monitoring file a job published"
        )
    con = duckdb.connect()
    try:
        con.execute(f"attach '{path}' as {history.CATALOG} (read_only)")
    except duckdb.Error as exc:
        con.close()
        reason = describe_open_error(path, exc)
        raise MediaPulseError(f"cannot read the run history: {reason}") from exc
    return con


def _schema_of_views(names: list[str], target: str) -> str | None:
    """The schema the views were built in: production's plain `monitoring`, or the one schema
    of a developer's target (`<schema>_monitoring`); never a CI run's."""
    names = [n for n in names if not n.startswith("ci_")]
    if history.SCHEMA in names:
        return history.SCHEMA
    if len(names) > 1:
        raise MediaPulseError(
            f"target '{target}': monitoring views in several schemas ({', '.join(sorted(names))})"
            ": drop the ones no longer used"
        )
    return names[0] if names else None


@contextmanager
def reader(engine: Engine) -> Iterator[Reader]:
    """Read the monitoring views of ``target`` (read-only); MediaPulseError when they are not
    built (`mediapulse report` builds them first)."""
    target = engine.target
    if engine.embedded:  # the target's history file, with the target's own file attached
        con = _duckdb_reader(engine)
        try:
            found = con.execute(
                "select distinct schema_name from duckdb_views() where database_name = ? "
                "and view_name = 'sli_runs'",
                [history.CATALOG],
            ).fetchall()
            schema = _schema_of_views([r[0] for r in found], target)
            yield Reader(con, f"{history.CATALOG}.{schema}" if schema else None, "?")
        finally:
            con.close()
        return

    with engine.connect("read the monitoring views") as session:
        found = session.query(
            "select distinct table_schema from information_schema.views "
            "where table_name = 'sli_runs'"
        )
        schema = _schema_of_views([r[0] for r in found], target)
        yield Reader(session.con, schema, session.marker)


@dataclass
class Reader:
    con: Any
    schema: str | None  # where the views are; None: not built
    marker: str  # the driver's parameter marker

    @property
    def built(self) -> bool:
        return self.schema is not None

    def rows(self, sql: str, params: list[Any] | None = None) -> list[dict[str, Any]]:
        """Rows of ``sql`` as dicts; `{views}` in it names the views' schema."""
        if self.schema is None:
            raise MediaPulseError("the monitoring views are not built: run `mediapulse report`")
        cursor = self.con.cursor()
        cursor.execute(sql.replace("{views}", self.schema), params or [])
        names = [d[0] for d in cursor.description]
        return [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
