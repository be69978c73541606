"""Releases, the releases kept for a rollback, and the release lock, on real DuckDB files and
real processes, without dbt (a table stands in for the build): the release id, code and state
travel inside the production file, the last releases are kept, a rollback returns to the
release before the last change of code or to the one named, refuses an incomplete one
unchanged, the state is repaired from the warehouse, a release stops when the state or the
run history says production exists but its file is gone, and one job at a time holds the lock.

The same guarantees with real jobs (dbt, kills at each step, two jobs at once) are in
release/test_faults.py (DuckDB) and release/test_postgres.py (PostgreSQL)."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import pytest

from mediapulse.cli.main import main
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.engines.targets import resolve
from mediapulse.release.duckdb import (
    DuckDbRelease,
    drop_unlisted,
    read_stamp,
    read_state,
    warehouse_release_id,
)
from mediapulse.release.execute import (
    repair_state,
    rollback,
)
from mediapulse.release.lock import file_lock
from mediapulse.release.state import Stamp

from ..support.releases import fake_release as _release
from ..support.releases import two_releases

pytestmark = pytest.mark.reads()


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(".release-lock")
    }


@pytest.fixture
def released(tmp_path: Path) -> tuple[Project, Path]:
    return two_releases(tmp_path)


def _rows(path: Path) -> int:
    with duckdb.connect(str(path), read_only=True) as con:
        return con.execute("select count(*) from marts_dim").fetchone()[0]


def _cli(project: Project, *args: str) -> int:
    return main(["--project-dir", str(project.root), "--warehouse-dir",
                 str(project.warehouse_dir), *args])  # fmt: skip


def test_a_release_carries_its_id_in_the_file_and_the_state(released) -> None:
    project, state = released
    release = DuckDbRelease(project)
    assert warehouse_release_id(release.live) == "r2"
    assert warehouse_release_id(release.kept_path("r1")) == "r1"
    assert json.loads((state / "release.json").read_text())["release_id"] == "r2"
    assert json.loads((state / "release.json").read_text())["vars"] == {"lookback": 2}
    assert not (state / "previous").exists(), "the kept releases carry their own state"
    # the file carries the whole state it published, and its code
    carried = {name: content for name, content in read_state(release.live)}
    assert set(carried) == {"manifest.json", "release.json"}
    assert read_stamp(release.live) == Stamp("r2", read_stamp(release.live).published_at,
                                             "nightly", "c1", None, "c1")  # fmt: skip
    assert [s.release_id for s in release.kept()] == ["r1"]


def test_the_last_three_releases_are_kept_and_older_ones_pruned(
    released, monkeypatch: pytest.MonkeyPatch
) -> None:
    project, state = released
    for number in (3, 4, 5):
        _release(project, state, f"r{number}", number)
    release = DuckDbRelease(project)
    assert [s.release_id for s in release.kept()] == ["r4", "r3", "r2"]
    assert sorted(p.name for p in release.kept_dir.glob("*.duckdb")) == [
        "r2.duckdb", "r3.duckdb", "r4.duckdb"
    ]  # fmt: skip
    monkeypatch.setenv("MEDIAPULSE_KEEP_RELEASES", "1")
    _release(project, state, "r6", 6)
    assert [s.release_id for s in release.kept()] == ["r5"]
    monkeypatch.setenv("MEDIAPULSE_KEEP_RELEASES", "none")
    with pytest.raises(MediaPulseError, match="MEDIAPULSE_KEEP_RELEASES='none'"):
        release.kept() and _release(project, state, "r7", 7)


def test_rollback_returns_to_the_release_before_the_last_change_of_code(
    released, capsys: pytest.CaptureFixture[str]
) -> None:
    """The issue's scenario: a bad deploy (code c2), then releases of the same bad code (a
    nightly, a deploy that rebuilt nothing); a rollback queued behind them restores the
    release before the bad deploy, not the bad one, and says which."""
    project, state = released
    _release(project, state, "r3", 30, code="c2")  # the bad deploy
    _release(project, state, "r4", 40, code="c2")  # the nightly after it, same bad code
    assert _cli(project, "rollback", "--artifacts", str(state)) == 0
    out = capsys.readouterr().out
    assert "rolled back to release r2 (nightly, code c1" in out, out
    assert "undone and dropped: r4, r3" in out
    release = DuckDbRelease(project)
    assert _rows(release.live) == 20 and warehouse_release_id(release.live) == "r2"
    assert json.loads((state / "manifest.json").read_text()) == {"release": "r2"}
    assert json.loads((state / "release.json").read_text())["release_id"] == "r2"
    assert [s.release_id for s in release.kept()] == ["r1"]

    # every kept release runs the live code: a default rollback would change no code
    before = _digest(project.warehouse_dir) | _digest(state)
    assert _cli(project, "rollback", "--artifacts", str(state)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing to roll back to" in err
    assert "every kept release runs the live code (c1)" in err and "--to RELEASE_ID" in err
    assert _digest(project.warehouse_dir) | _digest(state) == before
    # back in data, by name
    assert _cli(project, "rollback", "--artifacts", str(state), "--to", "r1") == 0
    assert "rolled back to release r1" in capsys.readouterr().out
    assert _rows(release.live) == 10 and release.kept() == []
    before = _digest(project.warehouse_dir) | _digest(state)
    assert _cli(project, "rollback", "--artifacts", str(state)) == 2
    assert "nothing to roll back to: no release is kept" in capsys.readouterr().err
    assert _digest(project.warehouse_dir) | _digest(state) == before


def test_releases_lists_what_a_rollback_would_restore(released, capsys) -> None:
    project, state = released
    _release(project, state, "r3", 30, code="c2")
    assert _cli(project, "releases") == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("live: release r3 (nightly, code c2")
    assert lines[1].startswith("kept: release r2 (nightly, code c1")
    assert lines[1].endswith("<- `mediapulse rollback` restores this one")
    assert lines[2].startswith("kept: release r1") and "<-" not in lines[2]


def test_rollback_to_a_release_that_is_not_kept_refuses(released) -> None:
    project, state = released
    with pytest.raises(MediaPulseError, match=r"release r2 is not kept .*r2 is the live"):
        rollback(resolve(project, "prod"), state, to="r2")
    with pytest.raises(MediaPulseError, match=r"release r9 is not kept for a rollback \(kept: "):
        rollback(resolve(project, "prod"), state, to="r9")


def test_rollback_refuses_an_incomplete_kept_release_and_changes_nothing(released) -> None:
    project, state = released
    release = DuckDbRelease(project)
    release.kept_path("r1").unlink()  # deleted by hand
    before = _digest(project.warehouse_dir) | _digest(state)
    with pytest.raises(MediaPulseError) as err:
        rollback(resolve(project, "prod"), state, to="r1")
    text = str(err.value)
    assert "kept release r1 is incomplete" in text and str(release.kept_path("r1")) in text
    assert "is missing" in text and "production left as it was" in text
    assert _digest(project.warehouse_dir) | _digest(state) == before
    # a kept file from an earlier version carries no state: refused the same way
    _release(project, state, "r3", 30)
    with duckdb.connect(str(release.kept_path("r2"))) as con:
        con.execute("drop table _mediapulse.release_state")
    before = _digest(project.warehouse_dir) | _digest(state)
    with pytest.raises(MediaPulseError, match=r"r2 is incomplete: .* carries no published state"):
        rollback(resolve(project, "prod"), state, to="r2")
    assert _digest(project.warehouse_dir) | _digest(state) == before


def test_a_state_that_describes_another_release_is_repaired_from_the_warehouse(
    released, capsys: pytest.CaptureFixture[str]
) -> None:
    """A job stopped between its swap and publishing its state: the file is r3, the state
    still r2's. The next job's check puts r3's own state back and says so; the evaluator
    report the workflows added to the state is kept."""
    project, state = released
    (state / "evaluator.json").write_text('{"violations": []}')
    _release(project, state, "r3", 30, publish=False)
    assert json.loads((state / "release.json").read_text())["release_id"] == "r2"
    notice = repair_state(resolve(project, "prod"), state)
    assert notice is not None and "described release r2 but production is release r3" in notice
    assert json.loads((state / "release.json").read_text())["release_id"] == "r3"
    assert json.loads((state / "manifest.json").read_text()) == {"release": "r3"}
    assert (state / "evaluator.json").read_text() == '{"violations": []}'
    assert repair_state(resolve(project, "prod"), state) is None, "nothing left to repair"


def test_relations_the_project_no_longer_has_are_dropped(tmp_path: Path) -> None:
    path = tmp_path / "prod.duckdb"
    with duckdb.connect(str(path)) as con:
        for schema in ("marts", "staging", "old", "_mediapulse"):
            con.execute(f"create schema {schema}")
        con.execute("create table marts.dim_a as select 1 as id")
        con.execute("create table marts.removed_mart as select 1 as id")
        con.execute("create view staging.stg_b as select 1 as id")
        con.execute("create view staging.stg_removed as select * from marts.removed_mart")
        con.execute("create table old.leftover as select 1 as id")
        con.execute("create table _mediapulse.release as select 'r1' as release_id")
    dropped = drop_unlisted(path, {("marts", "dim_a"), ("staging", "stg_b")})
    assert dropped == [
        "staging.stg_removed (view)", "marts.removed_mart (table)", "old.leftover (table)"
    ]  # fmt: skip
    with duckdb.connect(str(path), read_only=True) as con:
        left = con.execute(
            "select table_schema || '.' || table_name from information_schema.tables order by 1"
        ).fetchall()
        schemas = {r[0] for r in con.execute("select schema_name from duckdb_schemas()").fetchall()}
    assert left == [("_mediapulse.release",), ("marts.dim_a",), ("staging.stg_b",)]
    assert "old" not in schemas


# -- the release lock, with real processes ---------------------------------------------------

_HOLD = """
import sys, time
from pathlib import Path
from mediapulse.release.lock import file_lock
with file_lock(Path(sys.argv[1]), "nightly"):
    print("held", flush=True)
    time.sleep(600)
