"""The nightly as the orchestrators run it, beside `mediapulse nightly`: the Airflow DAG
(`airflow dags test`, Cosmos's task group) and the Dagster job (`dagster job execute`), whole
commands from a fresh process, each from the same empty production the CLI's nightly started
from, and each checked to publish the marts the CLI's nightly published. Their samples take
turns with the CLI's (bench/jobs.py), so that a machine growing slower or faster during the
benchmark favours none of the three.

Not timed: each orchestrator's one-off set-up (Airflow's metadata database, `airflow db
migrate`), which a real deployment does once.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from mediapulse.bench.measures import Measure, Sample
from mediapulse.core.errors import MediaPulseError

if TYPE_CHECKING:
    from mediapulse.bench.run import Bench

CLI_NIGHTLY = "nightly_cli"  # production as `mediapulse nightly` published it


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _common_env(bench: Bench, state: Path) -> dict[str, str]:
    return {
        **os.environ, **bench.env,
        "MEDIAPULSE_PROJECT_DIR": str(bench.project.root),
        "MEDIAPULSE_WAREHOUSE_DIR": str(bench.project.warehouse_dir),
        "MEDIAPULSE_ARTIFACTS": str(state),
        "DO_NOT_TRACK": "1",
    }  # fmt: skip


def airflow_command(bench: Bench, state: Path) -> tuple[list[str], dict[str, str]]:
    """`airflow dags test mediapulse_nightly` on a SQLite metadata database of the bench's."""
    home = bench.work / "airflow"
    env = {
        **_common_env(bench, state),
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(bench.project.root / "orchestrators/airflow/dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__COSMOS__ENABLE_TELEMETRY": "False",
        "AIRFLOW__USAGE_DATA_COLLECTION__ENABLED": "False",
        "SCARF_NO_ANALYTICS": "true",
        "MEDIAPULSE_AIRFLOW_REPORT_DIR": str(bench.work / "airflow-report"),
    }
    if not (home / "airflow.db").exists():
        home.mkdir(parents=True, exist_ok=True)
        _run([_bin("airflow"), "db", "migrate"], env, "airflow db migrate")
    return [_bin("airflow"), "dags", "test", "mediapulse_nightly"], env


def dagster_command(bench: Bench, state: Path) -> tuple[list[str], dict[str, str]]:
    """`dagster job execute` of the nightly job, with an instance of the bench's."""
    home = bench.work / "dagster"
    home.mkdir(parents=True, exist_ok=True)
    shipped = bench.project.root / "orchestrators/dagster/dagster.yaml"
    if shipped.is_file():
        shutil.copy2(shipped, home / "dagster.yaml")
    env = {**_common_env(bench, state), "DAGSTER_HOME": str(home)}
    definitions = bench.project.root / "orchestrators/dagster/definitions.py"
    return [_bin("dagster"), "job", "execute", "-f", str(definitions), "-j",
            "mediapulse_nightly"], env  # fmt: skip


def _run(argv: list[str], env: dict[str, str], what: str) -> float:
    started = time.perf_counter()
    proc = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        tail = " | ".join((proc.stdout + proc.stderr).strip().splitlines()[-6:])
        raise MediaPulseError(f"benchmark step `{what}` failed: {tail}")
    return wall


@dataclass
class Orchestrated:
    """An orchestrator's nightly, ready to run: its command, environment and measure."""

    argv: list[str]
    env: dict[str, str]
    label: str
    measure: Measure

    @property
    def shown(self) -> str:
        return " ".join(Path(self.argv[0]).name if i == 0 else a for i, a in enumerate(self.argv))


def orchestrated_nightlies(bench: Bench, state: Path) -> list[Orchestrated]:
    """The Airflow and the Dagster nightly, set up (not timed) and measured under
    ``job_nightly_airflow`` and ``job_nightly_dagster``."""
    found = []
    for name, make, label in (
        ("job_nightly_airflow", airflow_command, "Airflow + Cosmos"),
        ("job_nightly_dagster", dagster_command, "Dagster + dagster-dbt"),
    ):
        argv, env = make(bench, state)
        job = Orchestrated(argv, env, label, Measure(name, ""))
        job.measure.command = f"{job.shown} ({label})".replace(str(bench.work), "<work-dir>")
        bench.measures[name] = job.measure
        found.append(job)
    return found


def run_orchestrated(
    bench: Bench, job: Orchestrated, state: Path, clean_production: Callable[[], None],
    tables: list[str] | None = None,
) -> None:  # fmt: skip
    """One sample of ``job`` from an empty production; checked: a release went live, and when
    ``tables`` are given, production holds the CLI nightly's (saved in CLI_NIGHTLY) rows."""
    clean_production()
    wall = _run(job.argv, job.env, job.shown)
    release = state / "release.json"
    if not release.is_file():
        raise MediaPulseError(f"benchmark step `{job.shown}` published no release")
    job.measure.samples.append(Sample(wall, None, 0.0))
    print(f"  {job.measure.name}: {wall:.1f} s wall, release "
          f"{json.loads(release.read_text())['release_id']}")  # fmt: skip
    if tables:
        bench.compare(f"{job.label} nightly == mediapulse nightly",
                      [(f"orchestrated.{t}", f"cli.{t}") for t in tables],
                      {"orchestrated": bench.file("prod.duckdb"),
                       "cli": bench.work / CLI_NIGHTLY / "prod.duckdb"})  # fmt: skip
