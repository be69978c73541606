"""DuckDB production against an operator's worst day, with real jobs (`mediapulse` processes
running dbt) on a copy of production built by `mediapulse nightly`:

- two jobs started seconds apart: the second stops naming the first, or waits for it and then
  runs on what it released; never a mix;
- `kill -9` at each step of a release (during the build, after stamping, inside the swap,
  between the swap and publishing the state): production is always one whole release, the
  warehouse says which, and the next job runs (repairing the state when the swap had
  happened);
- the issue's rollback: a deploy of a change no test catches, a deploy that changes nothing,
  the nightly on the bad code, then `rollback`: the release before the bad deploy is live;
- a model deleted from the project is dropped from production by the next release.

PostgreSQL's counterparts are in release/test_postgres.py; the same mechanisms without dbt in
release/test_execute.py."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import duckdb
import pytest

from mediapulse.core.project import Project
from mediapulse.engines.duckdb import duckdb_file, production_file
from mediapulse.release.duckdb import DuckDbRelease, read_stamp

from ..conftest import change_one_mart, clone_built

pytestmark = pytest.mark.dbt

JOB_TIMEOUT_S = 600


@pytest.fixture
def production(after_nightly: Project, tmp_path: Path) -> Project:
    return clone_built(after_nightly, tmp_path / "production")


class Job:
    """A `mediapulse` job in a process of its own, its output read as it comes."""

    def __init__(self, project: Project, job: str, target: str = "prod", **env: str) -> None:
        command = [sys.executable, "-m", "mediapulse", "--project-dir", str(project.root),
                   "--warehouse-dir", str(project.warehouse_dir), job, "--target", target,
                   "--artifacts", str(project.root / "state")]  # fmt: skip
        self.proc = subprocess.Popen(
            command, cwd=project.root, env={**os.environ, **env}, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )  # fmt: skip
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line)

    def wait_for(self, text: str, timeout: float = JOB_TIMEOUT_S) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue.Empty:
                if self.proc.poll() is not None and self.lines.empty():
                    break
                continue
            self.output.append(line)
            if text in line:
                return line
        raise AssertionError(f"{text!r} never printed:\n{self.text()[-4000:]}")

    def finish(self) -> int:
        code = self.proc.wait(timeout=JOB_TIMEOUT_S)
        time.sleep(0.1)
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return code

    def text(self) -> str:
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return "".join(self.output)

    def children(self) -> list[int]:
        found = []
        for task in Path(f"/proc/{self.proc.pid}/task").glob("*"):
            found += [int(p) for p in (task / "children").read_text().split()]
        return found


def _run(project: Project, job_name: str, target: str = "prod", **env: str) -> tuple[int, str]:
    job = Job(project, job_name, target, **env)
    code = job.finish()
    return code, job.text()


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _live(project: Project) -> str:
    stamp = read_stamp(production_file(project))
    assert stamp is not None
    return stamp.release_id


def _state(project: Project) -> str:
    return json.loads((project.root / "state" / "release.json").read_text())["release_id"]


def _gone(pids: list[int], timeout: float = 20) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(Path(f"/proc/{pid}").exists() for pid in pids):
            return True
        time.sleep(0.1)
    return False


def test_two_jobs_at_once_one_stops_naming_the_other_one_waits_for_it(
    production: Project,
) -> None:
    before = _live(production)
    lock = DuckDbRelease(production).lock_file
    change_one_mart(production)
    first = Job(production, "deploy")
    first.wait_for("dbt packages")  # it holds the lock before it does anything
    assert json.loads(lock.read_text())["pid"] == first.proc.pid
    code, out = _run(production, "deploy", MEDIAPULSE_RELEASE_LOCK_WAIT="0")
    assert code == 2, out
    assert out.count("\n") == 1 and "another release is running on production prod" in out
    assert f"deploy (pid {first.proc.pid} on " in out and "deploy did not start" in out
    waiting = Job(production, "refresh", MEDIAPULSE_RELEASE_LOCK_WAIT="600")
    waiting.wait_for(f"waiting for the release lock on production prod ({lock}): deploy")
    assert first.finish() == 0, first.text()[-3000:]
    released = _live(production)
    assert released != before and _state(production) == released
    # the second ran only after the first had released, on what it released
    assert waiting.finish() == 0, waiting.text()[-3000:]
    assert f"nothing to do, release {released} stays live" in waiting.text()
    assert _live(production) == released == _state(production)


def test_a_job_killed_at_any_step_leaves_one_whole_release_and_the_next_job_runs(
    production: Project,
) -> None:
    prod = duckdb_file(production, "prod")
    live, digest = _live(production), _digest(prod)

    # during the build: the job and the dbt it started die; nothing changed
    nightly = Job(production, "nightly")
    nightly.wait_for(" OK created ")
    dbt = nightly.children()
    assert dbt, "the job runs dbt in a child process"
    os.kill(nightly.proc.pid, signal.SIGKILL)
    assert nightly.finish() == -signal.SIGKILL
    assert _gone(dbt, timeout=3), "dbt died with its job (it would go on writing the staged copy)"
    assert _digest(prod) == digest and _state(production) == live

    # the next jobs run, each killed at a later step: before the swap and inside it,
    # production is the old release, byte for byte
    change_one_mart(production)
    for point in ("release.before-swap", "release.in-swap"):
        code, out = _run(production, "deploy", MEDIAPULSE_FAILPOINT=point)
        assert code == -signal.SIGKILL, out[-3000:]
        assert _digest(prod) == digest, point
        assert _live(production) == live == _state(production), point
        kept = [s.release_id for s in DuckDbRelease(production).kept()]
        assert live not in kept, f"{point}: the live release is not listed as kept"

    # between the swap and the state: production is the new release and says so
    code, out = _run(production, "deploy", MEDIAPULSE_FAILPOINT="release.after-swap")
    assert code == -signal.SIGKILL, out[-3000:]
    deployed = _live(production)
    assert deployed != live and _state(production) == live
    assert next(s.release_id for s in DuckDbRelease(production).kept()) == live

    # the next job repairs the state from the warehouse, then does its work
    code, out = _run(production, "refresh")
    assert code == 0, out[-3000:]
    assert f"described release {live} but production is release {deployed}" in out
    assert "its state was restored from the warehouse" in out
    assert f"nothing to do, release {deployed} stays live" in out
    assert _state(production) == deployed == _live(production)
    assert not (production.warehouse_dir / ".release").exists()


def test_a_rollback_after_a_bad_deploy_and_the_nightly_behind_it_restores_the_good_release(
    production: Project,
) -> None:
    """The issue's reproduction: a deploy whose mart change no test catches, a deploy of a
    README-only commit, the nightly on the bad code, then `mediapulse rollback`; and a deploy
    of descriptions only among them, a release whose data the bad code built."""
    good = _live(production)
    staging = production.root / "models/staging/catalog/stg_catalog__content.sql"
    query = (
        "select count(*), md5(string_agg(title, ',' order by content_id)) from marts.dim_content"
    )

    def totals() -> tuple:
        with duckdb.connect(str(duckdb_file(production, "prod")), read_only=True) as con:
            return con.execute(query).fetchone()

    before = totals()
    # every title upper-cased: no test catches it (the PR rehearsals make the same change)
    text = staging.read_text()
    assert "        title,\n" in text
    staging.write_text(text.replace("        title,\n", "        upper(title) as title,\n", 1))
    code, out = _run(production, "deploy")
    assert code == 0, out[-3000:]
    bad = _live(production)
    assert totals() != before, "the bad change is live and no test caught it"

    readme = production.root / "README.md"
    readme.write_text(readme.read_text() + "\nA README-only change.\n")
    code, out = _run(production, "deploy")
    assert code == 0 and f"no changes, release {bad} stays live" in out, out[-3000:]
    assert _live(production) == bad, "a deploy that changes nothing publishes no release"

    # a deploy of descriptions only: a release (the docs changed), with the bad data
    docs = production.root / "models/staging/catalog/_catalog__models.yml"
    docs.write_text(docs.read_text().replace("description: One title", "description: A title", 1))
    code, out = _run(production, "deploy")
    assert code == 0 and "nothing to rebuild" in out, out[-3000:]
    described = _live(production)
    assert described != bad

    code, out = _run(production, "nightly")
    assert code == 0, out[-3000:]
    nightly = _live(production)

    code, out = _run(production, "rollback")
    assert code == 0, out[-3000:]
    assert f"production rolled back to release {good} (nightly" in out
    assert f"releases undone and dropped: {nightly}, {described}, {bad}" in out
    assert _live(production) == good == _state(production)
    assert totals() == before, "every changed row is back as it was"


def test_a_model_deleted_from_the_project_is_dropped_from_production(
    production: Project,
) -> None:
    """What a model deleted from the project left in production (here put there by hand, as
    the release that built it would have): the next release drops it and says so."""
    relation = "intermediate.int_scratch_counts"
    with duckdb.connect(str(duckdb_file(production, "prod"))) as con:
        con.execute(f"create table {relation} as select 42 as events")

    def exists() -> bool:
        with duckdb.connect(str(duckdb_file(production, "prod")), read_only=True) as con:
            return bool(con.execute(
                "select count(*) from information_schema.tables where table_schema || '.' || "
                f"table_name = '{relation}'"
            ).fetchone()[0])  # fmt: skip

    change_one_mart(production)
    code, out = _run(production, "deploy")
    assert code == 0, out[-3000:]
    assert f"relations the project no longer has, dropped from production: {relation}" in out
    assert not exists()
    # kept with the release it was part of, until that one is pruned
    kept = DuckDbRelease(production).kept()[0]
    with duckdb.connect(str(DuckDbRelease(production).kept_path(kept.release_id)),
                        read_only=True) as con:  # fmt: skip
        assert con.execute(f"select events from {relation}").fetchone() == (42,)