"""


def _holder(lock: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", _HOLD, str(lock)], stdout=subprocess.PIPE,
                            text=True)  # fmt: skip
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_job_stops_naming_the_release_that_holds_the_lock(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    lock = tmp_path / "prod.duckdb.release-lock"
    first = _holder(lock)
    try:
        monkeypatch.setenv("MEDIAPULSE_RELEASE_LOCK_WAIT", "0")
        with pytest.raises(MediaPulseError) as err, file_lock(lock, "deploy"):
            pass
        text = str(err.value)
        assert f"another release is running on production prod ({lock}): nightly (pid " in text
        assert f"pid {first.pid} on " in text and "deploy did not start" in text
        assert "MEDIAPULSE_RELEASE_LOCK_WAIT" in text and len(text.splitlines()) == 1
        # bounded waiting, with a line saying what it waits for
        monkeypatch.setenv("MEDIAPULSE_RELEASE_LOCK_WAIT", "1.5")
        started = time.monotonic()
        with pytest.raises(MediaPulseError, match=r"waited (2|1) s"), file_lock(lock, "x"):
            pass
        assert 1.4 < time.monotonic() - started < 10
        assert f"waiting for the release lock on production prod ({lock}): nightly (pid " in (
            capsys.readouterr().out
        )
    finally:
        first.kill()
        first.wait()


def test_a_killed_holder_frees_the_lock_and_a_waiting_job_takes_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = tmp_path / "prod.duckdb.release-lock"
    first = _holder(lock)
    os.kill(first.pid, signal.SIGKILL)  # a lost runner: no cleanup of any kind
    first.wait()
    monkeypatch.setenv("MEDIAPULSE_RELEASE_LOCK_WAIT", "0")
    with file_lock(lock, "deploy") as me:
        assert me.pid == os.getpid()
        assert json.loads(lock.read_text())["job"] == "deploy"


def test_a_rollback_killed_after_its_swap_leaves_the_restored_release_and_a_repairable_state(
    released, capsys: pytest.CaptureFixture[str]
) -> None:
    project, state = released
    _release(project, state, "r3", 30, code="c2")
    env = {**os.environ, "MEDIAPULSE_FAILPOINT": "rollback.after-swap"}
    done = subprocess.run(
        [sys.executable, "-m", "mediapulse", "--project-dir", str(project.root),
         "--warehouse-dir", str(project.warehouse_dir), "rollback", "--artifacts", str(state)],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == -signal.SIGKILL, done.stderr
    release = DuckDbRelease(project)
    assert warehouse_release_id(release.live) == "r2" and _rows(release.live) == 20
    assert json.loads((state / "release.json").read_text())["release_id"] == "r3"
    # the next job's first step: the state of what is live, from the warehouse
    notice = repair_state(resolve(project, "prod"), state)
    assert notice and "described release r3 but production is release r2" in notice
    assert json.loads((state / "manifest.json").read_text()) == {"release": "r2"}
    assert [s.release_id for s in release.kept()] == ["r1"], "the undone release is gone"


def test_a_rollback_retried_after_a_kill_does_not_roll_back_further(
    released, capsys: pytest.CaptureFixture[str]
) -> None:
    """The retry an operator makes when the rollback seemed to die: the bad releases it undid
    were dropped before its swap, so they are not chosen again, and without --to it stops,
    saying what is live, instead of undoing one more change of code."""
    project, state = released
    _release(project, state, "r3", 30, code="c2")
    _release(project, state, "r4", 40, code="c2")
    env = {**os.environ, "MEDIAPULSE_FAILPOINT": "rollback.after-swap"}
    command = [
        sys.executable,
        "-m",
        "mediapulse",
        "--project-dir",
        str(project.root),
        "--warehouse-dir",
        str(project.warehouse_dir),
        "rollback",
        "--artifacts",
        str(state),
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == -signal.SIGKILL, done.stderr
    release = DuckDbRelease(project)
    assert warehouse_release_id(release.live) == "r2"
    assert [s.release_id for s in release.kept()] == ["r1"], "r3 and r4 went before the swap"
    assert _cli(project, "rollback", "--artifacts", str(state)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert "described release r4 but production is release r2" in err
    assert "not rolling back further without --to RELEASE_ID" in err
    assert warehouse_release_id(release.live) == "r2", "nothing rolled back twice"
    assert json.loads((state / "release.json").read_text())["release_id"] == "r2", "repaired"


def test_a_release_that_changed_no_data_is_looked_past_by_a_rollback(released, capsys) -> None:
    """A bad deploy (data built by code d2), then a deploy of descriptions only (new code, the
    same data code) and a nightly on it: a rollback returns to the last release of d1."""
    project, state = released
    _release(project, state, "r3", 30, code="c2", data="d2")
    _release(project, state, "r4", 30, code="c3", data="d2")  # descriptions only
    _release(project, state, "r5", 30, code="c3", data="d2")  # the nightly on it
    assert _cli(project, "rollback", "--artifacts", str(state)) == 0
    assert "rolled back to release r2" in capsys.readouterr().out


def test_pruning_keeps_the_last_release_of_the_codes_before_the_live_one(
    released, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three nightlies on a bad code after it was deployed do not push the last good
    release out of reach: the newest of each of the last codes stays, beside the last three."""
    project, state = released
    for number in range(3, 8):
        _release(project, state, f"r{number}", number, code="bad")
    kept = [s.release_id for s in DuckDbRelease(project).kept()]
    assert kept == ["r6", "r5", "r4", "r2"], kept
    assert _cli(project, "rollback", "--artifacts", str(state)) == 0
    assert warehouse_release_id(DuckDbRelease(project).live) == "r2"


