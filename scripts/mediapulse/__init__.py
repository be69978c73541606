"""MediaPulse tooling: data generator, package installer and the dbt jobs CI runs."""

import os as _os

from mediapulse.core.freed_memory import wipe_freed_memory as _wipe_freed_memory

# Before anything imports duckdb: jemalloc reads this once, at DuckDB's first allocation, and
# without it DuckDB may write bytes of freed memory into the files it saves (core/freed_memory.py).
_wipe_freed_memory(_os.environ)

__version__ = "0.1.0"
