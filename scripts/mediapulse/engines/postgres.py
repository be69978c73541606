"""PostgreSQL targets: credentials as dbt renders them, the one way to connect, and the roles
a target runs as (production's, or a CI run's in its own schemas)."""

from __future__ import annotations

import os
from argparse import Namespace
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import yaml

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import PROFILE_NAME, Project
from mediapulse.core.sources import MASKED_SCHEMA_SUFFIX
from mediapulse.engines.base import ENGINES, Capability, Engine, Session


def target_credentials(project: Project, target: str) -> Any:
    """The target's credentials exactly as dbt renders them from profiles.yml (env vars and all)."""
    from dbt.config.profile import Profile
    from dbt.config.renderer import ProfileRenderer
    from dbt.flags import set_from_args
    from dbt_common.context import set_invocation_context

    set_invocation_context(dict(os.environ))
    set_from_args(Namespace(), None)
    raw = yaml.safe_load((project.profiles_dir / "profiles.yml").read_text())
    try:
        profile = Profile.from_raw_profiles(
            raw, PROFILE_NAME, ProfileRenderer({}), target_override=target
        )
    except Exception as exc:  # dbt raises several types; all mean the profile is unusable
        reason = " ".join(str(exc).split())  # dbt's message spans lines: one line here
        raise MediaPulseError(f"cannot read target '{target}' from profiles.yml: {reason}") from exc
    return profile.credentials


# What every connection to a server pins when the profile does not say (it does: profiles.yml)
PINNED_SEARCH_PATH = "pg_catalog, pg_temp"


def connect_postgres(project: Project, target: str):  # type: ignore[no-untyped-def]
    """A connection as the target's role, as dbt's would be: TLS as the profile's `sslmode`
    says (`require` unless set), and the search path pinned to the catalog, so that no
    unqualified name in our own SQL resolves to an object another role created."""
    import psycopg2

    creds = target_credentials(project, target)
    search_path = creds.search_path or PINNED_SEARCH_PATH
    tls = {"sslmode": creds.sslmode or "require"}
    if creds.sslrootcert:
        tls["sslrootcert"] = creds.sslrootcert
    try:
        return psycopg2.connect(
            host=creds.host,
            port=creds.port,
            user=creds.user,
            password=creds.password,
            dbname=creds.database,
            connect_timeout=creds.connect_timeout or 10,
            options="-c search_path=" + search_path.replace(" ", "\\ "),
            **tls,
        )
    except psycopg2.Error as exc:
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise MediaPulseError(
            f"cannot connect to target '{target}' (PostgreSQL {creds.user}@{creds.host}:"
            f"{creds.port}/{creds.database}, sslmode {tls['sslmode']}): {reason}; check "
            "MEDIAPULSE_PG_HOST, MEDIAPULSE_PG_PORT, MEDIAPULSE_PG_USER, MEDIAPULSE_PG_PASSWORD, "
            "MEDIAPULSE_PG_DATABASE, MEDIAPULSE_PG_SSLMODE, MEDIAPULSE_PG_SSLROOTCERT"
        ) from exc


CI_ROLE_ENV = "MEDIAPULSE_PG_CI_ROLE"
REPORTER_ROLE_ENV = "MEDIAPULSE_PG_REPORTER_ROLE"
CI_SCHEMA_PREFIX = "ci_"


def ci_role() -> str:
    return os.environ.get(CI_ROLE_ENV) or "ci"


def reporter_role() -> str:
    return os.environ.get(REPORTER_ROLE_ENV) or "reporter"


class Postgres(Engine):
    """A PostgreSQL server: production's schemas swapped by releases, a CI run's own schemas
    (`ci_<run>`), roles, and raw schemas that belong to the loader."""

    kind = "postgres"
    label = "PostgreSQL"
    capabilities = frozenset(Capability)

    @property
    def credentials(self) -> Any:
        """Rendered on each use: the environment they come from may change between jobs."""
        return target_credentials(self.project, self.target)

    def is_ci(self) -> bool:
        """A target that builds in a CI run's schemas (`postgres_ci`)."""
        return str(self.credentials.schema).startswith(CI_SCHEMA_PREFIX)

    @property
    def raw_schema_suffix(self) -> str:
        """A CI run reads the masked copies of the raw schemas (`ci` may not read personal
        raw values)."""
        return MASKED_SCHEMA_SUFFIX if self.is_ci() else ""

    @property
    def checkout_key_allowed(self) -> bool:
        """Production's hashes need production's secret key; a CI run hashes with any."""
        return self.is_ci()

    @contextmanager
    def connect(self, purpose: str, write: bool = False) -> Iterator[Session]:
        con = connect_postgres(self.project, self.target)
        try:
            yield Session(con, "%s")
            if write:
                con.commit()
        finally:
            if not con.closed:
                con.rollback()
                con.close()


ENGINES.append(Postgres)
