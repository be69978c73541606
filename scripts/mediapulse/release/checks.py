"""What a release checks before it stages anything: that the state it was given describes
production, and that no production whose history would be lost is rebuilt from empty (on
GitHub, production's warehouse and state travel as artifacts that expire)."""

from __future__ import annotations

from pathlib import Path

import duckdb

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.dbt import artifacts
from mediapulse.engines.base import Engine
from mediapulse.engines.targets import resolve
from mediapulse.monitoring import history
from mediapulse.release.duckdb import TARGET as DUCKDB_PROD
from mediapulse.release.duckdb import DuckDbRelease, warehouse_release_id
from mediapulse.release.postgres import PgRelease
from mediapulse.release.state import RELEASE_FILE

NO_STATE = (
    "no production state in {state_dir}: a refresh adds to a live release; run `mediapulse "
    "nightly` (or deploy) first"
)


def published_state(state_dir: Path) -> dict | None:
    """What the state directory says of the release it describes; None when it holds none.
    A state written before release ids existed is described by its manifest alone."""
    if (state_dir / RELEASE_FILE).is_file():
        return artifacts.load_json(state_dir / RELEASE_FILE, "release record")
    if (state_dir / "manifest.json").is_file():
        manifest = artifacts.load_json(state_dir / "manifest.json", "production manifest")
        return {"release_id": None, "built_at": manifest["metadata"].get("generated_at")}
    return None


def production_history(engine: Engine) -> str | None:
    """The newest release the run history records for ``target``, as a phrase; None when it
    records none (or there is no history)."""
    if not history.duckdb_path(engine).exists():
        return None
    try:
        rows = history.read(
            engine, "select release_id, cast(started_at as varchar) from monitoring.runs "
            "where status = 'success' and release_id is not null "
            "order by started_at desc limit 1",
        )  # fmt: skip
    except (MediaPulseError, duckdb.Error):
        return None
    return f"release {rows[0][0]} of {rows[0][1][:19]}" if rows else None


def check_production_present(
    project: Project, release: DuckDbRelease, artifacts_dir: Path, start_over: bool
) -> None:
    """Refuse to rebuild production from nothing when the published state, or the run
    history, says it exists.

    On GitHub the production file travels as an artifact that expires; rebuilding from an
    empty file would silently drop the snapshots' history (and demo data would stand in for
    the loader's raw data), so that takes an explicit --start-over.
    """
    previous = published_state(artifacts_dir)
    missing = [p for p in (release.live, project.raw_path) if not p.exists()]
    if previous is None and not release.live.exists():
        recorded = production_history(resolve(project, DUCKDB_PROD))
        if recorded is None or start_over:
            print(
                f"notice: no production yet (no state in {artifacts_dir}, no {release.live}): "
                "building production from scratch (first run)"
            )
            return
        raise MediaPulseError(
            f"the run history records production ({recorded}) but neither its warehouse "
            f"{release.live} nor its state in {artifacts_dir} is here (on GitHub: both "
            "artifacts expired or were not downloaded); building from scratch would replace "
            "the loader's raw data and the snapshots' history with demo data: restore them, or "
            "start production over deliberately with --start-over"
        )
    if not missing:
        return
    names = " and ".join(str(p) for p in missing)
    if start_over:
        print(f"warning: --start-over: {names} missing; production starts again from empty")
        return
    described = (
        f"release {previous['release_id']}" if previous and previous.get("release_id")
        else f"built {previous.get('built_at')}" if previous else "the existing production"
    )  # fmt: skip
    raise MediaPulseError(
        f"production ({described}, state in {artifacts_dir}) exists but {names} is missing "
        "(on GitHub: the production-warehouse or production-raw artifact expired or was not "
        "downloaded); "
        "rebuilding from empty would lose the snapshots' history: restore the file(s), or "
        "start production over deliberately with --start-over"
    )


def check_live_release(release: DuckDbRelease, state_dir: Path) -> None:
    """What a job that adds to production needs: the production file, and the one the state
    describes (a refresh compares the raw data with what that release read)."""
    previous = published_state(state_dir)
    if previous is None:
        raise MediaPulseError(NO_STATE.format(state_dir=state_dir))
    for path in (release.live, release.project.raw_path):
        if not path.exists():
            raise MediaPulseError(
                f"{path} not found, but the state in {state_dir} describes a live release: a "
                "refresh adds to production and reads the loader's raw data; restore it (on "
                "GitHub: the production-warehouse and production-raw artifacts), or run the "
                "nightly"
            )
    in_file, described = warehouse_release_id(release.live), previous.get("release_id")
    if in_file and described and in_file != described:
        raise MediaPulseError(
            f"{release.live} is release {in_file} but {state_dir} describes release "
            f"{described}: restore the matching production-warehouse and production-state "
            "artifacts, then retry"
        )


def check_pg_production_present(release: PgRelease, artifacts_dir: Path, start_over: bool) -> None:
    """PostgreSQL's counterpart of check_production_present: the state says production exists,
    but no live schema carries a release (they were dropped), so the snapshots' history is gone."""
    previous = published_state(artifacts_dir)
    if previous is None or release.live_schemas():
        return
    where = f"target '{release.target}' (no {release.base_schema}* schema carries a release)"
    if start_over:
        print(f"warning: --start-over: no production on {where}; production starts again")
        return
    raise MediaPulseError(
        f"production (state in {artifacts_dir}) exists but not on {where}: rebuilding from "
        "empty would lose the snapshots' history: restore the schemas, or start production "
        "over deliberately with --start-over"
    )


# what runs the code: an upgrade of dbt or an adapter is a change of code too
