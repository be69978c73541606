"""The secret key the staging layer hashes personal data with (`macros/pii/keyed_hash.sql`).

The key is MEDIAPULSE_PII_HASH_KEY, from the environment, never from a committed file: without
it a dictionary of likely addresses reverses an unkeyed hash. A production server target
(PostgreSQL, the shared warehouse) requires the variable. Elsewhere, without the variable, a
random key is generated once per checkout into its (gitignored) warehouse directory, so that
`make build` works on a fresh clone and hashes stay stable from one build to the next:
- a DuckDB target, a file in that directory beside raw.duckdb (so is a local Spark session's,
  `method: session`);
- a server CI target (its schema is a CI run's, `ci_...`): pull requests never receive
  production's key, so each CI job (a fresh checkout) hashes with a key of its own, and
  nothing a reviewer compares depends on it (the data diff leaves keyed hashes out).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path

from mediapulse.core.errors import MediaPulseError
from mediapulse.engines.base import Engine

KEY_ENV = "MEDIAPULSE_PII_HASH_KEY"
SECRET_ENV = "DBT_ENV_SECRET_MEDIAPULSE_PII_HASH_KEY"
KEY_FILE = "pii-hash.key"


def hash_key_env(engine: Engine) -> dict[str, str]:
    """The variables dbt needs for ``target``: the key, and the same value under a name dbt
    treats as a secret (``DBT_ENV_SECRET_*`` values are masked in everything dbt logs, such
    as the pre-hook that sets the key)."""
    key = os.environ.get(KEY_ENV) or _checkout_key(engine)
    return {KEY_ENV: key, SECRET_ENV: key}


def _checkout_key(engine: Engine) -> str:
    project, target = engine.project, engine.target
    if not engine.checkout_key_allowed:
        raise MediaPulseError(
            f"environment variable {KEY_ENV} is not set: target '{target}' hashes e-mail "
            "addresses with this secret key; set it from your secret store (the same value on "
            "every run, or the hashes change)"
        )
    path = project.warehouse_dir / KEY_FILE
    if not path.exists() and _create_key_file(path):
        print(f"generated this checkout's key for hashing personal data: {path} ({KEY_ENV})")
    key = path.read_text().strip()
    if not key:
        raise MediaPulseError(
            f"{path} is empty: delete it (a new key is generated) or set {KEY_ENV}"
        )
    return key


def _create_key_file(path: Path) -> bool:
    """Create the key file with its whole content at once: written to a private temporary file,
    then linked into place, which fails if another job's key got there first (that one is
    kept). A reader never sees the file before its key is in it. True when this one won."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{KEY_FILE}.")  # mode 600
    try:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        try:
            os.link(temporary, path)
        except FileExistsError:
            return False
        return True
    finally:
        os.unlink(temporary)
