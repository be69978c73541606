"""`mediapulse bench`: it runs end to end at a small scale and its equality checks hold.

No timing is asserted here (speed targets live in the benchmark's own report); these tests
check that every measurement is taken, the report is complete, and a difference between an
incremental and a full result stops the benchmark instead of producing numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import duckdb
import pytest

from mediapulse import bench
from mediapulse.cli import main
from mediapulse.errors import MediaPulseError

from .conftest import REPO

MEASURES = {
    "full_build", "full_run", "incremental_run", "incremental_build", "slim_ci_one_mart",
    "slim_ci_event_staging", "floor", "parse_cold", "parse_partial", "evaluator",
}  # fmt: skip


@pytest.mark.dbt
def test_bench_runs_every_step_and_its_checks_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    code = main([
        "--project-dir", str(REPO), "bench", "--scale", "20000", "--days", "4", "--runs", "1",
        "--work-dir", str(tmp_path / "work"), "--out", str(out),
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())

    assert set(report["measures"]) == MEASURES
    for name, measure in report["measures"].items():
        assert measure["wall_s"]["median"] > 0, name
        if name not in ("floor", "parse_cold", "parse_partial"):
            assert measure["exec_s"]["median"] > 0, name
            assert measure["peak_mb"]["max"] > 50, f"{name}: the dbt process's memory is measured"
    assert report["scale"]["events"] >= 15_000  # the scale asked for, near enough
    assert report["machine"]["cores"] and report["machine"]["dbt_core"].startswith("1.11")
    assert report["watch_event_path"]["events_per_second"] > 0
    assert report["checks"] == {
        "incremental == full refresh": report["checks"]["incremental == full refresh"],
        "slim_ci_one_mart == full build": report["checks"]["slim_ci_one_mart == full build"],
        "slim_ci_event_staging == full build": report["checks"][
            "slim_ci_event_staging == full build"
        ],
    }
    assert all(value.startswith("equal (") for value in report["checks"].values())
    # the incremental check compares every table the project builds, not a token few
    assert int(report["checks"]["incremental == full refresh"].split("(")[1].split()[0]) >= 10
    assert {t["name"] for t in report["targets"]} >= {
        "incremental run vs full refresh (dbt run)", "slim CI, one mart, vs full build",
    }  # fmt: skip
    assert all(isinstance(t["met"], bool) for t in report["targets"])

    markdown = out.with_suffix(".md").read_text()
    assert markdown == bench.render(report)
    assert "| measure |" in markdown and "slim_ci_one_mart" in markdown
    # the report does not depend on where it ran: the work directory is named, not its path
    assert str(tmp_path) not in markdown and str(tmp_path) not in out.read_text()
    assert "--state <work-dir>/state" in report["measures"]["slim_ci_one_mart"]["command"]
    assert "| parse_cold | — | — |" in markdown
    assert "Machine:" in printed and "check incremental == full refresh: equal" in printed
    # the edited models were put back in the work copy, and the checkout was never touched
    work_model = tmp_path / "work" / "project" / bench.ONE_MART
    assert work_model.read_text() == (REPO / bench.ONE_MART).read_text()
    for model in (bench.ONE_MART, bench.EVENT_STAGING):
        assert "benchmark:" not in (REPO / model).read_text()


def _warehouse(path: Path, rows: list[tuple[int, str]]) -> Path:
    with duckdb.connect(str(path)) as con:
        con.execute("create schema marts")
        con.execute("create table marts.fct (id integer, value varchar)")
        con.executemany("insert into marts.fct values (?, ?)", rows)
    return path


def test_a_difference_stops_the_benchmark(tmp_path: Path) -> None:
    left = _warehouse(tmp_path / "left.duckdb", [(1, "a"), (2, "b"), (2, "b")])
    same = _warehouse(tmp_path / "same.duckdb", [(2, "b"), (1, "a"), (2, "b")])
    # a duplicate lost is a difference too: the comparison counts rows, not distinct values
    fewer = _warehouse(tmp_path / "fewer.duckdb", [(1, "a"), (2, "b")])
    runner = bench.Bench.__new__(bench.Bench)
    runner.checks = {}
    runner.compare("same", [("l.marts.fct", "r.marts.fct")], {"l": left, "r": same})
    assert runner.checks == {"same": "equal (1 relations)"}
    with pytest.raises(MediaPulseError, match=r"check 'lost' FAILED: l.marts.fct and r.marts.fct"):
        runner.compare("lost", [("l.marts.fct", "r.marts.fct")], {"l": left, "r": fewer})
    assert "lost" not in runner.checks


@pytest.mark.parametrize(
    ("text", "events"), [("1M", 1_000_000), ("10m", 10_000_000), ("2.5M", 2_500_000),
                         ("50000", 50_000)],
)  # fmt: skip
def test_scale_accepts_names_and_numbers(text: str, events: int) -> None:
    assert bench.check_scale(text) == events


@pytest.mark.parametrize("text", ["huge", "100", "-5M", "inf", "nan"])
def test_a_bad_scale_is_a_clear_error(text: str) -> None:
    with pytest.raises(MediaPulseError, match=r"--scale"):
        bench.check_scale(text)


def test_users_are_sized_for_the_events_asked_for() -> None:
    params = bench.params_for(10_000_000, 90, seed=1)
    expected_events = params.users * 90 * bench.EVENTS_PER_USER_DAY * bench.VISIBLE_SHARE
    assert abs(expected_events - 10_000_000) / 10_000_000 < 0.01
    assert params.days == 90 and params.seed == 1
