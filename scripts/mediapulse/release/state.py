"""What a release is, as the warehouse records it: its stamp, the state it published, and the
short history of releases kept for a rollback.

The warehouse is the source of truth. Every release writes into production itself, in the
same step that makes it live, a stamp (id, job, code fingerprint, git commit, time) and its
whole published state (manifest, run results, catalog, release.json, ...; zlib-compressed,
about 1.5 MB). So when the published state and the warehouse disagree (a job killed between
its swap and its upload, artifacts restored out of step), the next job puts back the state of
the release that is actually live, from the warehouse, and says so (``repair``).

Each release keeps the ones before it, at least the last ``$MEDIAPULSE_KEEP_RELEASES``
(default 3), each with its own stamp and state, so `mediapulse rollback` can return to any of
them and knows what it returns to. A refresh (the live code with more rows) replaces the live
release without keeping it: the history is of code and nightly resets, not of hours.
"""

from __future__ import annotations

import os
import shutil
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from mediapulse.core.errors import MediaPulseError

KEEP_ENV = "MEDIAPULSE_KEEP_RELEASES"
DEFAULT_KEEP = 3
RELEASE_FILE = "release.json"
# a state file the workflows add after the release (the evaluator's baseline for pull
# requests): a repaired state keeps the copy it finds rather than losing it
ADDED_LATER = ("evaluator.json",)  # never packed: a release carries only what it made


@dataclass(frozen=True)
class Stamp:
    """A release as the warehouse records it."""

    release_id: str
    published_at: str | None = None
    job: str | None = None
    code: str | None = None  # the code fingerprint (release.code_fingerprint)
    commit: str | None = None  # the git commit it was built from, when known
    # the code its data was built by: its own, unless it rebuilt nothing (a refresh, a deploy
    # of descriptions or tests only), which keeps the data code of the release it replaced
    data_code: str | None = None
    # why a kept release cannot be restored (a missing file or schema, no state); not stored
    incomplete: str | None = None

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Stamp:
        names = {f.name for f in fields(cls)} - {"incomplete"}
        values = {k: (None if v is None else str(v)) for k, v in row.items() if k in names}
        return cls(**values)

    @property
    def lineage(self) -> str | None:
        """What a rollback compares: the code that built the data."""
        return self.data_code or self.code

    def describe(self) -> str:
        parts = [self.job or "job unknown"]
        if self.commit:
            parts.append(f"commit {self.commit[:12]}")
        if self.code:
            parts.append(f"code {self.code}")
        if self.data_code and self.data_code != self.code:
            parts.append(f"data built by code {self.data_code}")
        if self.published_at:
            parts.append(f"published {self.published_at[:19]}")
        return f"release {self.release_id} ({', '.join(parts)})"


def keep_count() -> int:
    raw = os.environ.get(KEEP_ENV) or str(DEFAULT_KEEP)
    if not raw.isdigit() or int(raw) < 1:
        raise MediaPulseError(
            f"{KEEP_ENV}={raw!r}: the number of releases kept for a rollback must be a whole "
            "number of at least 1"
        )
    return int(raw)


def pack(state_dir: Path) -> list[tuple[str, bytes]]:
    """The files of a staged state, compressed, for the warehouse to carry."""
    return [
        (path.name, zlib.compress(path.read_bytes(), 6))
        for path in sorted(state_dir.iterdir())
        if path.is_file() and path.name not in ADDED_LATER
    ]


def unpack(files: Iterable[tuple[str, bytes]], destination: Path) -> None:
    destination.mkdir(parents=True, exist_ok=True)
    for name, content in files:
        if "/" in name or name.startswith("."):
            raise MediaPulseError(f"the warehouse's release state holds a bad file name {name!r}")
        (destination / name).write_bytes(zlib.decompress(bytes(content)))


def replace_dir(new: Path, live: Path) -> None:
    """``new`` takes ``live``'s place; the old one is removed only once the new one is there."""
    old = live.with_name(live.name + ".replaced")
    shutil.rmtree(old, ignore_errors=True)
    if live.exists():
        live.rename(old)
    new.rename(live)
    shutil.rmtree(old, ignore_errors=True)


def restore_state(files: list[tuple[str, bytes]], state_dir: Path) -> None:
    """Make ``files`` (a release's packed state) the published state in ``state_dir``, keeping
    the files the workflows add after a release when the warehouse has none of them."""
    staged = state_dir.with_name(state_dir.name + ".restored")
    shutil.rmtree(staged, ignore_errors=True)
    unpack(files, staged)
    for name in ADDED_LATER:
        if not (staged / name).exists() and (state_dir / name).is_file():
            shutil.copy2(state_dir / name, staged / name)
    replace_dir(staged, state_dir)


def to_prune(kept: list[Stamp], live: Stamp | None, keep: int) -> list[str]:
    """The kept releases (newest first) to drop (pure): every one but the newest ``keep``, and
    the newest of each of the ``keep`` codes before the live one's (by the code that built
    their data), so that nightlies or refreshes on a bad code cannot push the last release of
    a good one out of reach of a rollback."""
    kept_ids = {s.release_id for s in kept[:keep]}
    seen = {live.lineage} if live is not None else set()
    for stamp in kept:
        if stamp.lineage not in seen and len(seen) <= keep:
            seen.add(stamp.lineage)
            kept_ids.add(stamp.release_id)
    return [s.release_id for s in kept if s.release_id not in kept_ids]


def choose_rollback(live: Stamp | None, kept: list[Stamp], to: str | None) -> Stamp:
    """The kept release a rollback restores (pure). ``to``: that release. Otherwise the newest
    complete kept release whose data was built by other code than the live one's: the release
    before the last change of code, which is what an operator undoing a bad deploy means,
    however many nightlies, refreshes or deploys of descriptions ran on the bad code since."""
    listing = ", ".join(s.describe() for s in kept) or "none"
    if to is not None:
        for stamp in kept:
            if stamp.release_id == to:
                return stamp
        live_note = (
            f"; {to} is the live release" if live is not None and live.release_id == to else ""
        )
        raise MediaPulseError(
            f"release {to} is not kept for a rollback{live_note} (kept: {listing}); pass "
            "--to one of those"
        )
    if not kept:
        raise MediaPulseError(
            "nothing to roll back to: no release is kept (each release keeps the ones before "
            "it; the first release has none, and a rollback drops what it undoes)"
        )
    lineage = live.lineage if live is not None else None
    for stamp in kept:
        if stamp.incomplete is None and (lineage is None or stamp.lineage != lineage):
            return stamp
    raise MediaPulseError(
        f"nothing to roll back to: every kept release runs the live code ({lineage}) or is "
        f"incomplete, so a rollback would change no code (kept: {listing}); to go back in "
        "data, pass --to RELEASE_ID"
    )


CI_PARSE = "partial_parse.{target}.msgpack"
PARSE = "partial_parse.msgpack"  # dbt's saved parse, in its target path
# dbt's saved parse of the release's code for its own target and environment, published with
# the state: the next release starts from it on a fresh runner, which has no target directory
RELEASE_PARSE = "partial_parse.release.msgpack"


def share_parse(source: Path, destination: Path) -> None:
    """dbt's saved parse from one place to another (atomic): the release's builds share the
    parse of its code for its target and environment, so each call but the first parses
    only what changed (a scheduler's fresh directory would parse the whole project each
    time). dbt checks a saved parse against the profile, vars and files, and parses what
    differs."""
    if not source.is_file():
        return
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + f".{os.getpid()}")
    shutil.copy2(source, partial)
    os.replace(partial, destination)
