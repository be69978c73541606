"""One interface for where a release is built before it goes live, whatever the engine:

- ``StagedFile`` (DuckDB): a copy of production's file, swapped in by a rename;
- ``GreenSchemas`` (PostgreSQL): `<schema>__green` schemas, swapped in by one transaction;
- ``InPlace`` (an engine without staged releases, Spark): dbt builds production itself.

The release's executor (release/execute.py) runs the same steps through any of them: stage,
build, drop what the project no longer has, stamp, swap, prune, discard.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import duckdb

from mediapulse.core import failpoints
from mediapulse.core.errors import MediaPulseError
from mediapulse.dbt.runner import DbtRun
from mediapulse.engines.base import Capability, Engine
from mediapulse.release import lock as release_lock
from mediapulse.release.checks import (
    check_live_release,
    check_pg_production_present,
    check_production_present,
)
from mediapulse.release.duckdb import DuckDbRelease, drop_unlisted, warehouse_release_id
from mediapulse.release.duckdb import read_state as read_duckdb_state
from mediapulse.release.postgres import PgRelease, check_complete, rename_in_state
from mediapulse.release.state import Stamp, choose_rollback, keep_count, restore_state

# The live release's packed state, read when needed (None: it carries none)
StateReader = Callable[[], list[tuple[str, bytes]] | None]


class Staging(ABC):
    """Where one release is built, and how it becomes production."""

    # a release built beside production: a failure leaves production as it was
    beside = True
    # the staged release starts as a copy of everything live: a refresh or a deploy may
    # rebuild only what changed (green schemas start empty: they build everything)
    holds_live = False

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.project = engine.project
        self.target = engine.target

    @property
    def env(self) -> dict[str, str]:
        """What dbt needs to build into the staged release."""
        return {}

    def stage(self, notes: list[str]) -> None:  # noqa: B027 - most stagings need no step here
        """Before dbt starts: what the build needs in place."""

    def after_parse(self, env: dict[str, str], refresh: bool, notes: list[str]) -> DbtRun | None:
        """What staging needs of the project's parse, done; returns the parse if it failed."""
        return None

    @property
    def has_live_copy(self) -> bool:
        """A copy of live production is staged (``holds_live`` stagings, not a first release)."""
        return False

    def live_copy_id(self) -> str | None:
        """The release the staged copy was taken from, as the copy records it."""
        return None

    @property
    def history_database(self) -> Path | None:
        """The file the run history measures the release's relations in, if not the target."""
        return None

    @abstractmethod
    def drop_removed(self, manifest: dict[str, Any], staging_dir: Path) -> str:
        """Drop what the project no longer has from the release; returns the report's note."""

    @abstractmethod
    def swap(self, stamp: Stamp, staging_dir: Path, lock: Any, notes: list[str]) -> None:
        """Stamp the release with its state and make it production, all or nothing."""

    @abstractmethod
    def live_release_id(self) -> str | None:
        """The release production is, as the warehouse records it."""

    @abstractmethod
    def kept_note(self) -> str:
        """After a swap: prune the kept releases; the report's line naming the ones kept."""

    def discard(self) -> None:  # noqa: B027 - nothing staged, nothing to discard
        """Drop whatever a release that did not go live left staged."""

    def hold(self, record_dir: Path) -> None:  # noqa: B027 - most stagings hold nothing more
        """A release staged between steps (release/steps.py): mark what is staged with the
        record's place, so that no job with another state directory stages over it."""

    def release_hold(self) -> None:  # noqa: B027
        """The staged release is swapped in or dropped: remove the mark."""

    @contextmanager
    def lock(self, job: str) -> Iterator[Any]:
        """The lock every job that changes production holds (release/lock.py); yields what
        the swap checks again, if anything. Built in place (Spark): dbt's own."""
        yield None

    def check_before_prepare(  # noqa: B027 - most stagings have nothing to check here
        self, artifacts_dir: Path, full_refresh: bool, start_over: bool
    ) -> None:
        """Refuse, before any work, a job that would lose production's history (the files a
        release reads)."""

    def check_after_prepare(  # noqa: B027 - most stagings have nothing to check here
        self, artifacts_dir: Path, start_over: bool
    ) -> None:
        """Refuse, once the target answers, a job that would lose production's history."""

    def live(self) -> tuple[Stamp | None, StateReader | None]:
        """The live release the warehouse records, and a reader of the state it carries."""
        return None, None

    def releases(self) -> tuple[Stamp | None, list[Stamp]]:
        """The live release and the ones kept for a rollback, newest first."""
        return None, []

    def rollback(self, state_dir: Path, to: str | None) -> str:
        """Put back a kept release (``to``, else the one before the last change of code) and
        its state; returns the line saying what was done."""
        raise MediaPulseError(f"{self.engine.described} keeps no release to roll back to")


