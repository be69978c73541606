"""A release on DuckDB: building production beside production, swapped in only when every
check passed (the jobs themselves are in `mediapulse.release`).

DuckDB production is one file. A release copies it (snapshots keep their history), builds
the copy in a staging directory, stamps it (``_mediapulse.release``: id, job, code, commit;
``_mediapulse.release_state``: the state it publishes) and, when every check passed, moves it
over the live file with one atomic rename. The file it replaced stays, by a hard link made
before the rename, as ``releases/<release id>.duckdb`` beside production; the newest
``$MEDIAPULSE_KEEP_RELEASES`` (3) are kept. A failed release deletes its copy: production was
never touched. A kill at any point leaves the live file one whole release: the old one until
the rename, the new one after it.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import duckdb

from mediapulse import failpoints
from mediapulse.errors import MediaPulseError
from mediapulse.project import Project
from mediapulse.release_state import Stamp, keep_count, pack
from mediapulse.warehouse import open_duckdb

PROD_DIR_ENV = "MEDIAPULSE_PROD_DIR"
TARGET = "prod"
STAMP_SCHEMA = "_mediapulse"
RELEASE_TABLE = f"{STAMP_SCHEMA}.release"
STATE_TABLE = f"{STAMP_SCHEMA}.release_state"
LEGACY_PREVIOUS = "prod.previous.duckdb"  # the one kept release of earlier versions
KEPT_DIR = "releases"
# the ids of the kept releases, so that a kept file deleted by hand is named, not forgotten
INDEX = "index.json"
# schemas of the production file that are not the project's relations
_NOT_BUILT = ("_mediapulse", "information_schema", "pg_catalog")


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
    def kept_dir(self) -> Path:
        return self.live.parent / KEPT_DIR

    @property
    def lock_file(self) -> Path:
        return self.live.with_name(self.live.name + ".release-lock")

    def kept_path(self, release_id: str) -> Path:
        return self.kept_dir / f"{release_id}.duckdb"

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

    def stamp(self, stamp: Stamp, state_dir: Path) -> None:
        """Record the release and its state in the staged file, and fold the write-ahead log
        into it, so the file alone is the database and says which release it is."""
        if not self.staged.exists():
            raise MediaPulseError(f"nothing to publish: {self.staged} was not built")
        files = pack(state_dir)
        with duckdb.connect(str(self.staged)) as con:
            con.execute(f"create schema if not exists {STAMP_SCHEMA}")
            con.execute(
                f"create or replace table {RELEASE_TABLE} as select ? as release_id, "
                "current_timestamp as published_at, ? as job, ? as code, ? as commit",
                [stamp.release_id, stamp.job, stamp.code, stamp.commit],
            )
            con.execute(f"create or replace table {STATE_TABLE} (name varchar, content blob)")
            con.executemany(f"insert into {STATE_TABLE} values (?, ?)", files)
            con.execute("checkpoint")

    def publish(self, keep_live: bool = True) -> list[str]:
        """Atomically make the staged (stamped) copy production. With ``keep_live`` the file it
        replaces is kept in releases/ (a refresh, the same code with more rows, does not keep
        it). Returns the ids of kept releases pruned beyond the number kept."""
        self._adopt_legacy_previous()
        if keep_live and self.live.exists():
            stamp = read_stamp(self.live)
            kept = self.kept_path(stamp.release_id if stamp else "unknown")
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.unlink(missing_ok=True)
            os.link(self.live, kept)  # the old inode survives the rename
            self._write_index([*self._index(), kept.stem])
        failpoints.reach("release.in-swap")
        os.replace(self.staged, self.live)
        self.discard()
        return self.prune()

    def prune(self) -> list[str]:
        """Keep the newest keep_count() releases; returns the ids removed."""
        kept = [s.release_id for s in self.kept()]
        pruned = kept[keep_count() :]
        for release_id in pruned:
            self.kept_path(release_id).unlink(missing_ok=True)
        self._write_index(kept[: keep_count()])
        return pruned

    def _adopt_legacy_previous(self) -> None:
        """An earlier version's single kept file joins the kept releases."""
        legacy = self.live.with_name(LEGACY_PREVIOUS)
        if legacy.exists():
            stamp = read_stamp(legacy)
            self.kept_dir.mkdir(parents=True, exist_ok=True)
            kept = self.kept_path(stamp.release_id if stamp else "unknown")
            os.replace(legacy, kept)
            self._write_index([*self._index(), kept.stem])

    def kept(self) -> list[Stamp]:
        """The kept releases, newest first (release ids begin with their UTC time). One the
        index lists whose file is gone is listed as a bare id (``restore`` names the file)."""
        self._adopt_legacy_previous()
        live = self.live_stamp()
        found: dict[str, Stamp] = {}
        for path in self.kept_dir.glob("*.duckdb") if self.kept_dir.is_dir() else []:
            stamp = read_stamp(path) or Stamp(path.stem)
            if live is not None and stamp.release_id == live.release_id:
                path.unlink()  # a link to the live file left by a job stopped in its swap
                continue
            found[stamp.release_id] = stamp
        for release_id in self._index():
            if live is None or release_id != live.release_id:
                found.setdefault(release_id, Stamp(release_id))
        return sorted(found.values(), key=lambda s: s.release_id, reverse=True)

    def _index(self) -> list[str]:
        path = self.kept_dir / INDEX
        try:
            return [str(i) for i in json.loads(path.read_text())]
        except (OSError, ValueError, TypeError):
            return []

    def _write_index(self, ids: list[str]) -> None:
        self.kept_dir.mkdir(parents=True, exist_ok=True)
        path = self.kept_dir / INDEX
        staged = path.with_name(INDEX + ".new")
        staged.write_text(json.dumps(sorted(set(ids), reverse=True)) + "\n")
        os.replace(staged, path)

    def live_stamp(self) -> Stamp | None:
        return read_stamp(self.live) if self.live.exists() else None

    def restore(self, stamp: Stamp) -> list[str]:
        """A rollback: the kept release ``stamp`` becomes production in one rename; the
        release it replaces is dropped with it, and so are the kept releases newer than it
        (what the rollback undoes). Returns the ids dropped from the kept ones."""
        path = self.kept_path(stamp.release_id)
        found = read_stamp(path) if path.exists() else None
        if found is None or found.release_id != stamp.release_id:
            what = (
                "is missing" if not path.exists() else f"holds release {found and found.release_id}"
            )
            raise MediaPulseError(
                f"kept release {stamp.release_id} is incomplete: {path} {what}; production "
                "left as it was (restore that file, or roll back --to another kept release)"
            )
        if read_state(path) is None:
            raise MediaPulseError(
                f"kept release {stamp.release_id} is incomplete: {path} carries no published "
                "state (written by an earlier version); production left as it was"
            )
        kept = [s.release_id for s in self.kept()]
        newer = [i for i in kept if i > stamp.release_id]
        os.replace(path, self.live)
        failpoints.reach("rollback.after-swap")
        for release_id in newer:
            self.kept_path(release_id).unlink(missing_ok=True)
        self._write_index([i for i in kept if i < stamp.release_id])
        return newer

    def discard(self) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)


