"""dbt inside a staged release, as a scheduler calls it: `mediapulse release build -- ARGS` and
the `mediapulse-dbt` executable that Cosmos and dagster-dbt run in place of `dbt`.

The arguments are dbt's, passed as given (the scheduler's `--select`, `--log-format json`,
`--target-path`, `--project-dir`...), with what the release decides added: its target, a full
refresh for a job that rebuilds from scratch, and for a refresh the narrowing to what the new
rows reach. dbt runs in this process (a fresh one per call: schedulers start us as they would
start dbt) with the staged release's environment, so it builds the staged copy, never
production. Each node's result is added to the release's record; a failure from a transient
error (a lost connection, a lock) is run again, the same rule as every release (execute.py's
TRANSIENT): a failing test never is.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from mediapulse.core.freed_memory import require_wiped
from mediapulse.core.project import PROFILE_NAME
from mediapulse.dbt.env import dbt_env
from mediapulse.dbt.runner import PRIVATE_ENV
from mediapulse.engines.base import Engine
from mediapulse.engines.spark import child_env
from mediapulse.release import record as records
from mediapulse.release.execute import (
    RETRIES_ENV,
    RETRY_DELAY_ENV,
    TRANSIENT,
    _int_env,
    _merge_results,
)
from mediapulse.release.record import StagedRelease
from mediapulse.release.state import PARSE, share_parse

ARTIFACTS_ENV = "MEDIAPULSE_ARTIFACTS"
BUILDS = ("build", "run", "seed", "snapshot")  # the commands a full refresh applies to
SELECTING = ("build", "run", "test", "seed", "snapshot")
SELECT_FLAGS = ("--select", "-s", "--models", "-m")
REFRESH_EXCLUDED = ("package:dbt_project_evaluator", "fqn:mediapulse.monitoring",
                    "resource_type:unit_test")  # fmt: skip


def release_args(staged: StagedRelease, args: list[str], target: str) -> list[str]:
    """The scheduler's dbt arguments with what the release decides (pure)."""
    args = list(args)
    if not args or args[0].startswith("-"):
        return args
    command = args[0]
    args = _without_own_profile(args)
    if "--target" not in args and "-t" not in args:
        args += ["--target", target]
    refresh = staged.data.get("refresh")
    if command in BUILDS and refresh is None and "--full-refresh" not in args:
        args.append("--full-refresh")  # a nightly or deploy rebuilds from scratch
    if refresh is not None and command in SELECTING:
        if refresh.get("narrow", True):
            args = _narrowed(args, list(refresh["selection"]))
        args += ["--exclude", *REFRESH_EXCLUDED, *refresh["excluded"]]
    return args


def _without_own_profile(args: list[str]) -> list[str]:
    """Without `--profile mediapulse` (Cosmos and dagster-dbt name it): dbt uses that profile
    anyway, but a saved parse is only reused by a call given the same flag's text, and
    publish's calls give none (it cost the Airflow nightly a 6-s parse in full)."""
    if option_value(args, "--profile") == PROFILE_NAME:
        at = args.index("--profile")
        args = args[:at] + args[at + 2 :]
    return args


def _narrowed(args: list[str], reach: list[str]) -> list[str]:
    """A refresh builds only what its new rows reach: each selector given is intersected with
    that reach (dbt: `a,b` is a and b), none given means all of it."""
    given: list[str] = []
    rest: list[str] = []
    i = 0
    while i < len(args):
        if args[i] in SELECT_FLAGS:
            i += 1
            while i < len(args) and not args[i].startswith("-"):
                given += args[i].split()
                i += 1
            continue
        rest.append(args[i])
        i += 1
    chosen = [f"{g},{r}" for g in given for r in reach] if given else reach
    return [*rest, "--select", *(chosen or ["none_selected_by_this_refresh"])]


def option_value(args: list[str], *names: str) -> str | None:
    for i, value in enumerate(args[:-1]):
        if value in names:
            return args[i + 1]
    return None


