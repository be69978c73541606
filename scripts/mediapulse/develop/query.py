"""`mediapulse query`: run read-only SQL against a DuckDB target's warehouse file."""

from __future__ import annotations

import duckdb

from mediapulse.core.errors import MediaPulseError
from mediapulse.engines.base import Engine
from mediapulse.engines.duckdb import duckdb_file, open_duckdb


def run_query(engine: Engine, sql: str, max_rows: int = 50) -> str:
    """The result of ``sql`` as a printable table; the raw data is attached as ``raw``."""
    project, target = engine.project, engine.target
    path = duckdb_file(project, target)
    purpose = f"query target '{target}' (run `make build` first?)"
    con = open_duckdb(path, purpose=purpose, read_only=True)
    try:
        if project.raw_path.exists():
            con.execute(f"attach '{project.raw_path}' as raw (read_only)")
        try:
            relation = con.sql(sql)
        except duckdb.Error as exc:
            raise MediaPulseError(f"query failed: {str(exc).splitlines()[0]}") from exc
        if relation is None:
            return "(no result)"
        rows = relation.fetchmany(max_rows + 1)
        columns = relation.columns
        return _format_table(columns, rows[:max_rows], truncated=len(rows) > max_rows)
    finally:
        con.close()


def _format_table(columns: list[str], rows: list[tuple], truncated: bool) -> str:
    cells = [[("NULL" if v is None else str(v)) for v in row] for row in rows]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns)]
    line = lambda values: "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True))  # noqa: E731
    out = [line(columns), line(["-" * w for w in widths]), *(line(r) for r in cells)]
    out.append(f"({len(rows)} rows{', more not shown' if truncated else ''})")
    return "\n".join(out)
