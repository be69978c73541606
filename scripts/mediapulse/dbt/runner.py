"""The one module that invokes dbt.

Each call runs ``dbtRunner().invoke(args)`` in a child interpreter (`mediapulse.dbt.child`):
dbt keeps process-wide state and DuckDB holds file locks for the life of a process, so a child
keeps runs apart from this process, and lets us enforce a timeout.

A job that calls dbt several times (slim CI's listings and build, a release's steps) opens a
`session`: one child for the whole job, which parses the project once and hands the manifest to
every later invocation. Without one, each call starts a child of its own, which imports dbt and
reads the project again (partial parsing makes that seconds, not a full parse, but seconds each).
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.freed_memory import CHECK_ENV, wipe_freed_memory
from mediapulse.dbt.env import dbt_env
from mediapulse.engines.base import Engine
from mediapulse.engines.spark import child_env

TIMEOUT_ENV = "MEDIAPULSE_DBT_TIMEOUT"
DEFAULT_TIMEOUT_S = 3600.0
# Nothing about the data, its errors or its users leaves the machine: dbt's usage tracking is
# off in dbt_project.yml, and DO_NOT_TRACK keeps it off whatever the user's environment or
# dbt flags say (dbt applies it after all of them). Set last, over the caller's variables too
# (tests/python/dbt/test_privacy.py).
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
    parse_s: float = 0.0  # a session's parse before this invocation (0: the manifest was reused)
    full_parse: list[str] = field(default_factory=list)  # why dbt parsed everything, if it did

    @property
    def command(self) -> str:
        return "dbt " + " ".join(self.args)


CHILD = (sys.executable, "-W", "ignore:resource_tracker:UserWarning")


def _timeout() -> float:
    raw = os.environ.get(TIMEOUT_ENV)
    if not raw:
        return DEFAULT_TIMEOUT_S
    try:
        return float(raw)
    except ValueError as exc:
        raise MediaPulseError(f"{TIMEOUT_ENV}={raw!r} is not a number of seconds") from exc


def run_dbt(
    engine: Engine,
    args: Sequence[str],
    *,
    extra_env: Mapping[str, str] | None = None,
    timeout_s: float | None = None,
    capture_events: Sequence[str] = (),
    quiet: bool = False,
) -> DbtRun:
    """Run ``dbt <args>`` for ``project`` on ``target``; returns whether dbt succeeded.

    A timeout or a child that dies without reporting raises MediaPulseError; a dbt failure
    (a test failing, a model erroring) is reported in the result for the caller to judge.
    """
    project = engine.project
    active = _SESSION[-1] if _SESSION else None
    if active is not None and active.serves(engine, extra_env):
        return active.run(args, capture_events=capture_events, timeout_s=timeout_s, quiet=quiet)
    env = _child_env(engine, extra_env)
    limit = timeout_s if timeout_s is not None else _timeout()
    full_args = _with_project_dir(engine, args)

    with tempfile.TemporaryDirectory(prefix="mediapulse-dbt-") as tmp:
        result_file = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "mediapulse.dbt.child", str(result_file)]
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
            raise _timed_out(args, limit) from None
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
        return _run_from(full_args, json.loads(result_file.read_text()), elapsed)


def _child_env(engine: Engine, extra_env: Mapping[str, str] | None) -> dict:
    project, target = engine.project, engine.target
    env = {**os.environ, **dbt_env(engine), **child_env(project, target),
           **(extra_env or {}), **PRIVATE_ENV}  # fmt: skip
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(Path(__file__).resolve().parents[2]), env.get("PYTHONPATH")) if p
    )
    env["MEDIAPULSE_DBT_PARENT"] = str(os.getpid())  # dbt_child dies with this job
    wipe_freed_memory(env)  # whatever the caller's variables say (core/freed_memory.py)
    if engine.embedded:  # its file, written by dbt's process, goes to other jobs
        env[CHECK_ENV] = "1"
    return env


def _with_project_dir(
    engine: Engine,
    args: Sequence[str],
) -> list[str]:
    """dbt's arguments with the project and the target named. The target as an argument, not
    only through the profile's default (MEDIAPULSE_TARGET): dbt's saved parse records the
    `--target` it was made for, and a parse made by another job for this target (production's
    parse for slim CI) must be recognised as one."""
    project, target = engine.project, engine.target
    full_args = list(args)
    if not args or args[0] == "--version":
        return full_args
    if "--project-dir" not in full_args:
        full_args += ["--project-dir", str(project.root)]
    if "--target" not in full_args and "-t" not in full_args:
        full_args += ["--target", target]
    return full_args


def _timed_out(args: Sequence[str], limit: float) -> MediaPulseError:
    return MediaPulseError(
        f"dbt {' '.join(args)} did not finish within {limit:.0f} s and was stopped; "
        f"raise {TIMEOUT_ENV} if the run is expected to take longer"
    )


def _run_from(full_args: list[str], payload: dict, elapsed: float) -> DbtRun:
    if payload.get("fatal"):  # dbt did not run: nothing to report but why
        raise MediaPulseError(payload["error"])
    return DbtRun(
        args=tuple(full_args),
        success=payload["success"],
        error=payload["error"],
        elapsed_s=elapsed,
        messages=payload["messages"],
        peak_rss_mb=float(payload.get("peak_rss_mb", 0.0)),
        parse_s=float(payload.get("parse_s", 0.0)),
        full_parse=list(payload.get("full_parse") or []),
    )


class DbtSession:
    """One dbt child for a job's invocations on one target and environment: the project is
    parsed once (again only if an invocation's --vars differ) and the manifest reused."""

    def __init__(self, engine: Engine, extra_env: Mapping[str, str] | None = None) -> None:
        project = engine.project
        self.engine = engine
        self.project, self.target = project, engine.target
        self.extra_env = dict(extra_env or {})
        self.invocations = 0
        self._sent = 0  # requests, counted or not
        self.parses = 0
        self.parse_s = 0.0
        self.full_parse: list[str] = []  # dbt's reasons for parsing everything, when it did
        self._tmp = tempfile.TemporaryDirectory(prefix="mediapulse-dbt-")
        ack_read, ack_write = os.pipe()
        self._proc = subprocess.Popen(
            # the child ends with os._exit, skipping its finalisers: the semaphore tracker it
            # inherits this flag from unlinks dbt's semaphores, as expected, without a warning
            [*CHILD, "-m", "mediapulse.dbt.child", "--serve", str(ack_write)],
            cwd=project.root,
            env=_child_env(engine, extra_env),
            start_new_session=True,
            stdin=subprocess.PIPE,
            text=True,
            pass_fds=(ack_write,),
        )
        os.close(ack_write)
        self._ack = os.fdopen(ack_read, "r")
        self._closed = False

    def serves(self, engine: Engine, extra_env: Mapping[str, str] | None) -> bool:
        return (
            engine.project.root == self.project.root
            and engine.target == self.target
            and dict(extra_env or {}) == self.extra_env
            and self._proc.poll() is None
        )

    def run(
        self,
        args: Sequence[str],
        capture_events: Sequence[str] = (),
        timeout_s: float | None = None,
        quiet: bool = False,
        count: bool = True,
    ) -> DbtRun:
        """One invocation; ``count=False`` leaves it out of the job's line (`describe`): work
        the session does for another job, such as parsing for the CI target."""
        limit = timeout_s if timeout_s is not None else _timeout()
        full_args = _with_project_dir(self.engine, args)
        self._sent += 1
        self.invocations += count
        result_file = Path(self._tmp.name) / f"result-{self._sent}.json"
        request = {"args": full_args, "capture": list(capture_events), "quiet": quiet,
                   "result": str(result_file)}  # fmt: skip
        started = time.perf_counter()
        try:
            assert self._proc.stdin is not None
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            ready, _, _ = select.select([self._ack], [], [], limit)
            if not ready:
                self.close(kill=True)
                raise _timed_out(args, limit)
            acked = self._ack.readline()
        except BaseException:
            self.close(kill=True)
            raise
        elapsed = time.perf_counter() - started
        if not acked or not result_file.exists():
            code = self._proc.wait()
            raise MediaPulseError(
                f"dbt {' '.join(args)} exited with code {code} before reporting a result; "
                "see its output above"
            )
        run = _run_from(full_args, json.loads(result_file.read_text()), elapsed)
        if count and (run.parse_s or (args and args[0] == "parse")):
            asked = ["asked for (--no-partial-parse)"] if "--no-partial-parse" in args else []
            self.parses += 1
            self.parse_s += run.parse_s or run.elapsed_s  # a `parse` command is all parse
            self.full_parse += run.full_parse or asked
        return run

    def describe(self) -> str:
        """The session's line for a job's report: what parsing cost, measured."""
        times = "once" if self.parses == 1 else f"{self.parses} times"
        how = []
        if self.parse_s:
            how.append(f"{self.parse_s:.1f} s")
        if self.parses:
            # dbt says why it could not start from its saved parse; silence means it did
            how.append(
                "in full: " + "; ".join(dict.fromkeys(self.full_parse)) if self.full_parse
                else "partially, from the saved parse"
            )  # fmt: skip
        return f"dbt: {self.invocations} invocations in one process, the project parsed {times}" + (
            f" ({', '.join(how)})" if how else ""
        )

    def __enter__(self) -> DbtSession:
        _SESSION.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self, kill: bool = False) -> None:
        if self in _SESSION:
            _SESSION.remove(self)
        if self._closed:
            return
        self._closed = True
        if self._proc.poll() is None:
            if kill:
                os.killpg(self._proc.pid, signal.SIGKILL)
            elif self._proc.stdin is not None:
                self._proc.stdin.close()  # the child ends its loop and exits
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)
                self._proc.wait()
        self._ack.close()
        self._tmp.cleanup()


_SESSION: list[DbtSession] = []


def session(engine: Engine, extra_env: Mapping[str, str] | None = None) -> DbtSession:
    """``with session(...)``: within the block, every `run_dbt` for this project, target and
    environment goes to one dbt process that parses once; other calls still get their own.
    ``close()`` ends it early (idempotent), before the job moves the files dbt wrote."""
    return DbtSession(engine, extra_env)
