"""Runs dbt invocations through dbtRunner, in a process of their own.

`mediapulse.dbt.runner` starts this module so that dbt runs in a fresh interpreter (dbt keeps
global state, DuckDB keeps file locks) with a timeout the parent can enforce. Two modes:

- ``python -m mediapulse.dbt.child RESULT_JSON [--capture EVENT]... -- ARGS``: one invocation.
- ``python -m mediapulse.dbt.child --serve ACK_FD``: a job's session. Requests arrive on stdin,
  one JSON object a line (``{"result": path, "capture": [...], "args": [...]}``); each result
  is written to its path, then a line on ACK_FD says it is there. The project is parsed once
  and the manifest handed to every later invocation (dbtRunner(manifest=...)), so a job that
  calls dbt several times pays for one parse, not one per call.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import pickle
import resource
import signal
import sys
import time
from pathlib import Path
from typing import Any

from mediapulse.core.errors import MediaPulseError
from mediapulse.core.freed_memory import CHECK_ENV, require_wiped
from mediapulse.engines.spark import LOCAL_ENV, start_local_session

# commands that read no manifest, or must parse for themselves
_NO_MANIFEST = {"deps", "debug", "clean", "init", "--version", "parse"}
# commands that only read the manifest they are given: they share one copy of it
_READ_ONLY = {"ls", "list"}
# the flags a manifest is parsed under: a request with other values needs a parse of its own
_PARSE_FLAGS = ("--vars", "--target-path", "--target", "-t", "--profile", "--project-dir")


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


# why dbt parsed the whole project instead of only what changed since its saved parse
_FULL_PARSE_EVENT = "UnableToPartialParse"


_SPARK_STARTED: list[bool] = []


def _spark_failure(dbt_args: list[str]) -> str | None:
    """A local Spark target's session, started before the first command that connects; its
    one-line reason when it cannot start (mediapulse.engines.spark.start_local_session)."""
    command = dbt_args[0] if dbt_args else ""
    if os.environ.get(LOCAL_ENV) != "1" or _SPARK_STARTED or command in _NO_MANIFEST | _READ_ONLY:
        return None

    try:
        start_local_session()
    except MediaPulseError as exc:
        return str(exc)
    _SPARK_STARTED.append(True)
    return None


def _invoke(dbt_args: list[str], capture: set[str], manifest: Any = None) -> dict[str, Any]:
    from dbt.cli.main import dbtRunner

    failure = _spark_failure(dbt_args)
    if failure is not None:
        return {"success": False, "error": failure, "fatal": True, "messages": [],
                "full_parse": [], "peak_rss_mb": _peak_rss_mb(), "_result": None}  # fmt: skip

    messages: list[str] = []
    full_parse: list[str] = []

    def collect(event) -> None:  # type: ignore[no-untyped-def]
        if event.info.name in capture:
            messages.append(event.info.msg)
        if event.info.name == _FULL_PARSE_EVENT:
            full_parse.append(event.info.msg)

    result = dbtRunner(manifest=manifest, callbacks=[collect]).invoke(dbt_args)
    error = None
    if result.exception is not None:
        error = f"{type(result.exception).__name__}: {result.exception}"
    return {
        "success": bool(result.success),
        "error": error,
        "messages": messages,
        "full_parse": full_parse,
        "peak_rss_mb": _peak_rss_mb(),
        "_result": result.result,
    }


def _release_duckdb() -> None:
    """dbt-duckdb keeps its database open until the process exits; a session lives on between
    invocations, and the files must be free for the job (copies, swaps) in the meantime."""
    try:
        from dbt.adapters.duckdb.connections import DuckDBConnectionManager
    except ImportError:
        return
    with DuckDBConnectionManager._LOCK:
        env = DuckDBConnectionManager._ENV
        if env is not None:
            env.close()
            DuckDBConnectionManager._ENV = None


def _silence_stdout() -> int:
    """What dbt prints goes nowhere (a listing read through its events); returns the old fd."""
    sys.stdout.flush()
    saved = os.dup(1)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    return saved


def _restore_stdout(saved: int) -> None:
    sys.stdout.flush()
    os.dup2(saved, 1)
    os.close(saved)


def _parse_key(dbt_args: list[str]) -> tuple[str, ...]:
    key = []
    for i, arg in enumerate(dbt_args[:-1]):
        if arg in _PARSE_FLAGS:
            key += [arg, dbt_args[i + 1]]
    return tuple(key)


def _rebuild_manifest(cls: type, fields: dict[str, Any]) -> Any:
    return cls(**fields)


class _ManifestPickler(pickle.Pickler):
    """dbt 1.11's Manifest.__reduce_ex__ leaves out `fixtures`, so every lookup after it lands
    one field off (a source lookup answers with a ref lookup). Pickle its public fields by
    name instead; the lookups are caches dbt rebuilds on first use."""

    def reducer_override(self, obj: Any) -> Any:
        from dbt.contracts.graph.manifest import Manifest

        if type(obj) is Manifest:
            public = {
                f.name: getattr(obj, f.name)
                for f in dataclasses.fields(obj)
                if f.init and not f.name.startswith("_")
            }
            return _rebuild_manifest, (Manifest, public)
        return NotImplemented


def _freeze(manifest: Any) -> bytes:
    buffer = io.BytesIO()
    _ManifestPickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump(manifest)
    return buffer.getvalue()


def _share_previous_state() -> None:
    """dbt reads the production state (`--state`: a manifest of several MB, run results,
    freshness) again in every invocation that is given it; a slim CI job gives it to three.
    Within a session, invocations share one reading of the same files, read again when any of
    them changes. dbt only reads it: a deferred build copies what it needs into the manifest
    it runs (`Manifest.merge_from_artifact`)."""
    from dbt.contracts.state import PreviousState
    from dbt.task import runnable

    read: dict[tuple[Any, ...], PreviousState] = {}

    def stamp(path: Path) -> tuple[int, int] | None:
        try:
            info = path.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    def shared(state_path: Path, target_path: Path, project_root: Path) -> PreviousState:
        root = Path(project_root)
        files = [root / state_path / name for name in
                 ("manifest.json", "run_results.json", "sources.json")]  # fmt: skip
        files.append(root / target_path / "sources.json")
        key = (str(state_path), str(target_path), str(root), *map(stamp, files))
        if key not in read:
            read.clear()
            read[key] = PreviousState(state_path, target_path, project_root)
        return read[key]

    runnable.PreviousState = shared  # type: ignore[assignment,misc]


class Session:
    """The manifest of the last parse, as pickled bytes: every invocation that may change it
    gets its own copy (a deferred build merges production's nodes into the manifest it is
    given); listings share one."""

    def __init__(self) -> None:
        self.manifest: bytes | None = None
        self.key: tuple[str, ...] | None = None
        self.shared: Any = None  # the listings' copy of ``manifest``

    def handle(self, dbt_args: list[str], capture: set[str]) -> dict[str, Any]:
        command = dbt_args[0] if dbt_args else ""
        key = _parse_key(dbt_args)
        parse_s = 0.0
        if command in _NO_MANIFEST:
            payload = _invoke(dbt_args, capture)
            if command == "parse" and payload["success"]:
                self.manifest, self.key = _freeze(payload["_result"]), key
                self.shared = None
            return {**payload, "parsed": command == "parse", "parse_s": 0.0}
        parsed = False
        full_parse: list[str] = []
        if self.manifest is None or self.key != key:
            started = time.perf_counter()
            parse = _invoke(["parse", *key], set())
            parse_s = time.perf_counter() - started
            if not parse["success"]:
                return {**parse, "parsed": True, "parse_s": parse_s}
            self.manifest, self.key, parsed = _freeze(parse["_result"]), key, True
            self.shared = None
            full_parse = parse["full_parse"]
        if command in _READ_ONLY:
            if self.shared is None:
                self.shared = pickle.loads(self.manifest)
            manifest = self.shared
        else:
            manifest = pickle.loads(self.manifest)
        payload = _invoke(dbt_args, capture, manifest)
        return {**payload, "parsed": parsed, "parse_s": parse_s, "full_parse": full_parse}


def serve(ack_fd: int) -> int:
    # dbt's import takes seconds: done while the job prepares its first request
    import dbt.cli.main  # noqa: F401

    _share_previous_state()
    session = Session()
    with os.fdopen(ack_fd, "w") as ack:
        for line in sys.stdin:
            request = json.loads(line)
            quiet = request.get("quiet") and _silence_stdout()
            try:
                payload = session.handle(request["args"], set(request.get("capture", ())))
            finally:
                _release_duckdb()
                if quiet:
                    _restore_stdout(quiet)
            payload.pop("_result", None)
            Path(request["result"]).write_text(json.dumps(payload))
            ack.write("done\n")
            ack.flush()
    return 0


PARENT_ENV = "MEDIAPULSE_DBT_PARENT"
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """When the job that started this dbt dies (a `kill -9`, a lost runner), this dbt dies too:
    an orphan would go on writing a staged release that the next job is about to rebuild.
    Linux's parent-death signal; elsewhere a session ends when its job closes stdin."""
    expected = os.environ.get(PARENT_ENV)
    if not sys.platform.startswith("linux") or not expected:
        return
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if str(os.getppid()) != expected:  # the job died before the signal was armed
        os._exit(1)


def main(argv: list[str]) -> int:
    _die_with_parent()
    if os.environ.get(CHECK_ENV):
        require_wiped("run dbt on DuckDB")
    if argv and argv[0] == "--serve":
        code = serve(int(argv[1]))
        # every result is written and acknowledged, every database closed: skip tearing down
        # the interpreter, which with dbt's objects loaded takes most of a second
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    result_file = Path(argv[0])
    split = argv.index("--")
    options, dbt_args = argv[1:split], argv[split + 1 :]
    capture = {options[i + 1] for i, opt in enumerate(options) if opt == "--capture"}
    payload = _invoke(dbt_args, capture)
    payload.pop("_result", None)
    result_file.write_text(json.dumps(payload))
    if payload["success"]:
        return 0
    return 2 if payload["error"] is not None else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