class StagedFile(Staging):
    """DuckDB: production's file copied, built, renamed over production."""

    holds_live = True

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.release = DuckDbRelease(engine.project)

    @property
    def env(self) -> dict[str, str]:
        return self.release.env

    def stage(self, notes: list[str]) -> None:
        started = time.perf_counter()
        self.release.prepare()
        staged = self.release.staged
        size = staged.stat().st_size if staged.exists() else 0
        notes.append(
            f"staged copy of production: {time.perf_counter() - started:.1f} s, "
            f"{size / 2**20:,.0f} MiB (the file a release builds in)"
        )

    @property
    def has_live_copy(self) -> bool:
        return self.release.staged.exists()

    def live_copy_id(self) -> str | None:
        return warehouse_release_id(self.release.staged) if self.has_live_copy else None

    @property
    def history_database(self) -> Path | None:
        return self.release.live

    def drop_removed(self, manifest: dict[str, Any], staging_dir: Path) -> str:
        wanted = project_relations(manifest, self.release.live.stem)
        return dropped_note(drop_unlisted(self.release.staged, wanted), "dropped from production")

    def swap(self, stamp: Stamp, staging_dir: Path, lock: Any, notes: list[str]) -> None:
        self.release.stamp(stamp, staging_dir)
        failpoints.reach("release.before-swap")
        self.release.publish()

    def live_release_id(self) -> str | None:
        live = self.release.live_stamp()
        return live.release_id if live else None

    def kept_note(self) -> str:
        return _kept_note(lambda: (self.release.prune(), self.release.kept()))

    def discard(self) -> None:
        self.release.discard()

    def hold(self, record_dir: Path) -> None:
        self.release.hold(record_dir)

    def release_hold(self) -> None:
        self.release.release_hold()

    @contextmanager
    def lock(self, job: str) -> Iterator[Any]:
        with release_lock.file_lock(self.release.lock_file, job):
            yield None

    def check_before_prepare(
        self, artifacts_dir: Path, full_refresh: bool, start_over: bool
    ) -> None:
        if full_refresh:
            check_production_present(self.project, self.release, artifacts_dir, start_over)
        else:
            check_live_release(self.release, artifacts_dir)

    def live(self) -> tuple[Stamp | None, StateReader | None]:
        stamp = self.release.live_stamp()
        live = self.release.live
        return stamp, (lambda: read_duckdb_state(live)) if stamp else None

    def releases(self) -> tuple[Stamp | None, list[Stamp]]:
        return self.release.live_stamp(), self.release.kept()

    def rollback(self, state_dir: Path, to: str | None) -> str:
        release = self.release
        live = release.live_stamp()
        chosen = choose_rollback(live, release.kept(), to)
        kept = release.kept_path(chosen.release_id)
        files = read_duckdb_state(kept) if kept.exists() else None
        dropped = release.restore(chosen)  # refuses an incomplete kept release, unchanged
        if files is not None:
            restore_state(files, state_dir)
        return rolled_back(live, chosen, dropped)


