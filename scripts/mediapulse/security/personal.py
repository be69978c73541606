"""Personal data in the raw sources, and the masked copy of it that pull requests read.

A raw column is personal when its sources YAML says so: `meta: {personal: true}`, or a
description that starts with "Personal" (`accounts.users`: e-mail, name, date of birth). Only
production's build reads those values; anything a pull request can read (the CI role's grants
on a server, the raw data a CI runner downloads) holds a masked copy instead, built with
``mask_expression``: the same rows and columns, with every personal value replaced by one that
identifies no one.

- text: ``masked-<16 hex digits>``, a digest of a secret salt and the value, so equal values
  stay equal (distinct counts, joins) but no dictionary of likely addresses can be checked
  against it; a column named like an e-mail address keeps that shape
  (``masked-…@example.invalid``);
- dates and timestamps: the first day of their year (the reduced form the staging layer keeps
  anyway, ``birth_year``);
- anything else: null.
Nulls stay null. The SQL is the same on DuckDB and PostgreSQL.
"""

from __future__ import annotations

from dataclasses import dataclass

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.core.sources import (
    MASKED_SCHEMA_SUFFIX,
    RAW_SCHEMA_SUFFIX_ENV,
    declared_sources,
    normalise_type,
)

MASKED_DOMAIN = "example.invalid"  # RFC 2606: an address there reaches no one


@dataclass(frozen=True)
class PersonalTable:
    """A raw table with personal columns: ``schema.identifier`` and its declared columns
    (name, declared type, personal or not), in the order the YAML declares them."""

    schema: str
    identifier: str
    columns: tuple[tuple[str, str | None, bool], ...]

    @property
    def name(self) -> str:
        return f"{self.schema}.{self.identifier}"

    @property
    def personal(self) -> tuple[str, ...]:
        return tuple(name for name, _, personal in self.columns if personal)


def personal_tables(project: Project) -> list[PersonalTable]:
    """The raw tables whose sources YAML documents at least one personal column."""
    found = []
    for table in declared_sources(project):
        columns = tuple((c.name, c.data_type, c.personal) for c in table.columns)
        if any(personal for _, _, personal in columns):
            found.append(PersonalTable(table.schema, table.identifier, columns))
    return found


def masked_tables(project: Project) -> list[PersonalTable]:
    """Every raw table a CI run on a server reads from the masked copy (`<schema>__masked`):
    the tables of each source whose `schema:` takes the suffix variable, personal columns or
    not (dbt sets one schema per source). Refuses a source with personal columns that does not
    take it: on a server `ci` may not read those tables, so slim CI would fail on them."""
    found, unmasked = [], []
    for table in declared_sources(project):
        columns = tuple((c.name, c.data_type, c.personal) for c in table.columns)
        if table.masked:
            found.append(PersonalTable(table.schema, table.identifier, columns))
        elif any(personal for _, _, personal in columns):
            unmasked.append(table)
    if unmasked:
        first = unmasked[0]
        raise MediaPulseError(
            f"source {first.source_name} has personal columns ({first.schema}."
            f"{first.identifier}) but its `schema:` does not take the masked copy's suffix: "
            f"write `schema: \"{first.schema}{{{{ env_var('{RAW_SCHEMA_SUFFIX_ENV}', '') }}}}\"` "
            '(docs/personal-data.md, "Personal data")'
        )
    return found


def masked_name(table: PersonalTable) -> str:
    """The masked copy of ``table`` that `ci` reads on a server: ``<schema>__masked.<table>``."""
    return f"{table.schema}{MASKED_SCHEMA_SUFFIX}.{table.identifier}"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def mask_expression(column: str, data_type: str | None, salt_sql: str) -> str:
    """SQL for the masked value of personal ``column`` (declared ``data_type``), as a column of
    the same name. ``salt_sql`` is an SQL expression giving the secret salt (a literal for a
    copy whose salt is thrown away, a subquery the reader cannot run on its own for a view)."""
    quoted = _quote(column)
    kind = normalise_type(data_type or "varchar")
    if kind == "varchar":
        digest = f"substr(md5({salt_sql} || {quoted}), 1, 16)"
        suffix = f" || '@{MASKED_DOMAIN}'" if "email" in column.lower() else ""
        masked = f"'masked-' || {digest}{suffix}"
        return f"case when {quoted} is null then null else {masked} end as {quoted}"
    if kind == "date":
        return f"cast(date_trunc('year', {quoted}) as date) as {quoted}"
    if kind == "timestamp":
        return f"cast(date_trunc('year', {quoted}) as timestamp) as {quoted}"
    return f"cast(null as {data_type}) as {quoted}"


def masked_select(table: PersonalTable, source_sql: str, salt_sql: str) -> str:
    """A select of every declared column of ``table`` from ``source_sql``, personal ones
    masked. Columns the YAML does not declare are left out: nobody documented what they hold."""
    items = [
        mask_expression(name, data_type, salt_sql) if personal else _quote(name)
        for name, data_type, personal in table.columns
    ]
    return "select " + ", ".join(items) + f" from {source_sql}"
