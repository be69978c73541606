"""The record of a release staged by `mediapulse release prepare` (release/steps.py): a release
in steps a scheduler runs one by one (Airflow, Dagster, cron, a person):

- ``prepare``: the job's checks, then a staged release (a copy of production's file on DuckDB,
  green schemas on PostgreSQL) and its record;
- ``build``: any dbt command inside the staged release, as many as the scheduler makes (one per
  model, one for everything); each node's result is recorded in the staged release;
- ``publish``: refuses a release whose builds did not all pass, else the job's own last steps
  (freshness, docs, the monitoring views, slim CI's parse), the swap, the state, the history;
- ``discard``: drops the staged release, production untouched.

`mediapulse nightly`, `refresh` and `deploy` run the same steps in one process (and one dbt
parse). Between steps the staged release is held by its record, ``<artifacts>.staged/``: while
it is there no other job stages, swaps or rolls back that production, and a failed model leaves
it staged so that building the model again resumes it. Each step holds the release lock for its
own length, as every job does (release/lock.py).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mediapulse.core.errors import MediaPulseError
from mediapulse.engines.base import Engine

RECORD = "staged-release.json"
STAGED_SUFFIX = ".staged"
STAGED, PUBLISHED, DISCARDED = "staged", "published", "discarded"
FAILED = ("error", "fail", "runtime error")
# what publish requires of a full build: every one of these the project builds, built
BUILT_TYPES = ("model", "seed", "snapshot")


def staged_dir(artifacts_dir: Path) -> Path:
    """Where a staged release's record and gathered results live, beside the state."""
    return artifacts_dir.with_name(artifacts_dir.name + STAGED_SUFFIX)


@dataclass
class StagedRelease:
    """The record of one staged release (``<artifacts>.staged/staged-release.json``)."""

    folder: Path
    data: dict[str, Any]

    @property
    def release_id(self) -> str:
        return str(self.data["release_id"])

    @property
    def status(self) -> str:
        return str(self.data.get("status", STAGED))

    @property
    def job(self) -> str:
        return str(self.data["job"])

    @property
    def env(self) -> dict[str, str]:
        return dict(self.data.get("env") or {})

    @property
    def nodes(self) -> dict[str, dict[str, Any]]:
        return dict(self.data.get("nodes") or {})

    def describe(self) -> str:
        return (
            f"release {self.release_id} ({self.job} on target '{self.data['target']}', "
            f"prepared {self.data['prepared_at']})"
        )

    def save(self) -> None:
        path = self.folder / RECORD
        partial = path.with_name(RECORD + ".new")
        partial.write_text(json.dumps(self.data, indent=2, default=str) + "\n")
        os.replace(partial, path)


def load(artifacts_dir: Path) -> StagedRelease | None:
    """The staged release's record, if any (published and discarded ones too: their tombstone)."""
    folder = staged_dir(artifacts_dir)
    path = folder / RECORD
    if not path.is_file():
        return None
    try:
        return StagedRelease(folder, json.loads(path.read_text()))
    except ValueError as exc:
        raise MediaPulseError(
            f"{path} is not a staged release's record ({exc}): if no release is staged, "
            f"delete {folder}"
        ) from exc


