"""The demo raw data in a local Spark session's catalog (`mediapulse load-raw --target spark`):
Parquet files DuckDB writes, registered as external tables by a dbt operation."""

from __future__ import annotations

import json
import shutil
import time

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.sources import RAW_TABLES
from mediapulse.dbt.runner import run_dbt
from mediapulse.engines.base import Engine
from mediapulse.engines.duckdb import open_duckdb
from mediapulse.engines.spark import LOADED, check_local_session, is_local, metastore, raw_dir


def load_raw(engine: Engine) -> str:
    """Make the local Spark catalog's raw tables hold the data set in raw.duckdb.

    Each table is written as Parquet into a new directory of its own (DuckDB writes it, no
    JVM needed), then the catalog's table is dropped and created over it (external: the drop
    deletes no file), then older loads are removed. A reader sees the previous load or the
    new one, never a half-written one; between the drop and the create it finds no table.
    Skipped when the catalog already
    holds this data set (same ``_mediapulse.generation`` row)."""
    project, target = engine.project, engine.target
    if not is_local(project, target):
        raise MediaPulseError(
            f"target '{target}' is a Spark cluster: its raw tables are its loader's; "
            "`load-raw` writes the demo data set into a local session's catalog only"
        )
    check_local_session(project, target)
    root = raw_dir(project)
    marker = root / LOADED
    with open_duckdb(project.raw_path, purpose="read the raw data", read_only=True) as con:
        row = con.execute("select * from _mediapulse.generation").fetchone()
        generation = [str(v) for v in row]
        previous = json.loads(marker.read_text()) if marker.exists() else {}
        if previous.get("generation") == generation and metastore(project).exists():
            return f"raw data already loaded into target '{target}'"
        load = root / f"load-{time.time_ns()}"
        tables, rows = {}, 0
        for table in RAW_TABLES:
            directory = load / table
            directory.mkdir(parents=True)
            con.execute(f"copy {table} to '{directory / 'part-0.parquet'}' (format parquet)")
            tables[table] = str(directory.resolve())
            if not table.startswith("_"):
                rows += con.execute(f"select count(*) from {table}").fetchone()[0]
    result = run_dbt(
        engine,
        ["run-operation", "spark_register_raw_tables", "--args", json.dumps({"tables": tables})],
    )
    if not result.success:
        shutil.rmtree(load, ignore_errors=True)
        raise MediaPulseError(f"load-raw into target '{target}' failed: {result.error}")
    marker.write_text(json.dumps({"generation": generation, "tables": tables}, indent=2) + "\n")
    for old in root.glob("load-*"):  # earlier loads: no table points at them any more
        if old != load:
            shutil.rmtree(old, ignore_errors=True)
    return f"loaded {rows:,} raw rows into target '{target}' ({len(tables) - 1} tables)"
