"""`mediapulse build --sample WINDOW`: a developer's warehouse from the last days only.

The window parser on its own (no dbt), the CLI refusing a bad window or a production target
before any work, and one sample build on a copy of the end-to-end warehouse: every test
passes, the event facts hold only rows inside the window (and some), the rest is whole.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from mediapulse.cli.main import main
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.data import generate
from mediapulse.dbt import artifacts
from mediapulse.develop import build, sample
from mediapulse.engines.duckdb import duckdb_file
from mediapulse.engines.targets import resolve

from ..conftest import clone_built, manifest_models, relation_of

# -- the window parser ----------------------------------------------------------------------

RELATIVE = [
    ("3 days", timedelta(days=3)),
    ("1 day", timedelta(days=1)),
    ("12 hours", timedelta(hours=12)),
    ("1 Hour", timedelta(hours=1)),
]


@pytest.mark.parametrize(("text", "length"), RELATIVE)
def test_a_relative_window_ends_now(text: str, length: timedelta) -> None:
    before = datetime.now(UTC)
    window = sample.parse_window(text)
    assert before <= window.end <= datetime.now(UTC)
    assert window.end - window.start == length


def test_a_month_window_is_calendar_months() -> None:
    window = sample.parse_window("2 months")
    assert timedelta(days=58) <= window.end - window.start <= timedelta(days=62)


@pytest.mark.parametrize(
    ("text", "start", "end"),
    [
        ('{"start": "2026-11-01", "end": "2026-11-04"}', "2026-11-01", "2026-11-04"),
        ("{start: '2026-11-01 06:00', end: '2026-11-02'}", "2026-11-01T06:00", "2026-11-02"),
    ],
)
def test_an_absolute_window_is_utc(text: str, start: str, end: str) -> None:
    window = sample.parse_window(text)
    assert window.start == datetime.fromisoformat(start).replace(tzinfo=UTC)
    assert window.end == datetime.fromisoformat(end).replace(tzinfo=UTC)


BAD_WINDOWS = [
    ("3 dayz", "dayz"),
    ("three days", "three"),
    ("3days", "form"),
    ("", "form"),
    ("0 days", "empty"),
    ("-2 days", "empty"),
    ("{bad json", "not valid"),
    ('{"start": "2026-11-04", "end": "2026-11-01"}', "before"),
    ('{"start": "2026-11-01", "end": "2026-11-01"}', "empty"),
    ('{"start": "2026-11-01"}', "end"),
    ('{"start": "yesterday", "end": "2026-11-01"}', "start"),
    ("{start: 2026-11-01, end: 2026-11-04}", "start"),  # YAML dates, not timestamps: dbt says no
]


@pytest.mark.parametrize(("text", "reason"), BAD_WINDOWS)
def test_a_bad_window_is_one_line_naming_it_and_the_accepted_forms(text: str, reason: str) -> None:
    with pytest.raises(MediaPulseError) as caught:
        sample.parse_window(text)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith(f"--sample {text!r}")
    assert reason in message.split(";")[0], message
    assert "'3 days'" in message and '"start"' in message, message  # the fix: accepted forms
    assert caught.value.exit_code == 2


# -- the CLI, before any work ----------------------------------------------------------------


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def dev_file(project_copy: Project, isolated_env: None) -> Path:
    """A stand-in dev warehouse, to see that a refused build leaves it alone."""
    path = duckdb_file(project_copy, "dev")
    path.parent.mkdir(parents=True, exist_ok=True)
    with duckdb.connect(str(path)) as con:
        con.execute("create table kept as select 42 as answer")
    return path


def _build(project: Project, *args: str) -> int:
    dirs = ["--project-dir", str(project.root), "--warehouse-dir", str(project.warehouse_dir)]
    return main([*dirs, "build", *args])


@pytest.mark.parametrize("text", [t for t, _ in BAD_WINDOWS if t])
def test_build_with_a_bad_window_stops_before_anything(
    project_copy: Project, dev_file: Path, capsys: pytest.CaptureFixture[str], text: str
) -> None:
    before = _digest(dev_file)
    assert _build(project_copy, "--sample", text) == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"mediapulse build: error: --sample {text!r}"), lines[0]
    assert out == ""  # nothing ran: no packages, no demo data, no dbt
    assert _digest(dev_file) == before
    assert not project_copy.raw_path.exists()
    assert not (project_copy.root / "dbt_packages").exists()


@pytest.mark.parametrize(
    ("target", "env"),
    [("prod", {}), ("postgres", {}), ("ci", {"MEDIAPULSE_PROD_TARGET": "ci"})],
)
def test_build_refuses_a_sample_of_production(
    project_copy: Project,
    dev_file: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    target: str,
    env: dict[str, str],
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert _build(project_copy, "--target", target, "--sample", "3 days") == 2
    out, err = capsys.readouterr()
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "--sample" in lines[0] and f"'{target}'" in lines[0], lines[0]
    assert "production" in lines[0], lines[0]
    assert out == ""
    assert not project_copy.raw_path.exists()


# -- a sample build ------------------------------------------------------------------------

# The relations dbt samples (`event_time` in dbt_project.yml), with that column.
SAMPLED = {
    "stg_streaming__watch_events": "event_at",
    "int_watch_events_sessionized": "event_at",
    "int_watch_sessions_aggregated": "session_start_at",
    "fct_watch_sessions": "session_start_at",
    "fct_daily_engagement": "activity_date",
    "stg_ads__ad_impressions": "served_at",
    "fct_ad_impressions": "served_at",
    "fct_campaign_delivery": "delivery_date",
}
# Read in full whatever the window: dimensions, reference data, subscriptions.
WHOLE = ["dim_users_v2", "dim_content", "stg_accounts__users", "stg_billing__subscriptions"]


def _connect(project: Project) -> duckdb.DuckDBPyConnection:
    """The dev warehouse read-only, raw data attached (staging views read it)."""
    con = duckdb.connect(str(duckdb_file(project, "dev")), read_only=True)
    con.execute(f"attach '{project.raw_path}' as raw (read_only)")
    return con


def _counts(con: duckdb.DuckDBPyConnection, models: dict[str, dict], names) -> dict[str, int]:
    return {
        n: con.execute(f"select count(*) from {relation_of(models[n])}").fetchone()[0]
        for n in names
    }


@pytest.mark.dbt
def test_a_sample_build_holds_the_window_only_and_passes_every_test(
    built: Project, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    project = clone_built(built, tmp_path / "project")  # its dev file holds the whole history
    full_models = manifest_models(built)
    with _connect(built) as con:
        full = _counts(con, full_models, [*SAMPLED, *WHOLE])
        seeds = con.execute(
            "select table_name, estimated_size from duckdb_tables() "
            "where schema_name like '%reference' order by 1"
        ).fetchall()
    full_tests = sum(r.resource_type == "test" for r in artifacts.node_results(built.target_dir))

    started = datetime.now(UTC)
    assert _build(project, "--sample", "3 days") == 0, capsys.readouterr()
    finished = datetime.now(UTC)
    assert "sample" in capsys.readouterr().out

    results = artifacts.node_results(project.target_dir)
    bad = [r.describe() for r in results if r.status not in ("success", "pass", "no-op")]
    assert not bad
    assert sum(r.resource_type == "test" for r in results) == full_tests  # none left out
    args = json.loads((project.target_dir / "run_results.json").read_text())["args"]
    assert args.get("sample") and args.get("full_refresh"), args  # the dev file starts over

    models = manifest_models(project)
    earliest = started - timedelta(days=3)
    with _connect(project) as con:
        sampled = _counts(con, models, [*SAMPLED, *WHOLE])
        for name, column in SAMPLED.items():
            low, high = con.execute(
                f"select min({column}), max({column}) from {relation_of(models[name])}"
            ).fetchone()
            assert 0 < sampled[name] < full[name], (name, sampled[name], full[name])
            if isinstance(low, datetime):
                low, high = low.replace(tzinfo=UTC), high.replace(tzinfo=UTC)
                assert earliest <= low and high <= finished, (name, low, high)
            else:  # a day: the day the window starts in, at the earliest
                assert earliest.date() <= low and high <= finished.date(), (name, low, high)
        for name in WHOLE:
            assert sampled[name] == full[name], name
        assert (
            con.execute(
                "select table_name, estimated_size from duckdb_tables() "
                "where schema_name like '%reference' order by 1"
            ).fetchall()
            == seeds
        )

    # The next plain build rebuilds the sampled incremental models in full: an incremental run
    # would add the new loads to the sample, and the marts would hold the sample's history only.
    assert build.sample_marker(resolve(project, "dev")).exists()
    assert _build(project) == 0, capsys.readouterr()
    assert "the last build on 'dev' was a sample" in capsys.readouterr().out
    assert not build.sample_marker(resolve(project, "dev")).exists()
    with _connect(project) as con:
        assert _counts(con, models, [*SAMPLED, *WHOLE]) == full


@pytest.mark.dbt
def test_a_window_without_events_stops_before_dbt(
    project_copy: Project, isolated_env: None, capsys: pytest.CaptureFixture[str]
) -> None:
    start = generate.default_start_date(2)
    params = generate.Params(seed=1, users=20, days=2, events_per_user_day=5.0, start_date=start)
    generate.generate(project_copy.raw_path, params)
    window = '{"start": "2020-01-01", "end": "2020-01-08"}'
    assert _build(project_copy, "--sample", window) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    assert (
        f"--sample {window!r}: no watch events in 2020-01-01 00:00 to 2020-01-08 00:00" in lines[0]
    )
    assert "widen the window" in lines[0]
    assert not duckdb_file(project_copy, "dev").exists()
