"""The environment dbt runs with for a target: this project's profiles and warehouse, the key
personal data is hashed with, and the raw schemas the sources read."""

from __future__ import annotations

from mediapulse.core.project import TARGET_ENV, WAREHOUSE_ENV
from mediapulse.core.sources import RAW_SCHEMA_SUFFIX_ENV
from mediapulse.dbt.pii import hash_key_env
from mediapulse.engines.base import Engine


def dbt_env(engine: Engine) -> dict[str, str]:
    """Environment variables that make dbt read this project's profiles and warehouse, the key
    personal data is hashed with (see pii.py), and the raw schemas' suffix."""
    project, target = engine.project, engine.target
    return {
        "DBT_PROFILES_DIR": str(project.profiles_dir),
        WAREHOUSE_ENV: project.dbt_path(project.warehouse_dir),
        TARGET_ENV: project.check_target(target),
        **hash_key_env(engine),
        # the raw schemas the sources read: the masked copies for a CI run on a server
        RAW_SCHEMA_SUFFIX_ENV: engine.raw_schema_suffix,
    }
