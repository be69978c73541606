"""The data generator: contract with docs/raw-data.md, determinism, realism, append, atomicity."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import duckdb
import pytest

from mediapulse.core.errors import MediaPulseError
from mediapulse.data import generate, synthetic

from ..conftest import REPO

pytestmark = pytest.mark.reads("docs/raw-data.md")

START = date(2026, 3, 1)
SMALL = generate.Params(seed=11, users=400, days=8, events_per_user_day=12.0, start_date=START)
TABLES = (
    "streaming.watch_events",
    "catalog.content",
    "accounts.users",
    "billing.subscriptions",
    "ads.campaigns",
    "ads.ad_impressions",
)


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("raw") / "raw.duckdb"
    generate.generate(path, SMALL)
    return path


def _con(path: Path) -> duckdb.DuckDBPyConnection:
    return duckdb.connect(str(path), read_only=True)


def _documented_columns() -> dict[str, list[tuple[str, str]]]:
    """Columns and types per table, as docs/raw-data.md promises them to the staging models."""
    doc = (REPO / "docs" / "raw-data.md").read_text()
    tables: dict[str, list[tuple[str, str]]] = {}
    current = None
    for line in doc.splitlines():
        heading = re.match(r"^## `([a-z_]+\.[a-z_]+)`", line)
        if heading:
            current = heading.group(1)
            tables[current] = []
            continue
        row = re.match(r"^\| `([a-z_]+)` \| ([a-z0-9(), ]+) \|", line)
        if current and row:
            tables[current].append((row.group(1), _normalise(row.group(2))))
    return tables


def _normalise(type_name: str) -> str:
    return type_name.lower().replace(" ", "")


def test_tables_match_the_documented_contract(small: Path) -> None:
    documented = _documented_columns()
    assert set(TABLES) <= set(documented), "docs/raw-data.md must document every raw table"
    with _con(small) as con:
        for table in TABLES:
            schema, name = table.split(".")
            actual = con.execute(
                "select column_name, data_type from information_schema.columns "
                "where table_schema = ? and table_name = ? order by ordinal_position",
                [schema, name],
            ).fetchall()
            assert [(c, _normalise(t)) for c, t in actual] == documented[table], table


def _fingerprint(path: Path) -> dict[str, tuple]:
    with _con(path) as con:
        return {
            t: con.execute(
                f"select count(*), sum(hash(columns(*))) from (select * from {t})"
            ).fetchone()
            for t in TABLES
        }


def test_same_seed_same_data_and_another_seed_differs(small: Path, tmp_path: Path) -> None:
    again = tmp_path / "again.duckdb"
    generate.generate(again, SMALL)
    assert _fingerprint(again) == _fingerprint(small)

    other = tmp_path / "other.duckdb"
    generate.generate(other, generate.Params(**{**SMALL.__dict__, "seed": 12}))
    assert (
        _fingerprint(other)["streaming.watch_events"]
        != _fingerprint(small)["streaming.watch_events"]
    )


def test_size_follows_the_flags(small: Path) -> None:
    with _con(small) as con:
        users = con.execute("select count(*) from accounts.users").fetchone()[0]
        events = con.execute("select count(*) from streaming.watch_events").fetchone()[0]
        days = con.execute(
            "select count(distinct cast(event_ts as date)) from streaming.watch_events"
        ).fetchone()[0]
    # most accounts existed before the start; a share signs up later and is not there yet
    assert 0.8 * SMALL.users <= users <= SMALL.users
    per_user_day = events / (users * SMALL.days)
    assert 0.6 * SMALL.events_per_user_day <= per_user_day <= 1.4 * SMALL.events_per_user_day
    assert days == SMALL.days


def test_at_least_once_delivery_and_late_arrivals(small: Path) -> None:
    with _con(small) as con:
        total, distinct, late, future = con.execute(
            f"""
            select count(*), count(distinct event_id),
                count(*) filter (where loaded_at > event_ts + interval 6 hour),
                count(*) filter (where loaded_at > timestamp '{SMALL.as_of}')
            from streaming.watch_events
            """
        ).fetchone()
        same_payload = con.execute(
            """
            select count(*) from (
                select event_id from streaming.watch_events
                group by event_id
                having count(*) > 1 and count(distinct (event_ts, event_type, position_sec)) = 1
            )
            """
        ).fetchone()[0]
    duplicated = total - distinct
    assert 0.004 * total < duplicated < 0.02 * total
    assert same_payload == duplicated, "a re-delivered event carries the same payload"
    assert 0.005 * total < late < 0.06 * total
    assert future == 0, "nothing loaded after the as-of time is in the data set"


def test_viewings_have_heartbeats_pauses_and_an_end(small: Path) -> None:
    with _con(small) as con:
        counts = dict(
            con.execute(
                "select event_type, count(*) from streaming.watch_events group by 1"
            ).fetchall()
        )
        long_pauses = con.execute(
            """
            with ordered as (
                select event_type, event_ts,
                    lead(event_ts) over (partition by user_id, content_id, device_type
                        order by event_ts, event_id) as next_ts
                from (select distinct on (event_id) * from streaming.watch_events)
            )
            select count(*) from ordered
            where event_type = 'pause' and next_ts > event_ts + interval 30 minute
            """
        ).fetchone()[0]
    assert set(counts) == {"play", "heartbeat", "pause", "resume", "seek", "stop", "complete"}
    assert counts["heartbeat"] > 10 * counts["play"]
    assert counts["complete"] + counts["stop"] >= 0.95 * counts["play"]
    assert long_pauses > 0, "some pauses outlast the 30-minute session gap"


def test_completion_rate_differs_by_content_type(tmp_path: Path) -> None:
    path = tmp_path / "raw.duckdb"
    generate.generate(path, generate.Params(**{**SMALL.__dict__, "users": 3000, "days": 14}))
    with _con(path) as con:
        rates = dict(
            con.execute(
                """
                select c.content_type, avg(case when e.event_type = 'complete' then 1 else 0 end)
                from (select distinct on (event_id) * from streaming.watch_events) e
                join catalog.content c using (content_id)
                where e.event_type in ('complete', 'stop')
                group by 1
                """
            ).fetchall()
        )
    for content_type, expected in synthetic.COMPLETION_RATE.items():
        assert rates[content_type] == pytest.approx(expected, abs=0.07), content_type
    assert rates["live"] < rates["movie"] < rates["episode"]


def test_ads_only_on_ad_supported_plans_and_inside_viewings(small: Path) -> None:
    with _con(small) as con:
        wrong_plan = con.execute(
            """
            select count(*) from ads.ad_impressions i
            join billing.subscriptions s
                on s.user_id = i.user_id and s.started_at <= i.served_ts
                and (s.ended_at is null or s.ended_at > i.served_ts)
            where s.plan_code <> 'ad_supported'
            """
        ).fetchone()[0]
        outside = con.execute(
            """
            with viewing_span as (
                select user_id, content_id, device_type, cast(event_ts as date) as d,
                    min(event_ts) as first_ts, max(event_ts) as last_ts
                from streaming.watch_events group by all
            )
            select count(*) from ads.ad_impressions i
            where not exists (
                select 1 from viewing_span v
                where v.user_id = i.user_id and v.content_id = i.content_id
                    and v.device_type = i.device_type
                    and i.served_ts between v.first_ts and v.last_ts
            )
            and i.loaded_at <= (select max(loaded_at) from streaming.watch_events)
            """
        ).fetchone()[0]
        positions = {
            r[0]
            for r in con.execute("select distinct ad_position from ads.ad_impressions").fetchall()
        }
        total = con.execute("select count(*) from ads.ad_impressions").fetchone()[0]
    assert total > 0
    assert wrong_plan == 0
    # an impression whose viewing's events are still in flight (offline device) may be alone
    assert outside <= 0.05 * total
    assert positions == {"preroll", "midroll", "postroll"}


def test_unknown_country_codes_are_present(small: Path) -> None:
    known = {code for code, *_ in synthetic.COUNTRIES} - {"XX", "ZZ", "UK"}
    with _con(small) as con:
        codes = [r[0] for r in con.execute("select country_code from accounts.users").fetchall()]
    unknown = [c for c in codes if c not in known]
    assert 0 < len(unknown) < 0.05 * len(codes)


def test_append_day_equals_generating_one_more_day(tmp_path: Path) -> None:
    appended = tmp_path / "appended.duckdb"
    generate.generate(appended, SMALL)
    summary = generate.append_day(appended)
    assert summary.params.days == SMALL.days + 1
    assert summary.added["streaming.watch_events"] > 0

    direct = tmp_path / "direct.duckdb"
    generate.generate(direct, generate.Params(**{**SMALL.__dict__, "days": SMALL.days + 1}))
    with duckdb.connect() as con:
        con.execute(f"attach '{appended}' as a (read_only)")
        con.execute(f"attach '{direct}' as b (read_only)")
        for table in (*TABLES, "_mediapulse.generation"):
            diff = con.execute(
                f"select count(*) from ((select * from a.{table} except all "
                f"select * from b.{table}) union all (select * from b.{table} "
                f"except all select * from a.{table}))"
            ).fetchone()[0]
            assert diff == 0, table


def test_append_brings_late_events_of_earlier_days(tmp_path: Path) -> None:
    path = tmp_path / "raw.duckdb"
    generate.generate(path, SMALL)
    generate.append_day(path)
    with _con(path) as con:
        late = con.execute(
            f"""
            select count(*) from streaming.watch_events
            where loaded_at > timestamp '{SMALL.as_of}' and event_ts < timestamp '{SMALL.as_of}'
            """
        ).fetchone()[0]
    assert late > 0


def test_existing_data_set_is_not_overwritten_without_force(small: Path) -> None:
    with pytest.raises(MediaPulseError, match="--force"):
        generate.generate(small, SMALL)


def test_failed_generation_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "raw.duckdb"
    generate.generate(path, SMALL)
    before = _fingerprint(path)

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    monkeypatch.setattr(generate, "_write_metadata", explode)
    with pytest.raises(RuntimeError):
        generate.generate(path, generate.Params(**{**SMALL.__dict__, "seed": 99}), overwrite=True)
    with pytest.raises(RuntimeError):
        generate.append_day(path)
    assert _fingerprint(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw.duckdb"]


def test_append_to_a_missing_or_foreign_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(MediaPulseError, match="does not exist"):
        generate.append_day(tmp_path / "nope.duckdb")
    foreign = tmp_path / "foreign.duckdb"
    duckdb.connect(str(foreign)).close()
    with pytest.raises(MediaPulseError, match="not written by `mediapulse generate`"):
        generate.append_day(foreign)
    corrupt = tmp_path / "corrupt.duckdb"
    corrupt.write_bytes(b"this is not a database" * 100)
    with pytest.raises(MediaPulseError, match="not a readable DuckDB database"):
        generate.append_day(corrupt)