def read_stamp(path: Path) -> Stamp | None:
    """The release a production file carries; None for a file built before ids existed."""
    with open_duckdb(path, purpose="read the release id", read_only=True) as con:
        if not _has_table(con, "release"):
            return None
        cursor = con.execute(f"select * from {RELEASE_TABLE}")
        names = [d[0] for d in cursor.description]
        return Stamp.from_row(dict(zip(names, cursor.fetchone(), strict=True)))


def warehouse_release_id(path: Path) -> str | None:
    """The release id a production file carries; None for a file built before ids existed."""
    stamp = read_stamp(path)
    return stamp.release_id if stamp else None


def read_state(path: Path) -> list[tuple[str, bytes]] | None:
    """The packed state a production file carries; None when it carries none."""
    with open_duckdb(path, purpose="read the release state", read_only=True) as con:
        if not _has_table(con, "release_state"):
            return None
        return [
            (n, bytes(c))
            for n, c in con.execute(f"select name, content from {STATE_TABLE}").fetchall()
        ]


def _has_table(con: duckdb.DuckDBPyConnection, name: str) -> bool:
    return bool(
        con.execute(
            "select count(*) from information_schema.tables "
            "where table_schema = ? and table_name = ?",
            [STAMP_SCHEMA, name],
        ).fetchone()[0]
    )


def drop_unlisted(path: Path, wanted: set[tuple[str, str]]) -> list[str]:
    """Drop from the staged file every relation that is not one the project builds
    (``wanted``: (schema, name), lower case), and schemas left empty: a model deleted from the
    project must not live on in production because each release starts from a copy of the
    last. Returns what was dropped, as `schema.name (kind)`."""
    dropped = []
    with duckdb.connect(str(path)) as con:
        rows = con.execute(
            "select table_schema, table_name, table_type from information_schema.tables "
            "where table_catalog = current_database() order by table_type desc, 1, 2"
        ).fetchall()  # views first: nothing of ours is left reading a dropped table
        for schema, name, kind in rows:
            if schema in _NOT_BUILT or (schema.lower(), name.lower()) in wanted:
                continue
            what = "view" if kind == "VIEW" else "table"
            con.execute(f'drop {what} "{schema}"."{name}"')
            dropped.append(f"{schema}.{name} ({what})")
        used = {schema for schema, _, _ in rows if schema not in _NOT_BUILT}
        left = {s for s, n in wanted}
        for schema in sorted(used - left):
            remaining = con.execute(
                "select count(*) from information_schema.tables where table_schema = ? "
                "and table_catalog = current_database()",
                [schema],
            ).fetchone()[0]
            if not remaining and schema != "main":
                con.execute(f'drop schema "{schema}"')
        con.execute("checkpoint")
    return dropped
