"""Blue-green releases on PostgreSQL, from the user's side: `mediapulse nightly`, `deploy` and
`rollback --target postgres` against a throwaway server.

The tests run in order on one server and one project copy, each release building on the last:
a first nightly, a failed deploy (production untouched), a second nightly (previous kept,
snapshot history continued, schema grants kept), a refresh (with nothing new, nothing built;
with the loader's next day, the new rows built in green and swapped in), a deploy that changes
two marts while a reader queries both (never a mix of releases), a swap that cannot take its
locks (gives up, both releases intact), and a rollback (the previous release and its state
back, then nothing left to roll back to).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import psycopg2
import pytest

from mediapulse.cli.main import main
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.data import generate
from mediapulse.dbt import deps
from mediapulse.engines.postgres import connect_postgres
from mediapulse.engines.targets import resolve
from mediapulse.monitoring import history
from mediapulse.security import personal as personal_data

from ..conftest import REPO, copy_project
from ..data.test_rawload import _raw_state
from ..release.test_faults import Job, _gone, _run
from ..support import pgserver

pytestmark = [pytest.mark.dbt, pytest.mark.postgres]

TARGET = "postgres"
# Small and fresh: every release rebuilds everything, several times in this file.
DATA = dict(seed=11, users=120, days=6, events_per_user_day=10.0)
MARTS = "analytics_marts"
SNAPSHOTS = "analytics_snapshots"
LOCK_TIMEOUT_ENV = "MEDIAPULSE_SWAP_LOCK_TIMEOUT"
SCRATCH = "models/intermediate/streaming/int_scratch_counts.sql"
# The raw schemas as the loader left them, before the first release.
RAW_BEFORE: dict[str, tuple] = {}
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
def project(
    server: pgserver.PgServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Project]:
    """The loader (the server's superuser) lands the raw data, the database owner creates the
    three roles and runs the grants `mediapulse access-sql` prints; from then on every job
    connects as `transformer`, as production's would."""
    project = copy_project(tmp_path_factory.mktemp("bluegreen") / "project")
    # a model the deploy below deletes from the project: the release must drop it
    (project.root / SCRATCH).write_text(
        "select count(*) as events from {{ ref('stg_streaming__watch_events') }}\n"
    )
    deps.install(project)
    params = generate.Params(**DATA, start_date=generate.default_start_date(DATA["days"]))
    generate.generate(project.raw_path, params)
    assert _cli(project, "load-raw", "--target", TARGET) == 0
    # someone else's table in a raw schema: no release may touch it (nor the rest of raw)
    server.execute(
        "create table streaming.partner_events (id integer primary key, payload text)",
        "insert into streaming.partner_events select i, 'partner ' || i "
        "from generate_series(1, 300) as i",
    )
    RAW_BEFORE.update(_raw_state(server, pgserver.DATABASE))
    with pytest.MonkeyPatch.context() as patch:
        for name, value in server.role_env("transformer").items():
            patch.setenv(name, value)
        sql = subprocess.run(
            [sys.executable, "-m", "mediapulse", "--project-dir", str(project.root),
             "access-sql", "--target", TARGET],
            capture_output=True, text=True, check=True, env=dict(os.environ),
        ).stdout  # fmt: skip
        server.execute(sql)
        yield project


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


def _admin(server: pgserver.PgServer, sql: str, params: tuple = ()) -> None:
    """As the loader, who owns the raw data (and may create roles): production's jobs may not."""
    con = server.connect()
    try:
        with con.cursor() as cursor:
            cursor.execute(sql, params)
        con.commit()
    finally:
        con.close()


def _schemas(project: Project) -> set[str]:
    return {r[0] for r in _query(project, "select nspname from pg_namespace")}


def _stamp(project: Project, schema: str) -> str:
    return _query(project, f"select release_id from {schema}._mediapulse_release")[0][0]


def _kept(release_id: str, schema: str = MARTS) -> str:
    """The name a kept release's schema has: `<schema>__r<8 hex of its id>`."""
    from mediapulse.release.postgres import kept_suffix

    return schema + kept_suffix(release_id)


def _kept_state(project: Project, release_id: str) -> dict:
    """The release.json a kept release carries in its first schema."""
    import zlib

    from mediapulse.release.postgres import PgRelease

    found = PgRelease(project, TARGET).releases()
    entry = next(e for e in found.kept if e.stamp.release_id == release_id)
    files = dict(PgRelease(project, TARGET).read_state(entry) or [])
    return json.loads(zlib.decompress(files["release.json"]))


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


def _retitle(project: Project, server: pgserver.PgServer, title: str) -> int:
    """The catalogue system renames one title (a new `updated_at`): the snapshot's history
    should gain a version. Returns the title's id."""
    content_id = _query(project, "select min(content_id) from catalog.content")[0][0]
    _admin(
        server,
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
    assert not [s for s in schemas if s.endswith("__green") or "__r" in s], schemas
    for schema in (MARTS, SNAPSHOTS, "analytics_staging", "analytics_reference"):
        assert _stamp(project, schema) == release_id, schema
    # The published state names the live schemas (slim CI defers to them), not green's.
    assert "__green" not in (state / "manifest.json").read_text()
    assert "__green" not in (state / "catalog.json").read_text()
    # The run history: schema `monitoring` of the database, the same tables as on DuckDB,
    # outside what a release swaps.
    assert "run history: run " in out, out[-2000:]
    assert history.read(
        resolve(project, TARGET), "select job, status, release_id from monitoring.runs"
    ) == [("nightly", "success", release_id)]
    columns = history.read(resolve(project, TARGET),
                           "select table_name, column_name from information_schema.columns "
        "where table_schema = 'monitoring' order by table_name, ordinal_position")  # fmt: skip
    assert columns == [(t, c) for t in sorted(history.TABLES) for c, _ in history.TABLES[t]]
    engine = resolve(project, TARGET)
    sizes = dict(history.read(engine, "select relation, row_count from monitoring.relation_sizes"))
    assert sizes and all(count >= 0 for count in sizes.values())


# -- roles: what `reporter` and `ci` may do on production -----------------------------------
# (docs/targets/postgresql-production.md, "Roles and grants")


def _production(server: pgserver.PgServer, state: Path) -> dict[str, list[tuple[str, str]]]:
    """Production's relations by kind ("marts", "other": staging, intermediate, seeds,
    snapshots; "raw": the sources), each (relation, one of its columns), from the state: every
    one the release built."""
    manifest = json.loads((state / "manifest.json").read_text())
    found: dict[str, list[tuple[str, str]]] = {"marts": [], "other": [], "raw": []}
    for node in [*manifest["nodes"].values(), *manifest["sources"].values()]:
        if node["package_name"] != "mediapulse":
            continue
        kind = node["resource_type"]
        if kind not in ("model", "seed", "snapshot", "source") or node["fqn"][1] == "monitoring":
            continue  # the run history and its views: not what a release builds
        name = node.get("identifier") if kind == "source" else node.get("alias")
        relation = f'"{node["schema"]}"."{name or node["name"]}"'
        column = next(iter(node.get("columns") or {}), None) or "1"
        key = "raw" if kind == "source" else "marts" if node["schema"] == MARTS else "other"
        if server.execute(f"select to_regclass('{relation}')")[0][0] is not None:
            found[key].append((relation, column))
    assert found["marts"] and found["other"] and found["raw"], found
    return found


def _attempt(server: pgserver.PgServer, role: str, sql: str) -> str | None:
    """None when ``role`` may run ``sql`` (rolled back: nothing is kept), else the refusal."""
    con = server.connect(role)
    try:
        with con.cursor() as cursor:
            cursor.execute(sql)
        return None
    except psycopg2.Error as exc:
        return str(exc).strip().splitlines()[0]
    finally:
        con.rollback()
        con.close()


def _writes(relation: str, column: str) -> list[str]:
    schema = relation.split(".")[0]
    return [
        f"insert into {relation} select * from {relation} where false",
        f"update {relation} set {column} = {column} where false",
        f"delete from {relation} where false",
        f"truncate {relation}",
        f"drop table {relation}",
        f"alter table {relation} rename to renamed_by_a_reader",
        f"create table {schema}.written_by_a_reader (x int)",
        f"create view {schema}.written_by_a_reader as select 1 as x",
    ]


def _refused(server: pgserver.PgServer, role: str, statements: list[str]) -> None:
    allowed = [sql for sql in statements if _attempt(server, role, sql) is None]
    assert not allowed, f"{role} was allowed: {allowed[:5]}"


def _assert_reporter_reads_the_marts_only(server: pgserver.PgServer, state: Path) -> None:
    found = _production(server, state)
    for relation, _ in found["marts"]:
        assert _attempt(server, "reporter", f"select count(*) from {relation}") is None, relation
    refused = [f"select count(*) from {r}" for r, _ in found["other"] + found["raw"]]
    _refused(server, "reporter", refused)
    _refused(server, "reporter", [w for r, c in found["marts"] for w in _writes(r, c)])
    _refused(server, "reporter", ["create schema written_by_a_reader"])


def _assert_ci_reads_production_and_writes_nothing(server: pgserver.PgServer, state: Path) -> None:
    """Every relation but the raw ones with personal columns, which it reads masked."""
    found = _production(server, state)
    everything = found["marts"] + found["other"] + found["raw"]
    personal = {
        f'"{t.schema}"."{t.identifier}"': personal_data.masked_name(t)
        for t in personal_data.personal_tables(Project.discover(REPO))
    }
    assert set(personal) <= {relation for relation, _ in found["raw"]}, personal
    for relation, _ in everything:
        refusal = _attempt(server, "ci", f"select count(*) from {relation}")
        if relation in personal:
            assert (refusal or "").startswith("permission denied"), (relation, refusal)
            masked = _attempt(server, "ci", f"select count(*) from {personal[relation]}")
            assert masked is None, (personal[relation], masked)
        else:
            assert refusal is None, (relation, refusal)
    _refused(server, "ci", [w for r, c in everything for w in _writes(r, c)])


def test_reporter_reads_every_mart_and_nothing_else_nor_writes(
    server: pgserver.PgServer, state: Path
) -> None:
    _assert_reporter_reads_the_marts_only(server, state)


def test_ci_reads_production_and_is_refused_every_write(
    server: pgserver.PgServer, state: Path
) -> None:
    _assert_ci_reads_production_and_writes_nothing(server, state)


def test_a_rollback_without_a_previous_release_refuses(
    project: Project, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = _objects(project), _digest(state)
    assert _cli(project, "rollback", "--target", TARGET, "--artifacts", str(state)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing to roll back to" in err, err
    assert "no release is kept" in err
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
    project: Project, server: pgserver.PgServer, state: Path
) -> None:
    first = _release_id(state)
    # A role that may read the marts: the new live marts schema must grant it the same.
    _admin(server, "create role bg_reader nologin")
    _query(project, f"grant usage on schema {MARTS} to bg_reader")
    content_id = _retitle(project, server, "Renamed Once")
    assert _cli(project, "nightly", "--target", TARGET, "--artifacts", str(state)) == 0
    second = _release_id(state)
    assert second != first
    # the second nightly's rows added and model times, judged against the first's, on the
    # server's history too; the SLI views over it, built by the nightly, count both runs
    judged = history.read(resolve(project, TARGET),
                          "select metric, count(*) from monitoring.anomalies "
                          "where job = 'nightly' group by metric order by metric")  # fmt: skip
    assert [m for m, n in judged if n > 0] == ["execution_time_s", "rows_added"], judged
    assert _query(project, "select count(*) from analytics_monitoring.sli_runs "
                  "where job = 'nightly'") == [(2,)]  # fmt: skip
    assert _stamp(project, MARTS) == second
    assert _stamp(project, _kept(first)) == first
    assert _kept_state(project, first)["release_id"] == first, "a kept release has its state"
    assert not (state / "previous").exists()
    versions = _history(project, content_id)
    assert len(versions) == 2 and versions[-1] == ("Renamed Once", True), versions
    assert _query(project, f"select has_schema_privilege('bg_reader', '{MARTS}', 'usage')")[0][0]
    # dbt's grants were applied in green and were renamed live with it: the roles still read
    # exactly what they read before the swap.
    _assert_reporter_reads_the_marts_only(server, state)
    _assert_ci_reads_production_and_writes_nothing(server, state)
    # the kept release is for a rollback, not for readers: no role reaches its schemas
    for role in ("reporter", "ci", "bg_reader"):
        assert not _query(project, f"select has_schema_privilege('{role}', "
                          f"'{_kept(first)}', 'usage')")[0][0], role  # fmt: skip


def test_a_refresh_adds_the_loaders_new_rows_in_green_and_swaps(
    project: Project, server: pgserver.PgServer, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    live = _release_id(state)
    before = _objects(project)
    assert _cli(project, "refresh", "--target", TARGET, "--artifacts", str(state)) == 0
    assert f"No new raw rows since release {live}" in capsys.readouterr().out
    assert _release_id(state) == live and _objects(project) == before, "nothing new: nothing built"

    # the loader appends the next day of watch events (new ids, a day later)
    _admin(
        server,
        "insert into streaming.watch_events (event_id, user_id, content_id, device_type, "
        "event_type, position_sec, event_ts, loaded_at) "
        "select substr(md5(event_id || 'next day'), 1, 16), user_id, content_id, device_type, "
        "event_type, position_sec, event_ts + interval '1 day', loaded_at + interval '1 day' "
        "from streaming.watch_events "
        "where loaded_at > (select max(loaded_at) - interval '1 day' from streaming.watch_events)",
    )
    sessions = f"select count(*), max(session_start_at) from {MARTS}.fct_watch_sessions"
    ((count, newest),) = _query(project, sessions)
    kept = next(e.stamp.release_id for e in _releases(project).kept)
    assert _cli(project, "refresh", "--target", TARGET, "--artifacts", str(state)) == 0
    out = capsys.readouterr().out
    assert "## Refresh on `postgres`: passed" in out and "streaming.watch_events +" in out
    assert re.search(r"staged copy of production: [\d.]+ s, \d+ tables", out), out
    refreshed = _release_id(state)
    assert refreshed != live
    assert _stamp(project, MARTS) == refreshed
    # same code, more rows: the release it replaced is kept beside the one before it, each
    # with its id and its data code (the same)
    found = _releases(project).kept
    assert [e.stamp.release_id for e in found] == [live, kept]
    assert _stamp(project, _kept(kept)) == kept and _stamp(project, _kept(live)) == live
    assert found[0].stamp.lineage == found[1].stamp.lineage == _releases(project).live.stamp.lineage
    ((count_after, newest_after),) = _query(project, sessions)
    assert count_after > count and newest_after > newest, "the new day's sessions are live"
    assert not [s for s in _schemas(project) if s.endswith("__green")]
    _assert_reporter_reads_the_marts_only(server, state)


def _releases(project: Project):  # type: ignore[no-untyped-def]
    from mediapulse.release.postgres import PgRelease

    return PgRelease(project, TARGET).releases()


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
    project: Project, server: pgserver.PgServer, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_release = _release_id(state)
    content_id = _retitle(project, server, "Renamed Twice")
    # The merged change: sessions split after 10 idle minutes, not 30 (both marts change).
    config = project.root / "dbt_project.yml"
    config.write_text(config.read_text().replace(
        "session_inactivity_minutes: 30", "session_inactivity_minutes: 10"
    ))  # fmt: skip
    (project.root / SCRATCH).unlink()
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

    old = (*checksums(_kept(old_release)), old_release, old_release)
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
    previous = _kept(old_release, "analytics_intermediate")
    previous_view = _query(project, sessions.format(previous))[0][0]
    live_mart = _query(project, f"select count(*) from {MARTS}.fct_watch_sessions")[0][0]
    old_mart = _query(project, f"select count(*) from {_kept(old_release)}.fct_watch_sessions")
    assert live_view == live_mart and previous_view == old_mart[0][0] and live_view > previous_view
    # the model the deploy deleted from the project is no longer in production, and the
    # report says so (it stays in the kept release until that is pruned)
    scratch = "analytics_intermediate.int_scratch_counts"
    assert (
        f"no longer in production (kept with the replaced release until it is pruned): "
        f"{scratch}" in out
    ), out[-3000:]
    assert server.execute(f"select to_regclass('{scratch}')") == [(None,)]
    assert server.execute(f"select to_regclass('{previous}.int_scratch_counts') is not null") == [
        (True,)
    ]


def _as_ci_job(project: Project, server: pgserver.PgServer, *args: str) -> int:
    """A command as a pull-request job runs it: the CI role's secret only (no production
    password at all) and its run's id."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MEDIAPULSE_PG_USER")
        patch.delenv("MEDIAPULSE_PG_PASSWORD")
        for name, value in server.ci_env(run_id="4242").items():
            patch.setenv(name, value)
        return _cli(project, *args, "--target", "postgres_ci")


def test_slim_ci_builds_in_its_own_schemas_as_ci_reads_production_and_drops_them(
    project: Project, server: pgserver.PgServer, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = project.root / "models/staging/catalog/stg_catalog__content.sql"
    original = model.read_text()
    assert "        title,\n" in original
    model.write_text(original.replace("        title,\n", "        upper(title) as title,\n", 1))
    # and a change to the SLI models (a comment in the macro only they call): unlike DuckDB's
    # (test_slim_ci), a server's CI run reads production's run history, through production's
    # staging views over it, which it defers to and `ci` may read
    macro = project.root / "macros/monitoring/monitoring_slo.sql"
    macro_text = macro.read_text()
    head = "{% macro monitoring_slo(key) -%}\n"
    assert head in macro_text
    macro.write_text(macro_text.replace(head, head + "    {#- reviewed -#}\n", 1))
    before = _objects(project)
    summary = project.root / "slim-ci.md"
    try:
        code = _as_ci_job(project, server, "slim-ci", "--state", str(state), "--summary",
                          str(summary))  # fmt: skip
    finally:
        model.write_text(original)
        macro.write_text(macro_text)
    out = capsys.readouterr().out
    assert code == 0, out[-3000:]
    assert re.search(r"deferred to production \| [1-9]", out), out[-3000:]
    assert re.search(r"\| deferred to production \| .*stg_monitoring__runs", out), out
    assert "| test_pass_rate_counts_warnings_as_passed | unit_test | pass |" in summary.read_text()
    runs = server.execute("select count(*) from ci_4242_1_monitoring.sli_runs")[0][0]
    assert (
        runs
        == history.read(resolve(project, TARGET), "select count(*) from monitoring.runs")[0][0]
        > 0
    )
    run_schemas = {s for s in _schemas(project) if s.startswith("ci_4242_1")}
    assert "ci_4242_1_staging" in run_schemas, run_schemas
    owners = server.execute(
        "select distinct pg_get_userbyid(nspowner) from pg_namespace "
        "where nspname like 'ci\\_4242\\_1%'"
    )
    assert owners == [("ci",)], owners
    # The change was built in the run's schema, downstream of it too, reading production's
    # unchanged parents; production is exactly as it was.
    assert server.execute("select count(*) from ci_4242_1_staging.stg_catalog__content "
                          "where title <> upper(title)") == [(0,)]  # fmt: skip
    assert _objects(project) == before
    # The end of the job: the run's schemas go, and only they.
    assert _as_ci_job(project, server, "drop-ci-schemas") == 0
    assert f"dropped the {len(run_schemas)} schemas of CI run ci_4242_1" in capsys.readouterr().out
    assert not {s for s in _schemas(project) if s.startswith("ci_")}
    assert _objects(project) == before


@pytest.mark.parametrize(
    "command", [("drop-ci-schemas",), ("slim-ci", "--state", "state")], ids=lambda c: c[0]
)
def test_ci_commands_refuse_the_production_target(
    project: Project, state: Path, capsys: pytest.CaptureFixture[str], command: tuple[str, ...]
) -> None:
    before = _objects(project), _digest(state)
    assert _cli(project, *command, "--target", TARGET) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not a CI run's schema" in err, err
    assert "postgres_ci" in err
    assert (_objects(project), _digest(state)) == before


def test_a_swap_that_cannot_take_its_locks_gives_up_and_keeps_both_releases(
    project: Project, state: Path
) -> None:
    from mediapulse.release import postgres as pg_release

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
            release.publish(schemas, "r-blocked")
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
    project: Project, server: pgserver.PgServer, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    deployed = _release_id(state)
    kept = [e.stamp for e in _releases(project).kept]
    # the release before the deploy (the refresh), then the second and first nightlies (the
    # same data code as the refresh; the deploy's is another)
    assert len(kept) == 3 and kept[0].lineage != _releases(project).live.stamp.lineage
    previous = kept[0].release_id
    assert previous != deployed
    count = "select count(distinct session_id) from {}.int_watch_events_sessionized"
    new_logic = _query(project, count.format("analytics_intermediate"))[0][0]
    old_logic = _query(project, count.format(_kept(previous, "analytics_intermediate")))[0][0]
    assert _cli(project, "rollback", "--target", TARGET, "--artifacts", str(state)) == 0
    out = capsys.readouterr().out
    assert f"rolled back to release {previous}" in out
    assert f"releases undone and dropped: {deployed}" in out
    assert _stamp(project, MARTS) == previous and _stamp(project, SNAPSHOTS) == previous
    still_kept = {_kept(e.release_id, "") for e in kept[1:]}
    assert not [s for s in _schemas(project) if s.endswith("__green") or (
        "__r" in s and not s.endswith(tuple(still_kept)))]  # fmt: skip
    assert _release_id(state) == previous and not (state / "previous").exists()
    # readers are back on the restored marts, and only there
    _assert_reporter_reads_the_marts_only(server, state)
    # The views back in place give the old logic again (30 idle minutes: fewer sessions).
    assert _query(project, count.format("analytics_intermediate"))[0][0] == old_logic < new_logic

    before = _objects(project), _digest(state)
    assert _cli(project, "rollback", "--target", TARGET, "--artifacts", str(state)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing to roll back to" in err, err
    assert "every kept release runs the live code" in err and "--to RELEASE_ID" in err
    assert (_objects(project), _digest(state)) == before


def test_a_rollback_refuses_an_incomplete_kept_release_naming_the_missing_schema(
    project: Project, server: pgserver.PgServer, state: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A kept schema dropped by hand: the rollback names it and changes nothing (before, it
    dropped the live release anyway, and the snapshots' history with it)."""
    oldest = [e.stamp.release_id for e in _releases(project).kept][-1]
    missing = _kept(oldest, SNAPSHOTS)
    _admin(server, f"alter schema {missing} rename to set_aside")
    try:
        before = _objects(project), _digest(state)
        assert _cli(project, "rollback", "--target", TARGET, "--artifacts", str(state),
                    "--to", oldest) == 2  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1, err
        assert f"kept release {oldest} is incomplete: schema {missing} is missing" in err
        assert "production left as it was" in err
        assert (_objects(project), _digest(state)) == before
        # the listing says so too, and changes nothing
        assert _cli(project, "releases", "--target", TARGET) == 0
        lines = capsys.readouterr().out.splitlines()
        assert lines[0].startswith("live: release ") and len(lines) == 3, lines
        assert lines[2].startswith(f"kept: release {oldest} (")
        assert lines[2].endswith(f"<- incomplete: schema {missing} is missing"), lines[2]
        assert (_objects(project), _digest(state)) == before
    finally:
        _admin(server, f"alter schema set_aside rename to {missing}")


def _live_objects(project: Project) -> list[tuple]:
    """Production's release schemas and the kept ones, oid by oid; not green, and not the run
    history's views (`analytics_monitoring`), which every job rebuilds with its own code and
    which are not part of a release."""
    return [
        o for o in _objects(project)
        if not o[0].endswith("__green") and o[0] != "analytics_monitoring"
    ]  # fmt: skip


def _green_usage(project: Project) -> list[tuple]:
    """(green schema, role) for every role but the owner that may use a green schema."""
    return _query(
        project,
        "select n.nspname, r.rolname from pg_namespace n cross join pg_roles r "
        "where n.nspname like '%%\\_\\_green' and r.rolname in ('reporter', 'ci', 'bg_reader') "
        "and has_schema_privilege(r.rolname, n.nspname, 'usage')",
    )


def test_two_jobs_at_once_the_second_stops_naming_the_first(
    project: Project, server: pgserver.PgServer, state: Path
) -> None:
    before = _release_id(state)
    first = Job(project, "nightly", TARGET)
    first.wait_for("dbt packages")  # it holds the lock before it does anything
    code, out = _run(project, "deploy", TARGET, MEDIAPULSE_RELEASE_LOCK_WAIT="0")
    assert code == 2, out
    assert (
        out.count("\n") == 1
        and "another release is running on production analytics in "
        f"database {pgserver.DATABASE}: mediapulse nightly pid {first.proc.pid} "
        in out
    ), out
    assert "(role transformer, server pid " in out and "deploy did not start" in out
    assert first.finish() == 0, first.text()[-3000:]
    assert _release_id(state) != before and _stamp(project, MARTS) == _release_id(state)


def test_a_job_killed_at_any_step_leaves_one_whole_release_and_the_next_job_runs(
    project: Project, server: pgserver.PgServer, state: Path
) -> None:
    live = _release_id(state)
    before = _live_objects(project)

    # during the build: green is half built, production as it was, no reader reaches green
    nightly = Job(project, "nightly", TARGET)
    nightly.wait_for(" OK created ")
    dbt = nightly.children()
    os.kill(nightly.proc.pid, signal.SIGKILL)
    assert nightly.finish() == -signal.SIGKILL
    assert _gone(dbt, timeout=3), "dbt died with its job"
    assert [s for s in _schemas(project) if s.endswith("__green")], "killed mid-build"
    assert _live_objects(project) == before and _release_id(state) == live
    assert not _green_usage(project)

    # the next jobs run, each killed later: after stamping (green complete), inside the swap's
    # transaction (renames made, not committed): production as it was, byte for byte
    model = project.root / "models/marts/core/dim_content.sql"
    model.write_text(model.read_text() + "\n-- a deployed change\n")
    for point in ("release.before-swap", "release.in-swap"):
        code, out = _run(project, "deploy", TARGET, MEDIAPULSE_FAILPOINT=point)
        assert code == -signal.SIGKILL, out[-3000:]
        assert _live_objects(project) == before, point
        assert _stamp(project, MARTS) == live == _release_id(state), point
        assert not _green_usage(project), point

    # between the swap and the state: production is the new release and says so
    code, out = _run(project, "deploy", TARGET, MEDIAPULSE_FAILPOINT="release.after-swap")
    assert code == -signal.SIGKILL, out[-3000:]
    deployed = _stamp(project, MARTS)
    assert deployed != live and _release_id(state) == live
    assert _stamp(project, SNAPSHOTS) == deployed, "every schema of one release"

    # the next job repairs the state from the warehouse, then does its work
    code, out = _run(project, "refresh", TARGET)
    assert code == 0, out[-3000:]
    assert f"described release {live} but production is release {deployed}" in out
    assert f"nothing to do, release {deployed} stays live" in out
    assert _release_id(state) == deployed
    _assert_reporter_reads_the_marts_only(server, state)


def test_a_release_stops_when_the_state_says_production_exists_but_its_schemas_are_gone(
    project: Project, state: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    from mediapulse.release.checks import check_pg_production_present
    from mediapulse.release.postgres import PgRelease

    # The same state, a target whose schemas hold no release (as if they had been dropped).
    monkeypatch.setenv("MEDIAPULSE_PG_SCHEMA", "elsewhere")
    release = PgRelease(project, TARGET)
    with pytest.raises(MediaPulseError) as err:
        check_pg_production_present(release, state, start_over=False)
    text = str(err.value)
    assert "elsewhere*" in text and "--start-over" in text and "history" in text
    check_pg_production_present(release, state, start_over=True)
    assert "production starts again" in capsys.readouterr().out


def test_a_dropped_connection_is_retried_from_the_failed_nodes(
    project: Project,
    server: pgserver.PgServer,
    state: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The loader holds a raw table; the release's queries on it wait, and their connections
    are dropped (as a server restart or a network cut would): the release retries those nodes
    and what they skipped, in the same green schemas, and is published."""
    monkeypatch.setenv("MEDIAPULSE_RETRY_DELAY_S", "1")
    loader = server.connect()
    dropped: list[int] = []
    dbt_waits = (
        "from pg_stat_activity where usename = 'transformer' and application_name = 'dbt' "
        "and wait_event_type = 'Lock'"
    )

    def drop_waiting_connections() -> None:
        watcher = server.connect()
        watcher.autocommit = True
        try:
            with watcher.cursor() as cursor:
                # the loader starts writing once dbt has connected (the release's own reads of
                # the raw tables come before)
                for _ in range(2400):
                    cursor.execute(
                        "select 1 from pg_stat_activity where usename = 'transformer' "
                        "and application_name = 'dbt'"
                    )
                    if cursor.fetchall():
                        break
                    time.sleep(0.05)
                loader.cursor().execute(
                    "lock table streaming.watch_events in access exclusive mode"
                )
                for _ in range(600):
                    cursor.execute("select pid " + dbt_waits)
                    waiting = [row[0] for row in cursor.fetchall()]
                    if waiting:
                        time.sleep(0.5)  # let the other threads reach the table too
                        cursor.execute("select pg_terminate_backend(pid) " + dbt_waits)
                        dropped.extend(waiting)
                        return
                    time.sleep(0.1)
        finally:
            loader.rollback()  # the loader is done
            loader.close()
            watcher.close()

    before = _release_id(state)
    thread = threading.Thread(target=drop_waiting_connections)
    thread.start()
    try:
        code = _cli(project, "nightly", "--target", TARGET, "--artifacts", str(state))
    finally:
        thread.join()
    out = capsys.readouterr().out
    assert dropped, "the release's queries waited for the loader's lock"
    assert code == 0, out
    assert "retry 1 of `build` after a transient error (" in out
    assert re.search(  # over TLS (the test servers' only way in), OpenSSL's words
        r"transient error \((server closed the connection|terminating connection|"
        r"SSL connection has been closed unexpectedly)",
        out,
    )
    assert "dbt retry (the failed nodes and what they skipped)" in out
    assert _release_id(state) != before and _stamp(project, MARTS) == _release_id(state)
    results = json.loads((state / "run_results.json").read_text())["results"]
    assert {r["status"] for r in results} <= {"success", "pass", "no-op"}, "every last attempt"
    assert not [s for s in _schemas(project) if s.endswith("__green")]


def test_no_release_wrote_a_raw_table(server: pgserver.PgServer) -> None:
    """After six releases (a refresh among them), a slim CI run and two rollbacks: every raw
    table byte for byte as the loader left it (tests/python/data/test_rawload.py shows the
    same for `build` and slim CI), except catalog.content and streaming.watch_events, which the
    loader itself updated or added to in these tests: those kept their columns and their
    storage (no truncate, drop or re-create)."""
    after = _raw_state(server, pgserver.DATABASE)
    assert RAW_BEFORE and set(after) == set(RAW_BEFORE)
    assert "streaming.partner_events" in after
    for table, (columns, checksum, oid, filenode) in RAW_BEFORE.items():
        if table in ("catalog.content", "streaming.watch_events"):  # the loader added to these
            assert (after[table][0], after[table][2:]) == (columns, (oid, filenode)), table
        else:
            assert after[table] == (columns, checksum, oid, filenode), table
