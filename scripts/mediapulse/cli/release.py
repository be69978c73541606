"""Release: the commands that build production and swap it in, put a kept release back, and
list the kept ones.

Each command imports the room it runs inside its function, for start-up time: DuckDB, dbt
and the rooms take most of a second to load, `mediapulse --help` a tenth.
"""

from __future__ import annotations

from pathlib import Path

from mediapulse.cli.options import (
    artifacts_option,
    command,
    option,
    pass_engine,
    release_options,
    target_option,
)
from mediapulse.engines.base import PROD_ROLE, Engine


@command("nightly")
@release_options()
@pass_engine
def nightly_command(engine: Engine, artifacts: str, summary: str | None, start_over: bool) -> int:
    """full refresh of production, freshness, tests, docs; publish the state slim CI reads"""
    from mediapulse.release.execute import check_artifacts_dir, run_nightly

    artifacts_dir = check_artifacts_dir(Path(artifacts).resolve())
    summary_path = Path(summary) if summary else None
    return run_nightly(engine, artifacts_dir, summary_path, start_over=start_over)


@command("deploy")
@release_options()
@pass_engine
def deploy_command(engine: Engine, artifacts: str, summary: str | None, start_over: bool) -> int:
    """build production from this checkout with every test; swap it in only if all pass"""
    from mediapulse.release.execute import check_artifacts_dir, run_deploy

    artifacts_dir = check_artifacts_dir(Path(artifacts).resolve())
    summary_path = Path(summary) if summary else None
    return run_deploy(engine, artifacts_dir, summary_path, start_over=start_over)


@command("refresh")
@release_options(start_over=False)
@pass_engine
def refresh_command(engine: Engine, artifacts: str, summary: str | None) -> int:
    """add the raw rows loaded since the live release (incremental models, their tests on
    the new rows); release it like any other change, or do nothing if nothing is new"""
    from mediapulse.release.execute import check_artifacts_dir, run_refresh

    artifacts_dir = check_artifacts_dir(Path(artifacts).resolve())
    summary_path = Path(summary) if summary else None
    return run_refresh(engine, artifacts_dir, summary_path)


@command("rollback")
@target_option(PROD_ROLE)
@artifacts_option(
    "the production state directory releases publish to (rewritten to the restored release's state)"
)
@option(
    "--to",
    metavar="RELEASE_ID",
    help="the kept release to restore (`mediapulse releases` lists them; empty: the default)",
)
@pass_engine
def rollback_command(engine: Engine, artifacts: str, to: str | None) -> int:
    """put back a kept release (by default the newest built from other code than the live
    one) and the state it published"""
    from mediapulse.release.execute import check_artifacts_dir, rollback

    state_dir = check_artifacts_dir(Path(artifacts).resolve())
    print(rollback(engine, state_dir, to=to or None))
    print(f"its state is in {state_dir}, for slim CI")
    return 0


@command("releases")
@target_option(PROD_ROLE)
@pass_engine
def releases_command(engine: Engine) -> int:
    """list the live release and the ones kept for a rollback, newest first"""
    from mediapulse.release.execute import list_releases

    print(list_releases(engine))
    return 0


COMMANDS = [nightly_command, deploy_command, refresh_command, rollback_command, releases_command]
