"""Runs one dbt invocation through dbtRunner, in a process of its own.

`mediapulse.runner` starts this module so that every dbt invocation gets a fresh
interpreter (dbt keeps global state, DuckDB keeps file locks) and a timeout the parent
can enforce. Usage: ``python -m mediapulse.dbt_child RESULT_JSON [--capture EVENT]... -- ARGS``.
"""

from __future__ import annotations

import json
import resource
import sys
from pathlib import Path


def _peak_rss_mb() -> float:
    """This process's peak resident memory: it ran dbt and the database engine.

    VmHWM, not getrusage: Linux carries ru_maxrss across exec, so a child forked from a
    large parent (the benchmark, after generating data in-process) would report the parent's.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str]) -> int:
    result_file = Path(argv[0])
    split = argv.index("--")
    options, dbt_args = argv[1:split], argv[split + 1 :]
    capture = {options[i + 1] for i, opt in enumerate(options) if opt == "--capture"}
    messages: list[str] = []

    def collect(event) -> None:  # type: ignore[no-untyped-def]
        if event.info.name in capture:
            messages.append(event.info.msg)

    from dbt.cli.main import dbtRunner

    result = dbtRunner(callbacks=[collect]).invoke(dbt_args)
    error = None
    if result.exception is not None:
        error = f"{type(result.exception).__name__}: {result.exception}"
    peak_rss_mb = _peak_rss_mb()
    result_file.write_text(
        json.dumps(
            {
                "success": bool(result.success),
                "error": error,
                "messages": messages,
                "peak_rss_mb": peak_rss_mb,
            }
        )
    )
    if result.success:
        return 0
    return 2 if result.exception is not None else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
