"""Building production beside production, and swapping it in only when everything passed.

DuckDB production is one file. A release copies it (snapshots keep their history), builds
the copy in a staging directory, and, when every check passed, moves the copy over the live
file with one atomic rename; the file it replaced stays as ``prod.previous.duckdb`` for a
rollback. A failed release deletes its copy: production was never touched.
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


@dataclass(frozen=True)
class Release:
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
        return {PROD_DIR_ENV: str(self.staging_dir)}

    def prepare(self) -> None:
        """A fresh staging copy of production (or nothing, for a first release)."""
        self.discard()
        self.staging_dir.mkdir(parents=True)
        if self.live.exists():
            # opening read-only proves it is a database and that no writer holds it
            open_duckdb(self.live, purpose="copy production for a release", read_only=True).close()
            shutil.copy2(self.live, self.staged)

    def publish(self) -> None:
        """Atomically make the staged copy production; keep the replaced file for rollback."""
        if not self.staged.exists():
            raise MediaPulseError(f"nothing to publish: {self.staged} was not built")
        _checkpoint(self.staged)
        if self.live.exists():
            self.previous.unlink(missing_ok=True)
            os.link(self.live, self.previous)  # the old inode survives the swap
        os.replace(self.staged, self.live)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)


def rollback(project: Project) -> None:
    """Put the production file a release replaced back in place."""
    release = Release(project)
    if not release.previous.exists():
        raise MediaPulseError(
            f"no previous production at {release.previous}: nothing to roll back to"
        )
    os.replace(release.previous, release.live)


def _checkpoint(path: Path) -> None:
    """Fold a leftover write-ahead log into the file, so the file alone is the database."""
    if path.with_name(path.name + ".wal").exists():
        with duckdb.connect(str(path)) as con:
            con.execute("checkpoint")
