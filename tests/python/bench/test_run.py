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

from mediapulse.bench import run as bench
from mediapulse.cli.main import main
from mediapulse.core.errors import MediaPulseError
from mediapulse.monitoring import labelled

from ..conftest import REPO

pytestmark = pytest.mark.reads()

# what a merger and a loader wait for: until production serves the release, until its state
WAITS = {"merge_to_live_one_mart", "merge_to_live_one_mart_state", "load_to_live",
         "load_to_live_state"}  # fmt: skip
# what a pull request's author and reviewer wait for: the PR workflow's jobs, step by step
# (the test times the one-mart change's; the staging change's is the same code, minutes longer)
REVIEWS = {"review_one_mart"}
MEASURES = {
    "full_build", "full_run", "incremental_run", "incremental_build", "slim_ci_one_mart",
    "slim_ci_event_staging", "floor", "parse_cold", "parse_partial", "evaluator",
    "job_nightly", "job_refresh", "job_deploy_one_mart", "job_slim_ci_one_mart",
    "data_diff_watch_sessions", "job_nightly_airflow", "job_nightly_dagster",
    "detector_labelled_history", *WAITS, *REVIEWS,
}  # fmt: skip
ORCHESTRATED = {"job_nightly_airflow", "job_nightly_dagster"}  # not mediapulse commands
JOBS = {name for name in MEASURES if name.startswith("job_")} - ORCHESTRATED


