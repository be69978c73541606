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
from pathlib import Path
from typing import Any

import duckdb

from mediapulse.core import failpoints
from mediapulse.core.errors import MediaPulseError
from mediapulse.dbt.runner import DbtRun
from mediapulse.engines.base import Capability, Engine
from mediapulse.release import lock as release_lock
from mediapulse.release.duckdb import DuckDbRelease, drop_unlisted, warehouse_release_id
from mediapulse.release.postgres import PgRelease, rename_in_state
from mediapulse.release.state import Stamp, keep_count


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
