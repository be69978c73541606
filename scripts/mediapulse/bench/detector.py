"""`mediapulse bench`'s detector step: the labelled production history (module
monitoring.labelled) at the benchmark's daily volume, scored per incident kind.

It runs in a copy of the benchmark's project, from the full build the benchmark made
(``after_full``, its artifacts in ``state``): the history replaces the copy's raw data and
keeps its own run history, so the other steps' files stay as they were.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from mediapulse.bench.measures import Measure, Sample, Target
from mediapulse.core.project import Project
from mediapulse.monitoring import labelled

EVENTS_PER_USER_DAY = 40.0  # the labelled history's (as `make test`'s)
WATCHING = 0.75  # of the events a user-day asks for, those loaded (signed up, paying, the weekday)
# never fewer accounts than `make test`'s history (at fewer, a day's watch events vary by 9 %
# and more, and a +30 % shift is not told from noise), nor more than this
MIN_USERS, MAX_USERS = 1_000, 5_000
# far below the benchmark's smallest scale (`--scale 1M` loads some 910,000 events; its own
# tests run it at 20,000), a smoke test
SMOKE_EVENTS, SMOKE_USERS = 100_000, 300


def plan_for(events: int, days: int) -> labelled.Plan:
    """A labelled history whose daily watch events match the benchmark's (``events`` over
    ``days``), within ``MIN_USERS`` to ``MAX_USERS`` accounts."""
    daily = events / max(days, 1)
    users = round(daily / (EVENTS_PER_USER_DAY * WATCHING))
    least = SMOKE_USERS if events < SMOKE_EVENTS else MIN_USERS
    return labelled.Plan(
        users=min(MAX_USERS, max(least, users)), events_per_user_day=EVENTS_PER_USER_DAY
    )


def measure_detector(bench: Any, events: int, days: int) -> dict[str, Any]:
    """The labelled history at the benchmark's volume; returns its report section."""
    folder = bench.work / "labelled"
    shutil.rmtree(folder, ignore_errors=True)
    root = folder / "project"
    # not the review's runner `.venv`: its links to this interpreter would be followed, and
    # the whole of site-packages copied (the history's jobs run this interpreter)
    shutil.copytree(bench.project.root, root,
                    ignore=shutil.ignore_patterns("warehouse", "target", "logs",
                                                  ".venv"))  # fmt: skip
    project = Project.discover(root, root / "warehouse")
    project.warehouse_dir.mkdir(parents=True, exist_ok=True)
    shutil.copytree(bench.work / "state", project.target_dir)  # the full build's artifacts
    reference: Path = bench.work / "after_full" / "prod.duckdb"
    plan = plan_for(events, days)
    started = time.perf_counter()
    simulation = labelled.simulate(project, plan, reference, progress=lambda m: print(f"  {m}"))
    score = labelled.score(simulation)
    seconds = time.perf_counter() - started
    measure = Measure(
        "detector_labelled_history",
        f"labelled history: {plan.days} daily refreshes, {plan.users:,} accounts, "
        f"{len(plan.incidents)} incidents, judged by the run history",
    )
    measure.samples.append(Sample(seconds, seconds, 0.0))
    bench.measures[measure.name] = measure
    print(labelled.render(score))
    return {"plan": {"days": plan.days, "warmup": plan.warmup, "users": plan.users,
                     "events_per_user_day": plan.events_per_user_day, "seed": plan.seed},
            "seconds": seconds, **score.as_dict(), "markdown": labelled.render(score)}  # fmt: skip


def detector_targets(section: dict[str, Any]) -> list[Target]:
    """Issue 30's targets: every incident found on its run, no false alarm on ordinary days."""
    return [
        Target("detector: incidents found on the run they land in", section["recall"], 1.0,
               "higher", ""),
        Target("detector: false alarms on ordinary refreshes", section["false_alarms"], 0,
               "lower", ""),
    ]  # fmt: skip
