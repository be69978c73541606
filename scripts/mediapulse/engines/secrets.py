"""What each engine's production jobs need from the environment, by the profile's `type`.

Standard library only: production's guard reads it right after the checkout, before anything
is installed (mediapulse.security.guard).
"""

from __future__ import annotations

PG_PASSWORD_ENV = "MEDIAPULSE_PG_PASSWORD"
# A server's role logs in with a password; an embedded file and a local Spark session need none
CONNECTION_SECRETS: dict[str, tuple[str, ...]] = {"postgres": (PG_PASSWORD_ENV,)}
# Engines whose raw data is a file that travels between runners (sealed with a key of its own)
RAW_DATA_FILE: frozenset[str] = frozenset({"duckdb"})
