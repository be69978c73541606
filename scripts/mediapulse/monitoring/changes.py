"""The change behind an anomaly: which release came before it, its commit, and for a merged
pull request the data diff that predicted it.

A pull request's `mediapulse diff --json` says, model by model, how many rows the change adds
and removes in production. The deploy that releases the merged code keeps that diff with its
release (`mediapulse keep-diff`, table `monitoring.release_changes`: one row per model the diff
compared, or one row with no model saying what is known). When a later run finds a row-count
anomaly, the releases between the run before it and this one are the suspects:

- the diff of the latest code release predicted the change (same model, same direction, a size
  within a factor of two of the deviation from the baseline): **expected**, changed by that
  release; it is routed as a ticket, never a page;
- a code release came before it and its diff predicted nothing of the kind (or no diff is known
  for it, which is said): that release is the **first suspect**;
- no release came before it: the data changed, not the code.

The rules are pure (`merged_pull_request`, `judge`); `keep` and `releases_between` are the
I/O around them.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mediapulse.core.errors import MediaPulseError
from mediapulse.engines.base import Engine
from mediapulse.monitoring import history, ledger

TABLE = "release_changes"
COLUMNS: ledger.Columns = (
    ("release_id", "varchar"),
    ("job", "varchar"),
    ("git_revision", "varchar"),
    ("pull_request", "varchar"),
    ("diff_known", "boolean"),
    ("unique_id", "varchar"),  # null: the release's own row (what is known of its diff)
    ("model_name", "varchar"),
    ("diff_status", "varchar"),
    ("rows_base", "bigint"),
    ("rows_head", "bigint"),
    ("rows_added", "bigint"),
    ("rows_removed", "bigint"),
    ("rows_changed", "bigint"),
    ("recorded_at", "timestamp"),
)
ROWS_METRIC = "rows_added"  # module anomalies' name of the row-count metric
SIMILAR = 2.0  # a prediction within this factor of the deviation is "similar size"
CODE_RELEASE_JOBS = frozenset({"deploy"})  # a release of new code by definition

# GitHub's merge commit ("Merge pull request #12 from ...") and squash commit ("Title (#12)")
_MERGED = re.compile(r"^Merge pull request #(\d+)\b|\(#(\d+)\)\s*$", re.MULTILINE)


def merged_pull_request(message: str) -> str | None:
    """The pull request a commit on main merged, from its message (GitHub's merge and squash
    messages); None for a direct push."""
    first = (message or "").strip().splitlines()[0] if (message or "").strip() else ""
    match = _MERGED.search(first)
    return (match.group(1) or match.group(2)) if match else None


@dataclass(frozen=True)
class ModelDiff:
    """What a pull request's data diff said of one model."""

    name: str
    status: str
    rows_base: int | None
    rows_head: int | None
    added: int = 0
    removed: int = 0
    changed: int = 0

    @property
    def predicted(self) -> int | None:
        """Rows the change adds to the model (negative: removes), or None when not known."""
        if self.status == "new":
            return self.rows_head
        if self.rows_base is None or self.rows_head is None:
            return None
        return self.rows_head - self.rows_base

    def describe(self) -> str:
        if self.predicted is None:
            return f"{self.name}: {self.status}, no row counts"
        text = f"{self.name} {_n(self.rows_base)} → {_n(self.rows_head)} rows"
        counts = (self.added, "added"), (self.removed, "removed"), (self.changed, "changed")
        moved = [f"{_n(n)} {what}" for n, what in counts if n]
        return text + (f" ({', '.join(moved)})" if moved else "")


@dataclass(frozen=True)
class Release:
    """A release between a run and the run of the same job before it."""

    release_id: str
    job: str
    git_revision: str | None
    started_at: datetime | None
    pull_request: str | None = None
    diff_known: bool = False
    diffs: dict[str, ModelDiff] | None = None  # unique id -> its diff, when known

    def describe(self) -> str:
        parts = [self.job]
        if self.git_revision:
            parts.append(f"commit {self.git_revision[:7]}")
        if self.pull_request:
            parts.append(f"PR #{self.pull_request}")
        return f"release {self.release_id} ({', '.join(parts)})"


@dataclass(frozen=True)
class Cause:
    """What came before an anomaly, in words, and whether it was expected."""

    release: Release | None
    expected: bool
    text: str


def _n(value: int | None) -> str:
    return "?" if value is None else f"{value:,}"


def judge(
    unique_id: str, metric: str, deviation: float | None, releases: list[Release], job: str
) -> Cause:
    """The cause of an anomaly of ``unique_id``'s ``metric`` that is ``deviation`` away from
    its baseline's median, given the releases since the previous run of ``job`` (newest
    first)."""
    if not releases:
        return Cause(None, False, f"no release since the previous {job} run: the data changed, "
                     "not the code")  # fmt: skip
    release = releases[0]
    suspect = f"first suspect: {release.describe()}"
    if not release.diff_known:
        why = "no data diff is known for it"
        if release.pull_request:
            why = f"no data diff of PR #{release.pull_request} was kept with it"
        return Cause(release, False, f"{suspect}; {why}")
    diff = (release.diffs or {}).get(unique_id)
    if diff is None:
        return Cause(release, False, f"{suspect}; its data diff did not cover this model")
    said = f"its data diff said {diff.describe()}"
    predicted = diff.predicted
    if metric == ROWS_METRIC and predicted and deviation and deviation * predicted > 0:
        ratio = deviation / predicted
        if 1 / SIMILAR <= ratio <= SIMILAR:
            return Cause(release, True, f"expected: changed by {release.describe()}; {said}")
    return Cause(release, False, f"{suspect}; {said}, not this")


# -- reading and keeping ----------------------------------------------------------------------


