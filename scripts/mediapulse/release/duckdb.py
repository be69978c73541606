"""A release on DuckDB: building production beside production, swapped in only when every
check passed (the jobs themselves are in `mediapulse.release.execute`).

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

import contextlib
import json
import os
import shutil
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import duckdb

from mediapulse.core import failpoints
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.freed_memory import require_wiped
from mediapulse.core.project import Project
from mediapulse.engines.duckdb import PRODUCTION, duckdb_file, open_duckdb
from mediapulse.release.state import Stamp, keep_count, pack, to_prune

PROD_DIR_ENV = "MEDIAPULSE_PROD_DIR"
HELD = "held-by"  # in the staging directory: a release staged between steps holds it
TARGET = PRODUCTION  # DuckDB production's target: the file releases stage and swap
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
        return duckdb_file(self.project, TARGET)

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

    @property
    def held_by(self) -> Path:
        """The mark of a release staged between steps: the place of its record."""
        return self.staging_dir / HELD

    def hold(self, record_dir: Path) -> None:
        self.held_by.write_text(str(record_dir) + "\n")

    def release_hold(self) -> None:
        self.held_by.unlink(missing_ok=True)

    def prepare(self) -> None:
        """A fresh staging copy of production (or nothing, for a first release)."""
        if self.held_by.is_file():
            raise MediaPulseError(
                f"a release is staged in {self.staging_dir} by `mediapulse release prepare` "
                f"(its record: {self.held_by.read_text().strip()}); nothing staged over it: "
                "publish it or `mediapulse release discard --artifacts <that state directory>`"
            )
        self.discard()
        self.staging_dir.mkdir(parents=True)
        if self.live.exists():
            fold_wal(self.live)
            # opening read-only proves it is a database and that no writer holds it
            open_duckdb(self.live, purpose="copy production for a release", read_only=True).close()
            shutil.copy2(self.live, self.staged)

    def stamp(self, stamp: Stamp, state_dir: Path) -> None:
        """Record the release and its state in the staged file, and fold the write-ahead log
        into it, so the file alone is the database and says which release it is."""
        if not self.staged.exists():
            raise MediaPulseError(f"nothing to publish: {self.staged} was not built")
        files = pack(state_dir)
        require_wiped(f"stamp {self.staged}, the release to publish")
        with duckdb.connect(str(self.staged)) as con:
            con.execute(f"create schema if not exists {STAMP_SCHEMA}")
            con.execute(
                f"create or replace table {RELEASE_TABLE} as select ? as release_id, "
                "current_timestamp as published_at, ? as job, ? as code, ? as commit, "
                "? as data_code",
                [stamp.release_id, stamp.job, stamp.code, stamp.commit, stamp.data_code],
            )
            con.execute(f"create or replace table {STATE_TABLE} (name varchar, content blob)")
            con.executemany(f"insert into {STATE_TABLE} values (?, ?)", files)
            con.execute("checkpoint")

    def publish(self) -> None:
        """Atomically make the staged (stamped) copy production; the file it replaces is kept
        in releases/ (a hard link: no copy). Call ``prune`` after."""
        self._tidy()
        if self.live.exists():
            fold_wal(self.live)
            kept = self.kept_path(self._id_of(self.live))
            kept.parent.mkdir(parents=True, exist_ok=True)
            kept.unlink(missing_ok=True)
            os.link(self.live, kept)  # the old inode survives the rename
            self._write_index([*self._index(), kept.stem])
        failpoints.reach("release.in-swap")
        os.replace(self.staged, self.live)
        self.discard()

    def prune(self) -> list[str]:
        """Drop the kept releases beyond what release_state.to_prune keeps; returns their ids."""
        kept = self.kept()
        pruned = to_prune(kept, self.live_stamp(), keep_count())
        self._write_index([s.release_id for s in kept if s.release_id not in pruned])
        for release_id in pruned:
            self.kept_path(release_id).unlink(missing_ok=True)
        return pruned

    def _id_of(self, path: Path) -> str:
        """A file's release id; one built before ids existed is named after its time."""
        stamp = read_stamp(path)
        if stamp is not None:
            return stamp.release_id
        when = datetime.fromtimestamp(path.stat().st_mtime, UTC)
        return f"{when:%Y%m%dT%H%M%SZ}-unstamped"

    def _tidy(self) -> None:
        """Under the release lock: an earlier version's single kept file joins the kept
        releases, and what a job stopped inside its swap left (a link to the live file under
        the live release's id, its id in the index) goes."""
        legacy = self.live.with_name(LEGACY_PREVIOUS)
        if legacy.exists():
            self.kept_dir.mkdir(parents=True, exist_ok=True)
            kept = self.kept_path(self._id_of(legacy))
            os.replace(legacy, kept)
            self._write_index([*self._index(), kept.stem])
        live = self.live_stamp()
        if live is not None:
            self.kept_path(live.release_id).unlink(missing_ok=True)
            if live.release_id in self._index():
                self._write_index([i for i in self._index() if i != live.release_id])

    def kept(self) -> list[Stamp]:
        """The kept releases, newest first (release ids begin with their UTC time), each marked
        ``incomplete`` when it cannot be restored. Reads only: the files are changed under the
        release lock alone (``_tidy``, ``publish``, ``prune``, ``restore``)."""
        live = self.live_stamp()
        found: dict[str, Stamp] = {}
        legacy = self.live.with_name(LEGACY_PREVIOUS)
        paths = sorted(self.kept_dir.glob("*.duckdb")) if self.kept_dir.is_dir() else []
        for path in [*paths, *([legacy] if legacy.exists() else [])]:
            stamp = read_stamp(path) or Stamp(self._id_of(path))
            if live is not None and stamp.release_id == live.release_id:
                continue  # a link to the live file left by a job stopped in its swap
            if read_state(path) is None:
                stamp = replace(stamp, incomplete=f"{path} carries no published state "
                                                  "(written by an earlier version)")  # fmt: skip
            found[stamp.release_id] = stamp
        for release_id in self._index():
            if release_id not in found and (live is None or release_id != live.release_id):
                path = self.kept_path(release_id)
                found[release_id] = Stamp(release_id, incomplete=f"{path} is missing")
        return sorted(found.values(), key=lambda s: s.release_id, reverse=True)

    def _index(self) -> list[str]:
        path = self.kept_dir / INDEX
        try:
            return [str(i) for i in json.loads(path.read_text())]
        except (OSError, ValueError, TypeError):
            return []

    def _write_index(self, ids: list[str]) -> None:
        if not ids and not self.kept_dir.is_dir():
            return  # nothing kept, nothing to say (a first release leaves no releases/)
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
        (what the rollback undoes), before the rename, so that a rollback stopped half way
        never leaves them to be chosen again. Returns the ids dropped from the kept ones."""
        self._tidy()
        path = self.kept_path(stamp.release_id)
        found = read_stamp(path) if path.exists() else None
        if found is None or found.release_id != stamp.release_id:
            held = found.release_id if found else None
            what = "is missing" if not path.exists() else f"holds release {held}"
            raise MediaPulseError(
                f"kept release {stamp.release_id} is incomplete: {path} {what}; production "
                "left as it was (restore that file, or roll back --to another kept release)"
            )
        if read_state(path) is None:
            raise MediaPulseError(
                f"kept release {stamp.release_id} is incomplete: {path} carries no published "
                "state (written by an earlier version); production left as it was"
            )
        fold_wal(self.live)
        kept = [s.release_id for s in self.kept()]
        newer = [i for i in kept if i > stamp.release_id]
        older = [i for i in kept if i < stamp.release_id]
        self._write_index([stamp.release_id, *older])
        for release_id in newer:
            self.kept_path(release_id).unlink(missing_ok=True)
        os.replace(path, self.live)
        failpoints.reach("rollback.after-swap")
        self._write_index(older)
        return newer

    def discard(self) -> None:
        shutil.rmtree(self.staging_dir, ignore_errors=True)


def fold_wal(path: Path) -> None:
    """A write-ahead log beside a production file (a writer stopped before its checkpoint) is
    part of that file: fold it in now, under the release lock, or it would be replayed into
    whatever file takes the name next."""
    wal = path.with_name(path.name + ".wal")
    if wal.exists() and path.exists():
        with open_duckdb(path, purpose="fold production's write-ahead log into it") as con:
            con.execute("checkpoint")


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
    last. Returns what was dropped, as `schema.name (kind)`. Refuses, changing nothing, a
    ``wanted`` that names none of the file's relations (the manifest of another target)."""
    dropped = []
    with duckdb.connect(str(path)) as con:
        rows = con.execute(
            "select table_schema, table_name, table_type from information_schema.tables "
            "where table_catalog = current_database() order by table_type desc, 1, 2"
        ).fetchall()  # views first: nothing of ours is left reading a dropped table
        ours = [(s, n, k) for s, n, k in rows if s not in _NOT_BUILT]
        if ours and not any((s.lower(), n.lower()) in wanted for s, n, _ in ours):
            raise MediaPulseError(
                f"none of the {len(ours)} relations of {path} is one the project builds for "
                "production (a manifest of another target?): nothing dropped; release on "
                f"target '{TARGET}'"
            )
        for schema, name, kind in ours:
            if (schema.lower(), name.lower()) in wanted:
                continue
            what = "view" if kind == "VIEW" else "table"
            con.execute(f'drop {what} "{schema}"."{name}"')
            dropped.append(f"{schema}.{name} ({what})")
        left = {s for s, _ in wanted}
        for schema in sorted({s for s, _, _ in ours} - left - {"main"}):
            # an empty schema goes; one holding anything else (a sequence) stays
            with contextlib.suppress(duckdb.Error):
                con.execute(f'drop schema "{schema}"')
        con.execute("checkpoint")
    return dropped
