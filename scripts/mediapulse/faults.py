"""Named faults the generator can inject into the raw data, each caught by a named dbt test.

A fault is applied inside the generator's transaction, after the clean rows of the load
window are written, so a faulty data set is made exactly like a clean one plus the damage.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import duckdb


@dataclass(frozen=True)
class FaultContext:
    con: duckdb.DuckDBPyConnection
    seed: int
    window_after: datetime | None  # the load window just written (after, until]
    window_until: datetime


@dataclass(frozen=True)
class Fault:
    name: str
    description: str
    apply: Callable[[FaultContext], None]


FAULTS: dict[str, Fault] = {}


def register(name: str, description: str) -> Callable[[Callable[[FaultContext], None]], Callable]:
    def decorator(fn: Callable[[FaultContext], None]) -> Callable[[FaultContext], None]:
        FAULTS[name] = Fault(name, description, fn)
        return fn

    return decorator
