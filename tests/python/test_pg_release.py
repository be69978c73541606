"""Blue-green releases on PostgreSQL, from the user's side: `mediapulse nightly`, `deploy` and
`rollback --target postgres` against a throwaway server.

The tests run in order on one server and one project copy, each release building on the last:
a first nightly, a failed deploy (production untouched), a second nightly (previous kept,
snapshot history continued, schema grants kept), a deploy that changes two marts while a
reader queries both (never a mix of releases), a swap that cannot take its locks (gives up,
both releases intact), and a rollback (the previous release and its state back, then nothing
left to roll back to).
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from mediapulse import deps, generate
from mediapulse.cli import main
from mediapulse.errors import MediaPulseError
from mediapulse.project import Project
from mediapulse.rawload import connect_postgres

from . import pgserver
from .conftest import copy_project

pytestmark = [pytest.mark.dbt, pytest.mark.postgres]

TARGET = "postgres"
# Small and fresh: every release rebuilds everything, several times in this file.
DATA = dict(seed=11, users=120, days=6, events_per_user_day=10.0)
MARTS = "analytics_marts"
SNAPSHOTS = "analytics_snapshots"
LOCK_TIMEOUT_ENV = "MEDIAPULSE_SWAP_LOCK_TIMEOUT"
# Two marts a reader compares, each by a checksum of its rows, in one statement; with the
# release id the marts' schema and the snapshots' schema carry.
READ_BOTH = f"""
    select
        (select md5(string_agg(t::text, '|' order by t::text)) from {MARTS}.fct_watch_sessions t),
        (select md5(string_agg(t::text, '|' order by t::text))
            from {MARTS}.fct_daily_engagement t),
        (select release_id from {MARTS}._mediapulse_release),
        (select release_id from {SNAPSHOTS}._mediapulse_release)
"""


def load_raw_into_server(project: Project) -> None:
    """The raw data set into the server's raw schemas, as an EL tool would have landed it.
    (Today `build.prepare` does this inside every job; when jobs stop loading raw data, this
    is the one place to switch to `mediapulse load-raw --target postgres`.)"""
    from mediapulse.rawload import load_raw

    print(load_raw(project, TARGET))


@pytest.fixture(scope="module")
def server() -> Iterator[pgserver.PgServer]:
    pg = pgserver.start_server()
    if pg is None:
        pytest.skip("PostgreSQL server binaries not found (Debian: apt-get install postgresql-15)")
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in pg.env.items():
                patch.setenv(name, value)
            patch.delenv("MEDIAPULSE_PG_SCHEMA", raising=False)
            patch.setenv(LOCK_TIMEOUT_ENV, "2")
            yield pg
    finally:
        pg.stop()


@pytest.fixture(scope="module")
def project(server: pgserver.PgServer, tmp_path_factory: pytest.TempPathFactory) -> Project:
    project = copy_project(tmp_path_factory.mktemp("bluegreen") / "project")
    deps.install(project)
    params = generate.Params(**DATA, start_date=generate.default_start_date(DATA["days"]))
    generate.generate(project.raw_path, params)
    load_raw_into_server(project)
    return project


@pytest.fixture(scope="module")
def state(project: Project) -> Path:
    return project.root / "state"


def _cli(project: Project, *args: str) -> int:
    return main(["--project-dir", str(project.root), "--warehouse-dir",
                 str(project.warehouse_dir), *args])  # fmt: skip


def _query(project: Project, sql: str, params: tuple = ()) -> list[tuple]:
    con = connect_postgres(project, TARGET)
    try:
        with con.cursor() as cursor:
            cursor.execute(sql, params)
            return cursor.fetchall() if cursor.description else []
    finally:
        con.commit()
        con.close()


def _schemas(project: Project) -> set[str]:
    return {r[0] for r in _query(project, "select nspname from pg_namespace")}


def _stamp(project: Project, schema: str) -> str:
    return _query(project, f"select release_id from {schema}._mediapulse_release")[0][0]


def _release_id(state: Path) -> str:
    return json.loads((state / "release.json").read_text())["release_id"]


def _objects(project: Project) -> list[tuple]:
    """Every relation of every release schema (live and previous) with its oid: a changed,
    rebuilt or renamed object shows."""
    return _query(
        project,
        "select n.nspname, c.relname, c.oid::bigint from pg_class c "
        "join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname like 'analytics%%' order by 1, 2",
    )


def _digest(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def _retitle(project: Project, title: str) -> int:
    """The catalogue system renames one title (a new `updated_at`): the snapshot's history
    should gain a version. Returns the title's id."""
    content_id = _query(project, "select min(content_id) from catalog.content")[0][0]
    _query(
        project,
        "update catalog.content set title = %s, "
        "updated_at = greatest(updated_at, now()::timestamp - interval '1 day') "
        "+ interval '1 hour' "
        "where content_id = %s",
        (title, content_id),
    )
    return content_id


