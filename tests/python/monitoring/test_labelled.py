"""Issue 30's labelled benchmark of the anomaly detector, small: a simulated production history
of more than sixty daily refreshes (module monitoring.labelled: the project's model SQL over the
generator's data as loaded each day, stored and judged by the real run history) with one
incident of each kind. Targets: each found on the run it lands in, no false alarm on an
ordinary refresh, the level shift alerted once and then accepted as the new normal.
(`mediapulse bench` runs the same history at its larger scale and reports it.)"""

from __future__ import annotations

from pathlib import Path

import pytest

from mediapulse.core.project import Project
from mediapulse.engines.targets import resolve
from mediapulse.monitoring import history, labelled
from mediapulse.monitoring.anomalies import DEFAULT

from ..conftest import clone_built

# the make-test scale (the bench's is larger): at 500 accounts the daily watch events vary
# by about 9 %, and a +30 % shift is only 3.3 times that; at 1000, by about 6 %
PLAN = labelled.Plan(users=1000, checked=(20, 33, 34))


@pytest.fixture(scope="module")
def simulation(built: Project, tmp_path_factory: pytest.TempPathFactory) -> labelled.Simulation:
    project = clone_built(built, tmp_path_factory.mktemp("labelled") / "project")
    return labelled.simulate(project, PLAN, project.warehouse_dir / "dev.duckdb")


@pytest.mark.dbt
def test_the_shortcut_equals_the_projects_sql_run_directly(
    simulation: labelled.Simulation,
) -> None:
    # the watch events' models from one build over the period, against a direct build, on the
    # tenfold day (ten copies of a day), the partial day and the day after it
    assert set(simulation.differ) == set(PLAN.checked)
    for day, differ in simulation.differ.items():
        assert len(differ) == 4 and not any(differ.values()), (day, differ)


@pytest.mark.dbt
def test_every_incident_is_found_on_its_run_and_no_ordinary_day_alerts(
    simulation: labelled.Simulation, tmp_path: Path
) -> None:
    score = labelled.score(simulation)
    labelled.dump(score, tmp_path / "score.json")
    report = labelled.render(score)
    assert PLAN.days + 1 >= 60 and len(simulation.runs) == PLAN.days + 1
    assert {k.kind for k in score.kinds} == set(labelled.KINDS)
    assert [k.kind for k in score.kinds if not k.detected] == [], report
    assert score.false_alarms == [], report
    assert score.ordinary_days >= 40


@pytest.mark.dbt
def test_the_level_shift_alerts_once_then_is_the_new_normal(
    simulation: labelled.Simulation,
) -> None:
    day = PLAN.day_of("level_shift")
    assert day is not None
    rows = history.read(
        resolve(simulation.project, "prod"),
        "select run_id, status from monitoring.anomalies where metric = 'rows_added' "
        f"and unique_id = '{labelled.WATCH_EVENTS}'",
    )
    status = {run: s for run, s in rows}
    shift = [status[simulation.runs[d]] for d in range(day, PLAN.days + 1)]
    after = DEFAULT.accept_shift_after
    assert shift[:after] == ["anomaly"] + ["persisting"] * (after - 2) + ["accepted"], shift
    assert "anomaly" not in shift[1:], shift  # one alert, not one a run