def _releases_sql() -> str:
    return (
        "select run_id, job, release_id, git_revision, started_at from {history}.runs "
        "where target = {m} and release_id is not null and status = 'success' "
        "and started_at > {m} and started_at < {m} order by started_at desc"
    )


def releases_between(reader: Any, target: str, run: dict[str, Any]) -> list[Release]:
    """The code releases on ``target`` after the previous judged run of ``run``'s job and before
    ``run`` (newest first): a deploy, or a release of another commit than that run's."""
    m = reader.marker
    previous = ledger.rows(
        reader,
        f"select runs.started_at, runs.git_revision from {{history}}.runs as runs "
        f"where runs.target = {m} and runs.job = {m} and runs.started_at < {m} and exists ("
        f"select 1 from {{history}}.anomalies as judged where judged.run_id = runs.run_id) "
        "order by runs.started_at desc limit 1",
        [target, run["job"], run["started_at"]],
    )
    if not previous:
        return []
    since, revision = previous[0]["started_at"], previous[0]["git_revision"]
    found = ledger.rows(reader, _releases_sql().replace("{m}", m),
                        [target, since, run["started_at"]])  # fmt: skip
    code = [
        r for r in found
        if r["job"] != run["job"]
        and (r["job"] in CODE_RELEASE_JOBS or r["git_revision"] != revision)
    ]  # fmt: skip
    kept = _kept(reader, [r["release_id"] for r in code])
    plain = [Release(r["release_id"], r["job"], r["git_revision"], r["started_at"]) for r in code]
    return [kept.get(r.release_id) or r for r in plain]


def _kept(reader: Any, release_ids: list[str]) -> dict[str, Release]:
    """The diffs kept with these releases."""
    if not release_ids or not ledger.exists(reader, TABLE):
        return {}
    marks = ", ".join([reader.marker] * len(release_ids))
    found = ledger.rows(
        reader,
        f"select changes.*, runs.started_at from {{history}}.{TABLE} as changes "
        f"left join {{history}}.runs as runs on runs.release_id = changes.release_id "
        f"where changes.release_id in ({marks})",
        release_ids,
    )
    releases: dict[str, Release] = {}
    for row in found:
        rid = row["release_id"]
        known = releases.get(rid) or Release(
            rid, row["job"], row["git_revision"], row["started_at"], row["pull_request"],
            bool(row["diff_known"]), {},
        )  # fmt: skip
        if row["unique_id"]:
            assert known.diffs is not None
            known.diffs[row["unique_id"]] = ModelDiff(
                row["model_name"], row["diff_status"], row["rows_base"], row["rows_head"],
                row["rows_added"] or 0, row["rows_removed"] or 0, row["rows_changed"] or 0,
            )  # fmt: skip
        releases[rid] = known
    return releases


def _diff_rows(path: Path) -> list[dict[str, Any]]:
    """The models of `mediapulse diff --json`'s file."""
    try:
        document = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise MediaPulseError(f"--diff {path}: not a data diff's JSON ({exc}); pass the file "
                              "`mediapulse diff --json` wrote") from None  # fmt: skip
    if not isinstance(document, list) or not all(
        isinstance(d, dict) and "unique_id" in d for d in document
    ):
        raise MediaPulseError(f"--diff {path}: not a list of models with `unique_id`; pass the "
                              "file `mediapulse diff --json` wrote")  # fmt: skip
    return document


def keep(
    engine: Engine, diff: Path | None, pull_request: str | None, release_id: str | None = None,
    job: str = "deploy",
) -> str:  # fmt: skip
    """`mediapulse keep-diff`: keep the pull request's data diff (None: none is known) with the
    latest successful release of ``job`` on the target (or ``release_id``); returns the line
    to print."""
    target = engine.target
    models = _diff_rows(diff) if diff is not None and diff.is_file() else None
    with ledger.writing(engine, "keep the release's data diff") as (con, m):
        cursor = con if m == "?" else con.cursor()
        where = "release_id = " + m if release_id else "job = " + m
        cursor.execute(
            f"select release_id, job, git_revision from {history.SCHEMA}.runs where target = {m} "
            f"and status = 'success' and release_id is not null and {where} "
            "order by started_at desc limit 1",
            [target, release_id or job],
        )
        found = cursor.fetchall()
        if not found:
            which = f"release {release_id}" if release_id else f"successful {job} run"
            raise MediaPulseError(f"no {which} on '{target}' in the run history: run the "
                                  "deploy first, then keep its diff")  # fmt: skip
        rid, job_name, revision = found[0]
        now = datetime.now(UTC).replace(tzinfo=None)
        base = {"release_id": rid, "job": job_name, "git_revision": revision,
                "pull_request": pull_request, "diff_known": models is not None,
                "recorded_at": now}  # fmt: skip
        rows = [base] + [
            {**base, "unique_id": d["unique_id"], "model_name": d.get("name"),
             "diff_status": d.get("status"), "rows_base": d.get("rows_base"),
             "rows_head": d.get("rows_head"), "rows_added": d.get("added"),
             "rows_removed": d.get("removed"), "rows_changed": d.get("changed")}
            for d in models or []
        ]  # fmt: skip
        ledger.create(con, m, {TABLE: COLUMNS})
        ledger.execute(con, m, f"delete from {{history}}.{TABLE} where release_id = {m}", [rid])
        ledger.insert(con, m, TABLE, COLUMNS, rows)
    pr = f"PR #{pull_request}" if pull_request else "no pull request"
    if models is None:
        missing = f" ({diff} not found)" if diff is not None else ""
        return f"release {rid} ({job_name}, {pr}): no data diff known{missing}, kept as unknown"
    return f"release {rid} ({job_name}, {pr}): data diff of {len(models)} models kept"
