"""The same project on Apache Spark (target `spark`: a Spark session inside dbt's process,
Parquet tables): seeds, snapshots, models and every data and unit test build there, and the
marts hold the same rows as on DuckDB, money to the last decimal. Then a day is appended, the
raw tables reloaded, and an incremental run on Spark equals a full refresh on DuckDB.

One Spark session (one JVM) serves every dbt invocation of the module: `runner.session`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import pytest

from mediapulse.core.project import Project
from mediapulse.data import generate, sparkload
from mediapulse.dbt import artifacts, runner
from mediapulse.develop import build
from mediapulse.engines import spark
from mediapulse.engines.duckdb import duckdb_file
from mediapulse.engines.targets import resolve

from ..conftest import clone_built, manifest_models, relation_of
from ..support.compare_marts import same_rows, tolerances_of

pytestmark = [pytest.mark.dbt, pytest.mark.spark]
TARGET = "spark"


@dataclass
class SparkRuns:
    project: Project
    full: list[artifacts.NodeResult]  # the first build, everything from scratch
    incremental: list[artifacts.NodeResult]  # the build after an appended day
    marts_full: dict[str, list[tuple]]  # Spark's marts after each build
    marts_incremental: dict[str, list[tuple]]
    duckdb_before: dict[str, list[tuple]]  # DuckDB's, before and after the day
    duckdb_after: dict[str, list[tuple]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    datediff_on_spark: tuple[int, int] = (0, 0)


# dbt.datediff across engines: half an hour is 1 hour on Spark (it rounds the elapsed time up)
# and 0 on DuckDB and PostgreSQL (they count hour boundaries crossed); seconds agree (Spark
# truncates each timestamp to the second first). The models use seconds and days only.
DATEDIFF_PROBE = (
    "select {{ dbt.datediff(\"cast('2026-01-01 10:00:00' as timestamp)\", "
    "\"cast('2026-01-01 10:30:00' as timestamp)\", 'hour') }} as hours, "
    "{{ dbt.datediff(\"cast('2026-01-01 10:00:00.900' as timestamp)\", "
    "\"cast('2026-01-01 10:00:01.100' as timestamp)\", 'second') }} as seconds"
)


def _datediff(project: Project, target: str) -> tuple[int, int]:
    run = runner.run_dbt(
        resolve(project, target), ["show", "--inline", DATEDIFF_PROBE], capture_events=["ShowNode"]
    )
    assert run.success and run.messages, run.error
    hours, seconds = run.messages[-1].strip().splitlines()[-1].strip("| ").split("|")
    return int(hours), int(seconds)


def _marts(project: Project) -> dict[str, dict]:
    return {n: node for n, node in manifest_models(project).items() if node["fqn"][1] == "marts"}


def _spark_rows(project: Project) -> dict[str, list[tuple]]:
    """The marts as Spark wrote them, read from their Parquet files (DuckDB reads them; no
    second JVM, and a reading independent of the engine under test). The manifest is the
    last Spark build's, for the schemas."""
    marts = _marts(project)
    tables = project.warehouse_dir / "spark" / "tables"
    rows = {}
    with duckdb.connect() as con:
        for name, node in marts.items():
            files = tables / f"{node['schema']}.db" / node["alias"] / "*.parquet"
            select = ", ".join(node["columns"])
            rows[name] = con.execute(f"select {select} from read_parquet('{files}')").fetchall()
    return rows


def _duckdb_rows(project: Project) -> dict[str, list[tuple]]:
    """The marts of the `dev` DuckDB build whose manifest is the last one."""
    marts = _marts(project)
    with duckdb.connect(str(duckdb_file(project, "dev")), read_only=True) as con:
        return {
            name: con.execute(
                f"select {', '.join(node['columns'])} from {relation_of(node)}"
            ).fetchall()
            for name, node in marts.items()
        }


@pytest.fixture(scope="module")
def runs(built: Project, tmp_path_factory: pytest.TempPathFactory) -> Iterator[SparkRuns]:
    if spark.java() is None:
        pytest.skip(
            f"Spark tests: no Java runtime (apt-get install {spark.JRE_PACKAGE}); "
            "`make test` installs it (.ci/provision)"
        )
    project = clone_built(built, tmp_path_factory.mktemp("spark") / "project")
    duckdb_before = _duckdb_rows(project)
    seconds = {}
    with runner.session(resolve(project, TARGET)):
        started = time.perf_counter()
        assert "loaded" in sparkload.load_raw(resolve(project, TARGET))
        seconds["load-raw"] = time.perf_counter() - started
        started = time.perf_counter()
        assert build.main_job(resolve(project, TARGET)) == 0
        seconds["build"] = time.perf_counter() - started
        full = artifacts.node_results(project.target_dir)
        marts_full = _spark_rows(project)

        generate.append_day(project.raw_path)
        assert "loaded" in sparkload.load_raw(resolve(project, TARGET))
        started = time.perf_counter()
        assert build.main_job(resolve(project, TARGET)) == 0
        seconds["incremental build"] = time.perf_counter() - started
        incremental = artifacts.node_results(project.target_dir)
        marts_incremental = _spark_rows(project)
        datediff = _datediff(project, TARGET)
    result = SparkRuns(
        project, full, incremental, marts_full, marts_incremental, duckdb_before, seconds=seconds,
        datediff_on_spark=datediff,
    )  # fmt: skip
    # the reference: the same appended data, built from scratch on DuckDB
    assert build.main_job(resolve(project, "dev"), full_refresh=True) == 0
    result.duckdb_after = _duckdb_rows(project)
    print(f"Spark at test scale: {seconds}")
    yield result