def results_file(args: list[str], cwd: Path) -> Path:
    """Where dbt writes run_results.json for these arguments."""
    target_path = (
        option_value(args, "--target-path") or os.environ.get("DBT_TARGET_PATH") or "target"
    )
    project_dir = Path(option_value(args, "--project-dir") or cwd)
    path = Path(target_path)
    return (path if path.is_absolute() else project_dir / path) / "run_results.json"


def _invoke(args: list[str]) -> tuple[bool, list[tuple[str, str, str, str]], str | None]:
    """dbt in this process: (success, each node's (unique id, status, message), the error)."""
    from dbt.cli.main import dbtRunner

    outcome = dbtRunner().invoke(args)
    results: list[tuple[str, str, str, str]] = []
    for result in getattr(outcome.result, "results", None) or []:
        node = getattr(result, "node", None)
        status = getattr(result, "status", None)
        if node is None or status is None or not hasattr(node, "unique_id"):
            continue
        checksum = getattr(getattr(node, "checksum", None), "checksum", "") or ""
        results.append((node.unique_id, str(getattr(status, "value", status)),
                        str(getattr(result, "message", "") or ""), checksum))  # fmt: skip
    error = str(outcome.exception) if outcome.exception else None
    return bool(outcome.success), results, error


def transient(results: list[tuple[str, str, str, str]], error: str | None) -> str | None:
    """The transient error a failed call died of, or None (pure; the release's rule)."""
    failed = [r for r in results if r[1] in records.FAILED]
    if not failed:
        return error if error and TRANSIENT.search(error) else None
    if any(r[1] == "fail" for r in failed) or not all(TRANSIENT.search(r[2]) for r in failed):
        return None
    return next(line.strip() for line in failed[0][2].splitlines() if TRANSIENT.search(line))


def run_in_release(engine: Engine, artifacts_dir: Path, staged: StagedRelease,
                   args: list[str], cwd: Path) -> int:  # fmt: skip
    """Run dbt with ``args`` inside the staged release, retrying transient failures; record
    what it built. Returns dbt's exit code (0 ok, 1 failed)."""
    args = release_args(staged, args, engine.target)
    if engine.embedded:  # dbt writes the staged release's file from this process
        require_wiped(f"build into {staged.folder}")
    os.environ.update({**dbt_env(engine), **child_env(engine.project, engine.target),
                       **staged.env, **PRIVATE_ENV})  # fmt: skip
    if "--project-dir" not in args and not (cwd / "dbt_project.yml").is_file():
        args += ["--project-dir", str(engine.project.root)]
    os.chdir(cwd)
    saved_parse = results_file(args, cwd).with_name(PARSE)
    share_parse(staged.folder / PARSE, saved_parse)
    started = time.perf_counter()
    retries, delay = _int_env(RETRIES_ENV, 2), _int_env(RETRY_DELAY_ENV, 10)
    ok, results, error = _invoke(args)
    attempts = 1
    while not ok and attempts <= retries:
        reason = transient(results, error)
        if reason is None:
            break
        print(f"mediapulse: retry {attempts} of `dbt {' '.join(args)}` after a transient "
              f"error ({reason})", file=sys.stderr)  # fmt: skip
        time.sleep(delay)
        ok, again, error = _invoke(args)
        results = list({r[0]: r for r in [*results, *again]}.values())
        attempts += 1
    share_parse(saved_parse, staged.folder / PARSE)  # for the next call, and for publish
    if args and args[0] in SELECTING:
        _merge_into_release(staged, results_file(args, cwd))
        records.record_results(artifacts_dir, args, ok, time.perf_counter() - started,
                               results, attempts)  # fmt: skip
    return 0 if ok else 1


def _merge_into_release(staged: StagedRelease, produced: Path) -> None:
    """This call's run_results.json into the release's, each node's last result."""
    if not produced.is_file():
        return
    merged = staged.folder / "run_results.json"
    with records.updating_file(merged) as current:
        new = json.loads(produced.read_text())
        current.update(_merge_results(current, new) if current else new)