def test_a_release_on_another_duckdb_target_is_refused_and_production_untouched(
    released, capsys: pytest.CaptureFixture[str]
) -> None:
    """`nightly --target dev` would build dev in place and swap in a copy of production from
    which the release drops every relation dev's manifest does not name."""
    project, state = released
    before = _digest(project.warehouse_dir) | _digest(state)
    for command in (["nightly"], ["deploy"], ["refresh"], ["rollback"]):
        assert _cli(project, *command, "--target", "dev", "--artifacts", str(state)) == 2
        err = capsys.readouterr().err.strip()
        assert "target 'dev' is not DuckDB production" in err and "--target prod" in err, err
    assert _cli(project, "releases", "--target", "ci") == 2
    assert _digest(project.warehouse_dir) | _digest(state) == before
    # and dropping what a manifest does not name refuses a manifest of another target
    staged = project.warehouse_dir / "copy.duckdb"
    staged.write_bytes(DuckDbRelease(project).live.read_bytes())
    with pytest.raises(MediaPulseError, match=r"none of the 1 relations of .* nothing dropped"):
        drop_unlisted(staged, {("dbt_dev_marts", "marts_dim")})


def test_listing_the_releases_changes_nothing(released, capsys) -> None:
    """An operator's own copy of production in releases/ survives `mediapulse releases`."""
    project, _state = released
    release = DuckDbRelease(project)
    backup = release.kept_dir / "before-fix.duckdb"
    backup.write_bytes(release.live.read_bytes())
    before = _digest(project.warehouse_dir)
    assert _cli(project, "releases") == 0
    assert _digest(project.warehouse_dir) == before and backup.exists()


def test_a_write_ahead_log_left_beside_production_is_not_replayed_into_the_next_release(
    released,
) -> None:
    """A writer killed before its checkpoint leaves prod.duckdb.wal: its writes belong to
    the file it was writing (folded into it before the release copies it), never replayed
    into the release that takes the name next."""
    project, state = released
    release = DuckDbRelease(project)
    writer = (
        "import duckdb, os, signal, sys\n"
        "con = duckdb.connect(sys.argv[1])\n"
        "con.execute('set checkpoint_threshold = \\'1GB\\'')\n"
        "con.execute('create table marts_extra as select 1 as id')\n"
        "con.execute('insert into marts_dim select 999')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    subprocess.run([sys.executable, "-c", writer, str(release.live)], timeout=60)
    assert release.live.with_name("prod.duckdb.wal").exists()
    _release(project, state, "r3", 30)
    assert not release.live.with_name("prod.duckdb.wal").exists(), "folded, not left to replay"
    assert _rows(release.live) == 30 and warehouse_release_id(release.live) == "r3"
    with duckdb.connect(str(release.live), read_only=True) as con:
        assert con.execute("select count(*) from marts_dim where id = 999").fetchone() == (0,)
    assert _rows(release.kept_path("r2")) == 21
