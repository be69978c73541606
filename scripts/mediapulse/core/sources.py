"""The raw sources as the project's YAML declares them: tables, columns, types, personal
columns and the schema each one reads (pure, but for reading the YAML).

The loaders' sources live beside their staging models (models/staging/<system>/); the run
history's (models/monitoring/) are written by the jobs themselves and are not raw data.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from typing import Any

import yaml

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project

CRITICAL_TAG = "critical"


# Type names as each engine spells them, to one name: the sources declare a type once for
# both engines (DuckDB's information is upper case, PostgreSQL's format_type long-hand).
_ALIASES = {
    "text": "varchar",
    "string": "varchar",
    "character varying": "varchar",
    "char varying": "varchar",
    "int": "integer",
    "int4": "integer",
    "signed": "integer",
    "int8": "bigint",
    "long": "bigint",
    "int2": "smallint",
    "short": "smallint",
    "float8": "double",
    "double precision": "double",
    "float4": "real",
    "bool": "boolean",
    "logical": "boolean",
    "numeric": "decimal",
    "timestamp without time zone": "timestamp",
    "datetime": "timestamp",
    "timestamp with time zone": "timestamptz",
    "time without time zone": "time",
    "bytea": "blob",
}


_TIMESTAMP = re.compile(r"^(timestamp|time)\s*(\(\d+\))?\s*(with(?:out)? time zone)?$")


def normalise_type(name: str) -> str:
    """One spelling per type across DuckDB and PostgreSQL: ``TIMESTAMP`` and ``timestamp
    without time zone`` are ``timestamp``, ``numeric(10, 2)`` is ``decimal(10,2)``. A varchar's
    length is dropped: the loader's storage choice, read as text either way."""
    text = " ".join(name.strip().lower().split())
    text = re.sub(r"\s*([(),])\s*", r"\1", text)
    timestamp = _TIMESTAMP.match(text)
    if timestamp:  # PostgreSQL puts a precision between the name and the time zone
        base, zone = timestamp.group(1), timestamp.group(3)
        return _ALIASES.get(f"{base} {zone}", base) if zone else base
    base, _, args = text.partition("(")
    base = _ALIASES.get(base, base)
    if base == "varchar":
        return base
    if base == "decimal" and args and "," not in args:
        args = args.replace(")", ",0)")  # numeric(p) is numeric(p,0) on both engines
    return f"{base}({args}" if args else base


@dataclass(frozen=True)
class DeclaredColumn:
    name: str
    data_type: str | None
    # documented as personal data: `meta: {personal: true}`, or a description that starts
    # with "Personal" (mediapulse.security.personal masks these in what pull requests read)
    personal: bool = False


@dataclass(frozen=True)
class DeclaredTable:
    """A source table as its YAML declares it."""

    source_name: str
    table_name: str
    schema: str
    identifier: str  # the raw table's name (dbt's `identifier`, else the table's name)
    database: str  # as written: usually Jinja, resolved by ``resolve_database``
    critical: bool
    columns: tuple[DeclaredColumn, ...]
    # its source's `schema:` ends with the masked copy's variable (RAW_SCHEMA_SUFFIX_ENV): a CI
    # run on a server reads the table from `<schema>__masked`
    masked: bool = field(default=False, compare=False)


def _tags(node: dict[str, Any]) -> set[str]:
    tags: set[str] = set()
    for value in (node.get("tags"), (node.get("config") or {}).get("tags")):
        if isinstance(value, str):
            tags.add(value)
        elif value:
            tags.update(str(v) for v in value)
    return tags


def _enabled(node: dict[str, Any]) -> bool:
    return (node.get("config") or {}).get("enabled", True) is not False


# Where the raw data's sources are declared, one file per source system (docs/test-severity.md,
# "Sources"); other sources (the run history's, models/monitoring/) are not the loader's.
RAW_SOURCES_GLOB = "models/staging/*/_*__sources.yml"


# libyaml's safe loader when PyYAML has it: a tenth of the pure-Python one's 50 ms here
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _is_personal(column: dict[str, Any]) -> bool:
    meta = column.get("meta") or (column.get("config") or {}).get("meta") or {}
    return bool(meta.get("personal")) or str(column.get("description") or "").startswith("Personal")


# A source holding personal columns names its schema with this variable appended, e.g.
# `schema: "accounts{{ env_var('MEDIAPULSE_RAW_SCHEMA_SUFFIX', '') }}"`: unset (production, any
# DuckDB target) it is the loader's raw schema; a CI run on a server gets MASKED_SCHEMA_SUFFIX
# (Engine.raw_schema_suffix), the schema of the masked copy `ci` reads instead
# (docs/personal-data.md).
RAW_SCHEMA_SUFFIX_ENV = "MEDIAPULSE_RAW_SCHEMA_SUFFIX"


MASKED_SCHEMA_SUFFIX = "__masked"


