"""Resolving a target of profiles.yml into its engine, once."""

from __future__ import annotations

from importlib.util import find_spec

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
    require_extra(engine, target)
    return engine(project, target)


# What the pyproject extra of each optional engine brings (DuckDB, the default, needs none): the
# extra is named after the engine's kind.
EXTRA_MODULES: dict[type[Engine], tuple[str, ...]] = {
    Postgres: ("psycopg2", "dbt.adapters.postgres"),
    Spark: ("pyspark", "dbt.adapters.spark"),
}


def require_extra(engine: type[Engine], target: str) -> None:
    """A target whose engine's extra is not installed stops here, before any work, in one line."""
    if not all(find_spec(name) for name in EXTRA_MODULES.get(engine, ())):
        raise MediaPulseError(
            f"target '{target}' ({engine.label}) needs the {engine.kind} extra, which is not "
            f"installed: run `make venv TARGET={target}` (.venv/bin/pip install -c "
            f"requirements.lock -e '.[{engine.kind}]'; `make test` installs every extra)"
        )
