"""Named faults the generator can inject into the raw data, each caught by a named dbt test."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import duckdb


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    apply: Callable[[duckdb.DuckDBPyConnection], None]


FAULTS: dict[str, Fault] = {}
