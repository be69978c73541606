"""Named points where a rehearsal kills a job for real, the way a lost runner stops it.

Setting ``MEDIAPULSE_FAILPOINT=<name>`` makes the job ``kill -9`` itself when it reaches that
point: no handler, no ``finally``, no cleanup runs, exactly as when the machine under it goes
away. The tests use it to prove that every such stop leaves production one whole release and
that the next job runs (docs/jobs/releases.md). Unset, a point costs one dictionary lookup.

The points of a release, in order: ``release.before-swap`` (everything built and stamped,
nothing swapped), ``release.in-swap`` (inside the swap: PostgreSQL's transaction has renamed
the schemas but not committed; on DuckDB the replaced file is kept but the new one is not in
place yet), ``release.after-swap`` (production is the new release, its state is not
published yet), and ``rollback.after-swap``.
"""

from __future__ import annotations

import os
import signal

ENV = "MEDIAPULSE_FAILPOINT"


def reach(name: str) -> None:
    """Die here, at once, if this is the point the environment names."""
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