def source_schema(source: dict[str, Any], suffix: str = "") -> str:
    """The schema a source's YAML names, rendered as dbt renders it with RAW_SCHEMA_SUFFIX_ENV
    set to ``suffix``: by default the loader's raw schema, whatever this process's environment
    holds. Other variables are read from the environment, as dbt would."""
    written = str(source.get("schema") or source["name"])
    if "{{" not in written and "{%" not in written:
        return written
    from jinja2 import TemplateError
    from jinja2.sandbox import SandboxedEnvironment

    def env_var(name: str, default: str | None = None) -> str:
        value = suffix if name == RAW_SCHEMA_SUFFIX_ENV else os.environ.get(name, default)
        if value is None:
            raise MediaPulseError(f"environment variable {name} is not set (source {written!r})")
        return value

    try:
        return SandboxedEnvironment().from_string(written).render(env_var=env_var).strip()
    except TemplateError as exc:
        raise MediaPulseError(
            f"cannot tell the schema of source {source.get('name')} from {written!r}: {exc}; "
            "the sources' `schema:` may use env_var() only"
        ) from exc


def declared_sources(project: Project) -> list[DeclaredTable]:
    """Every raw source table the project's YAML declares, with its columns and whether it is
    critical (tag ``critical`` on the source or the table)."""
    tables: list[DeclaredTable] = []
    for path in sorted(project.root.glob(RAW_SOURCES_GLOB)):
        try:
            document = yaml.load(path.read_text(), Loader=_LOADER) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise MediaPulseError(f"cannot read {path}: {exc}") from exc
        for source in document.get("sources") or []:
            if not _enabled(source):
                continue
            schema = source_schema(source)
            masked = source_schema(source, MASKED_SCHEMA_SUFFIX) == schema + MASKED_SCHEMA_SUFFIX
            for table in source.get("tables") or []:
                if not _enabled(table):
                    continue
                columns = tuple(
                    DeclaredColumn(str(c["name"]), c.get("data_type"), _is_personal(c))
                    for c in table.get("columns") or []
                )
                tables.append(
                    DeclaredTable(
                        source_name=source["name"],
                        table_name=table["name"],
                        schema=schema,
                        identifier=table.get("identifier") or table["name"],
                        database=str(source.get("database") or ""),
                        critical=CRITICAL_TAG in _tags(source) | _tags(table),
                        columns=columns,
                        masked=masked,
                    )
                )
    return tables


def resolve_database(written: str, kind: str, target_database: str, vars: dict[str, Any]) -> str:
    """The database a source's ``database:`` names for a target, rendered like dbt renders it
    from ``var()`` and ``target`` (the raw sources': var ``raw_database``, else the attached
    ``raw`` catalog on DuckDB and the target's database elsewhere)."""
    if not written:
        return target_database
    if "{{" not in written and "{%" not in written:
        return written
    from jinja2 import TemplateError
    from jinja2.sandbox import SandboxedEnvironment

    def var(name: str, default: Any = None) -> Any:
        return vars.get(name, default)

    try:
        rendered = (
            SandboxedEnvironment()
            .from_string(written)
            .render(var=var, target={"type": kind, "database": target_database})
        )
    except TemplateError as exc:
        raise MediaPulseError(
            f"cannot tell the database of a source from {written!r}: {exc}; the schema check "
            "knows var() and target.type / target.database"
        ) from exc
    return rendered.strip()


RAW_TABLES = (
    "streaming.watch_events",
    "catalog.content",
    "accounts.users",
    "billing.subscriptions",
    "ads.campaigns",
    "ads.ad_impressions",
    "_mediapulse.generation",
)


RAW_SOURCES_DIR = "models/staging"


def is_raw_source(source: dict[str, Any]) -> bool:
    """A manifest source the loaders write (not the run history's, models/monitoring/)."""
    return str(source.get("original_file_path", "")).startswith(RAW_SOURCES_DIR + "/")


def declared_raw_tables(project: Project) -> list[str]:
    """Every raw table the project's sources declare, as schema.table (watch events first)."""
    tables: list[str] = []
    # the loaders' sources live beside their staging models; the run history's source
    # (models/monitoring/) is written by the jobs themselves
    for path in sorted((project.root / RAW_SOURCES_DIR).rglob("*.yml")):
        try:
            document = yaml.safe_load(path.read_text()) or {}
        except (OSError, yaml.YAMLError) as exc:
            raise MediaPulseError(f"cannot read {path}: {exc}") from exc
        for source in document.get("sources") or []:
            schema = source_schema(source)  # the loader's, never a masked copy's
            for table in source.get("tables") or []:
                tables.append(f"{schema}.{table.get('identifier') or table['name']}")
    order = {name: index for index, name in enumerate(RAW_TABLES)}
    return sorted(tables, key=lambda name: order.get(name, len(order)))
