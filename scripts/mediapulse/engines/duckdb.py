"""DuckDB targets: files in the warehouse directory, opened with errors a user can act on
(absent, corrupt, locked)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import duckdb

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.freed_memory import require_wiped
from mediapulse.core.project import Project
from mediapulse.engines.base import ENGINES, PRODUCTION_TARGETS, Capability, Engine, Session


def describe_open_error(path: Path, exc: Exception) -> str:
    text = str(exc)
    if "different configuration" in text:
        return (
            f"{path} is already open in this process in another mode (read-only vs read-write): "
            "close that connection first"
        )
    if "Could not set lock" in text or "Conflicting lock" in text:
        pid = re.search(r"PID (\d+)", text)
        holder = f" (held by process {pid.group(1)})" if pid else ""
        return (
            f"{path} is locked by another process{holder}: wait for it to finish or stop it, "
            "then retry"
        )
    if "not a valid DuckDB database" in text or "Invalid Input Error" in text or "header" in text:
        return (
            f"{path} is not a readable DuckDB database (corrupt or another format): move it "
            "away and rebuild it"
        )
    return f"cannot open {path}: {text.splitlines()[0] if text else type(exc).__name__}"


def open_duckdb(path: Path, purpose: str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open an existing DuckDB file; absent, corrupt or locked files raise MediaPulseError."""
    if not path.is_file():
        raise MediaPulseError(f"cannot {purpose}: {path} does not exist")
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        raise MediaPulseError(f"cannot {purpose}: {describe_open_error(path, exc)}") from exc


class DuckDb(Engine):
    """A DuckDB file in the warehouse directory, named after its target (DuckDB names the
    catalog after the file): embedded, no server, no roles."""

    kind = "duckdb"
    label = "DuckDB"
    embedded = True
    capabilities = frozenset({
        Capability.STAGED_RELEASES, Capability.RUN_HISTORY, Capability.DATA_DIFF,
        Capability.SCHEMA_CHECK,
    })  # fmt: skip

    @property
    def path(self) -> Path:
        return self.project.warehouse_dir / f"{self.target}.duckdb"

    def is_ci(self) -> bool:
        """CI's target attaches production read-only (``alias: prod``) to defer to it."""
        return any(a.get("alias") == "prod" for a in self.output.get("attach") or [])

    @contextmanager
    def connect(self, purpose: str, write: bool = False) -> Iterator[Session]:
        if write:
            require_wiped(purpose)
        con = open_duckdb(self.path, purpose, read_only=not write)
        try:
            yield Session(con, "?")
        finally:
            con.close()

    @contextmanager
    def connect_raw(self, purpose: str) -> Iterator[Session]:
        """raw.duckdb, the loader's file beside the warehouse (the profile attaches it)."""
        con = open_duckdb(self.project.raw_path, purpose, read_only=True)
        try:
            yield Session(con, "?")
        finally:
            con.close()


def production_file(project: Project) -> Path:
    """DuckDB production's file: the one the releases stage, swap and keep."""
    return project.warehouse_dir / f"{PRODUCTION}.duckdb"


PRODUCTION = PRODUCTION_TARGETS[0]  # DuckDB production's target
ENGINES.append(DuckDb)


def duckdb_file(project: Project, target: str) -> Path:
    """The DuckDB file ``target`` writes; one line when the target is not a DuckDB one."""
    if project.outputs[project.check_target(target)].get("type") != DuckDb.kind:
        raise MediaPulseError(f"target '{target}' is not a DuckDB target")
    return DuckDb(project, target).path
