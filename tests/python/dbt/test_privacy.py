"""Nothing about the data, its errors or its users leaves the machine.

dbt sends anonymous usage events (Snowplow, to dbt Labs' collector COLLECTOR below) from every
invocation unless it is switched off: the command, the project's and the user's hashed ids,
the adapter, every model run with its timing and outcome. The project switches it off in
`dbt_project.yml` (plain `dbt` reads that too) and `mediapulse` starts every dbt process with
`DO_NOT_TRACK=1`, which dbt lets beat any flag or variable, so a user's environment cannot
turn it back on through our CLI.

Each test runs the real command in a network namespace with only loopback (netsandbox.py),
which records every attempt to reach another machine: by name (a DNS query, from any language)
or by address (a packet). The control test shows the sandbox sees dbt's tracker when it is
switched on, so an empty record means nothing was attempted, not that nothing was watched.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest

from mediapulse.core.project import Project

from ..conftest import REPO, clone_built
from ..support import netsandbox

pytestmark = pytest.mark.reads(".github/workflows")

BIN = Path(sys.executable).parent
COLLECTOR = "fishtownanalytics.sinter-collect.com"
# Variables a user may have set that switch dbt's tracking on or off: the tests choose.
TRACKING_ENV = ("DO_NOT_TRACK", "DBT_SEND_ANONYMOUS_USAGE_STATS")
# dbt writes the user's id here (profiles dir) the first time it tracks.
USER_COOKIE = ".user.yml"


@pytest.fixture(scope="module", autouse=True)
def _sandbox_works() -> None:
    problem = netsandbox.unavailable()
    if problem is not None:
        pytest.skip(f"no network sandbox: {problem}")


def _user_env(**extra: str) -> dict[str, str]:
    """The caller's environment without MediaPulse or tracking choices, plus ``extra``."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MEDIAPULSE_") and k not in TRACKING_ENV
    }
    return {**env, **extra}


def _offline(project: Project, *command: str, env: Mapping[str, str]) -> netsandbox.Outcome:
    outcome = netsandbox.run(list(command), cwd=project.root, env=env, timeout_s=900)
    assert outcome.returncode == 0, outcome.output[-4000:]
    return outcome


def _manifest_metadata(project: Project) -> dict:
    return json.loads((project.target_dir / "manifest.json").read_text())["metadata"]


def _forget_user(project: Project) -> Path:
    cookie = project.profiles_dir / USER_COOKIE
    cookie.unlink(missing_ok=True)
    return cookie


@pytest.mark.dbt
def test_mediapulse_build_sends_nothing_even_when_the_environment_asks_for_tracking(
    built: Project, tmp_path: Path
) -> None:
    project = clone_built(built, tmp_path / "project")
    cookie = _forget_user(project)
    env = _user_env(DBT_SEND_ANONYMOUS_USAGE_STATS="true")

    outcome = _offline(
        project, str(BIN / "mediapulse"), "--project-dir", str(project.root), "build", env=env
    )

    assert not outcome.attempts, (
        f"`mediapulse build` tried to leave the machine: {outcome.describe_attempts()}"
    )
    metadata = _manifest_metadata(project)
    assert metadata["send_anonymous_usage_stats"] is False, metadata
    assert metadata["user_id"] is None, metadata
    assert not cookie.exists(), f"dbt wrote a user id to {cookie}"


@pytest.mark.dbt
def test_plain_dbt_keeps_tracking_off_from_the_project_flag(built: Project, tmp_path: Path) -> None:
    project = clone_built(built, tmp_path / "project")
    cookie = _forget_user(project)

    outcome = _offline(
        project,
        str(BIN / "dbt"), "parse", "--project-dir", str(project.root),
        "--profiles-dir", str(project.profiles_dir),
        env=_user_env(),
    )  # fmt: skip

    assert not outcome.attempts, (
        f"plain `dbt parse` tried to leave the machine: {outcome.describe_attempts()}"
    )
    assert _manifest_metadata(project)["send_anonymous_usage_stats"] is False
    assert not cookie.exists(), f"dbt wrote a user id to {cookie}"


@pytest.mark.dbt
def test_the_sandbox_sees_dbt_tracking_when_it_is_switched_on(
    built: Project, tmp_path: Path
) -> None:
    """The control: dbt's own command-line flag beats the project's, so here dbt tracks."""
    project = clone_built(built, tmp_path / "project")

    outcome = _offline(
        project,
        str(BIN / "dbt"), "parse", "--send-anonymous-usage-stats",
        "--project-dir", str(project.root), "--profiles-dir", str(project.profiles_dir),
        env=_user_env(),
    )  # fmt: skip

    assert COLLECTOR in outcome.looked_up(), outcome.describe_attempts()
    assert _manifest_metadata(project)["send_anonymous_usage_stats"] is True


def test_workflow_checks_stay_offline() -> None:
    """The schema check uses its built-in copy of GitHub's schema, zizmor runs `--offline`."""
    workflows = sorted(str(p) for p in (REPO / ".github" / "workflows").glob("*.yml"))
    commands = {
        "check-jsonschema": [
            str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.github-workflows",
            *workflows,
        ],
        "zizmor": [str(BIN / "zizmor"), "--offline", "--no-progress", *workflows],
    }  # fmt: skip
    for name, command in commands.items():
        outcome = netsandbox.run(command, cwd=REPO, env=_user_env(), timeout_s=300)
        assert outcome.returncode == 0, f"{name}: {outcome.output[-4000:]}"
        assert not outcome.attempts, f"{name} tried to leave: {outcome.describe_attempts()}"
