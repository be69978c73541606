"""The one module that invokes dbt.

Each call runs ``dbtRunner().invoke(args)`` in a child interpreter (`mediapulse.dbt_child`):
dbt keeps process-wide state and DuckDB holds file locks for the life of a process, so a fresh
process per invocation keeps runs independent, and lets us enforce a timeout.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mediapulse.errors import MediaPulseError
from mediapulse.project import Project

TIMEOUT_ENV = "MEDIAPULSE_DBT_TIMEOUT"
DEFAULT_TIMEOUT_S = 3600.0
# Nothing about the data, its errors or its users leaves the machine: dbt's usage tracking is
# off in dbt_project.yml, and DO_NOT_TRACK keeps it off whatever the user's environment or
# dbt flags say (dbt applies it after all of them). Set last, over the caller's variables too
# (tests/python/test_privacy.py).
PRIVATE_ENV = {"DO_NOT_TRACK": "1"}


@dataclass(frozen=True)
class DbtRun:
    """What one dbt invocation did. ``success`` is dbt's own verdict."""

    args: tuple[str, ...]
    success: bool
    error: str | None
    elapsed_s: float
    messages: list[str] = field(default_factory=list)
    peak_rss_mb: float = 0.0  # the dbt process's peak resident memory

    @property
    def command(self) -> str:
        return "dbt " + " ".join(self.args)


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        return float(raw)
    except ValueError as exc:
        raise MediaPulseError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from exc


def run_dbt(
    project: Project,
    args: Sequence[str],
    *,
    target: str,
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    capture_events: Sequence[str] = (),
    quiet: bool = False,
) -> DbtRun:
    """Run ``dbt <args>`` for ``project`` on ``target``; returns whether dbt succeeded.

    A timeout or a child that dies without reporting raises MediaPulseError; a dbt failure
    (a test failing, a model erroring) is reported in the result for the caller to judge.
    """
    env = {**os.environ, **project.dbt_env(target), **(extra_env or {}), **PRIVATE_ENV}
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[1]), env.get("PYTHONPATH")) if p
    )
    limit = timeout_s if timeout_s is not None else _timeout()
    full_args = list(args)
    if "--project-dir" not in full_args and args and args[0] not in ("--version",):
        full_args += ["--project-dir", str(project.root)]

    with tempfile.TemporaryDirectory(prefix="mediapulse-dbt-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "mediapulse.dbt_child", str(result_file)]
        for name in capture_events:
            cmd += ["--capture", name]
        cmd += ["--", *full_args]
        started = time.perf_counter()
        proc = subprocess.Popen(
            cmd,
            cwd=project.root,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL if quiet else None,
        )
        try:
            proc.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise MediaPulseError(
                f"dbt {' '.join(args)} did not finish within {limit:.0f} s and was stopped; "
                f"raise {TIMEOUT_ENV} if the run is expected to take longer"
            ) from None
        except BaseException:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
        elapsed = time.perf_counter() - started
        if not result_file.exists():
            raise MediaPulseError(
                f"dbt {' '.join(args)} exited with code {proc.returncode} before reporting a "
                "result; see its output above"
            )
        payload = json.loads(result_file.read_text())
    return DbtRun(
        args=tuple(full_args),
        success=payload["success"],
        error=payload["error"],
        elapsed_s=elapsed,
        messages=payload["messages"],
        peak_rss_mb=float(payload.get("peak_rss_mb", 0.0)),
    )
