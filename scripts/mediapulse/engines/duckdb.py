"""Opening DuckDB files with errors a user can act on (absent, corrupt, locked)."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb

from mediapulse.core.errors import MediaPulseError


def describe_open_error(path: Path, exc: Exception) -> str:
    text = str(exc)
    if "different configuration" in text:
        return (
            f"{path} is already open in this process in another mode (read-only vs read-write): "
            "close that connection first"
        )
    if "Could not set lock" in text or "Conflicting lock" in text:
        pid = re.search(r"PID (\d+)", text)
        holder = f" (held by process {pid.group(1)})" if pid else ""
        return (
            f"{path} is locked by another process{holder}: wait for it to finish or stop it, "
            "then retry"
        )
    if "not a valid DuckDB database" in text or "Invalid Input Error" in text or "header" in text:
        return (
            f"{path} is not a readable DuckDB database (corrupt or another format): move it "
            "away and rebuild it"
        )
    return f"cannot open {path}: {text.splitlines()[0] if text else type(exc).__name__}"


def open_duckdb(path: Path, purpose: str, read_only: bool = False) -> duckdb.DuckDBPyConnection:
    """Open an existing DuckDB file; absent, corrupt or locked files raise MediaPulseError."""
    if not path.is_file():
        raise MediaPulseError(f"cannot {purpose}: {path} does not exist")
    try:
        return duckdb.connect(str(path), read_only=read_only)
    except duckdb.Error as exc:
        raise MediaPulseError(f"cannot {purpose}: {describe_open_error(path, exc)}") from exc
