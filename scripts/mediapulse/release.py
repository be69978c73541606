"""Building production beside production, and swapping it in only when everything passed.

DuckDB production is one file. A release copies it (snapshots keep their history), builds
the copy in a staging directory, and, when every check passed, moves the copy over the live
file with one atomic rename; the file it replaced stays as ``prod.previous.duckdb`` for a
rollback. A failed release deletes its copy: production was never touched.

Each release has an id, written into the production file (``_mediapulse.release``) and into
the production state it publishes (``release.json``, beside the manifest slim CI compares
with). The state of the release it replaced moves to ``<state>/previous/``, so a rollback
puts back the file and the state that belong together, and can check that they do.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from mediapulse import artifacts
from mediapulse.errors import MediaPulseError
from mediapulse.project import Project
from mediapulse.warehouse import open_duckdb

PROD_DIR_ENV = "MEDIAPULSE_PROD_DIR"
TARGET = "prod"
RELEASE_FILE = "release.json"
PREVIOUS = "previous"  # the replaced release's state, inside the state directory
RELEASE_TABLE = "_mediapulse.release"


def new_release_id() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"


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

    def publish(self, release_id: str) -> None:
        """Atomically make the staged copy production; keep the replaced file for rollback."""
        if not self.staged.exists():
            raise MediaPulseError(f"nothing to publish: {self.staged} was not built")
        _stamp(self.staged, release_id)
        if self.live.exists():
            self.previous.unlink(missing_ok=True)
            os.link(self.live, self.previous)  # the old inode survives the swap
        os.replace(self.staged, self.live)
        self.discard()

    def discard(self) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)


def published_state(state_dir: Path) -> dict | None:
    """What the state directory says of the release it describes; None when it holds none.
    A state written before release ids existed is described by its manifest alone."""
    if (state_dir / RELEASE_FILE).is_file():
        return artifacts.load_json(state_dir / RELEASE_FILE, "release record")
    if (state_dir / "manifest.json").is_file():
        manifest = artifacts.load_json(state_dir / "manifest.json", "production manifest")
        return {"release_id": None, "built_at": manifest["metadata"].get("generated_at")}
    return None


def publish_state(
    staged_state: Path, state_dir: Path, release_id: str, job: str, project_vars: dict
) -> None:
    """Make ``staged_state`` the published state, the state it replaces kept in previous/.

    The release record holds the project's vars too: dbt's `state:modified` does not compare
    them, so slim CI does, against the vars production was built with."""
    record = {
        "release_id": release_id,
        "job": job,
        "built_at": datetime.now(UTC).isoformat(),
        "vars": project_vars,
    }
    (staged_state / RELEASE_FILE).write_text(json.dumps(record, indent=2, default=str) + "\n")
    if published_state(state_dir) is not None:
        kept = staged_state / PREVIOUS
        kept.mkdir()
        for item in state_dir.iterdir():
            if item.is_file():
                shutil.copy2(item, kept / item.name)
    _replace_dir(staged_state, state_dir)


def _replace_dir(new: Path, live: Path) -> None:
    """``new`` takes ``live``'s place; the old one is removed only once the new one is there."""
    old = live.with_name(live.name + ".replaced")
    shutil.rmtree(old, ignore_errors=True)
    if live.exists():
        live.rename(old)
    new.rename(live)
    shutil.rmtree(old, ignore_errors=True)


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


def rollback(project: Project, state_dir: Path) -> str:
    """Put back the production file the last release replaced, and the state that describes
    it, so the next pull request is compared with what is live. Returns what was restored."""
    release = Release(project)
    if not release.previous.exists():
        raise MediaPulseError(
            f"nothing to roll back to: no previous production at {release.previous} (each "
            "release keeps the one it replaced; no release has run since the last rollback)"
        )
    previous_state = state_dir / PREVIOUS
    kept = published_state(previous_state)
    if kept is None:
        raise MediaPulseError(
            f"nothing to roll back to: no previous production state in {previous_state}; pass "
            "--artifacts the directory the last release published its state to"
        )
    in_file = warehouse_release_id(release.previous)
    if kept["release_id"] and in_file and kept["release_id"] != in_file:
        raise MediaPulseError(
            f"{release.previous} is release {in_file} but {previous_state} describes release "
            f"{kept['release_id']}: they are not the same release; restore the matching "
            "production-warehouse and production-state artifacts, then retry"
        )
    staged = state_dir.with_name(state_dir.name + ".rollback")
    shutil.rmtree(staged, ignore_errors=True)
    shutil.copytree(previous_state, staged)
    os.replace(release.previous, release.live)
    _replace_dir(staged, state_dir)
    return kept["release_id"] or f"built {kept['built_at']}"


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
