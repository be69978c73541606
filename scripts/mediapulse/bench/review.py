"""Time to review: what a pull request's author and reviewer wait for, the PR workflow's
jobs (`.github/workflows/pr-slim-ci.yml`) run step by step as GitHub runs them.

The jobs that start with the pull request (no `needs`), each on a fresh runner of its own: the
checkout (a git repository whose last commit is the pull request's change on top of the base),
the caches the workflow keeps (the installed packages and the dbt packages: `make venv` finds
them), the production state and warehouse when the job downloads them, and nothing else (no
dbt target directory, no CI warehouse, no built site, an empty temporary directory). Every
`run:` step is timed as a whole command, from the lint to the combined report the comment job
posts; `make venv` is the cache's restore, not timed. Download steps copy what the nightly
published. GitHub runs the jobs side by side, so the wait is the longer job's; here they run
one after the other, so neither takes the other's cores.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from mediapulse.bench.measures import Measure, Sample
from mediapulse.core.errors import MediaPulseError

if TYPE_CHECKING:
    from mediapulse.bench.run import Bench

WORKFLOW = Path(".github/workflows/pr-slim-ci.yml")
INSTALL = "make venv"  # restored from the runner's cache: not part of the wait measured
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "mediapulse bench", "GIT_AUTHOR_EMAIL": "bench@mediapulse.invalid",
    "GIT_COMMITTER_NAME": "mediapulse bench", "GIT_COMMITTER_EMAIL": "bench@mediapulse.invalid",
}  # fmt: skip
# what a runner has that is not in the checkout: not linted, not committed
RUNNER_LACKS = ("MEDIAPULSE_", "PYTEST_", "MAKE", "MFLAGS")
# one run per change, whatever --runs says: the whole job takes minutes, and each step is shown
RUNS = 1
RUNNER_ONLY = (".venv/", "dbt_packages/", "warehouse/", "ci-artifacts/", "target/", "logs/",
               "site/", "ci-output/")  # fmt: skip
# a runner's temporary directory (GitHub's /tmp, empty on a new runner), in the work directory:
# the host's holds its earlier test sessions, the oldest of which a pytest step there deletes
RUNNER_TMP = "runner-tmp"


@dataclass(frozen=True)
class Job:
    """One job the pull request starts: its `run:` steps (name, command) in order, the install
    left out, and whether it downloads what production published."""

    name: str
    steps: list[tuple[str, str]]
    downloads: bool


def workflow_jobs(root: Path) -> list[Job]:
    """The workflow's jobs that run our commands and wait for no other job, in order."""
    jobs = []
    for name, job in yaml.safe_load((root / WORKFLOW).read_text())["jobs"].items():
        steps = [(str(s.get("name") or s["run"]), str(s["run"]).strip())
                 for s in job["steps"] if "run" in s]  # fmt: skip
        steps = [(step, command) for step, command in steps if command != INSTALL]
        if steps and "needs" not in job:
            downloads = any("download-artifact" in str(s.get("uses", "")) for s in job["steps"])
            jobs.append(Job(str(name), steps, downloads))
    return jobs


def wait(seconds: Mapping[str, Mapping[str, float]]) -> float:
    """The reviewer's wait from each job's step times: the longer job (they run side by side)."""
    return max(sum(steps.values()) for steps in seconds.values())


def _git(root: Path, *args: str) -> None:
    done = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                          env={**os.environ, **GIT_IDENTITY})  # fmt: skip
    if done.returncode != 0:
        raise MediaPulseError(f"benchmark: git {' '.join(args)} failed: {done.stderr.strip()}")


def _runner_venv(root: Path) -> None:
    """The runner's `.venv`, restored from its cache: this interpreter's virtualenv, with the
    Makefile's stamps newer than the lock files (so `make` installs nothing)."""
    venv = root / ".venv"
    if venv.exists():
        return
    venv.mkdir()
    prefix = Path(sys.prefix)
    for name in ("bin", "lib", "pyvenv.cfg"):
        (venv / name).symlink_to(prefix / name, target_is_directory=name != "pyvenv.cfg")
    for part in ("", "-dev", "-postgres", "-spark", "-docs"):
        (venv / f".installed{part}").touch()


