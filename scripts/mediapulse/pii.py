"""The secret key the staging layer hashes personal data with (`macros/pii/keyed_hash.sql`).

The key is MEDIAPULSE_PII_HASH_KEY, from the environment, never from a committed file: without
it a dictionary of likely addresses reverses an unkeyed hash. A server target (PostgreSQL, the
shared warehouse) requires the variable. A DuckDB target is a file in this checkout's
warehouse directory, beside raw.duckdb with the addresses in clear (so is a local Spark
session's, `method: session`): there, without the
variable, a random key is generated once per checkout into that (gitignored) directory, so
that `make build` works on a fresh clone and hashes stay stable from one build to the next.
"""

from __future__ import annotations

import os
import secrets

from mediapulse.errors import MediaPulseError
from mediapulse.project import Project

KEY_ENV = "MEDIAPULSE_PII_HASH_KEY"
SECRET_ENV = "DBT_ENV_SECRET_MEDIAPULSE_PII_HASH_KEY"
KEY_FILE = "pii-hash.key"


def hash_key_env(project: Project, target: str) -> dict[str, str]:
    """The variables dbt needs for ``target``: the key, and the same value under a name dbt
    treats as a secret (``DBT_ENV_SECRET_*`` values are masked in everything dbt logs, such
    as the pre-hook that sets the key)."""
    key = os.environ.get(KEY_ENV) or _checkout_key(project, target)
    return {KEY_ENV: key, SECRET_ENV: key}


def _checkout_key(project: Project, target: str) -> str:
    from mediapulse.spark import is_local

    if project.target_type(target) != "duckdb" and not is_local(project, target):
        raise MediaPulseError(
            f"environment variable {KEY_ENV} is not set: target '{target}' hashes e-mail "
            "addresses with this secret key; set it from your secret store (the same value on "
            "every run, or the hashes change)"
        )
    path = project.warehouse_dir / KEY_FILE
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:  # readable by this user only; O_EXCL: two jobs starting at once keep one key
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(descriptor, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
            print(f"generated this checkout's key for hashing personal data: {path} ({KEY_ENV})")
    key = path.read_text().strip()
    if not key:
        raise MediaPulseError(
            f"{path} is empty: delete it (a new key is generated) or set {KEY_ENV}"
        )
    return key