@contextlib.contextmanager
def updating(artifacts_dir: Path) -> Iterator[StagedRelease]:
    """The record, read and written back under a lock: builds run side by side (one per model)
    and each adds its results."""
    folder = staged_dir(artifacts_dir)
    with (folder / "record.lock").open("a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        staged = load(artifacts_dir)
        if staged is None:
            raise MediaPulseError(f"no release is staged in {folder}")
        yield staged
        staged.save()


@contextlib.contextmanager
def updating_file(path: Path) -> Iterator[dict[str, Any]]:
    """A JSON file of the staged release, read and written back under a lock."""
    with path.with_name(path.name + ".lock").open("a+") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        data = json.loads(path.read_text()) if path.is_file() else {}
        yield data
        partial = path.with_name(path.name + ".new")
        partial.write_text(json.dumps(data))
        os.replace(partial, path)


def refuse_if_staged(artifacts_dir: Path, job: str) -> None:
    """A job that would stage, swap or roll back production while a release is staged: one
    line naming the release and both ways out."""
    staged = load(artifacts_dir)
    if staged is not None and staged.status == STAGED:
        raise MediaPulseError(
            f"{staged.describe()} is staged and not yet published; {job} did not start "
            "(production untouched): build what failed again and `mediapulse release publish`, "
            "or drop it with `mediapulse release discard`"
        )


def require_staged(artifacts_dir: Path, engine: Engine, step: str) -> StagedRelease:
    """The staged release a build or publish works on, or one line saying why there is none."""
    staged = load(artifacts_dir)
    if staged is None:
        raise MediaPulseError(
            f"no release is prepared for {artifacts_dir}: run `mediapulse release prepare "
            f"--job JOB --artifacts {artifacts_dir}` before `{step}`"
        )
    if staged.status != STAGED:
        when = staged.data.get(f"{staged.status}_at", "")
        raise MediaPulseError(
            f"release {staged.release_id} was already {staged.status} {when}: nothing to "
            f"{step.split()[-1]}; prepare a new release first (`mediapulse release prepare`)"
        )
    if staged.data["target"] != engine.target:
        raise MediaPulseError(
            f"release {staged.release_id} is staged for target '{staged.data['target']}', not "
            f"'{engine.target}': pass --target {staged.data['target']}"
        )
    return staged


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def record_results(artifacts_dir: Path, args: list[str], ok: bool, seconds: float,
                   results: list[tuple[str, str, str, str]], attempts: int) -> None:  # fmt: skip
    """Add one dbt invocation and its nodes' results (unique id, status, message, the
    checksum of the code it ran) to the staged release: a node's last result counts."""
    with updating(artifacts_dir) as staged:
        nodes = staged.nodes
        for unique_id, status, message, checksum in results:
            nodes[unique_id] = {"status": status, "message": message[:500], "at": now(),
                                "checksum": checksum}  # fmt: skip
        staged.data["nodes"] = nodes
        staged.data.setdefault("builds", []).append({
            "args": args, "success": ok, "seconds": round(seconds, 2), "at": now(),
            "nodes": len(results), "attempts": attempts,
        })  # fmt: skip


def publish_problems(
    staged: StagedRelease, manifest: dict[str, Any] | None, full: bool
) -> list[str]:
    """Why the staged release cannot be published (pure): nodes whose last result failed;
    with the manifest of the code publish runs, nodes built from code changed since, and for
    a job that rebuilds everything, what the project builds but no build built."""
    nodes = staged.nodes
    failed = sorted(uid for uid, r in nodes.items() if r["status"] in FAILED)
    problems = [_listed("failed", failed)] if failed else []
    if not staged.data.get("builds"):
        return [*problems, "nothing was built in it"]
    if manifest is None:
        return problems
    current = {uid: node["checksum"]["checksum"] for uid, node in manifest["nodes"].items()}
    stale = sorted(
        uid for uid, r in nodes.items()
        if r.get("checksum") and uid in current and current[uid] != r["checksum"]
        and uid not in failed
    )  # fmt: skip
    if stale:
        problems.append(_listed("built from code changed since", stale))
    if full:
        built = {uid for uid, r in nodes.items() if r["status"] not in FAILED}
        missing = sorted(set(expected_nodes(manifest)) - built - set(failed))
        if missing:
            problems.append(_listed("never built", missing))
    return problems


def _listed(what: str, unique_ids: list[str]) -> str:
    names = ", ".join(_short(u) for u in unique_ids[:5])
    return f"{len(unique_ids)} {what} ({names}{', ...' if len(unique_ids) > 5 else ''})"


def expected_nodes(manifest: dict[str, Any]) -> list[str]:
    """What a full build of the project builds (pure): its own enabled models, seeds and
    snapshots, but the ephemeral ones and the monitoring models (`mediapulse report` builds
    those over the run history after the job)."""
    ours = manifest["metadata"]["project_name"]
    return sorted(
        uid for uid, node in manifest["nodes"].items()
        if node["resource_type"] in BUILT_TYPES and node["package_name"] == ours
        and (node.get("config") or {}).get("enabled", True)
        and (node.get("config") or {}).get("materialized") != "ephemeral"
        and not node["original_file_path"].startswith("models/monitoring/")
    )  # fmt: skip


def _short(unique_id: str) -> str:
    return unique_id.split(".", 2)[-1]


def elapsed_since(stamp: str) -> float:
    return max(0.0, (datetime.now(UTC) - datetime.fromisoformat(stamp)).total_seconds())


def wall_clock() -> float:
    return time.perf_counter()
