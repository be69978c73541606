"""The environment dbt runs with for a target: this project's profiles and warehouse, the key
personal data is hashed with, and the raw schemas the sources read."""

from __future__ import annotations

from mediapulse.core.project import TARGET_ENV, WAREHOUSE_ENV, Project
from mediapulse.core.sources import RAW_SCHEMA_SUFFIX_ENV
from mediapulse.dbt.pii import hash_key_env
from mediapulse.engines.targets import resolve


def dbt_env(project: Project, target: str) -> dict[str, str]:
    """Environment variables that make dbt read this project's profiles and warehouse, the key
    personal data is hashed with (see pii.py), and the raw schemas' suffix."""
    return {
        "DBT_PROFILES_DIR": str(project.profiles_dir),
        WAREHOUSE_ENV: project.dbt_path(project.warehouse_dir),
        TARGET_ENV: project.check_target(target),
        **hash_key_env(project, target),
        # the raw schemas the sources read: the masked copies for a CI run on a server
        RAW_SCHEMA_SUFFIX_ENV: resolve(project, target).raw_schema_suffix,
    }
