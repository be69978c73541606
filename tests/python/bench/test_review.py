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

    env = review.runner_env(bench, os.environ)  # type: ignore[arg-type]
    runner_tmp = Path(env["TMPDIR"])
    assert runner_tmp != host_tmp and runner_tmp.is_relative_to(bench.work)
    assert "MEDIAPULSE_WAREHOUSE_DIR" not in env  # this process's, not a runner's
    assert env["MEDIAPULSE_CI_TARGET"] == "ci" and env["MEDIAPULSE_THREADS"] == "4"

    review.fresh_runner(bench, state)  # type: ignore[arg-type]
    assert runner_tmp.is_dir() and not any(runner_tmp.iterdir())
    (runner_tmp / "left-by-the-last-sample").write_text("x")
    review.fresh_runner(bench, state)  # type: ignore[arg-type]
    assert not any(runner_tmp.iterdir())
    assert stale.is_dir()  # the host's are not the benchmark's to touch