def checkout(bench: Bench) -> None:
    """Make the benchmark's project copy a git repository: its files as the base commit."""
    root = bench.project.root
    if (root / ".git").exists():
        return
    _git(root, "init", "-q")
    (root / ".git" / "info" / "exclude").write_text("\n".join(RUNNER_ONLY) + "\n")
    _git(root, "add", "-A")
    _git(root, "commit", "-q", "-m", "main")
    _runner_venv(root)


def runner_tmp(bench: Bench, job: str) -> Path:
    """The temporary directory of ``job``'s runner, in the work directory."""
    return bench.work / RUNNER_TMP / job


def fresh_runner(bench: Bench, state: Path, job: str, downloads: bool = True) -> None:
    """What a new runner for ``job`` has besides the checkout and its caches: an empty
    temporary directory and, with ``downloads``, the production state and warehouse it
    downloads (production itself is the caller's to restore)."""
    root = bench.project.root
    for name in ("target", "logs", "site", "ci-output", "ci-artifacts"):
        shutil.rmtree(root / name, ignore_errors=True)
    bench.file("ci.duckdb").unlink(missing_ok=True)
    shutil.rmtree(runner_tmp(bench, job), ignore_errors=True)
    runner_tmp(bench, job).mkdir(parents=True)
    if downloads:
        shutil.copytree(state, root / "ci-artifacts" / "production-state")


def runner_env(bench: Bench, environ: Mapping[str, str], job: str) -> dict[str, str]:
    """The environment of ``job``'s runner: none of this process's MediaPulse, pytest or make
    variables, the job's own, and the runner's temporary directory (emptied by
    `fresh_runner`)."""
    env = {k: v for k, v in environ.items() if not k.startswith(RUNNER_LACKS)}
    env.update({**bench.env, "MEDIAPULSE_CI_TARGET": "ci", "DO_NOT_TRACK": "1",
                "TMPDIR": str(runner_tmp(bench, job))})  # fmt: skip
    return env


def measure_review(
    bench: Bench, name: str, edit: Callable[[], Callable[[], None]], state: Path,
    restore_production: Callable[[], None],
) -> dict[str, dict[str, float]]:  # fmt: skip
    """The PR workflow's jobs for the change ``edit`` makes (committed as the pull request's
    head), RUNS times; returns each job's steps' median seconds, and records ``name`` (the
    whole wait: the longer job) in the bench's measures."""
    root = bench.project.root
    checkout(bench)
    undo = edit()
    _git(root, "commit", "-q", "-am", f"pull request: {name}")
    jobs = workflow_jobs(root)
    measure = Measure(name, f"{WORKFLOW}: jobs {', '.join(j.name for j in jobs)} side by side, "
                      f"{sum(len(j.steps) for j in jobs)} steps, lint to the comment")  # fmt: skip
    seconds = {job.name: {step: [] for step, _ in job.steps} for job in jobs}
    try:
        for _ in range(RUNS):
            totals: dict[str, dict[str, float]] = {}
            for job in jobs:
                if job.downloads:
                    restore_production()
                fresh_runner(bench, state, job.name, downloads=job.downloads)
                env = runner_env(bench, os.environ, job.name)
                totals[job.name] = {}
                for step, command in job.steps:
                    started = time.perf_counter()
                    done = subprocess.run(["bash", "-eo", "pipefail", "-c", command], cwd=root,
                                          env=env, capture_output=True, text=True)  # fmt: skip
                    elapsed = time.perf_counter() - started
                    if done.returncode != 0:
                        tail = " | ".join((done.stdout + done.stderr).strip().splitlines()[-4:])
                        raise MediaPulseError(f"benchmark: PR step `{command}` failed: {tail}")
                    seconds[job.name][step].append(elapsed)
                    totals[job.name][step] = elapsed
            total = wait(totals)
            measure.samples.append(Sample(total, None, 0.0))
            print(f"  {name}: {total:.1f} s (" + "; ".join(
                f"{job}: " + ", ".join(f"{s} {v:.1f}" for s, v in steps.items())
                for job, steps in totals.items()) + ")")  # fmt: skip
    finally:
        undo()
        _git(root, "reset", "-q", "--hard", "HEAD^1")
    bench.measures[name] = measure
    return {job: {step: statistics.median(values) for step, values in steps.items()}
            for job, steps in seconds.items()}  # fmt: skip
