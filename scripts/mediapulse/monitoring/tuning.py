"""How sensitive the anomaly detector is for one model or source: `meta` in its YAML.

    models:
      - name: fct_subscription_revenue
        config:
          meta:
            mediapulse:
              anomalies: {seasonality: monthly}

Keys (module anomalies, ``Settings``): ``sensitivity`` (the robust z-score beyond which a
value is an anomaly, > 0), ``min_rows`` and ``min_seconds`` (the smallest difference worth an
alert, in rows and in seconds, >= 0), ``seasonality`` (weekly, monthly or none) and
``accept_shift_after`` (runs before a level shift is the new normal, 0 for never). A source
table takes the same `meta` beside its name.

Read twice: from the YAML files before any job runs (``check``, PyYAML, no dbt: a mistake
stops the job in one line naming the model, the key and what is allowed), and from the
manifest when a run is recorded (``from_manifest``: dbt has merged `dbt_project.yml`, the
YAML and `config()` by then).
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from dataclasses import fields, replace
from typing import Any

import yaml

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.monitoring.anomalies import DEFAULT, SEASONALITIES, Settings

ALLOWED = {
    "sensitivity": "a number above 0 (a robust z-score; default 3.5)",
    "min_rows": "a number of rows, 0 or more",
    "min_seconds": "a number of seconds, 0 or more (not a string such as '30s')",
    "seasonality": f"one of {', '.join(SEASONALITIES)}",
    "accept_shift_after": "a whole number of runs, 0 (never) or more",
}


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _valid(key: str, value: Any) -> Any:
    """The value if it is allowed for ``key``, else None."""
    if key == "seasonality":
        return value if value in SEASONALITIES else None
    number = _number(value)
    if number is None:
        return None
    if key == "sensitivity":
        return number if number > 0 else None
    if key == "accept_shift_after":
        return int(number) if number >= 0 and number == int(number) else None
    return number if number >= 0 else None


def parse(where: str, meta: Any) -> Settings:
    """``meta.mediapulse.anomalies`` of ``where`` (a model or source, for the message)."""
    ours = meta.get("mediapulse") if isinstance(meta, Mapping) else None
    block = ours.get("anomalies") if isinstance(ours, Mapping) else None
    if block is None:
        return DEFAULT
    if not isinstance(block, Mapping):
        raise MediaPulseError(
            f"{where}: meta.mediapulse.anomalies must be a mapping of {', '.join(ALLOWED)}"
        )
    settings = DEFAULT
    for key, value in block.items():
        if key not in ALLOWED:
            raise MediaPulseError(
                f"{where}: meta.mediapulse.anomalies has unknown key {key!r}; allowed keys: "
                f"{', '.join(ALLOWED)}"
            )
        checked = _valid(key, value)
        if checked is None:
            raise MediaPulseError(
                f"{where}: meta.mediapulse.anomalies.{key} = {value!r} is not allowed: "
                f"{ALLOWED[key]}"
            )
        settings = replace(settings, **{key: checked})
    return settings


def _meta(entry: Mapping[str, Any]) -> dict[str, Any]:
    """An entry's meta, from `config.meta` and `meta` (dbt merges both)."""
    merged: dict[str, Any] = {}
    for meta in (entry.get("meta"), (entry.get("config") or {}).get("meta")):
        if isinstance(meta, Mapping):
            for key, value in meta.items():
                if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
                    merged[key] = {**merged[key], **value}
                else:
                    merged[key] = value
    return merged


def _yaml_entries(project: Project) -> Iterator[tuple[str, str, dict[str, Any]]]:
    """(unique id, where, meta) of every model and source table in the project's YAML."""
    name = project.dbt_project_name
    for path in sorted((project.root / "models").rglob("*.yml")):
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise MediaPulseError(f"cannot read {path}: {exc}") from exc
        relative = path.relative_to(project.root)
        for model in document.get("models") or []:
            yield (f"model.{name}.{model.get('name')}", f"model {model.get('name')} ({relative})",
                   _meta(model))  # fmt: skip
        for source in document.get("sources") or []:
            for table in source.get("tables") or []:
                table_name = f"{source.get('name')}.{table.get('name')}"
                meta = {**_meta(source), **_meta(table)}
                yield (f"source.{name}.{table_name}", f"source {table_name} ({relative})", meta)


def check(project: Project) -> dict[str, Settings]:
    """Every model's and source's settings from the YAML; the first mistake stops here."""
    return {uid: parse(where, meta) for uid, where, meta in _yaml_entries(project)
            if parse(where, meta) != DEFAULT}  # fmt: skip


def from_manifest(manifest: Mapping[str, Any]) -> dict[str, Settings]:
    """Every node's and source's settings as dbt resolved them (a versioned model's
    versions each have their own)."""
    nodes = {**manifest.get("nodes", {}), **manifest.get("sources", {})}
    settings = {}
    for uid, node in nodes.items():
        settings[uid] = parse(f"{node.get('resource_type')} {node.get('name')}", _meta(node))
    return {uid: s for uid, s in settings.items() if s != DEFAULT}


def describe(settings: Settings) -> str:
    """The settings that differ from the defaults, as `key=value`."""
    return ", ".join(
        f"{f.name}={getattr(settings, f.name)}"
        for f in fields(settings)
        if getattr(settings, f.name) != getattr(DEFAULT, f.name)
    )
