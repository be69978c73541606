"""A release on DuckDB: building production beside production, swapped in only when every
check passed (the jobs themselves are in `mediapulse.release`).

DuckDB production is one file. A release copies it (snapshots keep their history), builds
the copy in a staging directory, and, when every check passed, moves the copy over the live
file with one atomic rename; the file it replaced stays as ``prod.previous.duckdb`` for a
rollback. A failed release deletes its copy: production was never touched.

Each release has an id, written into the production file (``_mediapulse.release``) and into
the production state it publishes, so a rollback can check that the file and the state it puts
back belong together.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb

from mediapulse.errors import MediaPulseError
from mediapulse.project import Project
from mediapulse.warehouse import open_duckdb

PROD_DIR_ENV = "MEDIAPULSE_PROD_DIR"
TARGET = "prod"
RELEASE_TABLE = "_mediapulse.release"


@dataclass(frozen=True)
class DuckDbRelease:
    project: Project

    @property
    def live(self) -> Path:
        return self.project.duckdb_path(TARGET)

    @property
    def staging_dir(self) -> Path:
        return self.project.warehouse_dir / ".release"

    @property
    def staged(self) -> Path:
        return self.staging_dir / self.live.name  # same file name: same catalog name `prod`

    @property
    def previous(self) -> Path:
        return self.live.with_name("prod.previous.duckdb")

    @property
    def env(self) -> dict[str, str]:
        """Point the `prod` target at the staged copy."""
        return {PROD_DIR_ENV: self.project.dbt_path(self.staging_dir)}

    def prepare(self) -> None:
        """A fresh staging copy of production (or nothing, for a first release)."""
        self.discard()
        self.staging_dir.mkdir(parents=True)
        if self.live.exists():
            # opening read-only proves it is a database and that no writer holds it
            open_duckdb(self.live, purpose="copy production for a release", read_only=True).close()
            shutil.copy2(self.live, self.staged)

    def publish(self, release_id: str, keep_previous: bool = False) -> None:
        """Atomically make the staged copy production; keep the replaced file for rollback,
        or, with ``keep_previous`` (a refresh: same code, more rows), the one kept before, so
        that a rollback still returns to the release before the last change of code."""
        if not self.staged.exists():
            raise MediaPulseError(f"nothing to publish: {self.staged} was not built")
        _stamp(self.staged, release_id)
        if self.live.exists() and not (keep_previous and self.previous.exists()):
            self.previous.unlink(missing_ok=True)
            os.link(self.live, self.previous)  # the old inode survives the swap
        os.replace(self.staged, self.live)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)


def warehouse_release_id(path: Path) -> str | None:
    """The release id a production file carries; None for a file built before ids existed."""
    with open_duckdb(path, purpose="read the release id", read_only=True) as con:
        found = con.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = '_mediapulse' and table_name = 'release'"
        ).fetchone()[0]
        if not found:
            return None
        return str(con.execute(f"select release_id from {RELEASE_TABLE}").fetchone()[0])


def _stamp(path: Path, release_id: str) -> None:
    """Record the release id in the file, and fold the write-ahead log into it, so the file
    alone is the database."""
    with duckdb.connect(str(path)) as con:
        con.execute("create schema if not exists _mediapulse")
        con.execute(
            f"create or replace table {RELEASE_TABLE} as select ? as release_id, "
            "current_timestamp as published_at",
            [release_id],
        )
        con.execute("checkpoint")
