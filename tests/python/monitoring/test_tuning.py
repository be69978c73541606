"""A model's anomaly settings in its YAML `meta` (issue 30): read, and refused in one line
naming the model, the key and what is allowed, before any run."""

from __future__ import annotations

from pathlib import Path

import pytest

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.monitoring import tuning
from mediapulse.monitoring.anomalies import DEFAULT, Settings

from ..conftest import copy_project


def _meta(block: object) -> dict:
    return {"mediapulse": {"anomalies": block}}


def test_settings_are_read_and_the_rest_stay_default() -> None:
    settings = tuning.parse("model m", _meta({"sensitivity": 5, "min_seconds": 60}))
    assert settings == Settings(sensitivity=5.0, min_seconds=60.0)
    assert tuning.parse("model m", {"owner": "x"}) == DEFAULT


@pytest.mark.parametrize(
    ("block", "message"),
    [
        ({"sensitivty": 4}, "model m: meta.mediapulse.anomalies has unknown key 'sensitivty'; "
         "allowed keys: sensitivity, min_rows, min_seconds, seasonality, accept_shift_after"),
        ({"sensitivity": -1}, "model m: meta.mediapulse.anomalies.sensitivity = -1 is not "
         "allowed: a number above 0"),
        ({"min_seconds": "30s"}, "model m: meta.mediapulse.anomalies.min_seconds = '30s' is not "
         "allowed: a number of seconds, 0 or more (not a string such as '30s')"),
        ({"seasonality": "daily"}, "meta.mediapulse.anomalies.seasonality = 'daily' is not "
         "allowed: one of weekly, monthly, none"),
        ({"accept_shift_after": 1.5}, "accept_shift_after = 1.5 is not allowed"),
    ],
)  # fmt: skip
def test_a_wrong_setting_is_one_line_naming_model_key_and_allowed_values(
    block: dict, message: str
) -> None:
    with pytest.raises(MediaPulseError) as error:
        tuning.parse("model m", _meta(block))
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.reads("*")
def test_the_projects_yaml_is_checked(tmp_path: Path) -> None:
    project: Project = copy_project(tmp_path / "project")
    settings = tuning.check(project)
    assert settings["model.mediapulse.fct_subscription_revenue"].seasonality == "monthly"
    path = project.root / "models/marts/finance/_finance__models.yml"
    path.write_text(path.read_text().replace("seasonality: monthly", "seasonality: monthy", 1))
    with pytest.raises(MediaPulseError, match=r"model fct_subscription_revenue \(models/marts/"
                       r"finance/_finance__models.yml\): .*seasonality = 'monthy'"):  # fmt: skip
        tuning.check(project)
