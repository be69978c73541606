"""What the benchmark records: samples of one measurement, and targets they are held to (pure)."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field


@dataclass
class Sample:
    wall_s: float
    exec_s: float | None  # dbt's elapsed_time; None where dbt writes no run results
    peak_mb: float


@dataclass
class Measure:
    name: str
    command: str
    samples: list[Sample] = field(default_factory=list)

    def stat(self, key: str) -> dict[str, float | None]:
        values = [getattr(s, key) for s in self.samples if getattr(s, key) is not None]
        if not values:
            return {"median": None, "min": None, "max": None}
        return {"median": statistics.median(values), "min": min(values), "max": max(values)}

    @property
    def exec_median(self) -> float:
        value = self.stat("exec_s")["median"] or self.stat("wall_s")["median"]
        return float(value or 0.0)

    @property
    def wall_median(self) -> float:
        return float(self.stat("wall_s")["median"] or 0.0)


@dataclass
class Target:
    name: str
    measured: float
    limit: float
    better: str  # "higher" or "lower"
    unit: str

    @property
    def met(self) -> bool:
        return (
            self.measured >= self.limit if self.better == "higher" else self.measured <= self.limit
        )