class GreenSchemas(Staging):
    """PostgreSQL: green schemas, built from a parse, swapped in by one transaction."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(engine)
        self.release = PgRelease(engine.project, engine.target)
        self.schemas: list[str] = []  # the green ones this release staged, until swapped

    @property
    def env(self) -> dict[str, str]:
        return self.release.env

    def after_parse(self, env: dict[str, str], refresh: bool, notes: list[str]) -> DbtRun | None:
        parsed, self.schemas, kept = self.release.parse(env, keep_incremental=refresh)
        if not parsed.success:
            return parsed
        started = time.perf_counter()
        copied, size = self.release.prepare(self.schemas, kept)
        notes.append(
            f"staged copy of production: {time.perf_counter() - started:.1f} s, "
            f"{copied} tables, {size / 2**20:,.1f} MiB copied into the green schemas"
        )
        return None

    def drop_removed(self, manifest: dict[str, Any], staging_dir: Path) -> str:
        removed = self.release.removed_relations(self.schemas)
        rename_in_state(staging_dir)
        return dropped_note(
            removed, "no longer in production (kept with the replaced release until it is pruned)"
        )

    def swap(self, stamp: Stamp, staging_dir: Path, lock: Any, notes: list[str]) -> None:
        pg = self.release
        pg.stamp(self.schemas, stamp, staging_dir)
        failpoints.reach("release.before-swap")
        release_lock.still_held(lock, pg.database, pg.base_schema)
        seconds = pg.publish(self.schemas, stamp.release_id)
        notes.append(
            f"swap: {len(self.schemas)} schemas in {seconds * 1000:.1f} ms, one transaction"
        )
        self.schemas = []  # swapped: no green left to discard

    def live_release_id(self) -> str | None:
        live = self.release.releases().live
        return live.stamp.release_id if live else None

    def kept_note(self) -> str:
        def prune() -> tuple[list[str], list[Stamp]]:
            found = self.release.releases()
            pruned = self.release.prune(found)
            return pruned, [e.stamp for e in found.kept if e.stamp.release_id not in pruned]

        return _kept_note(prune)

    def discard(self) -> None:
        if self.schemas:  # a failed release's green; after a swap there is none left
            self.release.discard(self.schemas)
            self.schemas = []

    @contextmanager
    def lock(self, job: str) -> Iterator[Any]:
        pg = self.release

        def connect(application_name: str) -> Any:
            con = pg.connect()
            with con.cursor() as cursor:
                cursor.execute(
                    "select pg_catalog.set_config('application_name', %s, false)",
                    [application_name],
                )
            con.commit()
            return con

        with release_lock.advisory_lock(connect, pg.database, pg.base_schema, job) as con:
            yield con

    def check_after_prepare(self, artifacts_dir: Path, start_over: bool) -> None:
        check_pg_production_present(self.release, artifacts_dir, start_over)

    def live(self) -> tuple[Stamp | None, StateReader | None]:
        found = self.release.releases().live
        if not found:
            return None, None
        return found.stamp, lambda: self.release.read_state(found)

    def releases(self) -> tuple[Stamp | None, list[Stamp]]:
        found = self.release.releases()
        return (found.live.stamp if found.live else None), [e.stamp for e in found.kept]

    def rollback(self, state_dir: Path, to: str | None) -> str:
        pg = self.release
        found = pg.releases()
        live = found.live.stamp if found.live else None
        chosen = choose_rollback(live, [e.stamp for e in found.kept], to)
        entry = next(e for e in found.kept if e.stamp.release_id == chosen.release_id)
        check_complete(entry)
        files = pg.read_state(entry)
        if files is None:
            raise MediaPulseError(
                f"kept release {chosen.release_id} is incomplete: none of its schemas carries "
                "its published state (written by an earlier version); production left as it was"
            )
        pg.restore(found, entry)
        restore_state(files, state_dir)
        newer = [e.stamp.release_id for e in found.kept if e.stamp.release_id > chosen.release_id]
        return rolled_back(live, chosen, newer)


class InPlace(Staging):
    """An engine without staged releases (Spark): dbt builds production itself, nothing is
    swapped or kept, and a failure leaves production as far as dbt got."""

    beside = False

    def drop_removed(self, manifest: dict[str, Any], staging_dir: Path) -> str:
        return "relations the project no longer has: not looked for (built in place)"

    def swap(self, stamp: Stamp, staging_dir: Path, lock: Any, notes: list[str]) -> None:
        notes.append("built in place: no staged copy to swap, no release kept")

    def live_release_id(self) -> str | None:
        return None

    def kept_note(self) -> str:
        return "kept for a rollback: nothing (built in place)"


def staging_for(engine: Engine) -> Staging:
    """The staging of ``target``'s engine: its capability says whether it stages at all."""
    if not engine.can(Capability.STAGED_RELEASES):
        return InPlace(engine)
    return StagedFile(engine) if engine.embedded else GreenSchemas(engine)


def project_relations(manifest: dict[str, Any], database: str) -> set[tuple[str, str]]:
    """(schema, name) of every relation the project builds in ``database``, lower case
    (pure): the run history's views live in another catalog."""
    return {
        (node["schema"].lower(), (node.get("alias") or node["name"]).lower())
        for node in manifest["nodes"].values()
        if node["resource_type"] in ("model", "seed", "snapshot")
        and (node.get("config") or {}).get("enabled", True)
        and (node.get("config") or {}).get("materialized") != "ephemeral"
        and str(node.get("database") or "").lower() == database.lower()
    }


def rolled_back(live: Stamp | None, chosen: Stamp, dropped: list[str]) -> str:
    undone = ", ".join([*([live.release_id] if live else []), *dropped]) or "none"
    return f"production rolled back to {chosen.describe()}; releases undone and dropped: {undone}"


def dropped_note(names: list[str], what: str) -> str:
    if not names:
        return "relations the project no longer has: none"
    return f"relations the project no longer has, {what}: {', '.join(names)}"


def _kept_note(prune: Any) -> str:
    """The kept releases after the swap, pruned (best effort: the release is live)."""
    try:
        pruned, kept = prune()
    except (MediaPulseError, duckdb.Error, OSError) as exc:
        return f"warning: the kept releases could not be listed or pruned ({exc})"
    listing = ", ".join(s.release_id for s in kept) or "none"
    gone = f"; pruned: {', '.join(pruned)}" if pruned else ""
    return (
        f"kept for a rollback (the last {keep_count()}, and the newest of each code before "
        f"the live one's): {listing}{gone}"
    )