def test_everything_builds_and_every_test_passes_on_spark(runs: SparkRuns) -> None:
    for results in (runs.full, runs.incremental):
        bad = [r.describe() for r in results if r.status not in ("success", "pass", "no-op")]
        assert not bad, bad
    kinds = {}
    for r in runs.full:
        kinds[r.resource_type] = kinds.get(r.resource_type, 0) + 1
    assert kinds.get("seed") == 7 and kinds.get("snapshot") == 2, kinds
    # every unit test of the default selector (the monitoring views' own is left out)
    assert kinds.get("unit_test", 0) >= 18 and kinds.get("test", 0) >= 200, kinds
    incremental = {r.name for r in runs.incremental if r.resource_type == "model"}
    assert {"fct_watch_sessions", "fct_daily_engagement", "fct_ad_impressions"} <= incremental


def _compare(
    project: Project, duck: dict[str, list[tuple]], on_spark: dict[str, list[tuple]]
) -> None:
    marts = _marts(project)
    assert {"fct_subscription_revenue", "revenue_by_content", "fct_watch_sessions"} <= set(marts)
    for name, node in marts.items():
        assert len(duck[name]) == len(on_spark[name]), name
        assert duck[name], f"{name} is empty: the comparison would prove nothing"
        difference = same_rows(duck[name], on_spark[name], tolerances_of(name, node), name, "Spark")
        assert difference is None, f"{name}: {difference}"


def test_marts_hold_the_same_rows_on_spark_and_duckdb(runs: SparkRuns) -> None:
    _compare(runs.project, runs.duckdb_before, runs.marts_full)


def test_an_incremental_run_on_spark_equals_a_full_refresh(runs: SparkRuns) -> None:
    assert runs.duckdb_after["fct_watch_sessions"] != runs.duckdb_before["fct_watch_sessions"]
    _compare(runs.project, runs.duckdb_after, runs.marts_incremental)


def test_a_reload_of_the_same_data_set_is_skipped(runs: SparkRuns) -> None:
    assert "already loaded" in sparkload.load_raw(resolve(runs.project, TARGET))
    loads = list((runs.project.warehouse_dir / spark.RAW_DIR).glob("load-*"))
    assert len(loads) == 1, "earlier loads are removed once the tables point at the new one"


def test_no_java_is_one_line_naming_the_package(
    project_copy: Project, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from mediapulse.core.errors import MediaPulseError

    monkeypatch.setenv("PATH", str(tmp_path))  # no `java` anywhere
    monkeypatch.delenv("JAVA_HOME", raising=False)
    with pytest.raises(MediaPulseError) as err:
        spark.check_local_session(project_copy, TARGET)
    text = str(err.value)
    assert "\n" not in text and spark.JRE_PACKAGE in text and "Java runtime" in text


def test_a_session_that_cannot_start_is_one_line_with_sparks_reason(
    runs: SparkRuns, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from mediapulse.cli.main import main

    monkeypatch.setenv("MEDIAPULSE_SPARK_DRIVER_MEMORY", "1k")  # the JVM refuses to start
    capsys.readouterr()
    code = main(["--project-dir", str(runs.project.root), "build", "--target", TARGET])
    out, err = capsys.readouterr()
    assert code != 0
    errors = [line for line in (out + err).splitlines() if "could not start" in line]
    assert errors == [
        f"mediapulse build: error: the Spark session of target '{TARGET}' could not start: "
        "Error occurred during initialization of VM: Too small maximum heap (Spark's log: "
        f"{runs.project.warehouse_dir / spark.LOG}; settings: profiles.yml, "
        "MEDIAPULSE_SPARK_DRIVER_MEMORY, MEDIAPULSE_SPARK_CORES)"
    ], out + err
    assert "Traceback" not in out + err and "at org.apache" not in out + err


def test_datediff_in_hours_is_where_spark_differs_and_seconds_agree(runs: SparkRuns) -> None:
    """The engine difference docs/targets/spark.md names, shown, not assumed."""
    assert runs.datediff_on_spark == (1, 1)
    assert _datediff(runs.project, "dev") == (0, 1)
    root = runs.project.root / "models"
    calls = []
    for path in root.rglob("*.sql"):
        if path.relative_to(root).parts[0] == "monitoring":
            continue  # the run history's views are not built on Spark
        for call in path.read_text().split("dbt.datediff(")[1:]:
            calls.append((path.name, call.split("}}")[0]))
    assert len(calls) >= 5, "the models' datediff calls are found"
    wrong = [name for name, call in calls if "'hour'" in call or "'minute'" in call]
    assert not wrong, f"datediff in hours or minutes, which Spark rounds differently: {wrong}"
