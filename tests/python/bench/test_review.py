"""Time to review runs the PR workflow's steps as a fresh runner would: nothing of the host's
but the checkout and the caches the workflow keeps."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import pytest

from mediapulse.bench import review

pytestmark = pytest.mark.reads()


def _bench(tmp_path: Path) -> SimpleNamespace:
    root = tmp_path / "work" / "project"
    (root / "warehouse").mkdir(parents=True)
    return SimpleNamespace(
        work=tmp_path / "work", project=SimpleNamespace(root=root),
        file=lambda name: root / "warehouse" / name, env={"MEDIAPULSE_THREADS": "4"},
    )  # fmt: skip


def test_each_sample_starts_with_an_empty_temporary_directory_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A GitHub runner's /tmp is empty. The host's holds its earlier test sessions, and a
    # pytest step there first deletes the oldest of them (pytest keeps three): that time is
    # the host's, not the reviewer's.
    bench = _bench(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    host_tmp = tmp_path / "host-tmp"
    stale = host_tmp / "pytest-of-someone" / "pytest-1"
    stale.mkdir(parents=True)
    monkeypatch.setenv("TMPDIR", str(host_tmp))
    monkeypatch.setenv("MEDIAPULSE_WAREHOUSE_DIR", "/elsewhere")

    env = review.runner_env(bench, os.environ, "checks")  # type: ignore[arg-type]
    runner_tmp = Path(env["TMPDIR"])
    assert runner_tmp != host_tmp and runner_tmp.is_relative_to(bench.work)
    assert "MEDIAPULSE_WAREHOUSE_DIR" not in env  # this process's, not a runner's
    assert env["MEDIAPULSE_CI_TARGET"] == "ci" and env["MEDIAPULSE_THREADS"] == "4"

    review.fresh_runner(bench, state, "checks")  # type: ignore[arg-type]
    assert runner_tmp.is_dir() and not any(runner_tmp.iterdir())
    (runner_tmp / "left-by-the-last-sample").write_text("x")
    review.fresh_runner(bench, state, "checks")  # type: ignore[arg-type]
    assert not any(runner_tmp.iterdir())
    assert stale.is_dir()  # the host's are not the benchmark's to touch
    # each job has a runner of its own: a new one for `code` leaves the `checks` one's alone
    (runner_tmp / "pytest-of-someone").mkdir()
    review.fresh_runner(bench, state, "code")  # type: ignore[arg-type]
    code_tmp = Path(review.runner_env(bench, os.environ, "code")["TMPDIR"])  # type: ignore[arg-type]
    assert code_tmp.is_dir() and code_tmp != runner_tmp
    assert (runner_tmp / "pytest-of-someone").is_dir()


WORKFLOW_TEXT = """
jobs:
  code:
    steps:
      - uses: actions/checkout@0000000000000000000000000000000000000000
      - name: Install
        run: make venv
      - name: Lint
        run: make lint-pr
  checks:
    steps:
      - name: Install
        run: make venv
      - uses: dawidd6/action-download-artifact@0000000000000000000000000000000000000000
      - name: Slim CI
        run: .venv/bin/mediapulse slim-ci
  comment:
    needs: checks
    steps:
      - uses: marocchino/sticky-pull-request-comment@0000000000000000000000000000000000000000
"""


def test_the_wait_is_the_longer_of_the_jobs_github_starts_together(tmp_path: Path) -> None:
    # Jobs without `needs` start together, each on a runner of its own: the reviewer waits
    # for the longer one, not for the sum of every step. The comment job runs none of ours.
    workflow = tmp_path / review.WORKFLOW
    workflow.parent.mkdir(parents=True)
    workflow.write_text(WORKFLOW_TEXT)
    jobs = review.workflow_jobs(tmp_path)
    assert [job.name for job in jobs] == ["code", "checks"]
    code, checks = jobs
    assert code.steps == [("Lint", "make lint-pr")] and not code.downloads
    assert checks.steps == [("Slim CI", ".venv/bin/mediapulse slim-ci")] and checks.downloads
    assert review.wait({"code": {"Lint": 30.0}, "checks": {"Slim CI": 20.0, "Diff": 5.0}}) == 30.0
    assert review.wait({"code": {"Lint": 10.0}, "checks": {"Slim CI": 20.0, "Diff": 5.0}}) == 25.0


def test_a_runner_for_a_job_that_downloads_nothing_gets_no_production_state(
    tmp_path: Path,
) -> None:
    bench = _bench(tmp_path)
    state = tmp_path / "state"
    state.mkdir()
    (state / "manifest.json").write_text("{}")
    downloaded = bench.project.root / "ci-artifacts" / "production-state" / "manifest.json"
    review.fresh_runner(bench, state, "code", downloads=False)  # type: ignore[arg-type]
    assert not downloaded.exists()
    review.fresh_runner(bench, state, "code", downloads=True)  # type: ignore[arg-type]
    assert downloaded.is_file()
    review.fresh_runner(bench, state, "code", downloads=False)  # type: ignore[arg-type]
    assert not downloaded.exists()  # a new runner: nothing of the last job's
