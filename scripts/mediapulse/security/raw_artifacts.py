"""The raw data a DuckDB production's jobs pass between GitHub runners, and pull requests' copy.

The loader's `raw.duckdb` holds personal data in clear, so it never travels as it is:
- production's jobs download it sealed (artifact `production-raw`: `raw.duckdb.sealed`,
  AES-256-GCM with the production environment's MEDIAPULSE_RAW_ARTIFACT_KEY, sealing.py),
  `unseal-raw` before they build and `seal-raw` before they upload;
- pull requests download a masked copy (artifact `ci-raw`: a `raw.duckdb` with the same tables,
  rows and types, every personal column replaced by personal.py's masked values with a salt
  that is thrown away), written by `mask-raw` after a release. The CI target attaches it as
  `raw` exactly as it would the real one.
A server target keeps its raw data in its database: these commands say so and do nothing.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

import duckdb

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.freed_memory import require_wiped
from mediapulse.core.project import Project
from mediapulse.engines.base import Engine
from mediapulse.security import sealing
from mediapulse.security.personal import PersonalTable, masked_select, personal_tables

SEALED_SUFFIX = ".sealed"
WHAT = "production's raw data, artifact production-raw"


def sealed_path(project: Project) -> Path:
    return project.raw_path.with_name(project.raw_path.name + SEALED_SUFFIX)


def _not_duckdb(engine: Engine) -> str | None:
    if engine.embedded:
        return None
    return f"{engine.described} keeps its raw data in its database: nothing to do"


def unseal_raw(engine: Engine) -> str:
    """Open the downloaded sealed raw data into raw.duckdb; returns what was done."""
    project = engine.project
    skip = _not_duckdb(engine)
    if skip:
        return skip
    sealed, raw = sealed_path(project), project.raw_path
    if not sealed.exists():
        if raw.exists():  # an artifact of the layout before sealing: used once, then sealed
            return f"no sealed raw data at {sealed}: using {raw} as found"
        return (
            f"no sealed raw data at {sealed} (the first run, or the production-raw artifact "
            "expired): nothing to unseal"
        )
    sealing.unseal(sealed, raw, sealing.artifact_key(), WHAT)
    return f"unsealed {sealed} into {raw} ({raw.stat().st_size} bytes)"


def seal_raw(engine: Engine) -> str:
    """Seal raw.duckdb into raw.duckdb.sealed for the upload; unchanged raw data keeps the
    sealed file it came in (the same bytes are published again)."""
    project = engine.project
    skip = _not_duckdb(engine)
    if skip:
        return skip
    key = sealing.artifact_key()
    sealed, raw = sealed_path(project), project.raw_path
    if not raw.exists():
        raise MediaPulseError(f"no raw data at {raw}: nothing to seal (run the release first)")
    if sealed.exists() and sealing.digest_of_sealed(sealed, key, WHAT) == sealing.digest_of(raw):
        return f"{raw} unchanged since it was unsealed: {sealed} is published as it came"
    sealing.seal(raw, sealed, key)
    return f"sealed {raw} into {sealed} ({sealed.stat().st_size} bytes)"


def mask_raw(engine: Engine, out: Path) -> str:
    """Write the masked copy of raw.duckdb pull requests read to ``out``."""
    project = engine.project
    skip = _not_duckdb(engine)
    if skip:
        return skip
    raw = project.raw_path
    if not raw.exists():
        raise MediaPulseError(f"no raw data at {raw}: nothing to mask (run the release first)")
    personal = {t.name: t for t in personal_tables(project)}
    masked = write_masked_copy(raw, out, personal)
    return f"wrote {out}: raw data with the personal columns of {', '.join(masked)} masked"


def write_masked_copy(raw: Path, out: Path, personal: dict[str, PersonalTable]) -> list[str]:
    """Every table of ``raw`` into ``out`` (which appears whole or not at all), the tables in
    ``personal`` through masked_select. Returns the masked tables' names."""
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(f".{out.name}.partial-{os.getpid()}")
    partial.unlink(missing_ok=True)
    require_wiped(f"write {out}, the masked copy pull requests read")
    salt = "'" + secrets.token_hex(16) + "'"  # thrown away: nobody can recompute a value
    masked = []
    con = duckdb.connect(str(partial))
    try:
        con.execute(f"attach '{raw}' as source (read_only)")
        tables = con.execute(
            "select table_schema, table_name from information_schema.tables "
            "where table_catalog = 'source' and table_type = 'BASE TABLE' order by 1, 2"
        ).fetchall()
        for schema, table in tables:
            name = f"{schema}.{table}"
            relation = f'source."{schema}"."{table}"'
            select = f"select * from {relation}"
            if name in personal:
                select = masked_select(personal[name], relation, salt)
                masked.append(name)
            con.execute(f'create schema if not exists "{schema}"')
            con.execute(f'create table "{schema}"."{table}" as {select}')
        con.execute("detach source")
    except BaseException:
        con.close()
        partial.unlink(missing_ok=True)
        raise
    con.close()
    os.replace(partial, out)
    return masked
