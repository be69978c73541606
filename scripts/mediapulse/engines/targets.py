"""Resolving a target of profiles.yml into its engine, once."""

from __future__ import annotations

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.engines.base import ENGINES, Engine
from mediapulse.engines.duckdb import DuckDb
from mediapulse.engines.postgres import Postgres
from mediapulse.engines.spark import Spark

_BY_KIND: dict[str, type[Engine]] = {e.kind: e for e in (DuckDb, Postgres, Spark)}
assert set(_BY_KIND.values()) == set(ENGINES), "an engine module is not registered here"


def resolve(project: Project, target: str) -> Engine:
    """The engine of ``target``; one line naming the target and the fix when profiles.yml has
    no such target or an engine MediaPulse does not run on."""
    output = project.outputs[project.check_target(target)]
    kind = str(output.get("type"))
    try:
        engine = _BY_KIND[kind]
    except KeyError:
        known = ", ".join(f"{e.kind} ({e.label})" for e in _BY_KIND.values())
        raise MediaPulseError(
            f"target '{target}' is of type '{kind}', which MediaPulse does not run on: use a "
            f"target of type {known} in profiles/profiles.yml"
        ) from None
    return engine(project, target)