@pytest.mark.dbt
def test_bench_runs_every_step_and_its_checks_hold(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "results.json"
    code = main([
        "--project-dir", str(REPO), "bench", "--scale", "20000", "--days", "4", "--runs", "1",
        "--work-dir", str(tmp_path / "work"), "--out", str(out), "--review", "one-mart",
    ])  # fmt: skip
    printed = capsys.readouterr().out
    assert code == 0, printed
    report = json.loads(out.read_text())

    assert set(report["measures"]) == MEASURES
    for name, measure in report["measures"].items():
        assert measure["wall_s"]["median"] > 0, name
        if name not in ("floor", "parse_cold", "parse_partial", *ORCHESTRATED, *WAITS, *REVIEWS):
            assert measure["exec_s"]["median"] > 0, name
        if name not in ("floor", "parse_cold", "parse_partial", "data_diff_watch_sessions", *JOBS,
                        *ORCHESTRATED, "detector_labelled_history", *WAITS,
                        *REVIEWS):  # fmt: skip
            assert measure["peak_mb"]["max"] > 50, f"{name}: the dbt process's memory is measured"
    # production serves a merged change before the deploy has published its state and ended
    wall = {name: report["measures"][name]["wall_s"]["median"] for name in MEASURES}
    # (the job's report gives the time between the two to a tenth of a second)
    assert wall["merge_to_live_one_mart"] < wall["merge_to_live_one_mart_state"]
    assert wall["merge_to_live_one_mart_state"] <= wall["job_deploy_one_mart"] + 0.1
    assert wall["load_to_live"] <= wall["load_to_live_state"] <= wall["job_refresh"] + 0.1
    # the jobs are the commands users run, whole
    assert report["measures"]["job_refresh"]["command"].startswith("mediapulse refresh --target")
    assert "mediapulse slim-ci" in report["measures"]["job_slim_ci_one_mart"]["command"]
    # and the same nightly from the orchestrators, whole commands, beside the CLI's
    assert report["measures"]["job_nightly_airflow"]["command"].startswith(
        "airflow dags test mediapulse_nightly")  # fmt: skip
    assert report["measures"]["job_nightly_dagster"]["command"].startswith(
        "dagster job execute")  # fmt: skip
    # time to review: every run step of the PR workflow's two jobs (the code's lint and unit
    # tests; the dbt checks to the report), each job timed on a fresh runner of its own for each
    # change; GitHub starts them together, so the whole wait is the longer job's
    for name in REVIEWS:
        jobs = report["review"][name]
        assert list(jobs) == ["code", "checks"], jobs
        assert list(jobs["code"]) == ["Lint", "Unit tests"] and "Slim CI" in jobs["checks"], jobs
        assert "Combine the reports" in jobs["checks"], jobs
        assert all(v > 0 for steps in jobs.values() for v in steps.values()), jobs
        longer = max(sum(steps.values()) for steps in jobs.values())
        assert longer == pytest.approx(wall[name], rel=0.01)
    assert "after editing models/marts/" in report["measures"]["review_one_mart"]["command"]
    # ...with a runner's empty temporary directory: the unit tests' pytest kept its session there
    assert list((tmp_path / "work" / "runner-tmp" / "code").glob("pytest-of-*/pytest-0")), (
        "the unit tests ran in the host's /tmp, not in the code job runner's"
    )
    assert report["scale"]["events"] >= 15_000  # the scale asked for, near enough
    assert report["machine"]["cores"] and report["machine"]["dbt_core"].startswith("1.11")
    assert report["watch_event_path"]["events_per_second"] > 0
    assert report["checks"] == {
        "incremental == full refresh": report["checks"]["incremental == full refresh"],
        "slim_ci_one_mart == full build": report["checks"]["slim_ci_one_mart == full build"],
        "slim_ci_event_staging == full build": report["checks"][
            "slim_ci_event_staging == full build"
        ],
        "mediapulse refresh == full refresh": report["checks"][
            "mediapulse refresh == full refresh"
        ],
        "deploy of one mart == the release it replaced": report["checks"][
            "deploy of one mart == the release it replaced"
        ],
        "data diff of an unchanged fct_watch_sessions": report["checks"][
            "data diff of an unchanged fct_watch_sessions"
        ],
        "Airflow + Cosmos nightly == mediapulse nightly": report["checks"][
            "Airflow + Cosmos nightly == mediapulse nightly"
        ],
        "Dagster + dagster-dbt nightly == mediapulse nightly": report["checks"][
            "Dagster + dagster-dbt nightly == mediapulse nightly"
        ],
    }
    assert all(value.startswith("equal (") for value in report["checks"].values())
    # the incremental check compares every table the project builds, not a token few
    assert int(report["checks"]["incremental == full refresh"].split("(")[1].split()[0]) >= 10
    assert {t["name"] for t in report["targets"]} >= {
        "incremental run vs full refresh (dbt run)", "slim CI, one mart, vs full build",
    }  # fmt: skip
    assert all(isinstance(t["met"], bool) for t in report["targets"])
    assert {t["name"] for t in report["targets"]} >= {
        "mediapulse refresh of a day vs full build, both with their tests",
        "mediapulse deploy of one mart vs full deploy (nightly's build), dbt time",
        "mediapulse slim-ci, one mart, wall clock",
        "data diff of fct_watch_sessions against production",
        "Airflow + Cosmos nightly vs mediapulse nightly, wall clock",
        "Dagster nightly vs mediapulse nightly, wall clock",
        "time to review a one-mart change (the PR workflow's jobs, lint to report)",
        "merge to live of a one-mart change (deploy's start to the swap)",
        "mediapulse nightly's wall clock over its dbt time",
    }
    # the staged copy is its own line, and each job says how often dbt parsed
    for job in ("job_nightly", "job_refresh", "job_deploy_one_mart"):
        notes = " ".join(report["job_notes"][job])
        assert "staged copy of production:" in notes and "parsed once" in notes, (job, notes)
    assert "parsed once" in " ".join(report["job_notes"]["job_slim_ci_one_mart"])
    # what recording the run history costs each job, measured by the job itself
    for job in JOBS:
        assert "run history: run " in " ".join(report["job_notes"][job]), job
    # the scaling table holds this scale's row, from this run
    (row,) = report["scaling"].values()
    assert row["refresh_s"] == report["measures"]["job_refresh"]["exec_s"]["median"]

    markdown = out.with_suffix(".md").read_text()
    assert markdown == bench.render(report)
    assert "| measure |" in markdown and "slim_ci_one_mart" in markdown
    # the report does not depend on where it ran: the work directory is named, not its path
    assert str(tmp_path) not in markdown and str(tmp_path) not in out.read_text()
    assert "--state <work-dir>/state" in report["measures"]["slim_ci_one_mart"]["command"]
    assert "| parse_cold | — | — |" in markdown
    assert "### Scaling" in markdown
    assert "### Time to review" in markdown and "| **whole wait** (the longer job) |" in markdown
    # the anomaly detector's labelled history at this scale: scored per incident kind
    detector = report["detector"]
    assert detector["plan"]["days"] >= 60
    assert {k["kind"] for k in detector["kinds"]} == set(labelled.KINDS)
    assert "### Anomaly detector: labelled history" in markdown and "| level_shift |" in markdown
    # its copy of the project leaves out the review runner's `.venv` (its links lead to the
    # whole of this interpreter's site-packages)
    assert (tmp_path / "work" / "labelled" / "project" / "models").is_dir()
    assert not (tmp_path / "work" / "labelled" / "project" / ".venv").exists()
    assert {
        "detector: incidents found on the run they land in",
        "detector: false alarms on ordinary refreshes",
    } <= {t["name"] for t in report["targets"]}
    assert "Staged copy of production (blue-green), per release: job_nightly: " in markdown
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


# -- the work directory: the benchmark deletes it, so it only ever deletes one it created ------


def _bench_cli(tmp_path: Path, work: Path):
    from ..cli.test_main import run_cli

    return run_cli(
        "--project-dir", str(REPO), "bench", "--scale", "20000", "--days", "4", "--runs", "1",
        "--work-dir", str(work), "--out", str(tmp_path / "results.json"),
    )  # fmt: skip


def _contents(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*"))


def test_bench_refuses_a_directory_it_did_not_create(tmp_path: Path) -> None:
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    (mine / "notes" / "thesis.txt").write_text("a user's only copy\n")
    result = _bench_cli(tmp_path, mine)
    assert result.returncode == 2, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert str(mine) in lines[0] and "not created by mediapulse bench" in lines[0], lines[0]
    assert "--work-dir" in lines[0] and "empty or new directory" in lines[0], lines[0]
    # refused before any work: the user's files are all there is, and nothing was measured
    assert (mine / "notes" / "thesis.txt").read_text() == "a user's only copy\n"
    assert _contents(mine) == ["notes", "notes/thesis.txt"]
    assert not (tmp_path / "results.json").exists()
    assert result.stdout == ""


def test_bench_refuses_the_work_dir_of_a_run_from_before_the_marker(tmp_path: Path) -> None:
    # bench/work as an older `make bench` left it: a project copy and a warehouse, no marker
    old = tmp_path / "bench" / "work"
    (old / "project" / "warehouse").mkdir(parents=True)
    (old / "project" / "dbt_project.yml").write_text("name: mediapulse\n")
    result = _bench_cli(tmp_path, old)
    assert result.returncode == 2, result.stderr
    assert f"remove it (rm -rf {old})" in result.stderr, result.stderr
    assert (old / "project" / "dbt_project.yml").exists()


def test_bench_uses_a_new_or_empty_directory_and_reuses_its_own(tmp_path: Path) -> None:
    new = tmp_path / "new" / "work"
    bench.claim_work_dir(new)
    assert _contents(new) == [bench.WORK_DIR_MARKER]
    (new / "project").mkdir()
    (new / "project" / "old.duckdb").write_text("last run")
    bench.claim_work_dir(new)  # its own directory: emptied for the next run, marker kept
    assert _contents(new) == [bench.WORK_DIR_MARKER]

    empty = tmp_path / "empty"
    empty.mkdir()
    bench.claim_work_dir(empty)
    assert _contents(empty) == [bench.WORK_DIR_MARKER]

    a_file = tmp_path / "results.txt"
    a_file.write_text("not a directory")
    with pytest.raises(MediaPulseError, match=r"results.txt.* is a file"):
        bench.claim_work_dir(a_file)
    assert a_file.read_text() == "not a directory"


def test_the_refresh_is_checked_flat_against_the_next_smaller_scale() -> None:
    """With 1 M, 10 M and 50 M measured, the target is 50 M against 10 M (as stated), not
    against 1 M, whose refresh is nearly all fixed cost."""
    here = {"host": "bench-1: AMD EPYC, 2 cores, 23.5 GiB", "day": "2026-12-06"}
    rows = {
        "50000000": {"refresh_s": 38.0, **here}, "1000000": {"refresh_s": 17.0, **here},
        "10000000": {"refresh_s": 20.0, **here},
    }  # fmt: skip
    target = bench.flatness_target(rows)
    assert target is not None
    assert target.name == "refresh at 50,000,000 vs at 10,000,000 events"
    assert target.measured == 38.0 / 20.0 and target.met
    assert bench.flatness_target({"10000000": rows["10000000"]}) is None
    # 12.5 M is less than 4x below 50 M: 10 M is still the scale compared
    near = bench.flatness_target({**rows, "12500001": {"refresh_s": 30.0, **here}})
    assert near is not None and "vs at 10,000,000" in near.name


def test_scales_are_compared_only_on_the_same_host_and_day() -> None:
    """A ratio between two machines, or two days' loads, says nothing about scaling: a row
    from another host or day, or one that does not say where it ran, is not compared."""
    here = {"host": "bench-1: AMD EPYC, 2 cores, 23.5 GiB", "day": "2026-12-06"}
    large = {"50000000": {"refresh_s": 38.0, **here}}
    elsewhere = {"refresh_s": 9.0, "host": "laptop: Apple M3, 8 cores, 16 GiB", "day": here["day"]}
    assert bench.flatness_target({**large, "10000000": elsewhere}) is None
    earlier = {"refresh_s": 9.0, "host": here["host"], "day": "2026-11-30"}
    assert bench.flatness_target({**large, "10000000": earlier}) is None
    assert bench.flatness_target({**large, "10000000": {"refresh_s": 9.0}}) is None
    # a smaller scale rerun beside the larger one is compared, the others are not
    mixed = {**large, "10000000": elsewhere, "1000000": {"refresh_s": 17.0, **here}}
    target = bench.flatness_target(mixed)
    assert target is not None and target.name == "refresh at 50,000,000 vs at 1,000,000 events"
    # the report names the host and day of every row
    report_rows = {"50000000": {**large["50000000"], "full_build_s": 1.0, "nightly_wall_s": 1.0,
                                "refresh_wall_s": 1.0, "deploy_one_mart_s": 1.0,
                                "deploy_one_mart_wall_s": 1.0, "slim_ci_wall_s": 1.0,
                                "peak_gib": 1.0}}  # fmt: skip
    table = bench.render_scaling(report_rows)
    assert "| 2026-12-06 | bench-1: AMD EPYC, 2 cores, 23.5 GiB |" in table


def test_the_nightlies_take_turns_so_a_drifting_machine_favours_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CLI's, Airflow's and Dagster's nightlies are measured one sample each in turn (CLI,
    Airflow, Dagster, CLI, ...), not each three times in a row: the machine's speed drifts
    over a benchmark (three Airflow samples in a row rose 54.7 / 60.4 / 63.6 s one night), and
    the one measured first would gain. Their marts are compared on the last turn, and
    production is left as the CLI's last nightly published it."""
    from mediapulse.bench import jobs, orchestrators

    calls: list[str] = []
    state = tmp_path / "state"

    def cli(bench_: object, name: str, *args: object, **kwargs: object) -> None:
        calls.append("cli")
        state.mkdir(exist_ok=True)
        (state / "release.json").write_text(json.dumps({"release_id": f"cli-{len(calls)}"}))
        (tmp_path / "prod.duckdb").write_text(f"cli {len(calls)}")

    def orchestrated(bench_: object, job: orchestrators.Orchestrated, state_: Path,
                     clean: object, tables: list[str] | None = None) -> None:  # fmt: skip
        calls.append(f"{job.label}{' compared' if tables else ''}")
        (tmp_path / "prod.duckdb").write_text(job.label)

    class Bench:
        runs, work, measures = 3, tmp_path / "work", {}

        def file(self, name: str) -> Path:
            return tmp_path / name

        def save(self, name: str, *files: str) -> None:
            (self.work / name).mkdir(parents=True, exist_ok=True)
            for file in files:
                (self.work / name / file).write_text(self.file(file).read_text())

        def built_tables(self) -> list[str]:
            return ["marts.fct"]

    monkeypatch.setattr(jobs, "run_job", cli)
    monkeypatch.setattr(jobs, "run_orchestrated", orchestrated)
    monkeypatch.setattr(jobs, "orchestrated_nightlies", lambda bench_, state_: [
        orchestrators.Orchestrated([], {}, label, orchestrators.Measure(label, ""))
        for label in ("airflow", "dagster")])  # fmt: skip
    jobs.measure_nightlies(Bench(), state)  # type: ignore[arg-type]

    assert calls == ["cli", "airflow", "dagster"] * 2 + [
        "cli", "airflow compared", "dagster compared"]  # fmt: skip
    assert (tmp_path / "prod.duckdb").read_text() == "cli 7"  # the CLI's last nightly's
    assert json.loads((state / "release.json").read_text())["release_id"] == "cli-7"