def _history(project: Project, content_id: int) -> list[tuple]:
    return _query(
        project,
        f"select title, dbt_valid_to is null from {SNAPSHOTS}.content_snapshot "
        "where content_id = %s order by dbt_valid_from",
        (content_id,),
    )


def test_a_first_nightly_builds_green_and_swaps_it_live(
    project: Project, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert _cli(project, "nightly", "--target", TARGET, "--artifacts", str(state)) == 0
    out = capsys.readouterr().out
    release_id = _release_id(state)
    assert f"passed, release {release_id} is live" in out
    assert re.search(r"swap: \d+ schemas in [\d.]+ ms", out), out[-2000:]
    schemas = _schemas(project)
    assert {MARTS, SNAPSHOTS, "analytics_staging", "analytics_intermediate"} <= schemas
    assert not [s for s in schemas if s.endswith(("__green", "__previous"))], schemas
    for schema in (MARTS, SNAPSHOTS, "analytics_staging", "analytics_reference"):
        assert _stamp(project, schema) == release_id, schema
    # The published state names the live schemas (slim CI defers to them), not green's.
    assert "__green" not in (state / "manifest.json").read_text()
    assert "__green" not in (state / "catalog.json").read_text()


def test_a_rollback_without_a_previous_release_refuses(
    project: Project, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _objects(project), _digest(state)
    assert _cli(project, "rollback", "--target", TARGET, "--artifacts", str(state)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing to roll back to" in err, err
    assert "analytics*__previous" in err
    assert (_objects(project), _digest(state)) == before


def test_a_failed_deploy_drops_green_and_leaves_production_unchanged(
    project: Project, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # A test that fails: every model is built in green first, then the build fails.
    broken = project.root / "tests" / "assert_this_release_fails.sql"
    broken.write_text("select 1 as failing_row\n")
    before = _objects(project), _digest(state), _release_id(state)
    try:
        assert _cli(project, "deploy", "--target", TARGET, "--artifacts", str(state)) == 1
    finally:
        broken.unlink()
    out = capsys.readouterr().out
    assert "FAILED, production unchanged" in out and "assert_this_release_fails" in out
    assert "built in place" not in out
    assert not [s for s in _schemas(project) if s.endswith("__green")]
    assert (_objects(project), _digest(state), _release_id(state)) == before


def test_a_second_nightly_keeps_the_previous_release_its_history_and_grants(
    project: Project, state: Path
) -> None:
    first = _release_id(state)
    # A role that may read the marts: the new live marts schema must grant it the same.
    _query(project, "create role bg_reader nologin")
    _query(project, f"grant usage on schema {MARTS} to bg_reader")
    content_id = _retitle(project, "Renamed Once")
    assert _cli(project, "nightly", "--target", TARGET, "--artifacts", str(state)) == 0
    second = _release_id(state)
    assert second != first
    assert _stamp(project, MARTS) == second
    assert _stamp(project, f"{MARTS}__previous") == first
    assert json.loads((state / "previous" / "release.json").read_text())["release_id"] == first
    history = _history(project, content_id)
    assert len(history) == 2 and history[-1] == ("Renamed Once", True), history
    assert _query(project, f"select has_schema_privilege('bg_reader', '{MARTS}', 'usage')")[0][0]


def _reader(con, stop: threading.Event, seen: list, errors: list) -> None:  # type: ignore[no-untyped-def]
    """An analyst's session: one statement reading both marts, again and again."""
    con.autocommit = True
    try:
        with con.cursor() as cursor:
            while not stop.is_set():
                try:
                    cursor.execute(READ_BOTH)
                    seen.append(cursor.fetchone())
                except psycopg2.Error as exc:
                    errors.append(str(exc).strip())
                time.sleep(0.02)
    finally:
        con.close()


def test_a_deploy_is_atomic_for_a_reader_of_two_marts(
    project: Project, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_release = _release_id(state)
    content_id = _retitle(project, "Renamed Twice")
    # The merged change: sessions split after 10 idle minutes, not 30 (both marts change).
    config = project.root / "dbt_project.yml"
    config.write_text(config.read_text().replace(
        "session_inactivity_minutes: 30", "session_inactivity_minutes: 10"
    ))  # fmt: skip
    stop, seen, errors = threading.Event(), [], []
    # connected here: reading the profile is not something to do from two threads at once
    session = connect_postgres(project, TARGET)
    reader = threading.Thread(target=_reader, args=(session, stop, seen, errors))
    reader.start()
    try:
        code = _cli(project, "deploy", "--target", TARGET, "--artifacts", str(state))
        time.sleep(1.0)  # the reader's view after the swap, too
    finally:
        stop.set()
        reader.join()
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    new_release = _release_id(state)
    checksum = "select md5(string_agg(t::text, '|' order by t::text)) from {}.{} t"

    def checksums(schema: str) -> list[str]:
        return [
            _query(project, checksum.format(schema, mart))[0][0]
            for mart in ("fct_watch_sessions", "fct_daily_engagement")
        ]

    old = (*checksums(f"{MARTS}__previous"), old_release, old_release)
    new = (*checksums(MARTS), new_release, new_release)
    assert old[0] != new[0] and old[1] != new[1], "the deploy was meant to change both marts"
    counts = Counter("old" if row == old else "new" if row == new else repr(row) for row in seen)
    swap = re.search(r"swap: (\d+) schemas in ([\d.]+) ms", out)
    print(f"\nreader: {len(seen)} reads, {dict(counts)}; {swap.group(0) if swap else 'no swap'}")
    assert not errors, errors[:3]
    assert set(counts) == {"old", "new"}, counts
    # Reads are in order: every old one before every new one.
    kinds = ["old" if row == old else "new" for row in seen]
    assert kinds == sorted(kinds, key=lambda k: k == "new")
    # Snapshot history survived two releases.
    history = _history(project, content_id)
    assert [h[0] for h in history][-2:] == ["Renamed Once", "Renamed Twice"], history
    assert len(history) == 3 and [h[1] for h in history] == [False, False, True]
    # Views keep the objects they were built on: the live intermediate view has the new logic,
    # the previous release's view the old one, and both still work.
    sessions = "select count(distinct session_id) from {}.int_watch_events_sessionized"
    live_view = _query(project, sessions.format("analytics_intermediate"))[0][0]
    previous_view = _query(project, sessions.format("analytics_intermediate__previous"))[0][0]
    live_mart = _query(project, f"select count(*) from {MARTS}.fct_watch_sessions")[0][0]
    old_mart = _query(project, f"select count(*) from {MARTS}__previous.fct_watch_sessions")[0][0]
    assert live_view == live_mart and previous_view == old_mart and live_view > previous_view


def test_a_swap_that_cannot_take_its_locks_gives_up_and_keeps_both_releases(
    project: Project, state: Path
) -> None:
    from mediapulse import pg_release

    live = _release_id(state)
    release = pg_release.PgRelease(project, TARGET)
    schemas = release.live_schemas()
    assert MARTS in schemas
    # A green release stands ready (copies of the live schemas' stamps are enough to swap).
    for schema in schemas:
        _query(project, f"create schema {schema}{pg_release.GREEN}")
    before = _objects(project)
    blocker = connect_postgres(project, TARGET)
    try:
        with blocker.cursor() as cursor:  # an analyst's open transaction on a live mart
            cursor.execute(f"select count(*) from {MARTS}.fct_watch_sessions")
        started = time.perf_counter()
        with pytest.raises(MediaPulseError) as err:
            release.swap(schemas, "r-blocked")
        waited = time.perf_counter() - started
    finally:
        blocker.rollback()
        blocker.close()
    text = str(err.value)
    assert len(text.splitlines()) == 1
    assert "could not take its locks within 2 s" in text and LOCK_TIMEOUT_ENV in text
    assert 1.5 < waited < 30
    assert _objects(project) == before, "a swap that gave up changed something"
    assert _stamp(project, MARTS) == live
    release.discard(schemas)
    assert not [s for s in _schemas(project) if s.endswith("__green")]


def test_a_rollback_puts_the_previous_release_back_with_its_state_then_refuses(
    project: Project, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    previous = _stamp(project, f"{MARTS}__previous")
    assert previous != _release_id(state)
    count = "select count(distinct session_id) from {}.int_watch_events_sessionized"
    new_logic = _query(project, count.format("analytics_intermediate"))[0][0]
    old_logic = _query(project, count.format("analytics_intermediate__previous"))[0][0]
    assert _cli(project, "rollback", "--target", TARGET, "--artifacts", str(state)) == 0
    assert f"rolled back to release {previous}" in capsys.readouterr().out
    assert _stamp(project, MARTS) == previous and _stamp(project, SNAPSHOTS) == previous
    assert not [s for s in _schemas(project) if s.endswith(("__previous", "__green"))]
    assert _release_id(state) == previous and not (state / "previous").exists()
    # The views back in place give the old logic again (30 idle minutes: fewer sessions).
    assert _query(project, count.format("analytics_intermediate"))[0][0] == old_logic < new_logic

    before = _objects(project), _digest(state)
    assert _cli(project, "rollback", "--target", TARGET, "--artifacts", str(state)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing to roll back to" in err, err
    assert (_objects(project), _digest(state)) == before


def test_a_release_stops_when_the_state_says_production_exists_but_its_schemas_are_gone(
    project: Project, state: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from mediapulse.nightly import check_pg_production_present
    from mediapulse.pg_release import PgRelease

    # The same state, a target whose schemas hold no release (as if they had been dropped).
    monkeypatch.setenv("MEDIAPULSE_PG_SCHEMA", "elsewhere")
    release = PgRelease(project, TARGET)
    with pytest.raises(MediaPulseError) as err:
        check_pg_production_present(release, state, start_over=False)
    text = str(err.value)
    assert "elsewhere*" in text and "--start-over" in text and "history" in text
    check_pg_production_present(release, state, start_over=True)
    assert "production starts again" in capsys.readouterr().out
