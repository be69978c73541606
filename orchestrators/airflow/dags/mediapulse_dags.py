"""MediaPulse's release jobs (nightly, hourly refresh) as Airflow DAGs: put this folder in
Airflow's dags_folder. The DAGs are built by mediapulse.orchestrate.airflow_dags from the
environment (docs/orchestrators/airflow.md), drawn from dbt's manifest: importing this file
runs no dbt."""

from __future__ import annotations

import os
from pathlib import Path

try:
    from mediapulse.orchestrate.airflow_dags import make_dags
except ModuleNotFoundError as missing:
    package = (missing.name or "").split(".")[0]
    raise ImportError(
        f"MediaPulse's Airflow DAGs need the Python package {package!r}, missing in Airflow's "
        "environment: pip install -e '.[airflow]' in the checkout, into that environment"
    ) from None

globals().update(make_dags(os.environ, Path(__file__)))
