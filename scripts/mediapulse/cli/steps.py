"""`mediapulse release ...`: a release in steps, for schedulers that run one task per model
(Airflow with Cosmos, Dagster; docs/orchestrators/), and `mediapulse-dbt`, the dbt they run.

prepare → build (as many dbt calls as the scheduler makes) → publish, or discard. `nightly`,
`refresh` and `deploy` are the same steps in one process.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import click

from mediapulse.cli.options import (
    Command,
    artifacts_option,
    option,
    pass_engine,
    pass_project,
    summary_option,
    target_option,
)
from mediapulse.core.errors import MediaPulseError
from mediapulse.core.project import Project
from mediapulse.engines.base import PROD_ROLE, Engine, default_target

STATE_HELP = "production's state directory (the --artifacts of the nightly)"


def _state(artifacts: str) -> Path:
    from mediapulse.release.execute import check_artifacts_dir

    return check_artifacts_dir(Path(artifacts).resolve())


@click.group("release", context_settings={"help_option_names": ["-h", "--help"]})
def release_group() -> None:
    """a release in steps for a scheduler: prepare, build (any dbt call, one per model if you
    like), publish, or discard"""


@release_group.command("prepare", cls=Command)
@target_option(PROD_ROLE)
@artifacts_option(STATE_HELP)
@option("--job", type=click.Choice(["nightly", "refresh", "deploy"]), required=True,
        help="the release's job: what it checks first and how it builds")  # fmt: skip
@option("--start-over", is_flag=True, help="as `mediapulse nightly --start-over`")
@option("--skip-code", type=int, default=0, show_default=True,
        help="exit code when there is nothing to release (99: Airflow's 'skipped')")  # fmt: skip
@pass_engine
def prepare_command(engine: Engine, artifacts: str, job: str, start_over: bool,
                    skip_code: int) -> int:  # fmt: skip
    """the job's checks, then a staged release (production untouched) to build in"""
    from mediapulse.release.steps import prepare_release

    return prepare_release(engine, _state(artifacts), job, start_over, skip_code)


@release_group.command("build", cls=Command)
@target_option(PROD_ROLE)
@artifacts_option(STATE_HELP)
@click.argument("dbt_args", nargs=-1, type=click.UNPROCESSED)
@pass_engine
def build_command(engine: Engine, artifacts: str, dbt_args: tuple[str, ...]) -> int:
    """dbt inside the staged release (after --: dbt's arguments; default `build`), each
    node's result recorded; transient errors retried"""
    from mediapulse.release.steps import build_in_release

    return build_in_release(engine, _state(artifacts), list(dbt_args))


@release_group.command("publish", cls=Command)
@target_option(PROD_ROLE)
@artifacts_option(STATE_HELP)
@summary_option()
@pass_engine
def publish_command(engine: Engine, artifacts: str, summary: str | None) -> int:
    """refuse a release whose builds did not all pass; else its last steps, the swap, the
    state, the run history"""
    from mediapulse.release.steps import publish_release

    return publish_release(engine, _state(artifacts), Path(summary) if summary else None)


@release_group.command("discard", cls=Command)
@target_option(PROD_ROLE)
@artifacts_option(STATE_HELP)
@pass_engine
def discard_command(engine: Engine, artifacts: str) -> int:
    """drop the staged release; production untouched"""
    from mediapulse.release.steps import discard_release

    return discard_release(engine, _state(artifacts))


@release_group.command("status", cls=Command)
@artifacts_option(STATE_HELP)
@option("--json", "as_json", is_flag=True, help="the staged release's record as JSON")
@pass_project
def status_command(project: Project, artifacts: str, as_json: bool) -> int:
    """the staged release, its builds and what failed"""
    from mediapulse.release.steps import status

    print(status(_state(artifacts), as_json))
    return 0


COMMANDS = [release_group]


def dbt_main(argv: list[str] | None = None) -> int:
    """`mediapulse-dbt ARGS`: dbt inside the release staged for $MEDIAPULSE_ARTIFACTS, for a
    scheduler that runs dbt itself (Cosmos' dbt_executable_path, dagster-dbt's dbt_executable)."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args and args[0] in ("--version", "-v"):
        # dbt's own --version asks PyPI for the newest release: nothing leaves the machine
        from dbt.version import get_installed_version

        installed = get_installed_version().to_version_string(skip_matcher=True)
        print(f"Core:\n  - installed: {installed}")
        return 0
    if not args or args[0] in ("--help", "-h"):
        print("usage: mediapulse-dbt DBT_ARGS... (dbt inside the release staged for "
              "$MEDIAPULSE_ARTIFACTS; docs/orchestrators/)")  # fmt: skip
        return 0
    try:
        return _dbt_in_release(args)
    except MediaPulseError as exc:
        print(f"mediapulse-dbt: error: {exc}", file=sys.stderr)
        return 2


def _dbt_in_release(args: list[str]) -> int:
    from mediapulse.engines.targets import resolve
    from mediapulse.release import record
    from mediapulse.release.in_release import ARTIFACTS_ENV, option_value, run_in_release

    artifacts = os.environ.get(ARTIFACTS_ENV)
    if not artifacts:
        raise MediaPulseError(
            f"${ARTIFACTS_ENV} is not set: set it to production's state directory (the "
            "--artifacts of `mediapulse release prepare`), so that dbt builds in its release"
        )
    project = Project.discover()
    target = option_value(args, "--target", "-t") or default_target(PROD_ROLE)
    engine = resolve(project, target)
    state_dir = Path(artifacts).resolve()
    staged = record.require_staged(state_dir, engine, f"dbt {args[0]}")
    return run_in_release(engine, state_dir, staged, args, cwd=Path.cwd())


def dbt_entry() -> None:
    raise SystemExit(dbt_main())
