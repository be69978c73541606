"""Spark targets (profiles.yml `spark`): what a job needs before dbt starts a Spark session,
and the demo raw data in the Spark catalog.

The local target runs Spark inside the dbt process (`method: session`, pyspark and a JRE).
Its raw tables are Parquet files the loader wrote, registered in the catalog as external
tables: `mediapulse load-raw --target spark` writes them from raw.duckdb (`load_raw`), never a
build. A cluster (`method: thrift` or `http`) has its own loader and catalog: jobs read it.
"""

from __future__ import annotations

import os
import shutil
from contextlib import AbstractContextManager
from pathlib import Path

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import TARGET_ENV, WAREHOUSE_ENV, Project
from mediapulse.engines.base import ENGINES, Capability, Engine, Session
from mediapulse.engines.postgres import target_credentials

JRE_PACKAGE = "openjdk-17-jre-headless"
PYTHON_PACKAGES = "'dbt-spark[session]>=1.11,<1.12' 'pyspark>=3.5,<3.6'"
RAW_DIR = "spark/raw"  # under the warehouse directory
LOADED = "loaded.json"  # what the last load registered, and from which data set


def is_local(project: Project, target: str) -> bool:
    """A Spark session in this process, with its tables under the warehouse directory."""
    output = project.outputs[project.check_target(target)]
    return output.get("type") == "spark" and output.get("method") == "session"


def java() -> str | None:
    """The `java` a Spark session would start: JAVA_HOME's, else the one on PATH."""
    home = os.environ.get("JAVA_HOME")
    if home and (Path(home) / "bin" / "java").exists():
        return str(Path(home) / "bin" / "java")
    return shutil.which("java")


def check_local_session(project: Project, target: str) -> None:
    """Before dbt starts Spark in its process: a JRE and pyspark, or one line naming them."""
    if not is_local(project, target):
        return
    if java() is None:
        raise MediaPulseError(
            f"target '{target}' runs Spark in this process and needs a Java runtime, which was "
            f"not found (no JAVA_HOME, no `java` on PATH): install Debian's {JRE_PACKAGE} "
            f"(apt-get install {JRE_PACKAGE})"
        )
    try:
        import pyspark  # noqa: F401
        from dbt.adapters import spark  # noqa: F401
    except ImportError as exc:
        raise MediaPulseError(
            f"target '{target}' needs dbt-spark with pyspark ({exc.name} is missing): "
            f"pip install {PYTHON_PACKAGES} (`make venv TARGET=spark` installs the spark extra)"
        ) from None


def raw_dir(project: Project) -> Path:
    return project.warehouse_dir / RAW_DIR


def check_raw_tables(project: Project, target: str) -> None:
    """The local target reads raw tables that `load-raw` registered: they are there. (A
    cluster's catalog is read by dbt itself, which names a missing table.)"""
    if is_local(project, target) and not (raw_dir(project) / LOADED).exists():
        raise MediaPulseError(
            f"no raw data in target '{target}' (Spark): load the demo data set with "
            f"`mediapulse load-raw --target {target}`"
        )


def metastore(project: Project) -> Path:
    return project.warehouse_dir / "spark" / "metastore_db"


LOCAL_ENV = "MEDIAPULSE_SPARK_LOCAL"  # set for dbt's process when it will start Spark itself
LOG = "spark/driver.log"  # under the warehouse directory: what Spark itself writes


def child_env(project: Project, target: str) -> dict[str, str]:
    return {LOCAL_ENV: "1"} if is_local(project, target) else {}


def start_local_session() -> None:
    """In dbt's process, before dbt needs it: the Spark session dbt-spark's `getOrCreate` will
    then reuse (the same settings: the profile's, rendered as dbt renders them). Started here
    so that a session that cannot start (no memory, a port taken) is one line with Spark's
    reason, not dbt's Python traceback after a JVM's message. Spark's own output (errors only,
    profiles/spark-log4j2.properties) goes to warehouse/spark/driver.log."""
    import sys

    project = Project.discover(Path.cwd(), Path(os.environ.get(WAREHOUSE_ENV, "warehouse")))
    target = os.environ.get(TARGET_ENV, "")
    conf = target_credentials(project, target).server_side_parameters
    log = project.warehouse_dir / LOG
    log.parent.mkdir(parents=True, exist_ok=True)
    from pyspark.sql import SparkSession

    builder = SparkSession.builder.enableHiveSupport()
    for key, value in conf.items():
        builder = builder.config(key, value)
    # the JVM inherits stdout and stderr (HotSpot prints its own start-up errors on stdout):
    # both are Spark's log, for as long as it runs
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with log.open("w") as handle:  # this session's: a reason read from it is today's
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
    try:
        builder.getOrCreate()
    except Exception as exc:
        reason = _reason(log) or type(exc).__name__
        raise MediaPulseError(
            f"the Spark session of target '{target}' could not start: {reason} (Spark's log: "
            f"{log}; settings: profiles.yml, MEDIAPULSE_SPARK_DRIVER_MEMORY, "
            "MEDIAPULSE_SPARK_CORES)"
        ) from None
    finally:
        for fd, copy in enumerate(saved, start=1):
            os.dup2(copy, fd)
            os.close(copy)


def _reason(log: Path) -> str:
    """Spark's reason from the end of its log: the JVM's own error, or an exception's line."""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()[-40:]]
    except OSError:
        return ""
    lines = [line for line in lines if line]
    for i, line in enumerate(lines):
        if line.startswith("Error occurred during initialization of VM") and i + 1 < len(lines):
            return f"{line}: {lines[i + 1]}"
    for line in lines:
        if "Exception:" in line or line.startswith("Error:"):
            return line
    return lines[-1] if lines else ""


class Spark(Engine):
    """Apache Spark: a local session inside dbt's process (`method: session`, Parquet tables
    under the warehouse directory) or a cluster. dbt builds it in place: no staged releases,
    no run history, no data diff (the capabilities say so, in one line, where asked)."""

    kind = "spark"
    label = "Spark"
    capabilities: frozenset[Capability] = frozenset()

    @property
    def local(self) -> bool:
        return is_local(self.project, self.target)

    @property
    def checkout_key_allowed(self) -> bool:
        """A local session is a developer's; a cluster's hashes need the secret key."""
        return self.local

    def check_runtime(self) -> None:
        check_local_session(self.project, self.target)

    def check_raw_data(self) -> None:
        check_raw_tables(self.project, self.target)

    def connect(self, purpose: str, write: bool = False) -> AbstractContextManager[Session]:
        raise MediaPulseError(
            f"cannot {purpose}: {self.described} is read and written by dbt only; use a "
            "DuckDB or PostgreSQL target"
        )


ENGINES.append(Spark)
