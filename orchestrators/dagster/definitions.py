"""The file `dagster` loads: MediaPulse's nightly and hourly refresh as Dagster jobs over the
dbt project (scripts/mediapulse/orchestrate/dagster_defs.py; docs/orchestrators/dagster.md).

    dagster job execute -f orchestrators/dagster/definitions.py -j mediapulse_nightly
    dagster dev -f orchestrators/dagster/definitions.py

Needs $MEDIAPULSE_ARTIFACTS (production's state directory) and the manifest that
`python -m mediapulse.orchestrate.dagster_defs` writes; loading runs no dbt. The checkout is
$MEDIAPULSE_PROJECT_DIR, else the one this file is in.
"""

import os
from pathlib import Path

import click

from mediapulse.core.errors import MediaPulseError
from mediapulse.orchestrate.dagster_defs import load

try:
    defs = load(
        Path(os.environ.get("MEDIAPULSE_PROJECT_DIR") or Path(__file__).resolve().parents[2])
    )
except MediaPulseError as exc:
    # what is missing, in one line: the `dagster` CLI prints a click error as "Error: ...",
    # a code server shows it as the location's load error
    raise click.ClickException(f"mediapulse: {exc}") from None
